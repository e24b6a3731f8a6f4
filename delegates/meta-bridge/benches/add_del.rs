//! ADD+DEL latency and peak RSS: meta-bridge vs the reference bridge (+ host-local), the
//! same configuration, the same kind of world, in one run. Every iteration is a full
//! process spawn of the plugin (as a runtime does), run inside a node namespace.
//!
//! `cargo bench -p meta-bridge --bench add_del` (root). `BENCH_ITERS` sets the iterations
//! (default 200). Prints a Markdown table for docs/BENCHMARKS.md. The second table is the
//! same with `ipMasq` and `macspoofchk` on: ours with each nftables backend (netlink
//! messages in-process, the default; libnftables in-process, `META_CNI_NFT=lib`; `nft`
//! spawned, `META_CNI_NFT=exec`), and the reference (iptables for ipMasq, nftables for
//! macspoofchk).

use meta_tests::bench::{add_del, before_bin, iters, print_table};
use meta_tests::{World, reference};
use serde_json::json;
use std::path::{Path, PathBuf};

fn run(label: &str, bin: &Path, iters: usize, env: &[(&str, &str)]) -> meta_tests::bench::AddDel {
    run_with(label, bin, iters, env, false)
}

fn run_with(
    label: &str,
    bin: &Path,
    iters: usize,
    env: &[(&str, &str)],
    firewall: bool,
) -> meta_tests::bench::AddDel {
    let w = World::new(1);
    let mut c = json!({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "benchbr",
                   "isGateway": true,
                   "ipam": {"type": "host-local", "subnet": "10.50.0.0/16", "dataDir": w.path("ipam")}});
    if firewall {
        c["ipMasq"] = json!(true);
        c["macspoofchk"] = json!(true);
    }
    add_del(&w, label, bin, &c, iters, env)
}

fn main() {
    let iters = iters(200);
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_meta-bridge"));
    let refbin = reference("bridge");
    let before = before_bin("meta-bridge").map(|(label, bin)| {
        let name = format!("meta-bridge {label} (host-local in-process)");
        let timings = run("before", &bin, iters, &[]);
        (name, timings)
    });
    let mut rows = vec![
        (
            "meta-bridge (host-local in-process)".to_string(),
            run("ours", &ours, iters, &[]),
        ),
        (
            "meta-bridge + exec'd reference host-local".to_string(),
            run(
                "ours-exec",
                &ours,
                iters,
                &[("META_CNI_FORCE_EXEC", "host-local")],
            ),
        ),
        (
            "reference bridge + host-local 1.1.1".to_string(),
            run("reference", &refbin, iters, &[]),
        ),
    ];
    rows.extend(before);
    println!(
        "\nADD+DEL, {iters} iterations each, one pod, cniVersion 1.0.0, isGateway, host-local /16\n"
    );
    print_table(rows);

    let fw = |label: &str, bin: &Path, env: &[(&str, &str)]| run_with(label, bin, iters, env, true);
    let rows = vec![
        (
            "meta-bridge, no firewall".to_string(),
            run("fw-none", &ours, iters, &[]),
        ),
        (
            "meta-bridge + ipMasq + macspoofchk, netlink in-process (default)".to_string(),
            fw("fw-netlink", &ours, &[]),
        ),
        (
            "meta-bridge + ipMasq + macspoofchk, libnftables in-process".to_string(),
            fw("fw-lib", &ours, &[("META_CNI_NFT", "lib")]),
        ),
        (
            "meta-bridge + ipMasq + macspoofchk, `nft` spawned".to_string(),
            fw("fw-exec", &ours, &[("META_CNI_NFT", "exec")]),
        ),
        (
            "reference bridge, no firewall".to_string(),
            run("fw-ref-none", &refbin, iters, &[]),
        ),
        (
            "reference bridge + ipMasq + macspoofchk".to_string(),
            fw("fw-ref", &refbin, &[]),
        ),
    ];
    println!("\nthe same with ipMasq + macspoofchk, {iters} iterations each\n");
    print_table(rows);
}
