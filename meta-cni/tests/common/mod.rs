//! Shared world of the meta-cni tests and benches: a node, pods, a cluster network in
//! confDir, NADs in a local directory, fake failing/sleeping delegates.
#![allow(dead_code)]

use meta_netlink::{Netlink, NetlinkOps, RouteSpec};
pub use meta_tests::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub fn meta_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meta-cni"))
}

const FAILER: &str = r#"#!/bin/sh
cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{"cniVersion":"1.0.0","code":7,"msg":"injected failure"}'
  exit 1
fi
exit 0
"#;

const SLEEPER: &str = r#"#!/bin/sh
cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  echo $$ > "$(dirname "$0")/sleeper.pid"
  exec sleep 60
fi
exit 0
"#;

pub struct Env {
    pub w: World,
    pub cache: PathBuf,
    pub nads: PathBuf,
    pub bin: PathBuf,
}

pub fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn nad(dir: &Path, ns: &str, name: &str, config: Value) {
    let d = dir.join(ns);
    std::fs::create_dir_all(&d).unwrap();
    let obj = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                     "metadata": {"name": name, "namespace": ns},
                     "spec": {"config": config.to_string()}});
    std::fs::write(d.join(format!("{name}.json")), obj.to_string()).unwrap();
}

pub fn setup(pods: usize) -> Env {
    let w = World::new(pods);
    let cache = w.path("cache");
    let nads = w.path("nads");
    let bin = w.path("bin");
    let confdir = w.path("net.d");
    for d in [&cache, &nads, &bin, &confdir] {
        std::fs::create_dir_all(d).unwrap();
    }
    script(&bin, "failer", FAILER);
    script(&bin, "sleeper", SLEEPER);
    veth_pair_in(w.node.netns(), "mvpar0", "mvpar1");
    let ipam = |n: &str, subnet: &str| json!({"type": "host-local", "subnet": subnet, "dataDir": w.path(&format!("ipam-{n}"))});
    std::fs::write(
        confdir.join("10-cluster.conflist"),
        json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [
            {"type": "bridge", "bridge": "clbr0", "isGateway": true, "isDefaultGateway": true, "ipam": ipam("cluster", "10.60.0.0/24")}
        ]})
        .to_string(),
    )
    .unwrap();
    nad(
        &nads,
        "ns1",
        "br-net",
        json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "nbr1", "ipam": ipam("br", "10.61.0.0/24")}),
    );
    nad(
        &nads,
        "ns1",
        "mv-net",
        json!({"cniVersion": "0.4.0", "type": "macvlan", "master": "mvpar0", "mode": "bridge", "ipam": ipam("mv", "10.62.0.0/24")}),
    );
    nad(
        &nads,
        "ns1",
        "fail-net",
        json!({"cniVersion": "1.0.0", "type": "failer"}),
    );
    nad(
        &nads,
        "ns1",
        "sleep-net",
        json!({"cniVersion": "1.0.0", "type": "sleeper"}),
    );
    nad(
        &nads,
        "ns2",
        "other-net",
        json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "nbr2", "ipam": ipam("other", "10.63.0.0/24")}),
    );
    Env {
        w,
        cache,
        nads,
        bin,
    }
}

