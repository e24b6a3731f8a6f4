//! `CNI_ARGS`: `KEY=VALUE;KEY2=VALUE2`, with libcni's `IgnoreUnknown` semantics.

use crate::error::{Error, Result};

/// Keys every Kubernetes runtime passes (and that therefore every plugin knows).
pub const K8S_KEYS: &[&str] = &[
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// Parsed `CNI_ARGS`, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
    ignore_unknown: bool,
}

impl CniArgs {
    /// Parses the raw variable. An empty string is no arguments. A pair without `=` is an
    /// error (code 4), as is a bad `IgnoreUnknown` value.
    pub fn parse(raw: &str) -> Result<CniArgs> {
        let mut out = CniArgs::default();
        if raw.is_empty() {
            return Ok(out);
        }
        for pair in raw.split(';') {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(Error::env(format!(
                    "CNI_ARGS: invalid pair {pair:?} (want KEY=VALUE)"
                )));
            };
            if k.eq_ignore_ascii_case("IgnoreUnknown") {
                out.ignore_unknown = match v.to_ascii_lowercase().as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => {
                        return Err(Error::env(format!(
                            "CNI_ARGS: IgnoreUnknown={v:?} is not a boolean (1, true, 0, false)"
                        )));
                    }
                };
            }
            out.pairs.push((k.to_string(), v.to_string()));
        }
        Ok(out)
    }

    /// The value of a key (the last one wins, as in libcni).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `IgnoreUnknown` was set true.
    pub fn ignore_unknown(&self) -> bool {
        self.ignore_unknown
    }

    /// All pairs in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Fails (code 4, naming the key) on a key that is neither in `known` nor a Kubernetes
    /// key nor `IgnoreUnknown`, unless `IgnoreUnknown` is true.
    pub fn check_known(&self, known: &[&str]) -> Result<()> {
        if self.ignore_unknown {
            return Ok(());
        }
        for (k, _) in &self.pairs {
            if !k.eq_ignore_ascii_case("IgnoreUnknown")
                && !known.contains(&k.as_str())
                && !K8S_KEYS.contains(&k.as_str())
            {
                return Err(Error::env(format!(
                    "CNI_ARGS: unknown argument {k:?} (known: {}; set IgnoreUnknown=1 to ignore)",
                    known
                        .iter()
                        .chain(K8S_KEYS)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The Kubernetes pod identity, when present.
    pub fn k8s_pod(&self) -> Option<K8sPod> {
        Some(K8sPod {
            namespace: self.get("K8S_POD_NAMESPACE")?.to_string(),
            name: self.get("K8S_POD_NAME")?.to_string(),
            infra_container_id: self.get("K8S_POD_INFRA_CONTAINER_ID").map(str::to_string),
            uid: self.get("K8S_POD_UID").map(str::to_string),
        })
    }
}

/// The pod identity a Kubernetes runtime passes in `CNI_ARGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sPod {
    /// K8S_POD_NAMESPACE
    pub namespace: String,
    /// K8S_POD_NAME
    pub name: String,
    /// K8S_POD_INFRA_CONTAINER_ID
    pub infra_container_id: Option<String>,
    /// K8S_POD_UID
    pub uid: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubelet_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
        )
        .unwrap();
        assert!(a.ignore_unknown());
        let p = a.k8s_pod().unwrap();
        assert_eq!((p.namespace.as_str(), p.name.as_str()), ("ns", "p"));
        assert_eq!(p.uid.as_deref(), Some("u-1"));
        assert!(a.check_known(&[]).is_ok());
    }

    #[test]
    fn unknown_keys() {
        let a = CniArgs::parse("FOO=bar;IP=10.0.0.2").unwrap();
        let e = a.check_known(&["IP"]).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("\"FOO\""), "{}", e.msg);
        let a = CniArgs::parse("FOO=bar;IgnoreUnknown=true").unwrap();
        assert!(a.check_known(&["IP"]).is_ok());
        let a = CniArgs::parse("K8S_POD_NAME=x").unwrap();
        assert!(a.check_known(&[]).is_ok());
    }

    #[test]
    fn bad_input() {
        assert_eq!(CniArgs::parse("novalue").unwrap_err().code, 4);
        assert_eq!(CniArgs::parse("IgnoreUnknown=maybe").unwrap_err().code, 4);
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        // a value may itself contain '=' (e.g. base64)
        assert_eq!(CniArgs::parse("X=a=b").unwrap().get("X"), Some("a=b"));
    }
}
