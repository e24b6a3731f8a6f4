//! Where pods and NetworkAttachmentDefinitions come from: the Kubernetes API server, or a
//! local directory (running without Kubernetes). Both can record network-status.

use cni_core::{Error, Result, code};
use meta_crd::{NadConfig, NetworkAttachmentDefinition, agent_api};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The parts of a pod the meta plugin uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// metadata.annotations
    pub annotations: BTreeMap<String, String>,
    /// metadata.uid
    pub uid: Option<String>,
}

/// A source of pods and NADs.
pub trait Source {
    /// The pod, `None` when it does not exist or the source has no pods.
    fn pod(&mut self, namespace: &str, name: &str) -> Result<Option<PodInfo>>;
    /// The pod, knowing the UID the runtime asked for (a cache holding another UID is a
    /// miss, not an answer).
    fn pod_with_uid(
        &mut self,
        namespace: &str,
        name: &str,
        _uid: Option<&str>,
    ) -> Result<Option<PodInfo>> {
        self.pod(namespace, name)
    }
    /// A NAD's configuration, `None` when it does not exist.
    fn nad(&mut self, namespace: &str, name: &str) -> Result<Option<NadConfig>>;
    /// Records the network-status annotation value for the pod.
    fn set_network_status(
        &mut self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        value: &str,
    ) -> Result<()>;
    /// Forgets the recorded status (local mode; the API server drops it with the pod).
    fn clear_network_status(&mut self, _namespace: &str, _name: &str) -> Result<()> {
        Ok(())
    }
    /// Whether this source can look pods up.
    fn has_pods(&self) -> bool;
}

/// No Kubernetes and no local directory: only the runtime-passed annotations exist.
pub struct NoSource;

impl Source for NoSource {
    fn pod(&mut self, _: &str, _: &str) -> Result<Option<PodInfo>> {
        Ok(None)
    }
    fn nad(&mut self, ns: &str, name: &str) -> Result<Option<NadConfig>> {
        Err(Error::config(format!(
            "cannot resolve NetworkAttachmentDefinition {ns}/{name}: meta-cni has neither \"kubeconfig\" nor \"localNadDir\""
        )))
    }
    fn set_network_status(&mut self, _: &str, _: &str, _: Option<&str>, _: &str) -> Result<()> {
        Ok(())
    }
    fn has_pods(&self) -> bool {
        false
    }
}

/// Local mode: NADs in `<dir>/<namespace>/<name>.json` (a NAD object, or a bare CNI
/// configuration or configuration list); network-status written to
/// `<status_dir>/<namespace>/<name>.json`.
pub struct LocalSource {
    dir: PathBuf,
    status_dir: PathBuf,
}

impl LocalSource {
    /// A local source.
    pub fn new(dir: PathBuf, status_dir: PathBuf) -> Self {
        LocalSource { dir, status_dir }
    }
    /// Where a pod's status goes.
    pub fn status_path(status_dir: &Path, ns: &str, name: &str) -> PathBuf {
        status_dir.join(ns).join(format!("{name}.json"))
    }
}

/// The configuration a NAD object stands for (a bad one is a configuration error).
fn nad_config(nad: &NetworkAttachmentDefinition) -> Result<Option<NadConfig>> {
    meta_crd::effective_config(nad)
        .map(Some)
        .map_err(|e| Error::config(e.to_string()))
}

fn valid_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/')
}

impl Source for LocalSource {
    fn pod(&mut self, _: &str, _: &str) -> Result<Option<PodInfo>> {
        Ok(None)
    }

