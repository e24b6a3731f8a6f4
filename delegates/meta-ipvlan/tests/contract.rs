//! The delegate contract (meta_tests::contract) for ipvlan, in-process: this machine's
//! kernel has no ipvlan driver, so the plugin runs through the CNI skeleton
//! (`cni_core::plugin::dispatch`, as the binary would) on the fake node and pod namespaces
//! of `meta_ipvlan::testing` — with the real host-local IPAM (in-process, its data
//! directory in the bed's temporary directory), so allocations, exhaustion, GC and
//! release are the real ones. The residue is the fake namespaces' links plus the IPAM
//! files; `mutations` counts every request that reached the fake kernel or its sysctls.
//!
//! Faults (fixture field `fault`): `<node|pod>.<netlink op>:<errno>`, the next such
//! operation fails with that errno.
//!
//! Error tables: meta-tests/fixtures/contract/ipvlan.json.

use meta_ipvlan::testing::{FAKE_POD_PATH, FakeBackend, FakeHandle};
use meta_ipvlan::{Backend, DelegateIpam, IpamOps, Ipvlan, PodSysctl};
use meta_netlink::{FakeNetlink, NetlinkOps, Netns};
use meta_tests::contract::{Bed, PodIface, Subject};
use meta_tests::{Invocation, Run, run_plugin};
use serde_json::{Value, json};
use std::path::PathBuf;

/// The fake namespaces with the real IPAM.
struct ContractBackend {
    fake: FakeBackend,
}

impl Backend for ContractBackend {
    type Nl = FakeHandle;
    fn open_pod(&self, path: &str) -> cni_core::Result<Netns> {
        self.fake.open_pod(path)
    }
    fn open_pod_for_del(&self, path: &str) -> cni_core::Result<Option<Netns>> {
        self.fake.open_pod_for_del(path)
    }
    fn node_nl(&self) -> cni_core::Result<FakeHandle> {
        self.fake.node_nl()
    }
    fn pod_nl(&self, pod: &Netns) -> cni_core::Result<FakeHandle> {
        self.fake.pod_nl(pod)
    }
    fn pod_sysctl(&self, pod: &Netns) -> Box<dyn PodSysctl> {
        self.fake.pod_sysctl(pod)
    }
    fn ipam(&self) -> &dyn IpamOps {
        &DelegateIpam
    }
    fn tmp_name(&self) -> String {
        self.fake.tmp_name()
    }
}

struct FakeBed {
    plugin: Ipvlan<ContractBackend>,
    dir: tempfile::TempDir,
}

impl FakeBed {
    fn fake(&self) -> &FakeBackend {
        &self.plugin.backend().fake
    }
}

fn names(nl: &mut dyn NetlinkOps, side: &str) -> Vec<String> {
    nl.links()
        .expect("fake links")
        .into_iter()
        .filter(|l| !(side == "pod0" && l.name == "lo"))
        .map(|l| format!("{side} link {} kind={:?}", l.name, l.kind))
        .collect()
}

impl Bed for FakeBed {
    fn conf(&self, version: &str) -> Value {
        json!({"cniVersion": version, "name": "ctiv", "type": "ipvlan", "master": "eth0",
               "ipam": {"type": "host-local", "dataDir": self.ipam_dir(),
                        "ranges": [[{"subnet": "10.1.0.0/24"}]]}})
    }
    fn pods(&self) -> usize {
        1
    }
    fn netns(&self, pod: usize) -> String {
        assert_eq!(pod, 0, "the fake world has one pod");
        FAKE_POD_PATH.into()
    }
    fn run(&self, inv: &Invocation, stdin: &[u8]) -> Run {
        run_plugin(&self.plugin, inv, stdin)
    }
    fn drop_pod(&mut self, pod: usize) {
        assert_eq!(pod, 0, "the fake world has one pod");
        let mut w = self.fake().world.borrow_mut();
        // Gone, and its links with it (as the kernel destroys a namespace's links).
        w.pod_present = false;
        w.pod = FakeNetlink::new();
    }
    fn pod_iface(&self, pod: usize, ifname: &str) -> Option<PodIface> {
        assert_eq!(pod, 0, "the fake world has one pod");
        if !self.fake().world.borrow().pod_present {
            return None;
        }
        let mut p = self.fake().pod();
        let l = p.link_by_name(ifname).expect("fake links")?;
        let mut addrs: Vec<String> = p
            .addrs(Some(l.index))
            .expect("fake addrs")
            .into_iter()
            .map(|a| a.addr.to_string())
            .collect();
        addrs.sort();
        Some(PodIface {
            kind: l.kind,
            mac: l.mac.map(|m| meta_netlink::format_mac(&m)),
            mtu: l.mtu,
            up: l.up,
            addrs,
        })
    }
    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }
    fn links(&self) -> Vec<String> {
        let mut v = names(&mut self.fake().node(), "node");
        v.extend(names(&mut self.fake().pod(), "pod0"));
        v.sort();
        v
    }
    fn mutations(&self) -> Option<usize> {
        let w = self.fake().world.borrow();
        Some(w.node.requests().len() + w.pod.requests().len() + w.sysctl_writes.len())
    }
    fn inject(&self, fault: &str) {
        let (side_op, errno) = fault
            .split_once(':')
            .unwrap_or_else(|| panic!("fault {fault:?}: want <node|pod>.<op>:<errno>"));
        let (side, op) = side_op
            .split_once('.')
            .unwrap_or_else(|| panic!("fault {fault:?}: want <node|pod>.<op>:<errno>"));
        let errno: i32 = errno.parse().expect("errno");
        let e = meta_netlink::Error::netlink(op, errno);
        let mut w = self.fake().world.borrow_mut();
        match side {
            "node" => w.node.fail_next(op, e),
            "pod" => w.pod.fail_next(op, e),
            other => panic!("fault {fault:?}: unknown side {other:?}"),
        }
    }
}

struct IpvlanSubject;

impl Subject for IpvlanSubject {
    fn name(&self) -> &str {
        "ipvlan"
    }
    fn bed(&self) -> Box<dyn Bed + '_> {
        let fake = FakeBackend::new().expect("fake backend");
        Box::new(FakeBed {
            plugin: Ipvlan::with_backend(ContractBackend { fake }),
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }
}

meta_tests::contract_tests!(ipvlan: IpvlanSubject);