impl Env {
    pub fn conf(&self, networks: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": "meta", "type": "meta-cni",
            "clusterNetwork": "cluster", "confDir": self.w.path("net.d"), "binDir": self.bin,
            "cniDir": self.cache, "localNadDir": self.nads, "forceExec": ["macvlan"],
            "capabilities": {"io.kubernetes.cri.pod-annotations": true},
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": networks}}
        });
        if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        c
    }

    pub fn run(&self, verb: &str, cid: &str, pod: usize, ns: &str, conf: &Value) -> Run {
        self.run_env(verb, cid, pod, ns, conf, &[])
    }

    /// [`Env::run`] with extra environment variables for the plugin.
    pub fn run_env(
        &self,
        verb: &str,
        cid: &str,
        pod: usize,
        ns: &str,
        conf: &Value,
        extra_env: &[(&str, &str)],
    ) -> Run {
        let netns = self.w.pod(pod);
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME=pod{pod};K8S_POD_INFRA_CONTAINER_ID={cid}"
        );
        let inv = Invocation {
            verb,
            container_id: cid,
            netns: &netns,
            ifname: "eth0",
            args: &args,
            path: REFERENCE_DIR,
            extra_env: extra_env.to_vec(),
            ..Default::default()
        };
        run_in(
            self.w.node.netns(),
            &meta_bin(),
            &inv,
            conf.to_string().as_bytes(),
        )
    }

    /// Nothing of any attachment is left: pod has only lo, no IP reserved, no journal, no
    /// status, no host veths or macvlans on the node.
    pub fn assert_clean(&self, pod: usize, ctx: &str) {
        if let Some(p) = self.w.pods.get(pod) {
            assert_eq!(link_names(p.netns()), vec!["lo"], "{ctx}: pod links left");
        }
        // A deleted pod netns is torn down by the kernel asynchronously (its veth peers go
        // with it a moment later), so give that up to 5 s; anything still there is a leak.
        let veths = || -> Vec<String> {
            link_names(self.w.node.netns())
                .into_iter()
                .filter(|n| n.starts_with("veth"))
                .collect()
        };
        let t0 = std::time::Instant::now();
        let mut node = veths();
        while !node.is_empty() && t0.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            node = veths();
        }
        assert!(node.is_empty(), "{ctx}: host veths left: {node:?}");
        for n in ["cluster", "br", "mv", "other"] {
            let files = dir_contents(&self.w.path(&format!("ipam-{n}")));
            let ips: Vec<_> = files
                .keys()
                .filter(|k| !k.ends_with("lock") && !k.contains("last_reserved"))
                .collect();
            assert!(ips.is_empty(), "{ctx}: IPs left in {n}: {ips:?}");
        }
        let cache: Vec<_> = dir_contents(&self.cache).into_keys().collect();
        assert!(cache.is_empty(), "{ctx}: cache left: {cache:?}");
    }
}

/// The 4-network pod of the kill -9 campaign and of the pod3 benchmark, in local mode:
/// [`setup`]'s node with an underlay for the VXLAN and two more NADs; the pod gets eth0
/// (the cluster bridge), a NAD bridge with `ipMasq` and `macspoofchk` (nftables rules),
/// macvlan on the node's veth parent and a secondary VXLAN segment of VNI `vni`, every
/// delegate in-process. Returns the world and the meta plugin's configuration.
pub fn four_network_world(pods: usize, vni: u32) -> (Env, Value) {
    let e = setup(pods);
    meta_tests::veth_pair_in(e.w.node.netns(), "ul0", "ul0p");
    let mut nl = Netlink::open(Some(e.w.node.netns())).expect("netlink");
    let ul = nl.link_by_name("ul0").expect("links").expect("ul0");
    nl.addr_add(ul.index, "192.168.77.2/24".parse().expect("net"))
        .expect("underlay address");
    nl.route_add(&RouteSpec {
        gw: Some("192.168.77.1".parse().expect("ip")),
        oif: Some(ul.index),
        ..RouteSpec::new("0.0.0.0/0".parse().expect("net"))
    })
    .expect("underlay default route");
    nad(
        &e.nads,
        "ns1",
        "masq-net",
        json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "kcbr1", "isGateway": true,
               "ipMasq": true, "macspoofchk": true,
               "ipam": {"type": "host-local", "subnet": "10.61.0.0/24", "dataDir": e.w.path("ipam-br")}}),
    );
    nad(
        &e.nads,
        "ns1",
        "vx-net",
        json!({"cniVersion": "1.0.0", "type": "meta-vxlan", "vni": vni,
               "peers": ["192.168.77.9"], "stateDir": e.w.path("vx-state"),
               "ipam": {"type": "host-local", "subnet": "10.66.0.0/24", "dataDir": e.w.path("ipam-vx")}}),
    );
    // Every delegate in-process (macvlan too): a killed meta-cni leaves no exec'd delegate
    // running on behind it.
    let mut conf = e.conf(
        "ns1/masq-net, ns1/mv-net, ns1/vx-net",
        json!({"forceExec": []}),
    );
    conf["cniVersion"] = json!("1.1.0");
    (e, conf)
}