    fn nad(&mut self, ns: &str, name: &str) -> Result<Option<NadConfig>> {
        if !valid_component(ns) || !valid_component(name) {
            return Err(Error::config(format!("invalid NAD reference {ns}/{name}")));
        }
        let path = self.dir.join(ns).join(format!("{name}.json"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("read {}: {e}", path.display()))),
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::config(format!("{}: not valid JSON: {e}", path.display())))?;
        let id = format!("{ns}/{name}");
        if v.get("kind").and_then(|k| k.as_str()) == Some("NetworkAttachmentDefinition") {
            let mut nad: NetworkAttachmentDefinition = serde_json::from_value(v).map_err(|e| {
                Error::config(format!(
                    "{}: invalid NetworkAttachmentDefinition: {e}",
                    path.display()
                ))
            })?;
            nad.metadata.namespace.get_or_insert_with(|| ns.to_string());
            nad.metadata.name.get_or_insert_with(|| name.to_string());
            return nad_config(&nad);
        }
        meta_crd::config_from_spec(&id, &text, name)
            .map(Some)
            .map_err(|e| Error::config(e.to_string()))
    }

    fn set_network_status(
        &mut self,
        ns: &str,
        name: &str,
        _uid: Option<&str>,
        value: &str,
    ) -> Result<()> {
        let p = Self::status_path(&self.status_dir, ns, name);
        let dir = p.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}: {e}", dir.display())))?;
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, value)
            .and_then(|_| std::fs::rename(&tmp, &p))
            .map_err(|e| Error::io(format!("write {}: {e}", p.display())))
    }

    fn clear_network_status(&mut self, ns: &str, name: &str) -> Result<()> {
        let p = Self::status_path(&self.status_dir, ns, name);
        // The temp file too: a kill -9 between write and rename leaves it behind.
        for f in [p.with_extension("tmp"), p.clone()] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}: {e}", f.display()))),
            }
        }
        if let Some(d) = p.parent() {
            let _ = std::fs::remove_dir(d); // only when empty
        }
        Ok(())
    }

    fn has_pods(&self) -> bool {
        false
    }
}

/// The Kubernetes API server, through kube-rs, on a private current-thread runtime; every
/// request is bounded by a timeout, and transient failures are code 11.
pub struct KubeSource {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    timeout: Duration,
}

/// Maps a kube error of the request `what`, which needs the RBAC permission `perm` (e.g.
/// `get pods in namespace ns1`): not-found is `Ok(None)` for reads; overload, server
/// errors, timeouts and connection failures are "try again later" (11); a 403 names the
/// missing permission, a 401 the credentials; the rest name the cause.
fn kube_err(what: &str, perm: &str, e: kube::Error) -> Error {
    match &e {
        kube::Error::Api(s) => {
            let c = s.code;
            if c == 429 || c >= 500 {
                Error::try_again(format!("{what}: API server answered {c}: {}", s.message))
            } else if c == 403 {
                Error::internal(format!(
                    "{what}: API server answered 403 ({}): meta-cni's credentials lack the permission \
                     to {perm}; grant it (deploy/rbac.yaml's ClusterRole meta-cni-plugin does)",
                    s.message
                ))
            } else if c == 401 {
                Error::internal(format!(
                    "{what}: API server answered 401 ({}): the credentials of meta-cni's kubeconfig \
                     are not accepted (expired or revoked token?)",
                    s.message
                ))
            } else {
                Error::internal(format!("{what}: API server answered {c}: {}", s.message))
            }
        }
        _ => Error::try_again(format!("{what}: cannot reach the API server: {e}")),
    }
}

impl KubeSource {
    /// Connects lazily (no request is made here) using `kubeconfig`.
    pub fn new(kubeconfig: &Path, timeout: Duration) -> Result<KubeSource> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("tokio runtime: {e}")))?;
        let kc = kube::config::Kubeconfig::read_from(kubeconfig)
            .map_err(|e| Error::config(format!("kubeconfig {}: {e}", kubeconfig.display())))?;
        let client = rt.block_on(async {
            let cfg = kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| Error::config(format!("kubeconfig {}: {e}", kubeconfig.display())))?;
            let mut cfg = cfg;
            cfg.connect_timeout = Some(timeout);
            cfg.read_timeout = Some(timeout);
            cfg.write_timeout = Some(timeout);
            kube::Client::try_from(cfg).map_err(|e| Error::config(format!("kube client: {e}")))
        })?;
        Ok(KubeSource {
            rt,
            client,
            timeout,
        })
    }

    fn run<T>(
        &self,
        what: &str,
        perm: &str,
        fut: impl std::future::Future<Output = std::result::Result<T, kube::Error>>,
    ) -> Result<T> {
        self.rt.block_on(async {
            match tokio::time::timeout(self.timeout, fut).await {
                Ok(r) => r.map_err(|e| kube_err(what, perm, e)),
                Err(_) => Err(Error::new(
                    code::TRY_AGAIN_LATER,
                    format!(
                        "{what}: the API server did not answer within {:?}",
                        self.timeout
                    ),
                )),
            }
        })
    }
}

