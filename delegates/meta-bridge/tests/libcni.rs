//! A real libcni client (Debian's libcni 1.1.2 through our Go driver in meta-tests/libcni-driver)
//! runs a conflist of meta-bridge followed by the reference `tuning` plugin through ADD,
//! CHECK and DEL, with libcni's own result cache.

mod common;
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn driver() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../meta-tests/libcni-driver");
    let out = std::env::temp_dir().join(format!("meta-cni-libcni-driver-{}", std::process::id()));
    let st = Command::new("bash")
        .arg(root.join("build.sh"))
        .arg(&out)
        .status()
        .expect("run meta-tests/libcni-driver/build.sh (needs Debian golang-go + golang-github-appc-cni-dev)");
    assert!(st.success(), "building the libcni driver failed");
    out
}

#[test]
fn libcni_conflist_bridge_then_tuning() {
    for version in ["0.4.0", "1.0.0"] {
        let w = World::new(1);
        let bin = w.path("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(ours(), bin.join("meta-bridge")).unwrap();
        std::os::unix::fs::symlink(reference("tuning"), bin.join("tuning")).unwrap();
        let list = json!({
        "cniVersion": version, "name": "libcninet",
        "plugins": [
            {"type": "meta-bridge", "bridge": "lcbr0", "isGateway": true,
             "ipam": {"type": "host-local", "subnet": "10.40.0.0/24", "dataDir": w.path("ipam")}},
            {"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}
        ]});
        let conflist = w.path("net.conflist");
        std::fs::write(&conflist, list.to_string()).unwrap();
        let cache = w.path("cache");
        let drv = driver();
        let pod = w.pod(0);
        let run = |cmd: &str| {
            let inv = Invocation {
                verb: "",
                ..Default::default()
            };
            let _ = inv;
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", w.node.path().display()))
                .arg(&drv)
                .args([cmd, "--conflist"])
                .arg(&conflist)
                .args([
                    "--netns",
                    &pod,
                    "--container-id",
                    "libcni-1",
                    "--ifname",
                    "eth0",
                    "--bin-dir",
                ])
                .arg(&bin)
                .arg("--cache-dir")
                .arg(&cache)
                .args([
                    "--args",
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1",
                ]);
            let o = c.output().expect("driver");
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).to_string(),
                String::from_utf8_lossy(&o.stderr).to_string(),
            )
        };
        let (ok, out, err) = run("add");
        assert!(ok, "{version}: add failed: {out} {err}");
        let res: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(res["cniVersion"], version);
        assert_eq!(res["ips"][0]["address"], "10.40.0.2/24");
        let eth0 = iface_state(w.pods[0].netns(), "eth0").expect("eth0");
        assert_eq!(
            eth0.mtu, 1400,
            "tuning ran after meta-bridge on its prevResult"
        );
        assert_eq!(eth0.addrs, vec!["10.40.0.2/24"]);
        let cached = run("cached");
        assert!(
            cached.0 && cached.1.contains("10.40.0.2/24"),
            "{version}: libcni cache: {cached:?}"
        );
        let (ok, out, err) = run("check");
        assert!(ok, "{version}: check failed: {out} {err}");
        let (ok, out, err) = run("del");
        assert!(ok, "{version}: del failed: {out} {err}");
        assert!(run("del").0, "second del");
        assert_eq!(
            run("cached").1.trim(),
            "null",
            "{version}: libcni cache entry not removed"
        );
        assert!(iface_state(w.pods[0].netns(), "eth0").is_none());
        let _ = std::fs::remove_file(&drv);
    }
}
