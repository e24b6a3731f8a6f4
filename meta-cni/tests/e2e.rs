//! End-to-end tests of meta-cni against a real kube-apiserver (v1.20.2 + etcd) with the
//! NAD CRD and the RBAC of `deploy/` loaded; meta-cni authenticates with a ServiceAccount
//! token of `deploy/rbac.yaml` only (least privilege), obtained through the TokenRequest
//! API. See `e2e_support` for the setup (and why a TCP relay in the node namespace).
//!
//! - `meta_cni_under_containerd`: containerd 1.6 (CRI) runs meta-cni for a pod sandbox as
//!   kubelet would; the pod's annotations come from the runtime; eth0 + net1 + net2, the
//!   network-status on the Pod object, then StopPodSandbox + RemovePodSandbox leave
//!   nothing, and every DEL containerd makes (also those with CNI_NETNS="") succeeds.
//! - `api_server_paths`: meta-cni run directly, without runtime annotations, so it GETs
//!   the pod; RBAC denials (the token patches pods/status, never pods; credentials
//!   without `patch pods/status` or `get` NADs get an error naming that permission); UID
//!   mismatch; a hung and a stopped API server; DEL from the journal with the API server
//!   down; a missing NAD.
//! - `namespace_isolation_table`: the verdicts of `fixtures/isolation.json` (Multus's
//!   rule) with pods and NADs in four namespaces of the real API server.

mod e2e_support;

use e2e_support::*;
use meta_netlink::Netns;
use meta_tests::containerd::Containerd;
use meta_tests::cri::PodSandboxConfig;
use meta_tests::{iface_state, link_names};
use serde_json::json;
use std::time::{Duration, Instant};

/// The address (without prefix) of the only address of `ifname` in `ns`, asserting it is
/// a /24 in the subnet of `prefix`.
fn only_addr(ns: &Netns, ifname: &str, prefix: &str) -> String {
    let st = iface_state(ns, ifname).unwrap_or_else(|| panic!("{ifname} missing"));
    assert!(st.up, "{ifname} down");
    assert_eq!(st.addrs.len(), 1, "{ifname}: {:?}", st.addrs);
    let (ip, len) = st.addrs[0].split_once('/').unwrap();
    assert!(ip.starts_with(prefix), "{ifname}: {ip} not in {prefix}0/24");
    assert_eq!(len, "24", "{ifname}: {}", st.addrs[0]);
    ip.to_string()
}

/// Checks the network-status of a pod attached to cluster + e2e/blue + e2e/green:
/// Multus's shape, eth0 default, addresses and MACs as in the pod.
fn assert_network_status(
    st: &[meta_crd::NetworkStatus],
    pod: &Netns,
    ips: [&str; 3],
) -> Vec<String> {
    assert_eq!(st.len(), 3, "{st:#?}");
    let want = [
        ("cluster", "eth0"),
        ("e2e/blue", "net1"),
        ("e2e/green", "net2"),
    ];
    for (i, (name, ifname)) in want.iter().enumerate() {
        let s = &st[i];
        assert_eq!(s.name, *name, "{s:?}");
        assert_eq!(s.interface, *ifname, "{s:?}");
        assert_eq!(s.ips, vec![ips[i].to_string()], "{s:?}");
        assert_eq!(s.mac, mac_of(pod, ifname), "{s:?}");
        assert_eq!(s.default, i == 0, "{s:?}: default only on eth0");
    }
    st.iter()
        .map(|s| format!("{}={}", s.interface, s.ips[0]))
        .collect()
}

