//! The meta plugin's configuration: a conflist entry of type `meta-cni`, with Multus's keys.

use cni_core::{CmdArgs, Error, Result};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::path::PathBuf;

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SoL {
        S(String),
        L(Vec<String>),
    }
    Ok(match Option::<SoL>::deserialize(d)? {
        None => Vec::new(),
        Some(SoL::S(s)) => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
        Some(SoL::L(l)) => l,
    })
}

pub use meta_crd::pod::DEFAULT_GLOBAL_NAMESPACE;

fn d_system() -> Vec<String> {
    vec!["kube-system".into()]
}
fn d_kube_system() -> String {
    "kube-system".into()
}
fn d_conf_dir() -> PathBuf {
    "/etc/cni/multus/net.d".into()
}
fn d_bin_dir() -> String {
    "/opt/cni/bin".into()
}
fn d_cache_dir() -> PathBuf {
    "/var/lib/cni/meta-cni".into()
}
fn d_agent_socket() -> PathBuf {
    PathBuf::from(meta_crd::agent_api::DEFAULT_SOCKET)
}

fn d_timeout() -> u64 {
    10
}

/// The `meta-cni` configuration (Multus-compatible keys plus a few of our own).
#[derive(Debug, Clone, Deserialize)]
pub struct MetaConf {
    /// Kubeconfig for the API server; absent = no Kubernetes (local mode or annotations
    /// from the runtime only).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The cluster network: a NAD name (`name` in `multusNamespace`, or `ns/name`), a
    /// network name or file name in `confDir`, or an absolute path to a conf/conflist.
    #[serde(rename = "clusterNetwork", default)]
    pub cluster_network: Option<String>,
    /// Inline cluster network configuration(s) (Multus `delegates`); the first is used
    /// when `clusterNetwork` is not set.
    #[serde(default)]
    pub delegates: Vec<Value>,
    /// Networks every pod gets after the cluster network (not in `systemNamespaces`).
    #[serde(
        rename = "defaultNetworks",
        default,
        deserialize_with = "string_or_list"
    )]
    pub default_networks: Vec<String>,
    /// Namespaces whose pods get only the cluster network.
    #[serde(
        rename = "systemNamespaces",
        default = "d_system",
        deserialize_with = "string_or_list"
    )]
    pub system_namespaces: Vec<String>,
    /// Where cluster-level NADs (clusterNetwork, defaultNetworks) live.
    #[serde(
        rename = "multusNamespace",
        alias = "clusterNadNamespace",
        default = "d_kube_system"
    )]
    pub multus_namespace: String,
    /// Pods may only name NADs of their own namespace and of the global namespaces.
    #[serde(rename = "namespaceIsolation", default)]
    pub namespace_isolation: bool,
    /// Namespaces whose NADs any pod may name under isolation (comma list or array);
    /// unset or empty = `default` only (see [`MetaConf::global_namespaces`]).
    #[serde(
        rename = "globalNamespaces",
        default,
        deserialize_with = "string_or_list"
    )]
    pub global_namespaces: Vec<String>,
    /// Directory of CNI configurations for NADs without `spec.config`.
    #[serde(rename = "confDir", default = "d_conf_dir")]
    pub conf_dir: PathBuf,
    /// Where delegate binaries are (colon-separated like CNI_PATH); the runtime's CNI_PATH
    /// is searched after it.
    #[serde(rename = "binDir", default = "d_bin_dir")]
    pub bin_dir: String,
    /// The journal (cache) directory.
    #[serde(rename = "cniDir", alias = "cacheDir", default = "d_cache_dir")]
    pub cache_dir: PathBuf,
    /// ADD and STATUS fail until this file exists (e.g. written by the overlay agent).
    #[serde(rename = "readinessindicatorfile", default)]
    pub readiness_indicator_file: Option<PathBuf>,
    /// Log file (else stderr).
    #[serde(rename = "logFile", default)]
    pub log_file: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace (Multus's "verbose" = debug, "panic" = error).
    #[serde(rename = "logLevel", default)]
    pub log_level: Option<String>,
    /// Local mode: NADs from `<dir>/<namespace>/<name>.json` instead of the API server.
    #[serde(rename = "localNadDir", default)]
    pub local_nad_dir: Option<PathBuf>,
    /// Where each verb drops its record for the node agent (Events, metrics); unset = the
    /// `spool` directory next to `agentSocket`, empty = none. Nothing is written while the
    /// directory does not exist (the agent creates it).
    #[serde(rename = "spoolDir", default)]
    pub spool_dir: Option<PathBuf>,
    /// Delegate types to exec even though they are bundled.
    #[serde(rename = "forceExec", default, deserialize_with = "string_or_list")]
    pub force_exec: Vec<String>,
    /// Upper bound of each API request, seconds.
    #[serde(rename = "apiTimeoutSeconds", default = "d_timeout")]
    pub api_timeout_seconds: u64,
    /// With `kubeconfig`: the node agent's local API, asked first for NADs and the pod
    /// (the API server is read when it is down, not synced or does not know the object);
    /// empty = never ask the agent.
    #[serde(rename = "agentSocket", default = "d_agent_socket")]
    pub agent_socket: PathBuf,
}

