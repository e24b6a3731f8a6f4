//! ADD+DEL latency and peak RSS: meta-macvlan vs the reference macvlan (+ host-local), the
//! same configuration, the same kind of world, in one run. Every iteration is a full
//! process spawn of the plugin (as a runtime does), run inside a node namespace whose
//! master is a veth end.
//!
//! `cargo bench -p meta-macvlan --bench add_del` (root). `BENCH_ITERS` sets the iterations
//! (default 200). Prints a Markdown table for docs/BENCHMARKS.md.

use meta_tests::bench::{AddDel, add_del, iters, print_table};
use meta_tests::{World, reference, veth_pair_in};
use serde_json::json;
use std::path::{Path, PathBuf};

const MASTER: &str = "benchup0";

fn run(label: &str, bin: &Path, iters: usize, env: &[(&str, &str)]) -> AddDel {
    let w = World::new(1);
    veth_pair_in(w.node.netns(), MASTER, &format!("{MASTER}p"));
    let c = json!({"cniVersion": "1.0.0", "name": "bench", "type": "macvlan", "master": MASTER,
                   "ipam": {"type": "host-local", "subnet": "10.50.0.0/16", "dataDir": w.path("ipam")}});
    add_del(&w, label, bin, &c, iters, env)
}

fn main() {
    let iters = iters(200);
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_meta-macvlan"));
    let refbin = reference("macvlan");
    let rows = vec![
        (
            "meta-macvlan (host-local in-process)",
            run("ours", &ours, iters, &[]),
        ),
        (
            "meta-macvlan + exec'd reference host-local",
            run(
                "ours-exec",
                &ours,
                iters,
                &[("META_CNI_FORCE_EXEC", "host-local")],
            ),
        ),
        (
            "reference macvlan + host-local 1.1.1",
            run("reference", &refbin, iters, &[]),
        ),
    ];
    println!(
        "\nADD+DEL, {iters} iterations each, one pod, cniVersion 1.0.0, bridge mode on a veth master, host-local /16\n"
    );
    print_table(rows);
}
