//! The containerd fixture and the CRI client, with Debian's reference plugins: a pod
//! sandbox run through CRI as kubelet would gets its network from the bridge + host-local
//! conflist of the test's conf dir, inside the test's node namespace, and loses it (IP
//! released, host veth gone) on StopPodSandbox/RemovePodSandbox. The plugins are wrapped
//! by logging scripts so the test sees every CNI call containerd makes.

use meta_netlink::Netns;
use meta_tests::containerd::{Containerd, PAUSE_IMAGE};
use meta_tests::cri::{PodSandboxConfig, PodSandboxFilter};
use meta_tests::{World, dir_contents, iface_state, link_names, reference, unique};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A CNI setup in `w`: bin dir of logging wrappers around the reference plugins, a conf
/// dir with one bridge + host-local conflist, host-local's data dir, the call log.
struct Cni {
    bin: PathBuf,
    conf: PathBuf,
    ipam: PathBuf,
    calls: PathBuf,
    bridge: String,
    subnet: String,
    prefix: String,
}

impl Cni {
    fn new(w: &World, third_octet: u8) -> Cni {
        let bin = w.path("cni-bin");
        let conf = w.path("cni-conf");
        let ipam = w.path("ipam");
        let calls = w.path("cni-calls.log");
        for d in [&bin, &conf, &ipam] {
            fs::create_dir_all(d).unwrap();
        }
        // containerd 1.6 runs `loopback` itself (for lo), so it must be in the bin dir too.
        for plugin in ["bridge", "host-local", "loopback"] {
            let real = reference(plugin);
            // ADD fails (CNI error 11) while the file `fail-add-<plugin>` exists.
            let script = format!(
                "#!/bin/sh\n\
                 echo \"$CNI_COMMAND {plugin} ifname=$CNI_IFNAME netns=$CNI_NETNS id=$CNI_CONTAINERID args=$CNI_ARGS\" >> '{calls}'\n\
                 if [ \"$CNI_COMMAND\" = ADD ] && [ -e '{dir}/fail-add-{plugin}' ]; then\n\
                 echo '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"injected failure\"}}'; exit 1\n\
                 fi\n\
                 exec '{real}' \"$@\"\n",
                calls = calls.display(),
                dir = w.dir.path().display(),
                real = real.display()
            );
            let p = bin.join(plugin);
            fs::write(&p, script).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let bridge = unique("mcb");
        let prefix = format!("10.213.{third_octet}.");
        let subnet = format!("{prefix}0/24");
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "smoke",
            "plugins": [{
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam,
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            }]
        });
        fs::write(conf.join("10-smoke.conflist"), conflist.to_string()).unwrap();
        Cni {
            bin,
            conf,
            ipam,
            calls,
            bridge,
            subnet,
            prefix,
        }
    }

    /// The calls logged so far, as "VERB plugin ..." lines.
    fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn count(&self, verb: &str, plugin: &str) -> usize {
        let p = format!("{verb} {plugin} ");
        self.calls().iter().filter(|l| l.starts_with(&p)).count()
    }

    /// host-local's reservations (files named by IP) in its network's data dir.
    fn reservations(&self) -> Vec<String> {
        dir_contents(&self.ipam)
            .into_keys()
            .filter(|k| k.contains(&self.prefix))
            .collect()
    }
}

