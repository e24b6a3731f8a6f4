//! Fixtures of the end-to-end tests (`tests/e2e.rs`): a real kube-apiserver with the NAD
//! CRD and the RBAC of `deploy/` loaded, a ServiceAccount token of exactly that RBAC, the
//! namespace `e2e` with the NADs `blue` (bridge) and `green` (macvlan on a veth parent of
//! the node), the cluster network in a confDir, a CNI bin dir, and a TCP forwarder.
//!
//! The forwarder: the API server fixture listens on 127.0.0.1 of the machine's namespace,
//! but meta-cni runs in the test's node namespace (directly, or as a child of containerd),
//! whose 127.0.0.1 is another loopback. A listener opened inside the node namespace (by a
//! thread that `setns()`'d there; the socket keeps its namespace) relays each connection to
//! the API server, so meta-cni's kubeconfig says `https://127.0.0.1:<forwarder port>` (the
//! serving certificate covers 127.0.0.1) and no network object is ever created outside the
//! test's namespaces.
#![allow(dead_code)]

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use meta_crd::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use meta_netlink::{Netlink, NetlinkOps, Netns};
use meta_tests::apiserver::ApiServer;
use meta_tests::{Invocation, REFERENCE_DIR, Run, World, dir_contents, run_in, veth_pair_in};
use serde_json::{Value, json};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use meta_tests::kube::*;

/// The namespace of the test's pods and NADs.
pub const NS: &str = "e2e";
/// Subnets: the cluster network (eth0), `e2e/blue` (bridge), `e2e/green` (macvlan).
pub const CLUSTER_PREFIX: &str = "10.70.0.";
pub const BLUE_PREFIX: &str = "10.71.0.";
pub const GREEN_PREFIX: &str = "10.72.0.";
/// Links of the node namespace that are the test's own (not attachments).
pub const CLUSTER_BRIDGE: &str = "e2ecl0";
pub const BLUE_BRIDGE: &str = "e2eblue0";
pub const MACVLAN_PARENT: &str = "e2epar0";
pub const MACVLAN_PARENT_PEER: &str = "e2epar1";

/// The meta-cni binary under test.
pub fn meta_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meta-cni"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------
// TCP relay from the node namespace to the API server, and a black hole.

/// A listener in a namespace that never accepts: the kernel completes TCP handshakes,
/// then nothing ever answers (a hung API server).
pub struct BlackHole {
    listener: TcpListener,
}

impl BlackHole {
    /// Listens on 127.0.0.1:<free port> inside `ns`.
    pub fn start(ns: &Netns) -> BlackHole {
        let listener = ns
            .run(|| TcpListener::bind("127.0.0.1:0"))
            .expect("thread in the node namespace")
            .expect("bind in the node namespace");
        BlackHole { listener }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("local_addr")
    }
}

// ---------------------------------------------------------------------------------------
// The cluster.

/// Writes a copy of kubeconfig `src` (JSON) whose server is `https://<addr>`.
pub fn kubeconfig_with_server(src: &Path, dst: &Path, addr: SocketAddr) {
    let mut kc: Value =
        serde_json::from_str(&std::fs::read_to_string(src).expect("read kubeconfig"))
            .expect("kubeconfig JSON");
    kc["clusters"][0]["cluster"]["server"] = json!(format!("https://{addr}"));
    std::fs::write(dst, serde_json::to_string_pretty(&kc).unwrap()).expect("write kubeconfig");
}

/// Timings of the setup, for the report.
#[derive(Debug, Default, Clone)]
pub struct SetupTimings {
    pub apiserver_start: Duration,
    pub crd_established: Duration,
    pub rbac_token_nads: Duration,
    pub total: Duration,
}

