//! The admission flags shared by `serve` and `validate`. Those that mirror the meta
//! plugin's configuration keys must be given the values the nodes' conflist has
//! (deploy/webhook.yaml and deploy/meta-cni.conflist are kept in step by a test).

use crate::admission::{DEFAULT_STATUS_WRITERS, MissingNads, Settings};
use clap::Args;

/// The admission checks' settings as flags.
#[derive(Debug, Clone, Args)]
pub struct AdmissionOpts {
    /// The plugin's `namespaceIsolation`: pods may name NADs of their own namespace and
    /// the global ones only.
    #[arg(long, default_value_t = false)]
    pub namespace_isolation: bool,
    /// The plugin's `globalNamespaces` (comma-separated; unset = `default`).
    #[arg(long, value_delimiter = ',', value_name = "NS,...")]
    pub global_namespaces: Vec<String>,
    /// The plugin's `multusNamespace`: where an unqualified default-network is looked up.
    #[arg(long, default_value = "kube-system", value_name = "NS")]
    pub multus_namespace: String,
    /// The plugin's `defaultNetworks` (comma-separated `ns/name`): they take net1.. first.
    #[arg(long, value_delimiter = ',', value_name = "NS/NAME,...")]
    pub default_networks: Vec<String>,
    /// The plugin's `systemNamespaces` (comma-separated): their pods get no defaultNetworks.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kube-system",
        value_name = "NS,..."
    )]
    pub system_namespaces: Vec<String>,
    /// The plugin's `forceExec` (comma-separated types the nodes exec instead of running
    /// in-process: their fields are not checked here, and nodes need their binaries).
    #[arg(long, value_delimiter = ',', value_name = "TYPE,...")]
    pub force_exec: Vec<String>,
    /// The cluster overlay's VNI (the node agent's --vni), which no NAD may use.
    #[arg(long, default_value_t = meta_overlay::DEFAULT_VNI, value_name = "N")]
    pub cluster_vni: u32,
    /// A pod naming a NAD that does not exist: `refuse` (its ADD would fail) or `warn`
    /// (for tools that create pods before their NADs).
    #[arg(long, default_value = "refuse", value_parser = ["refuse", "warn"])]
    pub missing_nads: String,
    /// Refuse deleting a NAD while running pods are attached to it.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub protect_nads_in_use: bool,
    /// Who may set or change a pod's network-status annotation (comma-separated user
    /// names; the meta-cni and meta-cni-agent ServiceAccounts by default).
    #[arg(long, value_delimiter = ',', default_values = DEFAULT_STATUS_WRITERS, value_name = "USER,...")]
    pub status_writers: Vec<String>,
}

impl AdmissionOpts {
    /// The checks' settings.
    pub fn settings(&self) -> Settings {
        let mut s = Settings::default();
        s.isolation.enabled = self.namespace_isolation;
        s.isolation.global_namespaces = self.global_namespaces.clone();
        s.multus_namespace = self.multus_namespace.clone();
        s.default_networks = self.default_networks.clone();
        s.system_namespaces = self.system_namespaces.clone();
        s.force_exec = self.force_exec.clone();
        s.cluster_vni = self.cluster_vni;
        s.missing_nads = if self.missing_nads == "warn" {
            MissingNads::Warn
        } else {
            MissingNads::Refuse
        };
        s.protect_in_use = self.protect_nads_in_use;
        s.status_writers = self.status_writers.clone();
        s
    }
}
