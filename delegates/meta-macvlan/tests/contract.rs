//! The delegate contract (meta_tests::contract) for the macvlan binary: the master is
//! `ctm0`, one end of a veth pair inside the test's node namespace (never a host
//! interface), host-local IPAM. Error tables: meta-tests/fixtures/contract/macvlan.json.

use meta_tests::World;
use meta_tests::contract::KernelSubject;
use serde_json::{Value, json};

fn conf(w: &World, version: &str) -> Value {
    json!({"cniVersion": version, "name": "ctmv", "type": "macvlan", "master": "ctm0",
           "ipam": {"type": "host-local", "dataDir": w.path("ipam"),
                    "ranges": [[{"subnet": "10.80.0.0/24"}]]}})
}

fn subject() -> KernelSubject {
    KernelSubject {
        name: "macvlan",
        bin: env!("CARGO_BIN_EXE_meta-macvlan").into(),
        setup: |w| meta_tests::veth_pair_in(w.node.netns(), "ctm0", "ctm0p"),
        conf,
        infra: &[],
        firewall: false,
    }
}

meta_tests::contract_tests!(macvlan: subject());
