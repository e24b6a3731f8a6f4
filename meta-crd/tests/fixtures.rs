//! Data-driven tests: every case in `tests/fixtures/annotations.json` states the exact parsed
//! value or the exact error.
//!
//! Groups:
//! - `networks`: `k8s.v1.cni.cncf.io/networks` values, parsed with the case's `namespace`
//!   as the pod namespace; `expect` is `{format, networks, warnings}` or `error` is
//!   `{message, index?, field?}`.
//! - `default_network`: `v1.multus-cni.io/default-network` values; `expect` is
//!   `{network, warnings}`.
//! - `nad_config`: `effective_config` on a NetworkAttachmentDefinition; `expect` is
//!   `{kind: conf|conflist|confdir, config?, name?}`.
//!
//! `FIXTURE_PRINT=1 cargo test -p meta-crd --test fixtures` prints every actual outcome.

use meta_crd::{
    Error, NadConfig, NetworkAttachmentDefinition, effective_config, parse_default_network,
    parse_network_selection,
};
use serde_json::{Value, json};

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/annotations.json"
    );
    let text = std::fs::read_to_string(path).expect("read fixtures");
    serde_json::from_str(&text).expect("fixtures are JSON")
}

fn error_json(e: &Error) -> Value {
    let mut v = json!({ "message": e.to_string() });
    if let Some(i) = e.index() {
        v["index"] = json!(i);
    }
    if let Some(f) = e.field() {
        v["field"] = json!(f);
    }
    v
}

fn outcome(result: Result<Value, Error>) -> Value {
    match result {
        Ok(v) => json!({ "expect": v }),
        Err(e) => json!({ "error": error_json(&e) }),
    }
}

fn run_group(group: &str, eval: impl Fn(&Value) -> Result<Value, Error>) -> usize {
    let all = fixtures();
    let cases = all[group].as_array().expect("group is a list");
    let print = std::env::var_os("FIXTURE_PRINT").is_some();
    let mut failures = Vec::new();
    let mut names = std::collections::HashSet::new();
    for case in cases {
        let name = case["name"].as_str().expect("case has a name");
        assert!(names.insert(name.to_string()), "duplicate case name {name}");
        let got = outcome(eval(case));
        let want = if case.get("expect").is_some() {
            json!({ "expect": case["expect"] })
        } else {
            json!({ "error": case["error"] })
        };
        if print {
            println!("{group}/{name}: {got}");
        }
        if got != want {
            failures.push(format!("{group}/{name}:\n  want {want}\n  got  {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

#[test]
fn networks_annotation_cases() {
    let n = run_group("networks", |case| {
        let annotation = case["annotation"].as_str().expect("annotation string");
        let ns = case["namespace"].as_str().unwrap_or("pod-ns");
        let parsed = parse_network_selection(annotation, ns)?;
        Ok(json!({
            "format": parsed.format,
            "networks": parsed.networks,
            "warnings": parsed.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }))
    });
    assert!(n >= 50, "only {n} networks cases");
}

#[test]
fn default_network_annotation_cases() {
    let n = run_group("default_network", |case| {
        let annotation = case["annotation"].as_str().expect("annotation string");
        let ns = case["namespace"].as_str().unwrap_or("kube-system");
        let parsed = parse_default_network(annotation, ns)?;
        Ok(json!({
            "network": parsed.network,
            "warnings": parsed.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }))
    });
    assert!(n >= 8, "only {n} default-network cases");
}

#[test]
fn nad_config_cases() {
    let n = run_group("nad_config", |case| {
        let nad: NetworkAttachmentDefinition =
            serde_json::from_value(case["nad"].clone()).expect("case nad deserializes");
        Ok(match effective_config(&nad)? {
            NadConfig::ConfDir { name } => json!({ "kind": "confdir", "name": name }),
            NadConfig::Conf(m) => json!({ "kind": "conf", "config": m }),
            NadConfig::ConfList(m) => json!({ "kind": "conflist", "config": m }),
        })
    });
    assert!(n >= 10, "only {n} NAD config cases");
}

#[test]
fn at_least_sixty_annotation_cases() {
    let all = fixtures();
    let n = all["networks"].as_array().map_or(0, Vec::len)
        + all["default_network"].as_array().map_or(0, Vec::len);
    assert!(n >= 60, "only {n} annotation cases");
}