fn host_veths(ns: &Netns) -> Vec<String> {
    link_names(ns)
        .into_iter()
        .filter(|n| n.starts_with("veth"))
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn containerd_runs_a_sandbox_networked_by_the_reference_bridge_and_tears_it_down() {
    let w = World::new(0);
    let cni = Cni::new(&w, 7);
    let root = Netns::current().unwrap();
    let ctd = Containerd::start(w.node.netns(), &cni.bin, &cni.conf);
    eprintln!("containerd started in {:?}", ctd.started_in());
    let cri = ctd.cri();
    let v = cri.version().unwrap();
    assert_eq!(v.runtime_name, "containerd");
    assert_eq!(v.runtime_api_version, "v1");
    eprintln!(
        "runtime {} {} (CRI {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );
    ctd.wait_network_ready(Duration::from_secs(10)).unwrap();
    assert!(cri.image_status(PAUSE_IMAGE).unwrap().is_some());
    assert!(cri.list_pod_sandbox(None).unwrap().is_empty());

    // RunPodSandbox: CNI ADD has run when it returns.
    let uid = "3c1d8d2e-0000-4000-8000-00000000c0de";
    let config = PodSandboxConfig::pod("web-0", "smoke", uid)
        .annotation("k8s.v1.cni.cncf.io/networks", "[]")
        .label("app", "web");
    let t = Instant::now();
    let id = cri.run_pod_sandbox(&config).unwrap();
    let run_took = t.elapsed();

    let (status, info) = cri.sandbox(&id).unwrap();
    assert!(status.ready(), "{status:?}");
    assert_eq!(status.metadata.as_ref().unwrap().name, "web-0");
    assert_eq!(status.metadata.as_ref().unwrap().namespace, "smoke");
    assert_eq!(status.annotations["k8s.v1.cni.cncf.io/networks"], "[]");
    let ips = status.ips();
    assert_eq!(ips.len(), 1, "{ips:?}");
    assert!(
        ips[0].starts_with(&cni.prefix),
        "{ips:?} not in {}",
        cni.subnet
    );
    assert!(info.pid() > 0);

    // The sandbox's netns, as CNI got it, under the fixture's state dir.
    let netns_path = info.netns_path().expect("sandbox netns path");
    assert!(
        netns_path.starts_with(ctd.netns_dir()),
        "{} not under {}",
        netns_path.display(),
        ctd.netns_dir().display()
    );
    assert_eq!(
        cri.sandbox_netns(&id).unwrap().as_deref(),
        Some(netns_path.as_path())
    );
    let pod = Netns::open(&netns_path).unwrap();
    // The pause process is in that namespace.
    assert_eq!(
        Netns::open(format!("/proc/{}/ns/net", info.pid())).unwrap(),
        pod
    );
    let eth0 = iface_state(&pod, "eth0").expect("eth0 in the sandbox");
    assert_eq!(eth0.kind.as_deref(), Some("veth"));
    assert!(eth0.up);
    assert_eq!(eth0.addrs, vec![format!("{}/24", ips[0])]);
    assert!(
        eth0.routes
            .iter()
            .any(|r| r.starts_with(&format!("0.0.0.0/0 via {}1 ", cni.prefix))),
        "{:?}",
        eth0.routes
    );
    assert!(
        iface_state(&pod, "lo").expect("lo").up,
        "loopback plugin did not run"
    );
    // The host side lives in the node namespace, never in the machine's.
    let node = w.node.netns();
    assert!(link_names(node).contains(&cni.bridge));
    assert_eq!(host_veths(node).len(), 1, "{:?}", link_names(node));
    assert!(!link_names(&root).contains(&cni.bridge));
    assert_eq!(cni.reservations().len(), 1, "{:?}", dir_contents(&cni.ipam));

    let adds = cni.calls();
    eprintln!("CNI calls of RunPodSandbox:\n  {}", adds.join("\n  "));
    assert_eq!(cni.count("ADD", "bridge"), 1);
    assert_eq!(cni.count("ADD", "host-local"), 1);
    assert_eq!(cni.count("ADD", "loopback"), 1);
    let add_line = adds.iter().find(|l| l.starts_with("ADD bridge ")).unwrap();
    for needle in [
        "ifname=eth0".to_string(),
        format!("netns={}", netns_path.display()),
        format!("id={id}"),
        "K8S_POD_NAMESPACE=smoke".into(),
        "K8S_POD_NAME=web-0".into(),
        format!("K8S_POD_INFRA_CONTAINER_ID={id}"),
        format!("K8S_POD_UID={uid}"),
    ] {
        assert!(
            add_line.contains(&needle),
            "{needle} missing from {add_line}"
        );
    }
    let listed = cri.list_pod_sandbox(None).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    let by_label = PodSandboxFilter {
        label_selector: [("app".to_string(), "web".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(cri.list_pod_sandbox(Some(by_label)).unwrap().len(), 1);

    // StopPodSandbox: CNI DEL, IP released, veth and netns gone.
    let before = cni.calls().len();
    let t = Instant::now();
    cri.stop_pod_sandbox(&id).unwrap();
    let stop_took = t.elapsed();
    let stop_calls: Vec<String> = cni.calls()[before..].to_vec();
    eprintln!(
        "CNI calls of StopPodSandbox:\n  {}",
        stop_calls.join("\n  ")
    );
    assert!(
        cni.reservations().is_empty(),
        "{:?}",
        dir_contents(&cni.ipam)
    );
    assert!(host_veths(node).is_empty(), "{:?}", link_names(node));
    assert!(!netns_path.exists(), "{} still there", netns_path.display());
    let (status, info) = cri.sandbox(&id).unwrap();
    assert!(!status.ready());
    assert!(info.netns_closed());
    let dels_at_stop = cni.count("DEL", "bridge");
    assert_eq!(dels_at_stop, 1);
    assert_eq!(cni.count("DEL", "host-local"), 1);
    assert_eq!(cni.count("DEL", "loopback"), 1);

    // A second StopPodSandbox (kubelet does that) and RemovePodSandbox.
    let before = cni.calls().len();
    cri.stop_pod_sandbox(&id).unwrap();
    let restop_calls: Vec<String> = cni.calls()[before..].to_vec();
    eprintln!(
        "CNI calls of a second StopPodSandbox:\n  {}",
        restop_calls.join("\n  ")
    );
    let before = cni.calls().len();
    let t = Instant::now();
    cri.remove_pod_sandbox(&id).unwrap();
    let remove_took = t.elapsed();
    let remove_calls: Vec<String> = cni.calls()[before..].to_vec();
    eprintln!(
        "CNI calls of RemovePodSandbox:\n  {}",
        remove_calls.join("\n  ")
    );
    assert!(cri.list_pod_sandbox(None).unwrap().is_empty());
    assert!(cri.pod_sandbox_status(&id, false).is_err());
    // Removing again is fine (kubelet retries).
    cri.remove_pod_sandbox(&id).unwrap();
    assert!(cni.reservations().is_empty());
    assert!(link_names(node).contains(&cni.bridge), "the bridge stays");

    eprintln!(
        "timings: start {:?}, RunPodSandbox {run_took:?}, StopPodSandbox {stop_took:?}, RemovePodSandbox {remove_took:?}",
        ctd.started_in()
    );
    eprintln!(
        "DEL per plugin (bridge/host-local/loopback): {}/{}/{} (at first stop: {dels_at_stop})",
        cni.count("DEL", "bridge"),
        cni.count("DEL", "host-local"),
        cni.count("DEL", "loopback")
    );
    // containerd 1.6 runs CNI DEL on every StopPodSandbox, even for a stopped sandbox,
    // and once more in RemovePodSandbox (which stops the sandbox first): three DELs here
    // for each plugin, and two for the usual stop + remove of kubelet.
    for plugin in ["bridge", "host-local", "loopback"] {
        assert_eq!(cni.count("DEL", plugin), 3, "{plugin}: {:?}", cni.calls());
    }
    // Every DEL after the first went without a netns (containerd passes an empty
    // CNI_NETNS once it has removed the namespace).
    for l in cni
        .calls()
        .iter()
        .filter(|l| l.starts_with("DEL bridge "))
        .skip(1)
    {
        assert!(l.contains("netns= "), "{l}");
    }
    assert_no_leftovers(&ctd, &id);
}

/// No shim or pause process of sandbox `id` and no mount for it.
fn assert_no_leftovers(ctd: &Containerd, id: &str) {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leftovers: Vec<&str> = mounts.lines().filter(|l| l.contains(id)).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = ctd;
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let cmd = fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if cmd.contains(needle) {
            v.push(format!("{} {cmd}", e.file_name().to_string_lossy()));
        }
    }
    v
}

#[test]
fn dropping_the_fixture_tears_down_running_sandboxes() {
    let w = World::new(0);
    let cni = Cni::new(&w, 8);
    let ctd = Containerd::start(w.node.netns(), &cni.bin, &cni.conf);
    ctd.wait_network_ready(Duration::from_secs(10)).unwrap();
    let dir = ctd.dir().to_path_buf();
    let socket = ctd.socket().display().to_string();
    let ids: Vec<String> = (0..2)
        .map(|i| {
            let c = PodSandboxConfig::pod(&format!("p{i}"), "smoke", &format!("uid-{i}"));
            ctd.cri().run_pod_sandbox(&c).unwrap()
        })
        .collect();
    assert_eq!(cni.reservations().len(), 2);
    assert_eq!(host_veths(w.node.netns()).len(), 2);
    let pids: Vec<u32> = ids
        .iter()
        .map(|id| ctd.cri().sandbox(id).unwrap().1.pid())
        .collect();
    assert!(!processes_mentioning(&socket).is_empty(), "no shim found");
    let t = Instant::now();
    drop(ctd);
    eprintln!("drop with 2 running sandboxes took {:?}", t.elapsed());
    assert!(
        cni.reservations().is_empty(),
        "{:?}",
        dir_contents(&cni.ipam)
    );
    assert!(host_veths(w.node.netns()).is_empty());
    assert_eq!(cni.count("ADD", "bridge"), 2);
    // The fixture stops then removes each sandbox: two DELs per pod.
    assert_eq!(cni.count("DEL", "bridge"), 4, "{:?}", cni.calls());
    wait_until("pause processes gone", Duration::from_secs(5), || {
        pids.iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
    });
    assert!(
        processes_mentioning(&socket).is_empty(),
        "{:?}",
        processes_mentioning(&socket)
    );
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "mounts left under {}",
        dir.display()
    );
    assert!(!dir.exists());
}

#[test]
fn host_network_sandboxes_get_no_cni_call() {
    let w = World::new(0);
    let cni = Cni::new(&w, 9);
    let ctd = Containerd::start(w.node.netns(), &cni.bin, &cni.conf);
    ctd.wait_network_ready(Duration::from_secs(10)).unwrap();
    let config = PodSandboxConfig::pod("hostnet", "smoke", "uid-hostnet").host_network();
    let id = ctd.cri().run_pod_sandbox(&config).unwrap();
    let (status, info) = ctd.cri().sandbox(&id).unwrap();
    assert!(status.ready());
    assert!(
        info.netns_path().is_none(),
        "{}",
        info.raw["runtimeSpec"]["linux"]["namespaces"]
    );
    // The pause process shares containerd's namespace: the node's.
    assert_eq!(
        &Netns::open(format!("/proc/{}/ns/net", info.pid())).unwrap(),
        w.node.netns()
    );
    ctd.cri().stop_pod_sandbox(&id).unwrap();
    ctd.cri().remove_pod_sandbox(&id).unwrap();
    assert!(cni.calls().is_empty(), "{:?}", cni.calls());
}

#[test]
fn a_failed_add_is_rolled_back_by_one_del_with_the_netns() {
    let w = World::new(0);
    let cni = Cni::new(&w, 10);
    fs::write(w.path("fail-add-host-local"), "").unwrap();
    let ctd = Containerd::start(w.node.netns(), &cni.bin, &cni.conf);
    ctd.wait_network_ready(Duration::from_secs(10)).unwrap();
    let err = ctd
        .cri()
        .run_pod_sandbox(&PodSandboxConfig::pod("bad", "smoke", "uid-bad"))
        .unwrap_err();
    assert!(err.message().contains("injected failure"), "{err:?}");
    let calls = cni.calls();
    eprintln!(
        "CNI calls of a failed RunPodSandbox:\n  {}",
        calls.join("\n  ")
    );
    // containerd 1.6 tears the network down once (DEL with the netns still there),
    // removes the netns and forgets the sandbox.
    for plugin in ["bridge", "host-local", "loopback"] {
        assert_eq!(cni.count("ADD", plugin), 1, "{plugin}: {calls:?}");
        assert_eq!(cni.count("DEL", plugin), 1, "{plugin}: {calls:?}");
    }
    for l in calls.iter().filter(|l| l.starts_with("DEL ")) {
        assert!(!l.contains("netns= "), "{l}");
    }
    assert!(ctd.cri().list_pod_sandbox(None).unwrap().is_empty());
    assert!(
        host_veths(w.node.netns()).is_empty(),
        "{:?}",
        link_names(w.node.netns())
    );
    assert!(cni.reservations().is_empty());
    let left: Vec<_> = fs::read_dir(ctd.netns_dir())
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // No retry here: the failed ADD left the reference bridge (1.1.1) without ports or
    // address, so with a zero MAC, and its next ADD fails setting that MAC ("could not set
    // bridge's mac: invalid argument"): a reference quirk, not containerd's.
}
