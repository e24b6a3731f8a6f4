//! Traffic between pods on one master: macvlans in bridge mode reach each other (UDP
//! both ways from sockets opened inside the pod namespaces, and ping); private and vepa
//! mode keep them apart (the master's veth peer does not reflect frames).

mod common;
use common::*;
use serde_json::{Value, json};
use std::net::UdpSocket;
use std::time::Duration;

/// Two pods on the master in `mode`; returns the world, the config and the pods' IPs.
fn two_pods(mode: &str, subnet: &str) -> (World, Value, [String; 2]) {
    let w = world(2);
    let c = conf(
        "1.0.0",
        "traffic",
        json!({"master": MASTER, "mode": mode,
               "ipam": host_local(&w.path("ipam"), json!([[{"subnet": subnet}]]))}),
    );
    let mut ips = [String::new(), String::new()];
    for (i, ip) in ips.iter_mut().enumerate() {
        let r = invoke(&w, &ours(), "ADD", &format!("tr-{i}"), i, "eth0", &c).ok();
        let addr = r.value()["ips"][0]["address"]
            .as_str()
            .expect("address")
            .to_string();
        *ip = addr.split('/').next().expect("ip").to_string();
    }
    (w, c, ips)
}

/// A UDP socket bound inside pod `i` (it stays in that namespace).
fn udp_in(w: &World, i: usize, addr: &str) -> UdpSocket {
    let a = addr.to_string();
    let s = w.pods[i]
        .netns()
        .run(move || UdpSocket::bind(a))
        .expect("netns thread")
        .expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    s
}

/// Sends a datagram from pod `from` to pod `to` and returns what arrived, if anything.
fn udp_exchange(w: &World, ips: &[String; 2], from: usize, to: usize) -> Option<String> {
    let rx = udp_in(w, to, &format!("{}:0", ips[to]));
    let port = rx.local_addr().expect("addr").port();
    let tx = udp_in(w, from, &format!("{}:0", ips[from]));
    let msg = format!("hello from pod {from}");
    tx.send_to(msg.as_bytes(), format!("{}:{port}", ips[to]))
        .expect("send");
    let mut buf = [0u8; 64];
    match rx.recv_from(&mut buf) {
        Ok((n, src)) => {
            assert_eq!(src.ip().to_string(), ips[from], "source address");
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        }
        Err(_) => None,
    }
}

fn ping(w: &World, from: usize, ip: &str) -> bool {
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            w.pods[from].name(),
            "ping",
            "-c1",
            "-W2",
            ip,
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn bridge_mode_pods_reach_each_other() {
    let (w, c, ips) = two_pods("bridge", "10.95.0.0/24");
    assert_eq!(
        udp_exchange(&w, &ips, 0, 1).as_deref(),
        Some("hello from pod 0")
    );
    assert_eq!(
        udp_exchange(&w, &ips, 1, 0).as_deref(),
        Some("hello from pod 1")
    );
    assert!(ping(&w, 0, &ips[1]), "ping pod0 -> pod1");
    assert!(ping(&w, 1, &ips[0]), "ping pod1 -> pod0");
    // After DEL of pod 1, pod 0 no longer reaches it.
    invoke(&w, &ours(), "DEL", "tr-1", 1, "eth0", &c).ok();
    assert!(!ping(&w, 0, &ips[1]), "pod1 still answers after DEL");
}

#[test]
fn private_and_vepa_modes_isolate_pods() {
    for (mode, subnet) in [("private", "10.96.0.0/24"), ("vepa", "10.97.0.0/24")] {
        let (w, _c, ips) = two_pods(mode, subnet);
        assert_eq!(udp_exchange(&w, &ips, 0, 1), None, "{mode}: 0 -> 1");
        assert_eq!(udp_exchange(&w, &ips, 1, 0), None, "{mode}: 1 -> 0");
    }
}