/// Everything an end-to-end test needs. Fields drop in order: forwarder, API server,
/// client runtime, then the World (node, pods, scratch dir).
pub struct E2e {
    /// Relay node-netns 127.0.0.1 → API server (None once stopped).
    pub fwd: Option<Forwarder>,
    /// The API server (None once stopped).
    pub api: Option<ApiServer>,
    /// The admin client (system:masters).
    pub admin: kube::Client,
    /// A client with the ServiceAccount's token, talking to the API server directly.
    pub sa: kube::Client,
    /// The runtime both clients live on.
    pub rt: tokio::runtime::Runtime,
    /// The ServiceAccount token (TokenRequest).
    pub token: String,
    /// meta-cni's kubeconfig: the token, server = the forwarder in the node namespace.
    pub kubeconfig: PathBuf,
    /// meta-cni's confDir (the cluster network "cluster").
    pub conf_dir: PathBuf,
    /// meta-cni's cniDir (journal).
    pub cache: PathBuf,
    /// CNI bin dir: symlinks to the reference plugins + a logging wrapper of meta-cni.
    pub bin: PathBuf,
    /// Every call of the wrapper: `START|END VERB netns=.. id=.. [rc=..]`.
    pub calls: PathBuf,
    /// host-local data dirs: cluster, blue, green.
    pub ipam: Vec<(&'static str, PathBuf)>,
    pub timings: SetupTimings,
    /// Node, pods, scratch directory.
    pub w: World,
}

impl E2e {
    /// The whole setup: see the module docs.
    pub fn setup(pods: usize) -> E2e {
        let t0 = Instant::now();
        let w = World::new(pods);
        veth_pair_in(w.node.netns(), MACVLAN_PARENT, MACVLAN_PARENT_PEER);
        let conf_dir = w.path("meta-net.d");
        let cache = w.path("meta-cache");
        let bin = w.path("cni-bin");
        let calls = w.path("meta-cni-calls.log");
        let ipam = vec![
            ("cluster", w.path("ipam-cluster")),
            ("blue", w.path("ipam-blue")),
            ("green", w.path("ipam-green")),
        ];
        for d in [&conf_dir, &bin] {
            std::fs::create_dir_all(d).unwrap();
        }
        for p in ["bridge", "macvlan", "host-local", "loopback"] {
            std::os::unix::fs::symlink(meta_tests::reference(p), bin.join(p)).unwrap();
        }
        let wrapper = format!(
            "#!/bin/sh\n\
             echo \"START $CNI_COMMAND netns=$CNI_NETNS id=$CNI_CONTAINERID\" >> '{calls}'\n\
             '{real}' \"$@\"\n\
             rc=$?\n\
             echo \"END $CNI_COMMAND netns=$CNI_NETNS id=$CNI_CONTAINERID rc=$rc\" >> '{calls}'\n\
             exit $rc\n",
            calls = calls.display(),
            real = meta_bin().display()
        );
        let wp = bin.join("meta-cni");
        std::fs::write(&wp, wrapper).unwrap();
        std::fs::set_permissions(&wp, std::fs::Permissions::from_mode(0o755)).unwrap();
        let host_local = |subnet: &str, dir: &Path| json!({"type": "host-local", "subnet": subnet, "dataDir": dir});
        std::fs::write(
            conf_dir.join("cluster.conflist"),
            json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [{
                "type": "bridge", "bridge": CLUSTER_BRIDGE, "isGateway": true,
                "isDefaultGateway": true,
                "ipam": host_local(&format!("{CLUSTER_PREFIX}0/24"), &ipam[0].1)
            }]})
            .to_string(),
        )
        .unwrap();

