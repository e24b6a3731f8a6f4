//! The attachment plan: eth0 = the cluster network (or the pod's default-network override),
//! then `defaultNetworks`, then the pod's `k8s.v1.cni.cncf.io/networks` as net1..netN (or
//! the interface each asks for).

use crate::config::MetaConf;
use crate::journal::{Attachment, State};
use crate::source::Source;
use cni_core::{Error, Result};
use meta_crd::NadConfig;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The pod as the plan sees it.
#[derive(Debug, Clone, Default)]
pub struct PodCtx {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Annotations (from the runtime or the API server).
    pub annotations: BTreeMap<String, String>,
}

pub use meta_bundle::as_conflist;

/// Finds a configuration in `dir` whose network name (or file stem) is `name`: `.conflist`,
/// `.conf` and `.json` files in name order, like libcni's `LoadConfList`.
pub fn find_in_conf_dir(dir: &Path, name: &str) -> Result<Option<Value>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read confDir {}: {e}", dir.display()))),
    };
    let mut files: Vec<_> = rd
        .flatten()
        .map(|d| d.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&text) else {
            tracing::warn!("confDir: {} is not a JSON object, skipped", f.display());
            continue;
        };
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if m.get("name").and_then(Value::as_str) == Some(name) || stem == name {
            return Ok(Some(as_conflist(m)));
        }
    }
    Ok(None)
}

fn nad_conflist(conf: &MetaConf, src: &mut dyn Source, ns: &str, name: &str) -> Result<Value> {
    let nc = src.nad(ns, name)?.ok_or_else(|| {
        Error::config(format!("NetworkAttachmentDefinition {ns}/{name} not found"))
    })?;
    match nc {
        NadConfig::Conf(m) | NadConfig::ConfList(m) => Ok(as_conflist(m)),
        NadConfig::ConfDir { name: n } => find_in_conf_dir(&conf.conf_dir, &n)?.ok_or_else(|| {
            Error::config(format!(
                "NetworkAttachmentDefinition {ns}/{name} has no spec.config and confDir {} has no network {n:?}",
                conf.conf_dir.display()
            ))
        }),
    }
}

fn split_ref<'a>(r: &'a str, default_ns: &'a str) -> (&'a str, &'a str) {
    match r.split_once('/') {
        Some((ns, n)) => (ns, n),
        None => (default_ns, r),
    }
}

/// `namespaceIsolation`: a network the pod names (`what`, e.g. `networks[1]`) in the NAD
/// namespace `nad_ns` for its interface `ifname` must be in the pod's namespace or a
/// global one ([`meta_crd::Isolation`]); else an invalid-configuration error (7) naming the
/// network, the interface and the rule.
fn check_isolation(
    conf: &MetaConf,
    pod: &PodCtx,
    what: &str,
    nad_ns: &str,
    id: &str,
    ifname: &str,
) -> Result<()> {
    conf.isolation()
        .check((&pod.namespace, &pod.name), what, nad_ns, id, ifname)
        .map_err(Error::config)
}

/// The pod's own namespace (K8S_POD_NAMESPACE) must be a valid namespace name: networks
/// without a namespace are looked up there, so an invalid one is the runtime's error,
/// not the annotation's.
pub fn check_pod_namespace(namespace: &str, name: &str) -> Result<()> {
    meta_crd::validate::validate_namespace(namespace).map_err(|r| {
        Error::env(format!(
            "pod {namespace}/{name}: the pod's namespace {namespace:?} (K8S_POD_NAMESPACE in CNI_ARGS) is invalid: {r}"
        ))
    })
}

