//! The firewall's own cost per verb, per backend, without a plugin process around it:
//! setup (masquerade of two addresses + MAC spoof check, one `setup_attachment` as
//! meta-bridge's ADD makes it) and teardown (`teardown_attachment`) of one attachment,
//! in a fresh network namespace that already holds `BENCH_PODS` other attachments
//! (default 0 and 100), for the netlink backend (default), libnftables and `nft` spawned.
//!
//! `cargo bench -p meta-firewall --bench backends` (root). `BENCH_ITERS` sets the
//! iterations (default 200). Prints a Markdown table for docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use meta_firewall::{Backend, Firewall, Nftables};

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn measure(backend: Backend, others: usize, iters: usize) -> (f64, f64, f64, f64) {
    let dir = std::env::temp_dir().join(format!("meta-fw-bench-{}", std::process::id()));
    let lock = dir.join("firewall.lock");
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root?)");
        let fw = Nftables::new().with_backend(backend).with_lock_path(&lock);
        for i in 0..others {
            let ip = format!("10.60.{}.{}/16", i / 250, i % 250 + 2).parse().unwrap();
            let id = format!("other{i}");
            fw.setup_masq("bench", &id, "eth0", &[ip]).unwrap();
            fw.setup_macspoofchk("bench", &id, "eth0", &format!("veth{i}"), [2, 0, 0, 0, 0, 1])
                .unwrap();
        }
        let ips = ["10.61.0.5/16".parse().unwrap(), "fd00:61::5/64".parse().unwrap()];
        let (mut add, mut del) = (Vec::new(), Vec::new());
        for _ in 0..iters {
            let t = Instant::now();
            fw.setup_attachment(
                "bench",
                "pod",
                "eth0",
                Some(&ips),
                Some(("vethpod", [2, 0, 0, 0, 0, 9])),
            )
            .unwrap();
            add.push(t.elapsed());
            let t = Instant::now();
            fw.teardown_attachment("bench", "pod", "eth0").unwrap();
            del.push(t.elapsed());
        }
        // drivers of a process share their sockets: let this one go first
        drop(fw);
        // As plugin processes do it: a fresh driver per verb, dropped at the end of it
        // (the netlink backend's socket is then handed off, see meta-firewall's nfnl).
        let (mut padd, mut pdel) = (Vec::new(), Vec::new());
        for _ in 0..iters {
            let t = Instant::now();
            let fw = Nftables::new().with_backend(backend).with_lock_path(&lock);
            fw.setup_attachment(
                "bench",
                "pod",
                "eth0",
                Some(&ips),
                Some(("vethpod", [2, 0, 0, 0, 0, 9])),
            )
            .unwrap();
            drop(fw);
            padd.push(t.elapsed());
            let t = Instant::now();
            let fw = Nftables::new().with_backend(backend).with_lock_path(&lock);
            fw.teardown_attachment("bench", "pod", "eth0").unwrap();
            drop(fw);
            pdel.push(t.elapsed());
        }
        eprintln!(
            "{backend:?}, {others} others: a fresh driver per verb: setup p50 {:.3} ms p99 {:.3} ms, teardown p50 {:.3} ms p99 {:.3} ms",
            pct(&mut padd, 0.5),
            pct(&mut padd, 0.99),
            pct(&mut pdel, 0.5),
            pct(&mut pdel, 0.99)
        );
        let _ = std::fs::remove_dir_all(&dir);
        (pct(&mut add, 0.5), pct(&mut add, 0.99), pct(&mut del, 0.5), pct(&mut del, 0.99))
    })
    .join()
    .expect("bench thread")
}

fn main() {
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let pods: Vec<usize> = std::env::var("BENCH_PODS")
        .ok()
        .map(|v| v.split(',').filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 100]);
    println!("\nipMasq (2 addresses) + macspoofchk of one attachment, {iters} iterations\n");
    println!(
        "| backend | other attachments | setup p50 | setup p99 | teardown p50 | teardown p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for &others in &pods {
        for (name, b) in [
            ("netlink (default)", Backend::Netlink),
            ("libnftables", Backend::Library),
            ("`nft` spawned", Backend::Binary),
        ] {
            let n = if b == Backend::Binary {
                iters.min(50)
            } else {
                iters
            };
            let (a50, a99, d50, d99) = measure(b, others, n);
            println!(
                "| {name} | {others} | {a50:.3} ms | {a99:.3} ms | {d50:.3} ms | {d99:.3} ms |"
            );
        }
    }
}
