//! DEL removes the pod-side links of the in-process attachments in one kernel request
//! (an interface group), leaves exec'd plugins' links to their own DEL, and still
//! cleans up everything.

mod common;
use common::*;
use meta_tests::link_names;
use serde_json::{Value, json};

fn run_logged(e: &Env, verb: &str, cid: &str, conf: &Value) -> meta_tests::Run {
    e.run_env(verb, cid, 0, "ns1", conf, &[("META_CNI_LOG", "debug")])
}

#[test]
fn del_removes_in_process_links_in_one_request() {
    let e = setup(1);
    // Everything in-process: eth0 (bridge), net1 (bridge), net2 (macvlan).
    let conf = e.conf("ns1/br-net, ns1/mv-net", json!({"forceExec": []}));
    run_logged(&e, "ADD", "td1", &conf).ok();
    assert_eq!(
        link_names(e.w.pods[0].netns()),
        vec!["eth0", "lo", "net1", "net2"]
    );
    let d = run_logged(&e, "DEL", "td1", &conf).ok();
    assert!(
        d.stderr.contains("DEL: 3 pod links removed in one request"),
        "{}",
        d.stderr
    );
    // Idempotent: the next DELs find nothing to batch and still succeed.
    for _ in 0..2 {
        let d = run_logged(&e, "DEL", "td1", &conf).ok();
        assert!(!d.stderr.contains("removed in one request"), "{}", d.stderr);
    }
    e.assert_clean(0, "after batched DEL");
}

#[test]
fn exec_plugins_keep_their_links_for_their_own_del() {
    let e = setup(1);
    // macvlan exec'd (the setup's default forceExec): only eth0 and net1 are batched, the
    // reference macvlan deletes net2 itself.
    let conf = e.conf("ns1/br-net, ns1/mv-net", json!({}));
    run_logged(&e, "ADD", "td2", &conf).ok();
    let d = run_logged(&e, "DEL", "td2", &conf).ok();
    assert!(
        d.stderr.contains("DEL: 2 pod links removed in one request"),
        "{}",
        d.stderr
    );
    e.assert_clean(0, "after mixed DEL");
}

#[test]
fn one_link_is_not_batched() {
    let e = setup(1);
    let conf = e.conf("", json!({"forceExec": []}));
    run_logged(&e, "ADD", "td3", &conf).ok();
    let d = run_logged(&e, "DEL", "td3", &conf).ok();
    assert!(!d.stderr.contains("removed in one request"), "{}", d.stderr);
    e.assert_clean(0, "after single DEL");
}