/// Resolves the cluster network: absolute path, NAD, or confDir entry.
fn cluster_conflist(conf: &MetaConf, src: &mut dyn Source) -> Result<(String, Value)> {
    if let Some(cn) = conf.cluster_network.as_deref().filter(|s| !s.is_empty()) {
        if cn.starts_with('/') {
            let text = std::fs::read_to_string(cn)
                .map_err(|e| Error::config(format!("clusterNetwork file {cn}: {e}")))?;
            let m = match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => m,
                _ => {
                    return Err(Error::config(format!(
                        "clusterNetwork file {cn} is not a JSON object"
                    )));
                }
            };
            let v = as_conflist(m);
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(cn)
                .to_string();
            return Ok((name, v));
        }
        // A file in confDir first (no API round trip), then a NAD.
        if let Some(v) = find_in_conf_dir(&conf.conf_dir, cn)? {
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(cn)
                .to_string();
            return Ok((name, v));
        }
        let (ns, n) = split_ref(cn, &conf.multus_namespace);
        let v = nad_conflist(conf, src, ns, n).map_err(|e| {
            e.context(format!(
                "clusterNetwork {cn:?} is neither in confDir {} nor a NAD",
                conf.conf_dir.display()
            ))
        })?;
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(n)
            .to_string();
        return Ok((name, v));
    }
    match conf.delegates.first() {
        Some(Value::Object(m)) => {
            let v = as_conflist(m.clone());
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("cluster")
                .to_string();
            Ok((name, v))
        }
        _ => Err(Error::config(
            "delegates[0] must be a CNI configuration object",
        )),
    }
}

/// The attachment of the pod's `networks[i]` element `el` on interface `ifname`: isolation
/// checked, its NAD resolved, capabilities checked, `args.cni` and `default-route` taken.
/// ADD's plan and hot-plug ([`crate::hotplug`]) both resolve elements with this.
pub fn element_attachment(
    conf: &MetaConf,
    pod: &PodCtx,
    i: usize,
    el: &meta_crd::NetworkSelectionElement,
    ifname: String,
    src: &mut dyn Source,
) -> Result<Attachment> {
    let id = el.namespaced_name();
    check_isolation(
        conf,
        pod,
        &format!("networks[{i}]"),
        &el.namespace,
        &id,
        &ifname,
    )?;
    let list = nad_conflist(conf, src, &el.namespace, &el.name)
        .map_err(|e| e.context(format!("pod {}/{}: networks[{i}]", pod.namespace, pod.name)))?;
    let caps = meta_crd::pod::capability_args(el).map_err(|e| Error::internal(e.to_string()))?;
    meta_crd::pod::check_capabilities((&pod.namespace, &pod.name), i, &id, &caps, &list)
        .map_err(Error::config)?;
    Ok(Attachment {
        network: id,
        ifname,
        conf: list,
        cap_args: caps,
        cni_args: el.cni_args.clone(),
        default_route: el.default_route.clone(),
        is_cluster: false,
        state: State::Planned,
        result: None,
    })
}