#[test]
fn meta_cni_under_containerd() {
    let e = E2e::setup(0);
    eprintln!("setup: {:?}", e.timings);
    let meta_log = e.w.path("meta-cni.log");
    let log = || std::fs::read_to_string(&meta_log).unwrap_or_default();
    let ctd_conf = e.w.path("ctd-net.d");
    std::fs::create_dir_all(&ctd_conf).unwrap();
    // The plugin's kubeconfig, a copy that the API-outage rounds below point elsewhere.
    let ctd_kc = e.w.path("ctd.kubeconfig");
    std::fs::copy(&e.kubeconfig, &ctd_kc).unwrap();
    std::fs::write(
        ctd_conf.join("00-meta-cni.conflist"),
        json!({"cniVersion": "1.0.0", "name": "meta-e2e", "plugins": [{
            "type": "meta-cni",
            "kubeconfig": ctd_kc,
            "clusterNetwork": "cluster",
            "confDir": e.conf_dir,
            "cniDir": e.cache,
            "binDir": e.bin,
            "apiTimeoutSeconds": 5,
            "logFile": meta_log,
            "logLevel": "debug",
            "capabilities": {"io.kubernetes.cri.pod-annotations": true}
        }]})
        .to_string(),
    )
    .unwrap();
    // Declared after `e` (World, API server): dropped first.
    let ctd = Containerd::start(e.w.node.netns(), &e.bin, &ctd_conf);
    ctd.wait_network_ready(Duration::from_secs(10)).unwrap();
    let cri = ctd.cri();

    // The Pod object first (as the scheduler/kubelet flow has it), then its sandbox.
    let networks = "blue, green";
    let uid = e.create_pod("web", Some(networks));
    let config =
        PodSandboxConfig::pod("web", NS, &uid).annotation(meta_crd::NETWORKS_ANNOTATION, networks);
    let t = Instant::now();
    let id = cri.run_pod_sandbox(&config).unwrap_or_else(|s| {
        panic!(
            "RunPodSandbox: {s}\n--- meta-cni log ---\n{}\n--- containerd ---\n{}",
            log(),
            ctd.log_tail(30)
        )
    });
    let run_took = t.elapsed();

    let (status, info) = cri.sandbox(&id).unwrap();
    assert!(status.ready(), "{status:?}");
    let netns_path = info.netns_path().expect("sandbox netns");
    let pod = Netns::open(&netns_path).unwrap();
    assert_eq!(link_names(&pod), vec!["eth0", "lo", "net1", "net2"]);
    let eth0 = only_addr(&pod, "eth0", CLUSTER_PREFIX);
    let net1 = only_addr(&pod, "net1", BLUE_PREFIX);
    let net2 = only_addr(&pod, "net2", GREEN_PREFIX);
    assert_eq!(
        iface_state(&pod, "eth0").unwrap().kind.as_deref(),
        Some("veth")
    );
    assert_eq!(
        iface_state(&pod, "net1").unwrap().kind.as_deref(),
        Some("veth")
    );
    assert_eq!(
        iface_state(&pod, "net2").unwrap().kind.as_deref(),
        Some("macvlan")
    );
    assert!(
        iface_state(&pod, "eth0")
            .unwrap()
            .routes
            .iter()
            .any(|r| r.starts_with(&format!("0.0.0.0/0 via {CLUSTER_PREFIX}1 "))),
        "default route via the cluster network"
    );
    // The runtime got the cluster network's result: PodSandboxStatus has eth0's IP.
    assert_eq!(status.ips(), vec![eth0.clone()]);
    // network-status on the Pod object in the API server, written with the SA token.
    let st = e
        .network_status("web")
        .unwrap_or_else(|| panic!("no network-status on the pod; meta-cni log:\n{}", log()));
    let summary = assert_network_status(&st, &pod, [&eth0, &net1, &net2]);
    // Host sides of eth0 and net1 in the node namespace, never in the machine's.
    assert_eq!(e.node_leftovers().len(), 2, "{:?}", e.node_leftovers());
    assert_eq!(e.reservations().len(), 3, "{:?}", e.reservations());

    // Teardown as kubelet does it.
    let t = Instant::now();
    cri.stop_pod_sandbox(&id)
        .unwrap_or_else(|s| panic!("StopPodSandbox: {s}\n--- meta-cni log ---\n{}", log()));
    let stop_took = t.elapsed();
    // The first DEL (with the netns) cleared the network-status, as Multus does (handed
    // off: DEL did not wait for it).
    e.wait_handoff(Duration::from_secs(30));
    assert_eq!(
        e.network_status("web"),
        Some(vec![]),
        "network-status after StopPodSandbox; meta-cni log:\n{}",
        log()
    );
    // kubelet retries StopPodSandbox; containerd then runs DEL again (the netns is gone).
    cri.stop_pod_sandbox(&id).unwrap_or_else(|s| {
        panic!(
            "second StopPodSandbox: {s}\n--- meta-cni log ---\n{}",
            log()
        )
    });
    let t = Instant::now();
    cri.remove_pod_sandbox(&id)
        .unwrap_or_else(|s| panic!("RemovePodSandbox: {s}\n--- meta-cni log ---\n{}", log()));
    let remove_took = t.elapsed();
    assert!(cri.list_pod_sandbox(None).unwrap().is_empty());
    assert!(!netns_path.exists(), "{} still there", netns_path.display());
    assert_eq!(e.node_leftovers(), Vec::<String>::new(), "node links left");
    assert_eq!(e.reservations(), Vec::<String>::new(), "IPs left");
    assert_eq!(e.cache_entries(), Vec::<String>::new(), "journal left");

    // Every call that reached meta-cni, and how it ended.
    let calls = e.calls();
    eprintln!("meta-cni calls:\n  {}", calls.join("\n  "));
    let ends = |verb: &str| -> Vec<String> {
        calls
            .iter()
            .filter(|l| l.starts_with(&format!("END {verb} ")))
            .cloned()
            .collect()
    };
    let adds = ends("ADD");
    let dels = ends("DEL");
    assert_eq!(adds.len(), 1, "{calls:?}");
    for l in adds.iter().chain(&dels) {
        assert!(
            l.ends_with(" rc=0"),
            "failed: {l}\n--- meta-cni log ---\n{}",
            log()
        );
        assert!(l.contains(&format!("id={id}")), "{l}");
    }
    let without_netns = dels.iter().filter(|l| l.contains("netns= ")).count();
    // containerd 1.6: one DEL per StopPodSandbox (the first with the netns) and one more in
    // RemovePodSandbox, the later ones with CNI_NETNS="": three per pod here.
    assert_eq!(dels.len(), 3, "{calls:?}");
    assert!(
        dels[0].contains(&format!("netns={} ", netns_path.display())),
        "{}",
        dels[0]
    );
    assert_eq!(without_netns, 2, "{dels:?}");
    eprintln!(
        "attached {summary:?}; DELs reaching meta-cni: {} ({} with CNI_NETNS=\"\"), all rc=0",
        dels.len(),
        without_netns
    );
    // Teardown during an API outage: (a) hung (connections accepted, never an answer),
    // (b) stopped (connection refused). The pod is set up with the API server up, then
    // the plugin's kubeconfig points at the outage: every DEL succeeds without waiting on
    // the API server (the network-status clear is handed off), nothing is left, and once
    // the kubeconfig points back the pod's network-status is cleared.
    let hole = BlackHole::start(e.w.node.netns());
    let refused = {
        let closed = BlackHole::start(e.w.node.netns());
        closed.addr()
    };
    let mut outages = Vec::new();
    for (round, (what, addr)) in [("hung", hole.addr()), ("stopped", refused)]
        .into_iter()
        .enumerate()
    {
        let name = format!("web-{what}");
        let uid = e.create_pod(&name, Some(networks));
        let config = PodSandboxConfig::pod(&name, NS, &uid)
            .annotation(meta_crd::NETWORKS_ANNOTATION, networks);
        let id = cri
            .run_pod_sandbox(&config)
            .unwrap_or_else(|s| panic!("RunPodSandbox {name}: {s}\n{}", log()));
        assert_eq!(e.network_status(&name).map(|s| s.len()), Some(3));
        kubeconfig_with_server(&e.kubeconfig, &ctd_kc, addr);
        let t = Instant::now();
        cri.stop_pod_sandbox(&id)
            .unwrap_or_else(|s| panic!("StopPodSandbox, API {what}: {s}\n{}", log()));
        let stop = t.elapsed();
        cri.stop_pod_sandbox(&id)
            .unwrap_or_else(|s| panic!("second StopPodSandbox, API {what}: {s}\n{}", log()));
        let t = Instant::now();
        cri.remove_pod_sandbox(&id)
            .unwrap_or_else(|s| panic!("RemovePodSandbox, API {what}: {s}\n{}", log()));
        let remove = t.elapsed();
        assert_eq!(
            e.node_leftovers(),
            Vec::<String>::new(),
            "API {what}: node links left"
        );
        assert_eq!(
            e.reservations(),
            Vec::<String>::new(),
            "API {what}: IPs left"
        );
        assert_eq!(
            e.cache_entries(),
            Vec::<String>::new(),
            "API {what}: journal left"
        );
        let jobs = meta_cni::handoff::jobs(&e.cache.join(meta_cni::handoff::SPOOL));
        assert_eq!(jobs.len(), 1, "API {what}: the clear waits: {jobs:?}");
        assert_eq!(e.network_status(&name).map(|s| s.len()), Some(3));
        std::fs::copy(&e.kubeconfig, &ctd_kc).unwrap();
        let t = Instant::now();
        e.wait_handoff(Duration::from_secs(60));
        let cleared = t.elapsed();
        assert_eq!(
            e.network_status(&name),
            Some(vec![]),
            "API {what}, then back: network-status\n{}",
            log()
        );
        let dels = e
            .calls()
            .into_iter()
            .filter(|l| l.starts_with("END DEL ") && l.contains(&format!("id={id}")))
            .collect::<Vec<_>>();
        assert_eq!(dels.len(), 3, "round {round}: {dels:?}");
        assert!(
            dels.iter().all(|l| l.ends_with(" rc=0")),
            "{dels:?}\n{}",
            log()
        );
        outages.push(format!(
            "API {what}: StopPodSandbox {stop:?}, RemovePodSandbox {remove:?}, status cleared {cleared:?} after the API was back"
        ));
    }
    drop(hole);
    eprintln!(
        "teardown, API up: StopPodSandbox {stop_took:?}, RemovePodSandbox {remove_took:?}; {}",
        outages.join("; ")
    );

    eprintln!(
        "timings: setup {:?} (kube-apiserver {:?}, CRD established {:?}, RBAC+token+NADs {:?}), \
         containerd start {:?}, RunPodSandbox {run_took:?}, StopPodSandbox {stop_took:?}, \
         RemovePodSandbox {remove_took:?}",
        e.timings.total,
        e.timings.apiserver_start,
        e.timings.crd_established,
        e.timings.rbac_token_nads,
        ctd.started_in()
    );
}

