//! The contract's data: `meta-tests/fixtures/contract/common.json` (cases for every
//! subject) and `<subject>.json`.
//!
//! A subject file is an object:
//!
//! | key | meaning |
//! |---|---|
//! | `refused_add` | [`Case`]s: ADDs that must fail (bad configuration values, a missing master, a later step failing, ...) |
//! | `bad_input` | [`Case`]s: invocations refused before the delegate does anything (added to `common.json`'s) |
//! | `one_address_ipam` | a merge patch of the base configuration leaving IPAM exactly one address |
//! | `exhausted` | `{code?, msg}` of the second ADD on that one-address range |
//! | `ifname_exists` | `{code?, msg}` of an ADD of an interface name the pod already has |
//!
//! A [`Case`] is `{name, verb?, version?, patch?, stdin?, env?, unset?, fault?, code, msg?,
//! mutates?, del_code?, live_del?, $why?}`: the invocation is the base configuration of `version`
//! (default 1.0.0) with `patch` merged in (RFC 7386: `null` removes a key) or the raw
//! `stdin`, and the contract's environment for `verb` (default ADD) with `env` set and
//! `unset` removed; `fault` is passed to [`Bed::inject`](super::Bed::inject) first. It
//! must fail with `code` and a message containing `msg`; unless `mutates` (the ADD gets as
//! far as changing the kernel before it fails, then rolls back), a bed that counts
//! [`mutations`](super::Bed::mutations) sees none. For `refused_add` cases,
//! `del_code` (default 0) is what the runtime's DEL of the same invocation must give,
//! and `live_del: false` keeps a case out of `del_with_refused_config` (for a patch that
//! names another attachment). `$why` says why a case is the way it is.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Where the fixture files are.
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/contract");

/// One table entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique within its table.
    pub name: String,
    /// `CNI_COMMAND` (default ADD).
    #[serde(default)]
    pub verb: Option<String>,
    /// Version of the base configuration (default 1.0.0).
    #[serde(default)]
    pub version: Option<String>,
    /// Merge patch over the base configuration.
    #[serde(default)]
    pub patch: Value,
    /// Raw stdin instead of the configuration.
    #[serde(default)]
    pub stdin: Option<String>,
    /// `CNI_*` (or other) variables to set.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables to leave unset.
    #[serde(default)]
    pub unset: Vec<String>,
    /// A fault for [`Bed::inject`](super::Bed::inject).
    #[serde(default)]
    pub fault: Option<String>,
    /// Expected error code.
    pub code: u64,
    /// Expected substring of the message (or details).
    #[serde(default)]
    pub msg: String,
    /// The ADD changes the kernel before failing (so a bed counting mutations sees some).
    #[serde(default)]
    pub mutates: bool,
    /// Expected code of the runtime's DEL after this (refused) ADD; 0 = success.
    #[serde(default)]
    pub del_code: u64,
    /// Whether `del_with_refused_config` applies.
    #[serde(default = "yes")]
    pub live_del: bool,
    /// Why the case is as it is.
    #[serde(default, rename = "$why")]
    pub why: Option<String>,
}

fn yes() -> bool {
    true
}

/// An expected failure: `{code?, msg}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Error code, when the subject documents one.
    #[serde(default)]
    pub code: Option<u64>,
    /// Substring of the message.
    #[serde(default)]
    pub msg: String,
}

/// A subject's fixture file (with `common.json`'s `bad_input` prepended).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Comment.
    #[serde(default, rename = "$comment")]
    pub comment: Option<String>,
    /// ADDs that must fail and leave nothing.
    #[serde(default)]
    pub refused_add: Vec<Case>,
    /// Invocations refused up front.
    #[serde(default)]
    pub bad_input: Vec<Case>,
    /// Merge patch making IPAM a one-address range.
    pub one_address_ipam: Value,
    /// The failure of an ADD on an exhausted range.
    #[serde(default)]
    pub exhausted: Expect,
    /// The failure of an ADD of an existing interface name.
    #[serde(default)]
    pub ifname_exists: Expect,
}

fn read(name: &str) -> Value {
    let path = format!("{DIR}/{name}.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

impl Fixture {
    /// `<subject>.json` with `common.json`'s `bad_input` cases first. Case names must be
    /// unique per table.
    pub fn load(subject: &str) -> Fixture {
        let mut f: Fixture = serde_json::from_value(read(subject))
            .unwrap_or_else(|e| panic!("fixtures/contract/{subject}.json: {e}"));
        #[derive(Deserialize)]
        struct Common {
            #[serde(rename = "$comment")]
            _comment: Option<String>,
            bad_input: Vec<Case>,
        }
        let common: Common = serde_json::from_value(read("common"))
            .unwrap_or_else(|e| panic!("fixtures/contract/common.json: {e}"));
        let mut bad = common.bad_input;
        bad.append(&mut f.bad_input);
        f.bad_input = bad;
        for (table, cases) in [("refused_add", &f.refused_add), ("bad_input", &f.bad_input)] {
            let mut seen = std::collections::HashSet::new();
            for c in cases {
                assert!(
                    seen.insert(c.name.as_str()),
                    "{subject}: duplicate {table} case {:?}",
                    c.name
                );
            }
        }
        f
    }
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` removes a key, anything
/// else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge_patch(
            &mut t,
            &json!({"a": null, "b": {"c": 9}, "e": [2], "f": {"g": 1}}),
        );
        assert_eq!(t, json!({"b": {"c": 9, "d": 3}, "e": [2], "f": {"g": 1}}));
    }
}