        let t = Instant::now();
        let api = ApiServer::start();
        let apiserver_start = t.elapsed();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let admin = rt.block_on(client_for(&api.admin_kubeconfig()));
        let t = Instant::now();
        rt.block_on(meta_tests::kube::apply_nad_crd(&admin));
        let crd_established = t.elapsed();
        let t = Instant::now();
        let rbac = rt.block_on(apply_rbac(&admin));
        assert_eq!(
            rbac,
            [
                "ServiceAccount/meta-cni",
                "ServiceAccount/meta-cni-agent",
                "ClusterRole/meta-cni-plugin",
                "ClusterRole/meta-cni-agent",
                "ClusterRoleBinding/meta-cni-plugin",
                "ClusterRoleBinding/meta-cni-agent",
                "Secret/meta-cni-token",
                "Role/meta-cni-install",
                "RoleBinding/meta-cni-install"
            ]
        );
        let token = rt.block_on(sa_token(&admin));
        assert!(!token.is_empty());
        let sa_kubeconfig = api.kubeconfig_for_token(&token);
        let sa = rt.block_on(client_for(&sa_kubeconfig));
        rt.block_on(async {
            let pp = PostParams::default();
            let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
            Api::<Namespace>::all(admin.clone())
                .create(&pp, &ns)
                .await
                .expect("create namespace");
            let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(admin.clone(), NS);
            let configs = [
                (
                    "blue",
                    json!({"cniVersion": "1.0.0", "name": "blue", "type": "bridge",
                           "bridge": BLUE_BRIDGE,
                           "ipam": host_local(&format!("{BLUE_PREFIX}0/24"), &ipam[1].1)}),
                ),
                (
                    "green",
                    json!({"cniVersion": "1.0.0", "name": "green", "type": "macvlan",
                           "master": MACVLAN_PARENT, "mode": "bridge",
                           "ipam": host_local(&format!("{GREEN_PREFIX}0/24"), &ipam[2].1)}),
                ),
            ];
            for (name, config) in configs {
                let nad = NetworkAttachmentDefinition::new(
                    name,
                    NetworkAttachmentDefinitionSpec {
                        config: Some(config.to_string()),
                    },
                );
                // Established does not mean every API server handler knows the resource
                // yet: retry a 404 for a while.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match nads.create(&pp, &nad).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 404 && Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        Err(e) => panic!("create NAD {NS}/{name}: {e}"),
                    }
                }
            }
        });
        let rbac_token_nads = t.elapsed();

        let upstream: SocketAddr = api
            .url()
            .trim_start_matches("https://")
            .parse()
            .expect("API server address");
        let fwd = Forwarder::start(
            w.node.netns(),
            "127.0.0.1:0".parse().expect("addr"),
            upstream,
        );
        let kubeconfig = w.path("meta-cni.kubeconfig");
        kubeconfig_with_server(&sa_kubeconfig, &kubeconfig, fwd.addr());
        let timings = SetupTimings {
            apiserver_start,
            crd_established,
            rbac_token_nads,
            total: t0.elapsed(),
        };
        E2e {
            fwd: Some(fwd),
            api: Some(api),
            admin,
            sa,
            rt,
            token,
            kubeconfig,
            conf_dir,
            cache,
            bin,
            calls,
            ipam,
            timings,
            w,
        }
    }

    /// Stops the API server and the relay: meta-cni's kubeconfig then names a port where
    /// nothing listens (connection refused), as when the API server is down.
    pub fn stop_api(&mut self) {
        self.fwd = None;
        self.api = None;
    }

    /// Creates namespace `ns` (admin).
    pub fn create_namespace(&self, ns: &str) {
        let o: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        self.rt
            .block_on(Api::<Namespace>::all(self.admin.clone()).create(&PostParams::default(), &o))
            .unwrap_or_else(|e| panic!("create namespace {ns}: {e}"));
    }

    /// Creates NAD `ns/name` with CNI configuration `config` (admin).
    pub fn create_nad(&self, ns: &str, name: &str, config: &Value) {
        let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(self.admin.clone(), ns);
        let nad = NetworkAttachmentDefinition::new(
            name,
            NetworkAttachmentDefinitionSpec {
                config: Some(config.to_string()),
            },
        );
        self.rt
            .block_on(nads.create(&PostParams::default(), &nad))
            .unwrap_or_else(|e| panic!("create NAD {ns}/{name}: {e}"));
    }

    /// Creates pod `name` in [`NS`] with the networks annotation (none when `networks` is
    /// None); returns its UID. Nothing schedules it.
    pub fn create_pod(&self, name: &str, networks: Option<&str>) -> String {
        self.create_pod_in(NS, name, networks)
    }

    /// Like [`E2e::create_pod`], in namespace `ns`.
    pub fn create_pod_in(&self, ns: &str, name: &str, networks: Option<&str>) -> String {
        let mut annotations = serde_json::Map::new();
        if let Some(n) = networks {
            annotations.insert(meta_crd::NETWORKS_ANNOTATION.into(), json!(n));
        }
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "localhost/e2e/app:1"}]}
        }))
        .unwrap();
        let api: Api<Pod> = Api::namespaced(self.admin.clone(), ns);
        let created = self
            .rt
            .block_on(api.create(&PostParams::default(), &pod))
            .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"));
        created.metadata.uid.expect("pod uid")
    }

    /// Deletes pod `name` in [`NS`] at once (nothing runs it, so no grace period applies).
    pub fn delete_pod(&self, name: &str) {
        let api: Api<Pod> = Api::namespaced(self.admin.clone(), NS);
        let dp = kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        self.rt
            .block_on(api.delete(name, &dp))
            .unwrap_or_else(|e| panic!("delete pod {NS}/{name}: {e}"));
        let t = Instant::now();
        while self.rt.block_on(api.get_opt(name)).ok().flatten().is_some() {
            assert!(t.elapsed() < Duration::from_secs(20), "pod {name} not gone");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pod's annotations, as the admin sees them.
    pub fn pod_annotations(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        let api: Api<Pod> = Api::namespaced(self.admin.clone(), NS);
        self.rt
            .block_on(api.get(name))
            .unwrap_or_else(|e| panic!("get pod {NS}/{name}: {e}"))
            .metadata
            .annotations
            .unwrap_or_default()
    }

    /// The pod's network-status annotation, parsed (empty when absent).
    pub fn network_status(&self, name: &str) -> Option<Vec<meta_crd::NetworkStatus>> {
        self.pod_annotations(name)
            .get(meta_crd::NETWORK_STATUS_ANNOTATION)
            .map(|v| meta_crd::parse_network_status(v).expect("valid network-status"))
    }

    /// A raw request with the ServiceAccount's token: the HTTP status code.
    pub fn sa_request(&self, method: &str, path: &str) -> u16 {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .body(Vec::new())
            .unwrap();
        match self.rt.block_on(self.sa.request_text(req)) {
            Ok(_) => 200,
            Err(kube::Error::Api(s)) => s.code,
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    /// A raw merge-patch request (`application/merge-patch+json`) with the
    /// ServiceAccount's token: the HTTP status code.
    pub fn sa_patch(&self, path: &str, body: &Value) -> u16 {
        let req = http::Request::builder()
            .method("PATCH")
            .uri(path)
            .header("Content-Type", "application/merge-patch+json")
            .body(body.to_string().into_bytes())
            .unwrap();
        match self.rt.block_on(self.sa.request_text(req)) {
            Ok(_) => 200,
            Err(kube::Error::Api(s)) => s.code,
            Err(e) => panic!("PATCH {path}: {e}"),
        }
    }

    /// A kubeconfig for meta-cni (server = the forwarder in the node namespace) with the
    /// token of a new ServiceAccount `kube-system/<sa>` bound to a new ClusterRole of
    /// `rules` (RBAC rules as JSON).
    pub fn kubeconfig_with_rules(&self, sa: &str, rules: Value) -> PathBuf {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        let pp = PostParams::default();
        let token = self.rt.block_on(async {
            let o: ServiceAccount = serde_json::from_value(
                json!({"metadata": {"name": sa, "namespace": "kube-system"}}),
            )
            .unwrap();
            let sas: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), "kube-system");
            sas.create(&pp, &o).await.expect("create ServiceAccount");
            let role: ClusterRole =
                serde_json::from_value(json!({"metadata": {"name": sa}, "rules": rules})).unwrap();
            Api::<ClusterRole>::all(self.admin.clone())
                .create(&pp, &role)
                .await
                .expect("create ClusterRole");
            let binding: ClusterRoleBinding = serde_json::from_value(json!({
                "metadata": {"name": sa},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sa},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": "kube-system"}]
            }))
            .unwrap();
            Api::<ClusterRoleBinding>::all(self.admin.clone())
                .create(&pp, &binding)
                .await
                .expect("create ClusterRoleBinding");
            let tr = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: Some(vec![meta_tests::apiserver::SA_ISSUER.to_string()]),
                    expiration_seconds: Some(3600),
                    ..Default::default()
                }),
                ..Default::default()
            };
            sas.create_token_request(sa, &pp, &tr)
                .await
                .expect("TokenRequest")
                .status
                .expect("TokenRequest status")
                .token
                .expect("TokenRequest token")
        });
        let api = self.api.as_ref().expect("API server running");
        let kc = self.w.path(&format!("{sa}.kubeconfig"));
        kubeconfig_with_server(
            &api.kubeconfig_for_token(&token),
            &kc,
            self.fwd.as_ref().expect("forwarder").addr(),
        );
        kc
    }

    /// meta-cni's configuration for direct runs (no runtimeConfig: the pod is looked up
    /// in the API server), with `extra` keys merged in.
    pub fn conf(&self, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": "meta-e2e", "type": "meta-cni",
            "kubeconfig": self.kubeconfig, "clusterNetwork": "cluster",
            "confDir": self.conf_dir, "cniDir": self.cache, "binDir": self.bin,
            "apiTimeoutSeconds": 2,
        });
        if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        c
    }

    /// Runs meta-cni (the real binary) in the node namespace for pod netns `pod` of the
    /// World, as pod `name` with `uid`.
    pub fn run(
        &self,
        verb: &str,
        cid: &str,
        pod: usize,
        name: &str,
        uid: &str,
        conf: &Value,
    ) -> Run {
        let netns = self.w.pod(pod);
        self.run_netns(verb, cid, &netns, name, uid, conf)
    }

    /// Like [`E2e::run`] with an explicit CNI_NETNS (may be "").
    pub fn run_netns(
        &self,
        verb: &str,
        cid: &str,
        netns: &str,
        name: &str,
        uid: &str,
        conf: &Value,
    ) -> Run {
        self.run_as(verb, cid, netns, NS, name, uid, conf)
    }

    /// Like [`E2e::run_netns`] for a pod of namespace `ns`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_as(
        &self,
        verb: &str,
        cid: &str,
        netns: &str,
        ns: &str,
        name: &str,
        uid: &str,
        conf: &Value,
    ) -> Run {
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={uid}"
        );
        let path = format!("{}:{REFERENCE_DIR}", self.bin.display());
        let inv = Invocation {
            verb,
            container_id: cid,
            netns,
            ifname: "eth0",
            args: &args,
            path: &path,
            ..Default::default()
        };
        run_in(
            self.w.node.netns(),
            &meta_bin(),
            &inv,
            conf.to_string().as_bytes(),
        )
    }

    /// host-local reservations (files named by IP) in the three data dirs.
    pub fn reservations(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (n, d) in &self.ipam {
            for k in dir_contents(d).into_keys() {
                let file = k.rsplit('/').next().unwrap_or_default();
                if file.parse::<std::net::IpAddr>().is_ok() {
                    v.push(format!("{n}:{k}"));
                }
            }
        }
        v
    }

    /// Waits until DEL's handed-off network-status clears are done: the worker removes the
    /// spool (`<cniDir>/handoff`) when it has no job left. Panics after `limit`, naming
    /// the jobs left.
    pub fn wait_handoff(&self, limit: Duration) {
        let spool = self.cache.join(meta_cni::handoff::SPOOL);
        let t = Instant::now();
        while spool.exists() {
            assert!(
                t.elapsed() < limit,
                "hand-off jobs still waiting after {limit:?}: {:?}",
                dir_contents(&spool).into_keys().collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Entries of meta-cni's cache dir (journal files, locks, anything) but the hand-off
    /// spool of network-status clears, which tests look at on its own.
    pub fn cache_entries(&self) -> Vec<String> {
        dir_contents(&self.cache)
            .into_keys()
            .filter(|k| {
                let k = k.trim_end_matches('/');
                k != meta_cni::handoff::SPOOL
                    && !k.starts_with(&format!("{}/", meta_cni::handoff::SPOOL))
            })
            .collect()
    }

    /// Attachment leftovers on the node: veths other than the macvlan parent pair, and
    /// macvlans (name, kind).
    pub fn node_leftovers(&self) -> Vec<String> {
        leftover_links(self.w.node.netns())
    }

    /// Nothing of any attachment is left: the given pod netns hold only lo, the node no
    /// veth/macvlan, no IP is reserved, meta-cni's cache is empty.
    pub fn assert_clean(&self, pods: &[usize], ctx: &str) {
        for &p in pods {
            assert_eq!(
                meta_tests::link_names(self.w.pods[p].netns()),
                vec!["lo"],
                "{ctx}: links left in pod netns {p}"
            );
        }
        assert_eq!(
            self.node_leftovers(),
            Vec::<String>::new(),
            "{ctx}: node links left"
        );
        assert_eq!(self.reservations(), Vec::<String>::new(), "{ctx}: IPs left");
        assert_eq!(
            self.cache_entries(),
            Vec::<String>::new(),
            "{ctx}: meta-cni cache left"
        );
    }

    /// containerd's CNI configuration directory (`ctd-net.d` in the World) with meta-cni's
    /// conflist as deploy/ ships it (pod annotations from the runtime), asking the agent
    /// at `agent_socket`; returns the directory and the conflist file.
    pub fn containerd_conflist(&self, agent_socket: &Path) -> (PathBuf, PathBuf) {
        let conf = self.conf(json!({
            "agentSocket": agent_socket,
            "capabilities": {"io.kubernetes.cri.pod-annotations": true}
        }));
        let dir = self.w.path("ctd-net.d");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("00-meta-cni.conflist");
        std::fs::write(
            &file,
            json!({"cniVersion": "1.0.0", "name": "meta-e2e", "plugins": [conf]}).to_string(),
        )
        .unwrap();
        (dir, file)
    }

    /// The journal's attachments of container `cid` as (network, ifname, state), in
    /// journal order; empty without an entry.
    pub fn journal_attachments(&self, cid: &str) -> Vec<(String, String, String)> {
        meta_cni::journal::peek(&self.cache, cid, "eth0")
            .expect("journal readable")
            .map(|en| {
                en.attachments
                    .iter()
                    .map(|a| {
                        (
                            a.network.clone(),
                            a.ifname.clone(),
                            format!("{:?}", a.state),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The wrapper's log lines.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// veth links other than the macvlan parent pair, and macvlans, in `ns`.
pub fn leftover_links(ns: &Netns) -> Vec<String> {
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    nl.links()
        .expect("links")
        .into_iter()
        .filter(|l| match l.kind.as_deref() {
            Some("veth") => l.name != MACVLAN_PARENT && l.name != MACVLAN_PARENT_PEER,
            Some("macvlan") | Some("ipvlan") => true,
            _ => false,
        })
        .map(|l| format!("{} ({})", l.name, l.kind.unwrap_or_default()))
        .collect()
}

/// MAC address of `ifname` in `ns`, lowercase hex with colons.
pub fn mac_of(ns: &Netns, ifname: &str) -> String {
    let mut nl = Netlink::open(Some(ns)).expect("netlink");
    let l = nl
        .link_by_name(ifname)
        .expect("links")
        .unwrap_or_else(|| panic!("{ifname} not found"));
    meta_netlink::format_mac(&l.mac.expect("mac"))
}

/// The `meta-cni-agent` binary of this workspace, built with this build's cargo and
/// target directory (integration tests only get their own package's binaries).
pub fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target dir");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "meta-cni-agent",
        "--bin",
        "meta-cni-agent",
    ])
    .env("CARGO_TARGET_DIR", target_dir)
    .current_dir(repo_root());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cargo build -p meta-cni-agent");
    assert!(
        out.status.success(),
        "cargo build -p meta-cni-agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    profile_dir.join("meta-cni-agent")
}

/// A pod bound to `node` (the agent's pod cache holds only its node's pods); returns its UID.
pub fn create_node_pod(e: &E2e, node: &str, name: &str, networks: &str) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS,
                     "annotations": {meta_crd::NETWORKS_ANNOTATION: networks}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "localhost/e2e/app:1"}]}
    }))
    .unwrap();
    let api: Api<Pod> = Api::namespaced(e.admin.clone(), NS);
    e.rt.block_on(api.create(&PostParams::default(), &pod))
        .expect("create pod")
        .metadata
        .uid
        .expect("uid")
}