#[test]
fn api_server_paths() {
    let mut e = E2e::setup(5);
    eprintln!("setup: {:?}", e.timings);
    let uid_a = e.create_pod("api-a", Some("blue, green"));
    let uid_b = e.create_pod("api-b", Some("blue"));
    let uid_m = e.create_pod("api-missing", Some("blue, e2e/nope"));
    let conf = e.conf(json!({}));
    let mut timings = Vec::new();

    // 1. ADD: pod (annotations + UID) and NADs from the API server, network-status back.
    let t = Instant::now();
    let r = e.run("ADD", "cid-a", 0, "api-a", &uid_a, &conf).ok();
    timings.push(("ADD via API", t.elapsed()));
    let pod0 = e.w.pods[0].netns();
    assert_eq!(link_names(pod0), vec!["eth0", "lo", "net1", "net2"]);
    let eth0 = only_addr(pod0, "eth0", CLUSTER_PREFIX);
    let net1 = only_addr(pod0, "net1", BLUE_PREFIX);
    let net2 = only_addr(pod0, "net2", GREEN_PREFIX);
    assert_eq!(
        r.value()["ips"][0]["address"],
        format!("{eth0}/24"),
        "the runtime gets the cluster network's result"
    );
    let st = e
        .network_status("api-a")
        .unwrap_or_else(|| panic!("no network-status; stderr {}", r.stderr));
    assert_network_status(&st, pod0, [&eth0, &net1, &net2]);
    assert_eq!(e.reservations().len(), 3, "{:?}", e.reservations());

    // 2. The token can do what meta-cni needs and nothing more.
    for (method, path, want) in [
        ("GET", "/api/v1/namespaces/e2e/pods/api-a", 200),
        (
            "GET",
            "/apis/k8s.cni.cncf.io/v1/namespaces/e2e/network-attachment-definitions/blue",
            200,
        ),
        ("GET", "/api/v1/secrets", 403),
        ("GET", "/api/v1/namespaces/kube-system/secrets", 403),
        ("DELETE", "/api/v1/namespaces/e2e/pods/api-a", 403),
        ("GET", "/api/v1/namespaces/e2e/pods", 403),
        (
            "GET",
            "/apis/k8s.cni.cncf.io/v1/namespaces/e2e/network-attachment-definitions",
            403,
        ),
        (
            "DELETE",
            "/apis/k8s.cni.cncf.io/v1/namespaces/e2e/network-attachment-definitions/blue",
            403,
        ),
    ] {
        assert_eq!(e.sa_request(method, path), want, "{method} {path}");
    }
    assert!(
        e.pod_annotations("api-a")
            .contains_key(meta_crd::NETWORKS_ANNOTATION)
    );
    // network-status goes through the pods/status subresource: the token may patch a
    // pod's status annotations, but not the pod itself (labels, annotations, spec).
    let pod_path = "/api/v1/namespaces/e2e/pods/api-a";
    for patch in [
        json!({"metadata": {"labels": {"e2e-probe": "1"}}}),
        json!({"metadata": {"annotations": {"e2e/probe": "1"}}}),
        json!({"spec": {"activeDeadlineSeconds": 5}}),
    ] {
        assert_eq!(e.sa_patch(pod_path, &patch), 403, "PATCH pods {patch}");
    }
    let status_path = format!("{pod_path}/status");
    let probe = json!({"metadata": {"annotations": {"e2e/status-probe": "1"}}});
    assert_eq!(e.sa_patch(&status_path, &probe), 200, "PATCH pods/status");
    assert_eq!(
        e.pod_annotations("api-a")
            .get("e2e/status-probe")
            .map(String::as_str),
        Some("1")
    );
    // What pods/status does and does not protect (the API server's pod status strategy
    // keeps spec, ownerReferences and deletionTimestamp from the stored object): a spec
    // change through it is dropped, but labels can be set through it too, so the README
    // says exactly that (only an admission check can narrow it to network-status).
    let get_pod = || {
        e.rt.block_on(
            kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(e.admin.clone(), NS)
                .get("api-a"),
        )
        .unwrap()
    };
    let spec = json!({"spec": {"activeDeadlineSeconds": 5}});
    assert_eq!(e.sa_patch(&status_path, &spec), 200);
    assert_eq!(get_pod().spec.unwrap().active_deadline_seconds, None);
    let label = json!({"metadata": {"labels": {"e2e-probe": "1"}}});
    assert_eq!(e.sa_patch(&status_path, &label), 200);
    assert_eq!(
        get_pod()
            .metadata
            .labels
            .unwrap_or_default()
            .get("e2e-probe")
            .map(String::as_str),
        Some("1"),
        "pods/status lets labels through (documented in README's RBAC section)"
    );

    // Checks that a failed ADD of `cid` in pod netns `p` left nothing (attachment A stays).
    let only_a_left = |e: &E2e, cid: &str, p: usize, pod: &str| {
        assert_eq!(link_names(e.w.pods[p].netns()), vec!["lo"], "{cid}");
        assert_eq!(e.reservations().len(), 3, "{cid}: {:?}", e.reservations());
        assert_eq!(
            e.node_leftovers().len(),
            2,
            "{cid}: {:?}",
            e.node_leftovers()
        );
        let cache = e.cache_entries();
        assert!(
            cache.iter().all(|f| !f.starts_with(&format!("{cid}:"))),
            "{cid}: journal left: {cache:?}"
        );
        if e.api.is_some() {
            let st = e.network_status(pod);
            assert!(
                st.as_ref().is_none_or(|s| s.is_empty()),
                "{cid}: network-status set: {st:?}"
            );
        }
    };

    // 2b. DEL clears the pod's network-status (to `[]`, as Multus does) once its
    // attachments are gone; a DEL for a pod that was recreated meanwhile (same name, new
    // UID) leaves the new pod's annotation alone.
    e.run("ADD", "cid-b", 1, "api-b", &uid_b, &conf).ok();
    assert_eq!(e.network_status("api-b").map(|s| s.len()), Some(2));
    e.run("DEL", "cid-b", 1, "api-b", &uid_b, &conf).ok();
    e.wait_handoff(Duration::from_secs(30));
    assert_eq!(e.network_status("api-b"), Some(vec![]), "DEL clears it");
    only_a_left(&e, "cid-b", 1, "api-b");
    let uid_r = e.create_pod("api-r", Some("blue"));
    e.run("ADD", "cid-r", 1, "api-r", &uid_r, &conf).ok();
    e.delete_pod("api-r");
    let uid_r2 = e.create_pod("api-r", Some("blue"));
    assert_ne!(uid_r, uid_r2);
    let log = e.w.path("handoff-r.log");
    let mut conf_r = conf.clone();
    conf_r["logFile"] = json!(log);
    conf_r["logLevel"] = json!("debug");
    e.run("DEL", "cid-r", 1, "api-r", &uid_r, &conf_r).ok();
    e.wait_handoff(Duration::from_secs(30));
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log.contains("hand-off: network-status of pod e2e/api-r left alone: the pod was recreated"),
        "{log}"
    );
    assert_eq!(e.network_status("api-r"), None, "the new pod was patched");
    only_a_left(&e, "cid-r", 1, "api-r");

    // 2c. Credentials without `patch pods/status` (patch on pods instead, the old RBAC):
    // the ADD fails naming the missing permission and leaves nothing; without `get` on
    // NADs, the same for that permission.
    let no_status = e.kubeconfig_with_rules(
        "meta-cni-no-status",
        json!([
            {"apiGroups": ["k8s.cni.cncf.io"], "resources": ["network-attachment-definitions"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}
        ]),
    );
    let uid_p = e.create_pod("api-p", Some("blue"));
    let conf_p = e.conf(json!({"kubeconfig": no_status}));
    let r = e.run("ADD", "cid-p", 1, "api-p", &uid_p, &conf_p);
    eprintln!("no pods/status permission: {}", r.err_msg());
    assert!(
        r.err_msg()
            .contains("patch network-status of pod e2e/api-p: API server answered 403")
            && r.err_msg().contains(
                "meta-cni's credentials lack the permission to patch pods/status in namespace e2e"
            ),
        "{}",
        r.stdout
    );
    only_a_left(&e, "cid-p", 1, "api-p");
    e.run("DEL", "cid-p", 1, "api-p", &uid_p, &conf_p).ok();
    only_a_left(&e, "cid-p", 1, "api-p");
    let no_nads = e.kubeconfig_with_rules(
        "meta-cni-no-nads",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
               {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]}]),
    );
    let r = e.run(
        "ADD",
        "cid-p",
        1,
        "api-p",
        &uid_p,
        &e.conf(json!({"kubeconfig": no_nads})),
    );
    assert!(
        r.err_msg().contains(
            "lack the permission to get network-attachment-definitions.k8s.cni.cncf.io in namespace e2e"
        ),
        "{}",
        r.stdout
    );
    only_a_left(&e, "cid-p", 1, "api-p");

    // 3. UID mismatch: the pod was recreated under the runtime's feet → try again (11).
    let wrong = "00000000-0000-4000-8000-000000000000";
    let r = e.run("ADD", "cid-uid", 1, "api-b", wrong, &conf);
    assert_eq!(r.err_code(), 11, "{}", r.stdout);
    assert!(r.err_msg().contains("UID"), "{}", r.err_msg());
    eprintln!("UID mismatch: {}", r.err_msg());
    only_a_left(&e, "cid-uid", 1, "api-b");
    // The runtime's DEL after a failed ADD succeeds (no journal: cluster network only).
    e.run("DEL", "cid-uid", 1, "api-b", wrong, &conf).ok();
    only_a_left(&e, "cid-uid", 1, "api-b");

    // Same stale UID, but with the annotations from the runtime (no GET of the pod): the
    // attachments are made, then the UID precondition of the network-status PATCH is
    // refused by the API server, and the ADD must be rolled back completely.
    let mut from_runtime = conf.clone();
    from_runtime["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations":
        {meta_crd::NETWORKS_ANNOTATION: "blue, green"}});
    let r = e.run("ADD", "cid-rt", 1, "api-b", wrong, &from_runtime);
    let code = r.err_code();
    eprintln!(
        "UID mismatch, runtime annotations: code {code}: {}",
        r.err_msg()
    );
    assert!(r.err_msg().contains("pod recreated"), "{}", r.err_msg());
    // Same answer as the GET path for the same situation: try again later.
    assert_eq!(code, 11, "{}", r.stdout);
    only_a_left(&e, "cid-rt", 1, "api-b");
    e.run("DEL", "cid-rt", 1, "api-b", wrong, &from_runtime)
        .ok();
    only_a_left(&e, "cid-rt", 1, "api-b");

    // 4. A missing NAD: invalid configuration (7), naming it; nothing attached.
    let r = e.run("ADD", "cid-m", 2, "api-missing", &uid_m, &conf);
    assert_eq!(r.err_code(), 7, "{}", r.stdout);
    assert!(r.err_msg().contains("e2e/nope"), "{}", r.err_msg());
    eprintln!("missing NAD: {}", r.err_msg());
    only_a_left(&e, "cid-m", 2, "api-missing");
    e.run("DEL", "cid-m", 2, "api-missing", &uid_m, &conf).ok();
    only_a_left(&e, "cid-m", 2, "api-missing");

    // 5. A hung API server (TCP accepted, never an answer): 11 within apiTimeoutSeconds.
    let hole = BlackHole::start(e.w.node.netns());
    let hole_kc = e.w.path("hole.kubeconfig");
    kubeconfig_with_server(&e.kubeconfig, &hole_kc, hole.addr());
    let hung = e.conf(json!({"kubeconfig": hole_kc}));
    let t = Instant::now();
    let r = e.run("ADD", "cid-h", 3, "api-b", &uid_b, &hung);
    let took = t.elapsed();
    timings.push(("ADD, API hung", took));
    assert_eq!(r.err_code(), 11, "{}", r.stdout);
    eprintln!("API hung: {} (after {took:?})", r.err_msg());
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "apiTimeoutSeconds=2 but ADD took {took:?}"
    );
    only_a_left(&e, "cid-h", 3, "api-b");
    let t = Instant::now();
    e.run("DEL", "cid-h", 3, "api-b", &uid_b, &hung).ok();
    timings.push(("DEL without journal, API hung", t.elapsed()));
    only_a_left(&e, "cid-h", 3, "api-b");

    // 5b. DEL of a journaled pod with the API server hung: DEL hands the network-status
    // clear off and returns without a request; the worker retries until the API server
    // answers again (here: the kubeconfig points back at it), then the status is `[]`.
    let t = Instant::now();
    e.run("ADD", "cid-hb", 3, "api-b", &uid_b, &conf).ok();
    timings.push(("ADD, API up", t.elapsed()));
    assert_eq!(e.network_status("api-b").map(|s| s.len()), Some(2));
    let flip_kc = e.w.path("flip.kubeconfig");
    kubeconfig_with_server(&e.kubeconfig, &flip_kc, hole.addr());
    let log = e.w.path("handoff-hb.log");
    let flip = e.conf(json!({"kubeconfig": flip_kc, "logFile": log, "logLevel": "debug"}));
    let t = Instant::now();
    e.run("DEL", "cid-hb", 3, "api-b", &uid_b, &flip).ok();
    let del_hung = t.elapsed();
    timings.push(("DEL from journal, API hung (clear handed off)", del_hung));
    let spool = e.cache.join(meta_cni::handoff::SPOOL);
    let jobs = meta_cni::handoff::jobs(&spool);
    assert_eq!(jobs.len(), 1, "one hand-off job: {jobs:?}");
    assert_eq!(jobs[0].1.uid.as_deref(), Some(uid_b.as_str()));
    assert_eq!(link_names(e.w.pods[3].netns()), vec!["lo"]);
    // Still the ADD's status: the API server has not answered.
    assert_eq!(e.network_status("api-b").map(|s| s.len()), Some(2));
    // Wait for a failed attempt (the worker's log says so), then bring the API back.
    let t = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("attempt 1 failed")
    {
        assert!(t.elapsed() < Duration::from_secs(30), "no attempt logged");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::copy(&e.kubeconfig, &flip_kc).unwrap();
    e.wait_handoff(Duration::from_secs(60));
    timings.push(("API hung until the clear landed", t.elapsed()));
    assert_eq!(
        e.network_status("api-b"),
        Some(vec![]),
        "cleared once the API server answered; worker log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    only_a_left(&e, "cid-hb", 3, "api-b");
    eprintln!("DEL with the API server hung: {del_hung:?} (the clear handed off)");
    drop(hole);

    // 6. The API server stopped (connection refused): ADD fails with 11, quickly.
    e.stop_api();
    let t = Instant::now();
    let r = e.run("ADD", "cid-d", 4, "api-b", &uid_b, &conf);
    let took = t.elapsed();
    timings.push(("ADD, API down", took));
    assert_eq!(r.err_code(), 11, "{}", r.stdout);
    eprintln!("API down: {} (after {took:?})", r.err_msg());
    assert!(took < Duration::from_secs(3), "ADD took {took:?}");
    only_a_left(&e, "cid-d", 4, "api-b");
    e.run("DEL", "cid-d", 4, "api-b", &uid_b, &conf).ok();
    only_a_left(&e, "cid-d", 4, "api-b");

    // DEL of the successful ADD with the API server down: from the journal alone; the
    // network-status clear waits in the hand-off spool (the API server does not return
    // in this test: the worker ends with the test's directory).
    let t = Instant::now();
    e.run("DEL", "cid-a", 0, "api-a", &uid_a, &conf).ok();
    timings.push(("DEL from journal, API down", t.elapsed()));
    let jobs = meta_cni::handoff::jobs(&e.cache.join(meta_cni::handoff::SPOOL));
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].1.name, "api-a");
    // Again, as runtimes do, without the netns.
    e.run_netns("DEL", "cid-a", "", "api-a", &uid_a, &conf).ok();
    e.assert_clean(&[0, 1, 2, 3, 4], "after DEL with the API server down");
    eprintln!(
        "timings: setup {:?} (kube-apiserver {:?}); {timings:?}",
        e.timings.total, e.timings.apiserver_start
    );
}