impl Source for KubeSource {
    fn pod(&mut self, ns: &str, name: &str) -> Result<Option<PodInfo>> {
        use k8s_openapi::api::core::v1::Pod;
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), ns);
        let pod = self.run(
            &format!("get pod {ns}/{name}"),
            &format!("get pods in namespace {ns}"),
            api.get_opt(name),
        )?;
        Ok(pod.map(|p| PodInfo {
            annotations: p.metadata.annotations.unwrap_or_default(),
            uid: p.metadata.uid,
        }))
    }

    fn nad(&mut self, ns: &str, name: &str) -> Result<Option<NadConfig>> {
        let api: kube::Api<NetworkAttachmentDefinition> =
            kube::Api::namespaced(self.client.clone(), ns);
        let nad = self.run(
            &format!("get NetworkAttachmentDefinition {ns}/{name}"),
            &format!("get network-attachment-definitions.k8s.cni.cncf.io in namespace {ns}"),
            api.get_opt(name),
        )?;
        match nad {
            None => Ok(None),
            Some(n) => nad_config(&n),
        }
    }

    fn set_network_status(
        &mut self,
        ns: &str,
        name: &str,
        uid: Option<&str>,
        value: &str,
    ) -> Result<()> {
        let what = format!("patch network-status of pod {ns}/{name}");
        let perm = format!("patch pods/status in namespace {ns}");
        match self.patch_status(ns, name, uid, value) {
            Ok(()) => Ok(()),
            // The UID precondition failed: the pod was deleted and recreated meanwhile.
            Err(PatchError::UidChanged(m)) => Err(Error::try_again(format!(
                "{what}: the pod's UID is no longer {} (pod recreated?): {m}",
                uid.unwrap_or_default()
            ))),
            Err(PatchError::Kube(e)) => Err(kube_err(&what, &perm, e)),
            Err(PatchError::Timeout) => Err(Error::try_again(format!(
                "{what}: the API server did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    fn has_pods(&self) -> bool {
        true
    }
}

/// How long the node agent has to connect and answer all of one invocation's requests.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(1);

enum AgentConn {
    Untried,
    Up(agent_api::Client),
    Down,
}

/// The node agent's caches first, the API server when the agent cannot answer.
///
/// Every request goes to the agent's socket first (one connection per invocation, all of
/// it within [`AGENT_TIMEOUT`]); when the agent is down, slow, not synced, or does not
/// know the object, the API server is asked exactly as [`KubeSource`] does, so a stale or
/// cold cache never makes a false "not found". The [`KubeSource`] (runtime, kubeconfig,
/// client) is built on the first request that needs it. network-status is patched
/// through the agent's own API connection, answered once the API server acknowledged it:
/// with the agent up, an ADD opens no API connection at all.
pub struct AgentSource {
    socket: PathBuf,
    conn: AgentConn,
    kubeconfig: PathBuf,
    timeout: Duration,
    kube: Option<KubeSource>,
}

impl AgentSource {
    /// A source asking the agent at `socket`, then the API server of `kubeconfig` (each
    /// API request bounded by `timeout`). Makes no connection here.
    pub fn new(socket: PathBuf, kubeconfig: PathBuf, timeout: Duration) -> AgentSource {
        AgentSource {
            socket,
            conn: AgentConn::Untried,
            kubeconfig,
            timeout,
            kube: None,
        }
    }

    /// Whether the API server's client has been built (a fallback or a patch happened).
    pub fn api_client_built(&self) -> bool {
        self.kube.is_some()
    }

    fn kube(&mut self) -> Result<&mut KubeSource> {
        if self.kube.is_none() {
            self.kube = Some(KubeSource::new(&self.kubeconfig, self.timeout)?);
        }
        Ok(self.kube.as_mut().expect("just built"))
    }

    /// The agent's answer to `op`, `None` when it cannot answer it (logged).
    fn ask(&mut self, op: agent_api::Op) -> Option<agent_api::Response> {
        match self.ask_within(op, None)? {
            r if r.ok => Some(r),
            r => {
                tracing::debug!(
                    "node agent: {:?}: {}; asking the API server",
                    r.error,
                    r.message.unwrap_or_default()
                );
                None
            }
        }
    }

    /// The agent's response to `op` (a refusal too), `None` when there is none: the
    /// agent is down or did not answer in time (logged; not asked again). `wait`: how long
    /// this one request may take, beyond the invocation's [`AGENT_TIMEOUT`].
    fn ask_within(
        &mut self,
        op: agent_api::Op,
        wait: Option<Duration>,
    ) -> Option<agent_api::Response> {
        if let AgentConn::Untried = self.conn {
            self.conn = match agent_api::Client::connect(&self.socket, AGENT_TIMEOUT) {
                Ok(c) => AgentConn::Up(c),
                Err(e) => {
                    tracing::debug!("node agent not used: {e}");
                    AgentConn::Down
                }
            };
        }
        let AgentConn::Up(c) = &mut self.conn else {
            return None;
        };
        let req = agent_api::Request::new(op);
        let r = match wait {
            Some(t) => c.ask_within(&req, t),
            None => c.ask(&req),
        };
        match r {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("node agent: {e}; asking the API server");
                self.conn = AgentConn::Down;
                None
            }
        }
    }
}

impl Source for AgentSource {
    fn pod(&mut self, ns: &str, name: &str) -> Result<Option<PodInfo>> {
        self.pod_with_uid(ns, name, None)
    }

    fn pod_with_uid(&mut self, ns: &str, name: &str, uid: Option<&str>) -> Result<Option<PodInfo>> {
        let op = agent_api::Op::Pod {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: uid.map(str::to_string),
        };
        if let Some(p) = self.ask(op).and_then(|r| r.pod) {
            return Ok(Some(PodInfo {
                annotations: p.annotations,
                uid: p.uid,
            }));
        }
        self.kube()?.pod(ns, name)
    }

    fn nad(&mut self, ns: &str, name: &str) -> Result<Option<NadConfig>> {
        let op = agent_api::Op::Nad {
            namespace: ns.to_string(),
            name: name.to_string(),
        };
        if let Some(n) = self.ask(op).and_then(|r| r.nad) {
            return nad_config(&n);
        }
        self.kube()?.nad(ns, name)
    }

    fn set_network_status(
        &mut self,
        ns: &str,
        name: &str,
        uid: Option<&str>,
        value: &str,
    ) -> Result<()> {
        let op = agent_api::Op::NetworkStatus {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: uid.map(str::to_string),
            value: value.to_string(),
        };
        // The agent's patch waits on the API server: as long as a patch of ours may.
        match self.ask_within(op, Some(self.timeout)) {
            Some(r) if r.ok => return Ok(()),
            // Final: the API server refused the UID precondition (the pod was recreated);
            // asking it again ourselves would get the same answer.
            Some(r)
                if uid.is_some()
                    && r.error == Some(agent_api::ErrorKind::Api)
                    && matches!(r.code, Some(409 | 422)) =>
            {
                return Err(Error::try_again(format!(
                    "patch network-status of pod {ns}/{name}: the pod's UID is no longer {} \
                     (pod recreated?): {}",
                    uid.unwrap_or_default(),
                    r.message.unwrap_or_default()
                )));
            }
            Some(r) => tracing::debug!(
                "node agent: network-status of pod {ns}/{name}: {:?}: {}; patching it ourselves",
                r.error,
                r.message.unwrap_or_default()
            ),
            None => {}
        }
        self.kube()?.set_network_status(ns, name, uid, value)
    }

    fn has_pods(&self) -> bool {
        true
    }
}

/// Why a network-status patch did not land.
enum PatchError {
    /// The UID precondition failed (422 "field is immutable" or 409): the pod was
    /// recreated.
    UidChanged(String),
    /// Anything the API server or the connection said.
    Kube(kube::Error),
    /// No answer within the timeout.
    Timeout,
}

/// What clearing a pod's network-status came to ([`KubeSource::clear_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClearOutcome {
    /// The API server acknowledged `[]`.
    Cleared,
    /// Nothing to clear: the pod is gone, or was recreated (its UID differs).
    Gone(String),
    /// Refused for good (credentials, permissions, an invalid request): named for the log.
    Refused(String),
    /// Unreachable, hung, overloaded or failing (429, 5xx): try again later.
    Retry(String),
}

impl KubeSource {
    /// Merge-patches network-status to `value` through `pods/status`, with the pod's UID
    /// as precondition when given.
    fn patch_status(
        &mut self,
        ns: &str,
        name: &str,
        uid: Option<&str>,
        value: &str,
    ) -> std::result::Result<(), PatchError> {
        use k8s_openapi::api::core::v1::Pod;
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), ns);
        // The UID is a precondition: the patch fails if the pod was recreated meanwhile.
        let patch = meta_crd::network_status_patch(value, uid);
        let pp = kube::api::PatchParams::default();
        let merge = kube::api::Patch::Merge(&patch);
        // Through the status subresource: RBAC then needs `patch` on `pods/status` only,
        // never on `pods` (which would let the plugin's credentials rewrite pods' specs).
        let fut = api.patch_status(name, &pp, &merge);
        self.rt.block_on(async {
            match tokio::time::timeout(self.timeout, fut).await {
                Ok(Err(kube::Error::Api(s)))
                    if uid.is_some() && (s.code == 422 || s.code == 409) =>
                {
                    Err(PatchError::UidChanged(s.message.clone()))
                }
                Ok(r) => r.map(|_| ()).map_err(PatchError::Kube),
                Err(_) => Err(PatchError::Timeout),
            }
        })
    }

    /// DEL's clear of a pod's network-status (`[]`), as the hand-off worker needs it: a
    /// pod that is gone or recreated is not an error, and only what may pass is retried.
    pub fn clear_status(&mut self, ns: &str, name: &str, uid: Option<&str>) -> ClearOutcome {
        match self.patch_status(ns, name, uid, "[]") {
            Ok(()) => ClearOutcome::Cleared,
            Err(PatchError::UidChanged(m)) => {
                ClearOutcome::Gone(format!("the pod was recreated (its UID differs): {m}"))
            }
            Err(PatchError::Kube(kube::Error::Api(s))) if s.code == 404 => {
                ClearOutcome::Gone(format!("the pod is gone: {}", s.message))
            }
            Err(PatchError::Timeout) => ClearOutcome::Retry(format!(
                "the API server did not answer within {:?}",
                self.timeout
            )),
            Err(PatchError::Kube(e)) => {
                let err = kube_err(
                    &format!("patch network-status of pod {ns}/{name}"),
                    &format!("patch pods/status in namespace {ns}"),
                    e,
                );
                if err.code == code::TRY_AGAIN_LATER {
                    ClearOutcome::Retry(err.msg)
                } else {
                    ClearOutcome::Refused(err.msg)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status {
                code,
                message: message.into(),
                ..Default::default()
            }
            .boxed(),
        )
    }

    #[test]
    fn api_errors_name_the_permission_or_retry() {
        let e = kube_err(
            "patch network-status of pod ns1/p",
            "patch pods/status in namespace ns1",
            api(403, "forbidden"),
        );
        assert_eq!(e.code, code::INTERNAL);
        assert_eq!(
            e.msg,
            "patch network-status of pod ns1/p: API server answered 403 (forbidden): meta-cni's \
             credentials lack the permission to patch pods/status in namespace ns1; grant it \
             (deploy/rbac.yaml's ClusterRole meta-cni-plugin does)"
        );
        let e = kube_err(
            "get pod ns1/p",
            "get pods in namespace ns1",
            api(401, "Unauthorized"),
        );
        assert!(
            e.msg.contains("credentials of meta-cni's kubeconfig"),
            "{}",
            e.msg
        );
        assert!(!e.msg.contains("permission"), "{}", e.msg);
        for c in [429, 500, 503] {
            assert_eq!(
                kube_err("w", "p", api(c, "busy")).code,
                code::TRY_AGAIN_LATER
            );
        }
        assert_eq!(kube_err("w", "p", api(422, "invalid")).code, code::INTERNAL);
    }
}