/// The node agent's kubeconfig (its own ServiceAccount's token, in the World's scratch
/// directory) for the API server at `server`.
pub fn agent_kubeconfig(e: &E2e, server: SocketAddr) -> PathBuf {
    let api = e.api.as_ref().expect("API server");
    let token = e.rt.block_on(meta_tests::kube::service_account_token(
        &e.admin,
        "kube-system",
        "meta-cni-agent",
    ));
    let kc = e.w.path("agent.kubeconfig");
    kubeconfig_with_server(&api.kubeconfig_for_token(&token), &kc, server);
    kc
}

/// A forwarder of the agent's own to the API server, in the node namespace (so the
/// plugin's, `e.fwd`, counts only the plugin's connections), and the agent's kubeconfig
/// through it.
pub fn agent_api_access(e: &E2e) -> (meta_tests::kube::Forwarder, PathBuf) {
    let upstream: SocketAddr = e
        .api
        .as_ref()
        .expect("API server")
        .url()
        .trim_start_matches("https://")
        .parse()
        .expect("API server address");
    let fwd = meta_tests::kube::Forwarder::start(
        e.w.node.netns(),
        "127.0.0.1:0".parse().expect("addr"),
        upstream,
    );
    let kc = agent_kubeconfig(e, fwd.addr());
    (fwd, kc)
}