/// Builds the plan. `runtime_rc` is the runtime's own runtimeConfig (given to the cluster
/// network only); `pod` is None when the runtime gave no Kubernetes pod identity.
pub fn build(
    conf: &MetaConf,
    runtime_ifname: &str,
    runtime_rc: &Map<String, Value>,
    pod: Option<&PodCtx>,
    src: &mut dyn Source,
) -> Result<Vec<Attachment>> {
    let mut out = Vec::new();
    let attach = |network: String,
                  ifname: String,
                  conf: Value,
                  cap_args: Map<String, Value>,
                  is_cluster: bool| Attachment {
        network,
        ifname,
        conf,
        cap_args,
        cni_args: None,
        default_route: Vec::new(),
        is_cluster,
        state: State::Planned,
        result: None,
    };

    // eth0: the pod's default-network override, else the cluster network.
    let mut rc = runtime_rc.clone();
    rc.remove("io.kubernetes.cri.pod-annotations");
    if let Some(p) = pod {
        check_pod_namespace(&p.namespace, &p.name)?;
    }
    let override_ = pod.and_then(|p| {
        p.annotations
            .get(meta_crd::DEFAULT_NETWORK_ANNOTATION)
            .map(|v| (p, v))
    });
    if let Some((p, value)) = override_ {
        let sel = meta_crd::parse_default_network(value, &conf.multus_namespace)
            .map_err(|e| Error::config(format!("pod {}/{}: {e}", p.namespace, p.name)))?;
        let el = sel.network;
        check_isolation(
            conf,
            p,
            "default-network",
            &el.namespace,
            &el.namespaced_name(),
            runtime_ifname,
        )?;
        let list = nad_conflist(conf, src, &el.namespace, &el.name)?;
        out.push(attach(
            el.namespaced_name(),
            runtime_ifname.to_string(),
            list,
            rc,
            true,
        ));
    } else {
        let (name, list) = cluster_conflist(conf, src)?;
        out.push(attach(name, runtime_ifname.to_string(), list, rc, true));
    }

    let Some(pod) = pod else { return Ok(out) };
    let mut idx = 0usize;
    if !conf.is_system_namespace(&pod.namespace) {
        for dn in &conf.default_networks {
            idx += 1;
            let (ns, n) = split_ref(dn, &conf.multus_namespace);
            let list = nad_conflist(conf, src, ns, n)
                .map_err(|e| e.context(format!("defaultNetworks {dn:?}")))?;
            out.push(attach(
                format!("{ns}/{n}"),
                meta_crd::pod::default_ifname(idx),
                list,
                Map::new(),
                false,
            ));
        }
    }
    if let Some(value) = pod.annotations.get(meta_crd::NETWORKS_ANNOTATION) {
        let sel = meta_crd::parse_network_selection(value, &pod.namespace)
            .map_err(|e| Error::config(format!("pod {}/{}: {e}", pod.namespace, pod.name)))?;
        for w in &sel.warnings {
            tracing::warn!("pod {}/{}: {w}", pod.namespace, pod.name);
        }
        for (i, el) in sel.networks.iter().enumerate() {
            idx += 1;
            let ifname = meta_crd::pod::element_ifname(el, idx);
            out.push(element_attachment(conf, pod, i, el, ifname, src)?);
        }
    }
    // Interface names unique in the pod, default-route on one network at most.
    let planned: Vec<_> = out
        .iter()
        .map(|a| meta_crd::pod::PlannedInterface {
            ifname: &a.ifname,
            network: &a.network,
            default_route: !a.default_route.is_empty(),
        })
        .collect();
    meta_crd::pod::check_interfaces((&pod.namespace, &pod.name), &planned)
        .map_err(Error::config)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::PodInfo;
    use serde_json::json;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake(HashMap<(String, String), NadConfig>);
    impl Source for Fake {
        fn pod(&mut self, _: &str, _: &str) -> Result<Option<PodInfo>> {
            Ok(None)
        }
        fn nad(&mut self, ns: &str, name: &str) -> Result<Option<NadConfig>> {
            Ok(self.0.get(&(ns.to_string(), name.to_string())).cloned())
        }
        fn set_network_status(&mut self, _: &str, _: &str, _: Option<&str>, _: &str) -> Result<()> {
            Ok(())
        }
        fn has_pods(&self) -> bool {
            false
        }
    }

    fn conf_map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn world() -> (tempfile::TempDir, Fake) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("10-cluster.conflist"),
            json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [{"type": "bridge", "capabilities": {"portMappings": true}}]}).to_string(),
        )
        .unwrap();
        std::fs::write(
            d.path().join("file-net.conf"),
            json!({"cniVersion": "1.0.0", "name": "file-net", "type": "bridge"}).to_string(),
        )
        .unwrap();
        let mut f = Fake::default();
        let nad = |t: &str, caps: Value| {
            NadConfig::Conf(conf_map(
                json!({"cniVersion": "1.0.0", "name": t, "type": t, "capabilities": caps}),
            ))
        };
        f.0.insert(("ns1".into(), "a".into()), nad("bridge", json!({})));
        f.0.insert(
            ("ns1".into(), "b".into()),
            nad("macvlan", json!({"mac": true, "ips": true})),
        );
        f.0.insert(("ns2".into(), "c".into()), nad("bridge", json!({})));
        f.0.insert(
            ("kube-system".into(), "dflt".into()),
            nad("ipvlan", json!({})),
        );
        f.0.insert(
            ("kube-system".into(), "other-cluster".into()),
            nad("vxlan", json!({})),
        );
        f.0.insert(
            ("ns1".into(), "nocfg".into()),
            NadConfig::ConfDir {
                name: "file-net".into(),
            },
        );
        f.0.insert(
            ("ns1".into(), "ghost".into()),
            NadConfig::ConfDir {
                name: "nowhere".into(),
            },
        );
        (d, f)
    }

    fn meta(d: &Path, extra: Value) -> MetaConf {
        let mut m = json!({"clusterNetwork": "cluster", "confDir": d});
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        serde_json::from_value(m).unwrap()
    }

    fn pod(ns: &str, anns: &[(&str, &str)]) -> PodCtx {
        PodCtx {
            namespace: ns.into(),
            name: "p".into(),
            annotations: anns
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const NETS: &str = "k8s.v1.cni.cncf.io/networks";
    const DEFNET: &str = "v1.multus-cni.io/default-network";

    fn plan(extra: Value, p: Option<PodCtx>) -> Result<Vec<Attachment>> {
        let (d, mut f) = world();
        let rc = conf_map(
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                                "io.kubernetes.cri.pod-annotations": {"x": "y"}}),
        );
        build(&meta(d.path(), extra), "eth0", &rc, p.as_ref(), &mut f)
    }

    fn names(a: &[Attachment]) -> Vec<(String, String)> {
        a.iter()
            .map(|a| (a.network.clone(), a.ifname.clone()))
            .collect()
    }

    #[test]
    fn cluster_only_without_pod() {
        let a = plan(json!({}), None).unwrap();
        assert_eq!(names(&a), vec![("cluster".into(), "eth0".into())]);
        assert!(a[0].is_cluster);
        // The runtime's runtimeConfig goes to the cluster network, minus the annotations.
        assert!(a[0].cap_args.contains_key("portMappings"));
        assert!(
            !a[0]
                .cap_args
                .contains_key("io.kubernetes.cri.pod-annotations")
        );
        assert_eq!(a[0].conf["plugins"][0]["type"], "bridge");
    }

    #[test]
    fn default_networks_then_annotation_with_numbering() {
        let p = pod("ns1", &[(NETS, "a, ns2/c@data0, b")]);
        let a = plan(json!({"defaultNetworks": ["dflt"]}), Some(p)).unwrap();
        assert_eq!(
            names(&a),
            vec![
                ("cluster".into(), "eth0".into()),
                ("kube-system/dflt".into(), "net1".into()),
                ("ns1/a".into(), "net2".into()),
                ("ns2/c".into(), "data0".into()),
                ("ns1/b".into(), "net4".into()),
            ]
        );
        assert!(
            a[1..].iter().all(|x| x.cap_args.is_empty()),
            "the runtime's args only go to the cluster network"
        );
    }

    #[test]
    fn system_namespaces_skip_default_networks() {
        let p = pod("kube-system", &[]);
        let a = plan(json!({"defaultNetworks": "dflt"}), Some(p)).unwrap();
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn default_network_override() {
        let p = pod("ns1", &[(DEFNET, "other-cluster")]);
        let a = plan(json!({}), Some(p)).unwrap();
        assert_eq!(
            names(&a),
            vec![("kube-system/other-cluster".into(), "eth0".into())]
        );
        assert_eq!(a[0].conf["plugins"][0]["type"], "vxlan");
    }

    #[test]
    fn isolation() {
        let p = pod("ns1", &[(NETS, "a, ns2/c")]);
        let e = plan(json!({"namespaceIsolation": true}), Some(p.clone())).unwrap_err();
        assert_eq!(e.code, 7);
        // The cause (isolation and the rule), the network, its interface, the element.
        assert_eq!(
            e.msg,
            "pod ns1/p: networks[1] ns2/c (net2) refused by namespaceIsolation: the NAD's \
             namespace \"ns2\" is neither the pod's namespace \"ns1\" nor a global namespace \
             [default (globalNamespaces unset)]; use a NAD of namespace \"ns1\" or list \"ns2\" \
             in globalNamespaces"
        );
        let e = plan(
            json!({"namespaceIsolation": true, "globalNamespaces": "ns3, ns4"}),
            Some(pod("ns1", &[(NETS, "ns2/c@data0")])),
        )
        .unwrap_err();
        assert!(
            e.msg
                .contains("networks[0] ns2/c (data0) refused by namespaceIsolation")
                && e.msg.contains("[ns3, ns4]"),
            "{}",
            e.msg
        );
        assert!(
            plan(
                json!({"namespaceIsolation": true, "globalNamespaces": "ns2, ns3"}),
                Some(p)
            )
            .is_ok()
        );
        // multusNamespace is not open to what a pod names (Multus's rule)...
        let p = pod("ns1", &[(NETS, "kube-system/dflt")]);
        let e = plan(json!({"namespaceIsolation": true}), Some(p)).unwrap_err();
        assert!(
            e.msg.contains("kube-system/dflt (net1) refused"),
            "{}",
            e.msg
        );
        // ... but the networks the configuration names are never restricted.
        let p = pod("ns1", &[(NETS, "a")]);
        let a = plan(
            json!({"namespaceIsolation": true, "clusterNetwork": "kube-system/other-cluster",
                   "defaultNetworks": ["dflt", "ns2/c"]}),
            Some(p),
        )
        .unwrap();
        assert_eq!(
            names(&a),
            vec![
                ("vxlan".into(), "eth0".into()),
                ("kube-system/dflt".into(), "net1".into()),
                ("ns2/c".into(), "net2".into()),
                ("ns1/a".into(), "net3".into()),
            ]
        );
        // The default-network annotation is the pod's too: the same rule, on eth0.
        let p = pod("ns1", &[(DEFNET, "ns2/c")]);
        let e = plan(json!({"namespaceIsolation": true}), Some(p)).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg
                .contains("default-network ns2/c (eth0) refused by namespaceIsolation"),
            "{}",
            e.msg
        );
        let p = pod("ns1", &[(DEFNET, "other-cluster")]);
        let e = plan(json!({"namespaceIsolation": true}), Some(p.clone())).unwrap_err();
        assert!(
            e.msg.contains("kube-system/other-cluster (eth0)"),
            "{}",
            e.msg
        );
        assert!(
            plan(
                json!({"namespaceIsolation": true, "globalNamespaces": "kube-system"}),
                Some(p)
            )
            .is_ok()
        );
    }

    /// The fixture table shared with tests/e2e.rs (the same verdicts against a real API
    /// server).
    #[test]
    fn isolation_table() {
        let table: Value =
            serde_json::from_str(include_str!("../tests/fixtures/isolation.json")).unwrap();
        let cases = table["cases"].as_array().unwrap();
        assert!(cases.len() >= 20);
        let (d, mut f) = world();
        for ns in ["test", "default", "kube-system", "other"] {
            f.0.insert(
                (ns.into(), "net1".into()),
                NadConfig::Conf(conf_map(
                    json!({"cniVersion": "1.0.0", "name": "net1", "type": "bridge"}),
                )),
            );
        }
        for c in cases {
            let mut extra = json!({});
            for k in ["namespaceIsolation", "globalNamespaces"] {
                if let Some(v) = c.get(k) {
                    extra[k] = v.clone();
                }
            }
            let pod_ns = c["pod"].as_str().unwrap();
            let network = c["network"].as_str().unwrap();
            let p = pod(pod_ns, &[(NETS, network)]);
            let got = build(
                &meta(d.path(), extra),
                "eth0",
                &Map::new(),
                Some(&p),
                &mut f,
            );
            let id = if network.contains('/') {
                network.to_string()
            } else {
                format!("{pod_ns}/{network}")
            };
            if c["allowed"].as_bool().unwrap() {
                let a = got.unwrap_or_else(|e| panic!("{c}: refused: {}", e.msg));
                assert_eq!(names(&a)[1], (id, "net1".to_string()), "{c}");
            } else {
                let e = got.err().unwrap_or_else(|| panic!("{c}: allowed"));
                assert_eq!(e.code, 7, "{c}");
                assert!(
                    e.msg.contains(&format!(
                        "networks[0] {id} (net1) refused by namespaceIsolation"
                    )),
                    "{c}: {}",
                    e.msg
                );
            }
        }
    }

    #[test]
    fn invalid_pod_namespace_is_named_as_such() {
        let p = pod("Bad_NS", &[(NETS, "a")]);
        let e = plan(json!({}), Some(p)).unwrap_err();
        assert_eq!(e.code, 4, "{}", e.msg);
        assert!(
            e.msg.starts_with(
                "pod Bad_NS/p: the pod's namespace \"Bad_NS\" (K8S_POD_NAMESPACE in CNI_ARGS) is invalid"
            ),
            "{}",
            e.msg
        );
        assert!(!e.msg.contains("networks[0]"), "{}", e.msg);
    }

    #[test]
    fn duplicate_interfaces() {
        let p = pod("ns1", &[(NETS, "a@net2, b")]);
        let e = plan(json!({}), Some(p)).unwrap_err();
        assert!(e.msg.contains("\"net2\" is used twice"), "{}", e.msg);
        let p = pod("ns1", &[(NETS, "a@eth0")]);
        assert!(
            plan(json!({}), Some(p))
                .unwrap_err()
                .msg
                .contains("\"eth0\"")
        );
    }

    #[test]
    fn capabilities_routed_or_refused() {
        let p = pod(
            "ns1",
            &[(
                NETS,
                r#"[{"name": "b", "mac": "02:00:00:00:00:09", "ips": ["10.1.1.5/24"], "cni-args": {"foo": "bar"}, "default-route": ["10.1.1.1"]}]"#,
            )],
        );
        let a = plan(json!({}), Some(p)).unwrap();
        assert_eq!(a[1].cap_args["mac"], "02:00:00:00:00:09");
        assert_eq!(a[1].cap_args["ips"], json!(["10.1.1.5/24"]));
        assert_eq!(a[1].cni_args.as_ref().unwrap()["foo"], "bar");
        assert_eq!(
            a[1].default_route,
            vec!["10.1.1.1".parse::<std::net::IpAddr>().unwrap()]
        );
        let p = pod(
            "ns1",
            &[(NETS, r#"[{"name": "a", "mac": "02:00:00:00:00:09"}]"#)],
        );
        let e = plan(json!({}), Some(p)).unwrap_err();
        assert!(
            e.msg.contains("\"mac\"") && e.msg.contains("capability"),
            "{}",
            e.msg
        );
        let p = pod(
            "ns1",
            &[(
                NETS,
                r#"[{"name": "a", "portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}]}]"#,
            )],
        );
        assert!(
            plan(json!({}), Some(p))
                .unwrap_err()
                .msg
                .contains("portMappings")
        );
    }

    #[test]
    fn only_one_default_route() {
        let p = pod(
            "ns1",
            &[(
                NETS,
                r#"[{"name": "b", "default-route": ["10.1.1.1"]}, {"name": "a", "default-route": ["10.2.2.1"]}]"#,
            )],
        );
        assert!(
            plan(json!({}), Some(p))
                .unwrap_err()
                .msg
                .contains("default-route")
        );
    }

    #[test]
    fn nad_without_config_uses_conf_dir() {
        let p = pod("ns1", &[(NETS, "nocfg")]);
        let a = plan(json!({}), Some(p)).unwrap();
        assert_eq!(a[1].conf["name"], "file-net");
        let p = pod("ns1", &[(NETS, "ghost")]);
        let e = plan(json!({}), Some(p)).unwrap_err();
        assert!(e.msg.contains("no network \"nowhere\""), "{}", e.msg);
        let p = pod("ns1", &[(NETS, "missing")]);
        let e = plan(json!({}), Some(p)).unwrap_err();
        assert!(e.msg.contains("ns1/missing not found"), "{}", e.msg);
    }

    #[test]
    fn bad_annotation_names_element_and_field() {
        let p = pod(
            "ns1",
            &[(
                NETS,
                r#"[{"name": "a"}, {"name": "b", "ips": ["10.0.0.300"]}]"#,
            )],
        );
        let e = plan(json!({}), Some(p)).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("networks[1].ips[0]"), "{}", e.msg);
    }

    #[test]
    fn cluster_network_resolution_order() {
        // confDir by file stem, then by network name, then NAD, then inline delegates.
        let a = plan(json!({"clusterNetwork": "file-net"}), None).unwrap();
        assert_eq!(a[0].network, "file-net");
        let a = plan(json!({"clusterNetwork": "kube-system/dflt"}), None).unwrap();
        assert_eq!(a[0].network, "ipvlan");
        let a = plan(json!({"clusterNetwork": "dflt"}), None).unwrap();
        assert_eq!(a[0].conf["plugins"][0]["type"], "ipvlan");
        let e = plan(json!({"clusterNetwork": "nope"}), None).unwrap_err();
        assert!(e.msg.contains("clusterNetwork \"nope\""), "{}", e.msg);
        let a = plan(json!({"clusterNetwork": null, "delegates": [{"cniVersion": "1.0.0", "name": "inline", "type": "bridge"}]}), None).unwrap();
        assert_eq!(a[0].network, "inline");
    }
}
