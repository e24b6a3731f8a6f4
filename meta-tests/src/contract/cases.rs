//! The contract cases (see the table in the module documentation of [`super`]).

use super::fixture::{Case, Fixture, merge_patch};
use super::kernel::CNI_PATH;
use super::{
    Bed, CNI_ARGS, Subject, VERSIONS, allocations, assert_error, assert_residue, assert_result,
    assert_silent_ok, residue, tag_owner,
};
use crate::{Invocation, Run};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// One invocation's environment, owned.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// CNI_COMMAND.
    pub verb: String,
    /// CNI_CONTAINERID.
    pub cid: String,
    /// CNI_NETNS.
    pub netns: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// CNI_ARGS.
    pub args: String,
    /// CNI_PATH.
    pub path: String,
    /// Other variables.
    pub extra: Vec<(String, String)>,
    /// Variables left unset.
    pub unset: Vec<String>,
}

impl Call {
    /// The harness's invocation.
    pub fn inv(&self) -> Invocation<'_> {
        Invocation {
            verb: &self.verb,
            container_id: &self.cid,
            netns: &self.netns,
            ifname: &self.ifname,
            args: &self.args,
            path: &self.path,
            extra_env: self
                .extra
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            unset: self.unset.iter().map(String::as_str).collect(),
        }
    }

    /// Sets the variables of `env` (the `CNI_*` ones replace the call's), then marks
    /// `unset` as unset.
    pub fn apply(&mut self, env: &BTreeMap<String, String>, unset: &[String]) {
        for (k, v) in env {
            let v = v.clone();
            match k.as_str() {
                "CNI_COMMAND" => self.verb = v,
                "CNI_CONTAINERID" => self.cid = v,
                "CNI_NETNS" => self.netns = v,
                "CNI_IFNAME" => self.ifname = v,
                "CNI_ARGS" => self.args = v,
                "CNI_PATH" => self.path = v,
                _ => self.extra.push((k.clone(), v)),
            }
        }
        self.unset.extend(unset.iter().cloned());
    }
}

/// A case's bed and the state it started from.
struct T<'s> {
    name: String,
    bed: Box<dyn Bed + 's>,
    base: Vec<String>,
}

impl<'s> T<'s> {
    fn new(s: &'s dyn Subject) -> T<'s> {
        let bed = s.bed();
        let base = residue(&*bed);
        T {
            name: s.name().to_string(),
            bed,
            base,
        }
    }

    /// An ADD/DEL/CHECK call for (`cid`, `ifname`) in pod `pod`.
    fn call(&self, verb: &str, cid: &str, pod: usize, ifname: &str) -> Call {
        Call {
            verb: verb.into(),
            cid: cid.into(),
            netns: self.bed.netns(pod),
            ifname: ifname.into(),
            args: CNI_ARGS.into(),
            path: CNI_PATH.into(),
            ..Default::default()
        }
    }

    /// A STATUS/GC/VERSION call (no container, netns or interface, as libcni sends them).
    fn plain(&self, verb: &str) -> Call {
        Call {
            verb: verb.into(),
            path: CNI_PATH.into(),
            ..Default::default()
        }
    }

    fn run(&self, call: &Call, stdin: &[u8]) -> Run {
        self.bed.run(&call.inv(), stdin)
    }

    fn run_conf(&self, call: &Call, conf: &Value) -> Run {
        self.run(call, conf.to_string().as_bytes())
    }

    /// Runs and asserts success with a result; returns it.
    fn add(&self, call: &Call, conf: &Value, ctx: &str) -> Value {
        let r = self.run_conf(call, conf);
        assert_eq!(
            r.code, 0,
            "{}: {ctx}: ADD failed: stdout={} stderr={}",
            self.name, r.stdout, r.stderr
        );
        r.value().clone()
    }

    fn ok(&self, call: &Call, conf: &Value, ctx: &str) {
        let r = self.run_conf(call, conf);
        assert_silent_ok(&r, &format!("{}: {ctx}", self.name));
    }

    fn clean(&self, ctx: &str) {
        assert_residue(&*self.bed, &self.base, &format!("{}: {ctx}", self.name));
    }

    fn same(&self, want: &[String], ctx: &str) {
        assert_residue(&*self.bed, want, &format!("{}: {ctx}", self.name));
    }

    fn now(&self) -> Vec<String> {
        residue(&*self.bed)
    }
}

fn with(conf: &Value, key: &str, v: Value) -> Value {
    let mut c = conf.clone();
    c[key] = v;
    c
}

/// The `cniVersion` an error document for `stdin` carries: the configuration's when the
/// delegates speak it, else the newest.
fn err_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .filter(|v| VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| VERSIONS[VERSIONS.len() - 1].to_string())
}

