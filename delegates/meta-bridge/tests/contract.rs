//! The delegate contract (meta_tests::contract) for the bridge binary: a bridge `ctbr0`
//! with gateway, masquerade and MAC spoof check (so firewall rules are part of what must
//! not be left behind), host-local IPAM. Error tables: meta-tests/fixtures/contract/bridge.json.

use meta_tests::World;
use meta_tests::contract::KernelSubject;
use serde_json::{Value, json};

fn conf(w: &World, version: &str) -> Value {
    json!({"cniVersion": version, "name": "ctbr", "type": "bridge", "bridge": "ctbr0",
           "isGateway": true, "ipMasq": true, "macspoofchk": true,
           "ipam": {"type": "host-local", "dataDir": w.path("ipam"),
                    "ranges": [[{"subnet": "10.20.0.0/24"}]]}})
}

fn subject() -> KernelSubject {
    KernelSubject {
        name: "bridge",
        bin: env!("CARGO_BIN_EXE_meta-bridge").into(),
        setup: |_| {},
        conf,
        infra: &["ctbr0"],
        firewall: true,
    }
}

meta_tests::contract_tests!(bridge: subject());