/// The node agent's environment in these tests: node `node`, the API server through
/// `kubeconfig`, its socket at `socket`, every state path under the World's `agent/`, a
/// 1 s poll; then `extra`.
pub fn agent_env(
    e: &E2e,
    node: &str,
    kubeconfig: &Path,
    socket: &Path,
    extra: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let p = |name: &str| e.w.path(name).display().to_string();
    let mut env = vec![
        ("NODE_NAME", node.to_string()),
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("META_CNI_AGENT_CLUSTER_CIDR", "10.244.0.0/16".to_string()),
        ("META_CNI_AGENT_SOCKET", socket.display().to_string()),
        ("META_CNI_AGENT_SUBNET_FILE", p("agent/subnet.env")),
        ("META_CNI_AGENT_FIREWALL_LOCK", p("agent/firewall.lock")),
        ("META_CNI_AGENT_SEGMENT_STATE_DIR", p("agent/vxlan")),
        ("META_CNI_AGENT_IPAM_DATA_DIR", p("agent/ipam")),
        ("META_CNI_AGENT_POLL", "1s".to_string()),
    ];
    env.extend(extra.iter().cloned());
    env
}

/// Spawns the real agent in the node namespace with `env` (stderr piped).
pub fn spawn_agent(e: &E2e, env: &[(&'static str, String)]) -> std::process::Child {
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let inv = Invocation {
        extra_env: extra,
        ..Default::default()
    };
    meta_tests::spawn_in(e.w.node.netns(), &agent_bin(), &inv, b"")
}

/// The agent's status at `socket` once both its caches are synced and `ready` holds for
/// it; None after 60 s.
pub fn agent_synced(
    socket: &Path,
    ready: impl Fn(&meta_crd::agent_api::Status) -> bool,
) -> Option<meta_crd::agent_api::Status> {
    use meta_crd::agent_api::{Client, Op, Request};
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let st = Client::connect(socket, Duration::from_secs(2))
            .and_then(|mut c| c.ask(&Request::new(Op::Status)))
            .ok()
            .and_then(|r| r.status);
        if let Some(s) = st.filter(|s| s.nads.synced && s.pods.synced && ready(s)) {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// `(verb, path of requestURI)` of the audit events of `user` after the first `skip` events.
pub fn requests_of(events: &[Value], skip: usize, user: &str) -> Vec<(String, String)> {
    events[skip..]
        .iter()
        .filter(|ev| ev["user"]["username"] == user)
        .map(|ev| {
            (
                ev["verb"].as_str().unwrap_or_default().to_string(),
                // without the query (kube-rs sends an empty one: `?`)
                ev["requestURI"]
                    .as_str()
                    .unwrap_or_default()
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// Makes an admin request to a unique path and waits until the audit log holds it: every
/// request answered before it is in the log too. Returns the events.
pub fn settled_events(e: &E2e, marker: &str) -> Vec<Value> {
    let api = e.api.as_ref().expect("API server");
    let path = format!("/api/v1/namespaces/{NS}/configmaps/{marker}");
    let _ = api.admin_get(&path);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let evs = api.audit_events();
        if evs
            .iter()
            .any(|ev| ev["requestURI"].as_str() == Some(path.as_str()))
        {
            return evs;
        }
        assert!(Instant::now() < deadline, "marker {marker} never audited");
        std::thread::sleep(Duration::from_millis(50));
    }
}