/// The namespace-isolation table of `tests/fixtures/isolation.json` (also meta-cni's unit
/// test), against the real API server: pods in `test`, `default`, `kube-system`, `other`
/// naming NAD `net1` of those namespaces, with isolation on/off and `globalNamespaces`
/// unset or set; every allowed case attaches net1 and is deleted again, every refused one
/// is code 7 naming the network and the interface, and leaves nothing.
#[test]
fn namespace_isolation_table() {
    let mut e = E2e::setup(1);
    let table: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/isolation.json")).unwrap();
    let cases = table["cases"].as_array().unwrap();
    for ns in ["test", "other"] {
        e.create_namespace(ns);
    }
    let ipam = e.w.path("ipam-iso");
    for ns in ["test", "default", "kube-system", "other"] {
        e.create_nad(
            ns,
            "net1",
            &json!({"cniVersion": "1.0.0", "name": "net1", "type": "bridge", "bridge": "e2eiso0",
                    "ipam": {"type": "host-local", "subnet": "10.73.0.0/24", "dataDir": ipam}}),
        );
    }
    e.ipam.push(("iso", ipam));
    let netns = e.w.pod(0);
    let (mut allowed, mut refused) = (0, 0);
    for (i, c) in cases.iter().enumerate() {
        let mut extra = json!({});
        for k in ["namespaceIsolation", "globalNamespaces"] {
            if let Some(v) = c.get(k) {
                extra[k] = v.clone();
            }
        }
        let conf = e.conf(extra);
        let pod_ns = c["pod"].as_str().unwrap();
        let network = c["network"].as_str().unwrap();
        let id = if network.contains('/') {
            network.to_string()
        } else {
            format!("{pod_ns}/{network}")
        };
        let name = format!("iso-{i}");
        let cid = format!("cid-iso-{i}");
        let uid = e.create_pod_in(pod_ns, &name, Some(network));
        let r = e.run_as("ADD", &cid, &netns, pod_ns, &name, &uid, &conf);
        if c["allowed"].as_bool().unwrap() {
            allowed += 1;
            r.ok();
            assert_eq!(
                link_names(e.w.pods[0].netns()),
                vec!["eth0", "lo", "net1"],
                "{c}"
            );
            e.run_as("DEL", &cid, &netns, pod_ns, &name, &uid, &conf)
                .ok();
        } else {
            refused += 1;
            assert_eq!(r.err_code(), 7, "{c}: {}", r.stdout);
            assert!(
                r.err_msg().contains(&format!(
                    "pod {pod_ns}/{name}: networks[0] {id} (net1) refused by namespaceIsolation"
                )),
                "{c}: {}",
                r.err_msg()
            );
            e.run_as("DEL", &cid, &netns, pod_ns, &name, &uid, &conf)
                .ok();
        }
        e.assert_clean(&[0], &c.to_string());
    }
    eprintln!("isolation table: {allowed} allowed, {refused} refused, as Multus's rule says");
}