impl MetaConf {
    /// Parses and validates the configuration of one invocation.
    pub fn load(args: &CmdArgs) -> Result<MetaConf> {
        Self::validate(args.conf.typed()?)
    }

    /// The configuration in the network configuration file `path` (what the runtime reads
    /// from its CNI conf dir): a `.conflist` whose first plugin of type `meta-cni` is
    /// taken, or a single `.conf`. The node agent's hot-plug runs with it.
    pub fn from_file(path: &std::path::Path) -> Result<MetaConf> {
        let text =
            std::fs::read(path).map_err(|e| Error::io(format!("read {}: {e}", path.display())))?;
        let v: Value = serde_json::from_slice(&text)
            .map_err(|e| Error::decode(format!("{}: {e}", path.display())))?;
        let plugin = match v.get("plugins").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .find(|p| p.get("type").and_then(Value::as_str) == Some("meta-cni"))
                .cloned()
                .ok_or_else(|| {
                    Error::config(format!(
                        "{}: no plugin of type \"meta-cni\" in the list",
                        path.display()
                    ))
                })?,
            None => v,
        };
        let c: MetaConf = serde_json::from_value(plugin)
            .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
        Self::validate(c)
    }

    fn validate(c: MetaConf) -> Result<MetaConf> {
        if c.cluster_network.as_deref().unwrap_or("").is_empty() && c.delegates.is_empty() {
            return Err(Error::config(
                "meta-cni needs \"clusterNetwork\" (a NAD, network or file name) or inline \"delegates\"",
            ));
        }
        if let Some(lvl) = &c.log_level
            && ![
                "error", "warn", "info", "debug", "trace", "verbose", "panic",
            ]
            .contains(&lvl.as_str())
        {
            return Err(Error::config(format!(
                "logLevel {lvl:?} is not one of error, warn, info, debug, trace (or Multus's verbose, panic)"
            )));
        }
        if c.api_timeout_seconds == 0 {
            return Err(Error::config("apiTimeoutSeconds must be at least 1"));
        }
        Ok(c)
    }

    /// Directories delegate binaries are searched in: binDir, then the runtime's CNI_PATH.
    pub fn bin_dirs(&self, cni_path: &[PathBuf]) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .bin_dir
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        for p in cni_path {
            if !v.contains(p) {
                v.push(p.clone());
            }
        }
        v
    }

    /// Whether a pod namespace is a system namespace.
    pub fn is_system_namespace(&self, ns: &str) -> bool {
        self.system_namespaces.iter().any(|s| s == ns)
    }

    /// `namespaceIsolation` and `globalNamespaces` as the rule the plugin and the
    /// webhook share ([`meta_crd::Isolation`]: the pod's own namespace and the global
    /// ones, `default` when `globalNamespaces` is unset, as Multus).
    pub fn isolation(&self) -> meta_crd::Isolation {
        meta_crd::Isolation {
            enabled: self.namespace_isolation,
            global_namespaces: self.global_namespaces.clone(),
        }
    }
}