fn below(v: &str, min: &str) -> bool {
    let pos = |x: &str| VERSIONS.iter().position(|y| *y == x);
    pos(v).expect("a supported version") < pos(min).expect("a supported version")
}

/// Every verb in `version`: VERSION, ADD (result valid for the version, interface in the
/// pod with the result's addresses), CHECK (from 0.4.0; code 1 below; code 7 without
/// `prevResult`), STATUS and GC (1.1.0; code 1 below; GC keeps the attachment it is told
/// is valid), DEL with `prevResult` then twice without: nothing left.
pub fn verbs(s: &dyn Subject, version: &str) {
    let t = T::new(s);
    let v = version;
    let c = t.bed.conf(v);
    // VERSION, with the configuration's version and with none.
    let r = t.run_conf(&t.plain("VERSION"), &json!({"cniVersion": v}));
    assert_eq!(r.code, 0, "{v}: VERSION: {}", r.stdout);
    assert_eq!(
        r.value(),
        &json!({"cniVersion": v, "supportedVersions": VERSIONS}),
        "{v}: VERSION"
    );
    let r = t.run(&t.plain("VERSION"), b"");
    assert_eq!(r.value()["cniVersion"], "1.1.0", "VERSION without stdin");
    // ADD.
    let add = t.call("ADD", "ct-verbs", 0, "eth0");
    let res = t.add(&add, &c, v);
    assert_result(&res, v, "eth0", &t.bed.netns(0));
    let pod = t
        .bed
        .pod_iface(0, "eth0")
        .unwrap_or_else(|| panic!("{v}: eth0 is not in the pod"));
    for ip in res["ips"].as_array().into_iter().flatten() {
        let a = ip["address"].as_str().unwrap_or_default().to_string();
        assert!(pod.addrs.contains(&a), "{v}: {a} not on eth0: {pod:?}");
    }
    let owners: BTreeSet<(String, String)> = allocations(&*t.bed)
        .into_iter()
        .map(|a| (a.container_id, a.ifname))
        .collect();
    assert_eq!(
        owners,
        BTreeSet::from([("ct-verbs".to_string(), "eth0".to_string())]),
        "{v}: IPAM reservations after ADD"
    );
    let live = t.now();
    assert!(
        live.iter().any(|l| l.starts_with("pod0 link eth0 ")),
        "{v}: the pod link is not in the residue listing: {live:?}"
    );
    let tags = t.bed.firewall_tags();
    assert_eq!(
        !tags.is_empty(),
        t.bed.has_firewall(),
        "{v}: firewall rules after ADD: {tags:?}"
    );
    assert!(
        tags.iter()
            .all(|tag| tag_owner(tag) == ("ct-verbs".into(), "eth0".into())),
        "{v}: firewall rules of another attachment: {tags:?}"
    );
    let prev = with(&c, "prevResult", res.clone());
    // CHECK.
    let chk = t.call("CHECK", "ct-verbs", 0, "eth0");
    let r = t.run_conf(&chk, &prev);
    if below(v, "0.4.0") {
        assert_error(&r, Some(1), "CHECK", Some(v), &format!("{v}: CHECK"));
    } else {
        assert_silent_ok(&r, &format!("{v}: CHECK"));
        let r = t.run_conf(&chk, &c);
        assert_error(
            &r,
            Some(7),
            "prevResult",
            Some(v),
            &format!("{v}: CHECK without prevResult"),
        );
    }
    t.same(&live, &format!("{v}: after CHECK"));
    // STATUS, and GC that lists the attachment as valid.
    let gc = with(
        &c,
        "cni.dev/valid-attachments",
        json!([{"containerID": "ct-verbs", "ifname": "eth0"}]),
    );
    for (verb, conf) in [("STATUS", &c), ("GC", &gc)] {
        let r = t.run_conf(&t.plain(verb), conf);
        if below(v, "1.1.0") {
            assert_error(&r, Some(1), verb, Some(v), &format!("{v}: {verb}"));
        } else {
            assert_silent_ok(&r, &format!("{v}: {verb}"));
        }
        t.same(&live, &format!("{v}: after {verb}"));
    }
    // DEL with prevResult, then twice without.
    let del = t.call("DEL", "ct-verbs", 0, "eth0");
    t.ok(&del, &prev, &format!("{v}: DEL with prevResult"));
    t.clean(&format!("{v}: after DEL"));
    for i in 2..=3 {
        t.ok(&del, &c, &format!("{v}: DEL #{i}"));
    }
    t.clean(&format!("{v}: after three DELs"));
}

/// DEL without `prevResult` removes everything; two more DELs succeed.
pub fn del_three_times(s: &dyn Subject) {
    let t = T::new(s);
    let c = t.bed.conf("1.0.0");
    t.add(&t.call("ADD", "ct-del", 0, "eth0"), &c, "ADD");
    let del = t.call("DEL", "ct-del", 0, "eth0");
    t.ok(&del, &c, "DEL #1 (no prevResult)");
    t.clean("after DEL #1");
    t.ok(&del, &c, "DEL #2");
    t.ok(&del, &c, "DEL #3");
    t.clean("after DEL #3");
}

/// The pod's namespace is gone: DEL (three times) succeeds and leaves nothing.
pub fn del_netns_gone(s: &dyn Subject) {
    let mut t = T::new(s);
    let c = t.bed.conf("1.0.0");
    let del = t.call("DEL", "ct-gone", 0, "eth0");
    t.add(&t.call("ADD", "ct-gone", 0, "eth0"), &c, "ADD");
    t.bed.drop_pod(0);
    for i in 1..=3 {
        t.ok(&del, &c, &format!("DEL #{i} with the netns gone"));
    }
    t.clean("after DEL with the netns gone");
}

/// `CNI_NETNS` empty: DEL (three times) succeeds and releases what lives outside the pod
/// (IPAM, firewall rules); once the pod goes, nothing is left.
pub fn del_netns_empty(s: &dyn Subject) {
    let mut t = T::new(s);
    let c = t.bed.conf("1.0.0");
    t.add(&t.call("ADD", "ct-empty", 0, "eth0"), &c, "ADD");
    let mut del = t.call("DEL", "ct-empty", 0, "eth0");
    del.netns.clear();
    for i in 1..=3 {
        t.ok(&del, &c, &format!("DEL #{i} with CNI_NETNS empty"));
    }
    let left = allocations(&*t.bed);
    assert!(left.is_empty(), "{}: IPAM not released: {left:?}", t.name);
    let tags = t.bed.firewall_tags();
    assert!(tags.is_empty(), "{}: firewall rules left: {tags:?}", t.name);
    t.bed.drop_pod(0);
    t.clean("after DEL with CNI_NETNS empty and the pod gone");
}

/// DEL of an attachment that never existed (the runtime's DEL after an ADD that failed
/// early) succeeds, with or without the netns, and touches no other attachment.
pub fn del_never_added(s: &dyn Subject) {
    let t = T::new(s);
    let c = t.bed.conf("1.0.0");
    let mut del = t.call("DEL", "ct-never", 0, "net9");
    t.ok(&del, &c, "DEL of nothing");
    t.clean("after DEL of nothing");
    t.add(&t.call("ADD", "ct-live", 0, "eth0"), &c, "ADD");
    let live = t.now();
    t.ok(&del, &c, "DEL of nothing next to a live attachment");
    del.netns.clear();
    t.ok(&del, &c, "DEL of nothing, CNI_NETNS empty");
    t.same(&live, "the live attachment after DELs of another");
    t.ok(&t.call("DEL", "ct-live", 0, "eth0"), &c, "DEL");
    t.clean("after DEL");
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Runs `f` for every case, then fails listing every case that failed (never passes an
/// empty table: a contract case that cannot run must fail).
fn table(s: &dyn Subject, what: &str, cases: &[Case], f: impl Fn(&Case)) {
    assert!(
        !cases.is_empty(),
        "{}: no {what} cases in fixtures/contract/{}.json",
        s.name(),
        s.name()
    );
    let mut failed = Vec::new();
    for c in cases {
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c))) {
            failed.push(format!("  [{}] {}", c.name, panic_text(p)));
        }
    }
    assert!(
        failed.is_empty(),
        "{} {what}: {} of {} cases failed:\n{}",
        s.name(),
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// The invocation of a table case: the base configuration of its version with its patch
/// (or its raw stdin), its verb's call (container `cid`, pod 0, `eth0`) with its
/// environment.
fn case_call(t: &T, case: &Case, cid: &str) -> (Call, Vec<u8>) {
    let version = case.version.as_deref().unwrap_or("1.0.0");
    let mut conf = t.bed.conf(version);
    if !case.patch.is_null() {
        merge_patch(&mut conf, &case.patch);
    }
    let verb = case.verb.as_deref().unwrap_or("ADD");
    let mut call = match verb {
        "STATUS" | "GC" | "VERSION" => t.plain(verb),
        _ => t.call(verb, cid, 0, "eth0"),
    };
    call.apply(&case.env, &case.unset);
    let stdin = match &case.stdin {
        Some(s) => s.clone().into_bytes(),
        None => conf.to_string().into_bytes(),
    };
    (call, stdin)
}

fn refused_cases(s: &dyn Subject) -> Vec<Case> {
    let f = Fixture::load(s.name());
    for c in &f.refused_add {
        assert!(
            c.verb.as_deref().unwrap_or("ADD") == "ADD",
            "{}: refused_add case {:?} must be an ADD",
            s.name(),
            c.name
        );
    }
    f.refused_add
}

/// Every `refused_add` case fails with its code and message, as one JSON error document,
/// and leaves nothing (and, unless it `mutates`, sends no request to a kernel whose
/// requests the bed counts).
pub fn refused_add(s: &dyn Subject) {
    table(s, "refused_add", &refused_cases(s), |case| {
        let t = T::new(s);
        let (call, stdin) = case_call(&t, case, "ct-refused");
        if let Some(f) = &case.fault {
            t.bed.inject(f);
        }
        let m0 = t.bed.mutations();
        let r = t.run(&call, &stdin);
        assert_error(
            &r,
            Some(case.code),
            &case.msg,
            Some(&err_version(&stdin)),
            "ADD",
        );
        if !case.mutates {
            assert_eq!(
                t.bed.mutations(),
                m0,
                "requests reached the kernel before the ADD was refused (set \"mutates\" if it gets that far by design)"
            );
        }
        t.clean("after the refused ADD");
    });
}

/// The runtime's DEL after each refused ADD (same configuration and environment)
/// succeeds (or fails with the case's `del_code`), twice, and leaves nothing.
pub fn del_after_refused_add(s: &dyn Subject) {
    table(s, "del_after_refused_add", &refused_cases(s), |case| {
        let t = T::new(s);
        let (mut call, stdin) = case_call(&t, case, "ct-refused");
        if let Some(f) = &case.fault {
            t.bed.inject(f);
        }
        let r = t.run(&call, &stdin);
        assert_ne!(r.code, 0, "ADD was expected to fail: {}", r.stdout);
        call.verb = "DEL".into();
        for i in 1..=2 {
            let r = t.run(&call, &stdin);
            let ctx = format!("DEL #{i} after the refused ADD");
            if case.del_code == 0 {
                assert_silent_ok(&r, &ctx);
            } else {
                assert_error(
                    &r,
                    Some(case.del_code),
                    "",
                    Some(&err_version(&stdin)),
                    &ctx,
                );
            }
            t.clean(&ctx);
        }
    });
}

/// A live attachment (ADDed with the base configuration) DELed with a refused case's
/// configuration and environment is removed all the same (the configuration may have
/// changed since ADD; a DEL that fails blocks the pod's teardown). Cases with a fault, a
/// raw stdin or `live_del: false` do not apply.
pub fn del_with_refused_config(s: &dyn Subject) {
    let cases: Vec<Case> = refused_cases(s)
        .into_iter()
        .filter(|c| c.live_del && c.fault.is_none() && c.stdin.is_none())
        .collect();
    table(s, "del_with_refused_config", &cases, |case| {
        let t = T::new(s);
        let version = case.version.as_deref().unwrap_or("1.0.0");
        let base = t.bed.conf(version);
        t.add(&t.call("ADD", "ct-live", 0, "eth0"), &base, "ADD");
        let (mut call, stdin) = case_call(&t, case, "ct-live");
        call.verb = "DEL".into();
        let r = t.run(&call, &stdin);
        if case.del_code == 0 {
            assert_silent_ok(&r, "DEL with the refused configuration");
        } else {
            assert_error(
                &r,
                Some(case.del_code),
                "",
                Some(&err_version(&stdin)),
                "DEL with the refused configuration",
            );
            t.ok(
                &t.call("DEL", "ct-live", 0, "eth0"),
                &base,
                "DEL with the base configuration",
            );
        }
        t.clean("after DEL");
    });
}

/// GC (1.1.0): a malformed valid-attachments list is code 7 and releases nothing; a list
/// keeps exactly its attachments' IPAM allocations and firewall rules and releases the
/// others'; the older key `cni.dev/attachments` works too; DEL after GC succeeds.
pub fn gc(s: &dyn Subject) {
    let t = T::new(s);
    let c = t.bed.conf("1.1.0");
    let n = t.bed.pods();
    let atts: Vec<(String, usize, String)> = (0..3)
        .map(|i| (format!("gc-{i}"), i % n, format!("net{}", i + 1)))
        .collect();
    for (cid, pod, ifname) in &atts {
        t.add(&t.call("ADD", cid, *pod, ifname), &c, "ADD");
    }
    let owners = |bed: &dyn Bed| -> BTreeSet<(String, String)> {
        allocations(bed)
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect()
    };
    assert_eq!(owners(&*t.bed).len(), 3, "{}: three allocations", t.name);
    let tags_before = t.bed.firewall_tags();
    let live = t.now();
    for bad in [json!("nope"), json!([{"containerID": 1}])] {
        let r = t.run_conf(&t.plain("GC"), &with(&c, "cni.dev/valid-attachments", bad));
        assert_error(&r, Some(7), "", Some("1.1.0"), "GC with a malformed list");
        t.same(&live, "after a malformed GC");
    }
    let keep = ("gc-1".to_string(), "net2".to_string());
    let g = with(
        &c,
        "cni.dev/valid-attachments",
        json!([{"containerID": keep.0, "ifname": keep.1}]),
    );
    let r = t.run_conf(&t.plain("GC"), &g);
    assert_silent_ok(&r, &format!("{}: GC", t.name));
    assert_eq!(
        owners(&*t.bed),
        BTreeSet::from([keep.clone()]),
        "{}: IPAM after GC",
        t.name
    );
    let tags = t.bed.firewall_tags();
    let kept: Vec<String> = tags_before
        .iter()
        .filter(|tag| tag_owner(tag) == keep)
        .cloned()
        .collect();
    assert_eq!(
        tags, kept,
        "{}: firewall rules after GC (before: {tags_before:?})",
        t.name
    );
    // The older key, listing nothing: everything goes.
    let r = t.run_conf(&t.plain("GC"), &with(&c, "cni.dev/attachments", json!([])));
    assert_silent_ok(&r, &format!("{}: GC with cni.dev/attachments", t.name));
    assert!(
        owners(&*t.bed).is_empty(),
        "{}: IPAM after GC of everything",
        t.name
    );
    assert!(
        t.bed.firewall_tags().is_empty(),
        "{}: firewall rules after GC of everything",
        t.name
    );
    for (cid, pod, ifname) in &atts {
        t.ok(&t.call("DEL", cid, *pod, ifname), &c, "DEL after GC");
    }
    t.clean("after GC and DEL");
}

/// Every `bad_input` case (common and the subject's) fails with its code as exactly one
/// JSON error document and touches nothing — not even a live attachment next to it.
pub fn bad_input(s: &dyn Subject) {
    let f = Fixture::load(s.name());
    let t = T::new(s);
    let c = t.bed.conf("1.0.0");
    t.add(&t.call("ADD", "ct-live", 0, "net1"), &c, "ADD");
    let live = t.now();
    let m0 = t.bed.mutations();
    table(s, "bad_input", &f.bad_input, |case| {
        let (call, stdin) = case_call(&t, case, "ct-bad");
        if let Some(fault) = &case.fault {
            t.bed.inject(fault);
        }
        let r = t.run(&call, &stdin);
        assert_error(
            &r,
            Some(case.code),
            &case.msg,
            Some(&err_version(&stdin)),
            &call.verb,
        );
        t.same(&live, "after the bad input");
        assert_eq!(
            t.bed.mutations(),
            m0,
            "requests reached the kernel for bad input"
        );
    });
    t.ok(&t.call("DEL", "ct-live", 0, "net1"), &c, "DEL");
    t.clean("after DEL");
}

/// ADD of an interface name the pod already has fails naming it, and changes neither
/// that interface nor anything else — also when it is the same attachment again (a
/// runtime's retry); DEL of the first attachment then leaves nothing.
pub fn add_ifname_exists(s: &dyn Subject) {
    let f = Fixture::load(s.name());
    let t = T::new(s);
    let c = t.bed.conf("1.0.0");
    t.add(&t.call("ADD", "ct-first", 0, "eth0"), &c, "ADD");
    let before = t.bed.pod_iface(0, "eth0");
    let live = t.now();
    let r = t.run_conf(&t.call("ADD", "ct-second", 0, "eth0"), &c);
    assert_error(
        &r,
        f.ifname_exists.code,
        &f.ifname_exists.msg,
        Some("1.0.0"),
        "second ADD of eth0",
    );
    assert_error(&r, None, "eth0", None, "the error names the interface");
    t.same(&live, "after the refused ADD");
    assert_eq!(
        t.bed.pod_iface(0, "eth0"),
        before,
        "the existing interface changed"
    );
    // The same attachment again (a runtime retrying an ADD it thinks failed).
    let r = t.run_conf(&t.call("ADD", "ct-first", 0, "eth0"), &c);
    assert_error(&r, None, "", Some("1.0.0"), "the same ADD again");
    t.same(&live, "after the repeated ADD");
    assert_eq!(
        t.bed.pod_iface(0, "eth0"),
        before,
        "the existing interface changed after the repeated ADD"
    );
    t.ok(&t.call("DEL", "ct-first", 0, "eth0"), &c, "DEL");
    t.clean("after DEL");
}

/// IPAM fails after the link was made (a one-address range, already taken): the ADD
/// leaves nothing of its own, its DEL succeeds without touching the live attachment's
/// address, and DEL of that one then leaves nothing.
pub fn add_ipam_exhausted(s: &dyn Subject) {
    let f = Fixture::load(s.name());
    let t = T::new(s);
    let mut c = t.bed.conf("1.0.0");
    merge_patch(&mut c, &f.one_address_ipam);
    t.add(&t.call("ADD", "ct-one", 0, "eth0"), &c, "ADD");
    let live = t.now();
    let two = t.call("ADD", "ct-two", 0, "net2");
    let r = t.run_conf(&two, &c);
    assert_error(
        &r,
        f.exhausted.code,
        &f.exhausted.msg,
        Some("1.0.0"),
        "ADD on the exhausted range",
    );
    t.same(&live, "after the failed ADD");
    t.ok(
        &t.call("DEL", "ct-two", 0, "net2"),
        &c,
        "DEL of the failed one",
    );
    t.same(&live, "after DEL of the failed one");
    t.ok(&t.call("DEL", "ct-one", 0, "eth0"), &c, "DEL");
    t.clean("after DEL");
}
