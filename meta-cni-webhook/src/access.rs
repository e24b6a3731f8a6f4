//! Every Kubernetes API access of the webhook: the least-privilege set, and exactly the
//! RBAC that `deploy/webhook.yaml` grants to its ServiceAccount
//! `meta-cni-system/meta-cni-webhook` (the test `tests/rbac.rs` compares the two, rule by
//! rule and verb by verb, so a new access here without its grant there, or a grant there
//! that nothing here uses, fails it).

/// One access: `verbs` on `resource` of `api_group`, limited to `resource_names` when not
/// empty, in the webhook's own namespace (a Role) when `namespaced`, else cluster-wide
/// (a ClusterRole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// API group; `""` is the core group.
    pub api_group: &'static str,
    /// Resource (plural), with `/subresource` when it is one.
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Object names the verbs are limited to; empty: any object.
    pub resource_names: &'static [&'static str],
    /// In the webhook's own namespace only (a Role); else cluster-wide (a ClusterRole).
    pub namespaced: bool,
}

/// The name of the Secret holding the self-provisioned serving certificate
/// (`serve --cert-secret`, as `deploy/webhook.yaml` passes it).
pub const CERT_SECRET: &str = "meta-cni-webhook-cert";
/// The name of the webhook's own ValidatingWebhookConfiguration
/// (`serve --webhook-config-name`).
pub const WEBHOOK_CONFIG: &str = "meta-cni-webhook";

/// The webhook's API accesses; nothing else (no Events, no writes to NADs or pods).
pub const API_ACCESS: &[Access] = &[
    // The NAD cache (a reflector, cluster-wide): cross-object rules such as VNI conflicts
    // and namespace isolation, and the NADs a pod's annotation names.
    Access {
        api_group: "k8s.cni.cncf.io",
        resource: "network-attachment-definitions",
        verbs: &["get", "list", "watch"],
        resource_names: &[],
        namespaced: false,
    },
    // A metadata-only watch of pods (their network-status annotation): which NADs are in
    // use (`--protect-nads-in-use`).
    Access {
        api_group: "",
        resource: "pods",
        verbs: &["get", "list", "watch"],
        resource_names: &[],
        namespaced: false,
    },
    // The self-provisioned certificate's Secret, in its own namespace: created once (the
    // authorizer cannot limit `create` by name: the name is in the body, not the URL)...
    Access {
        api_group: "",
        resource: "secrets",
        verbs: &["create"],
        resource_names: &[],
        namespaced: true,
    },
    // ...then read by every replica and renewed in place.
    Access {
        api_group: "",
        resource: "secrets",
        verbs: &["get", "update"],
        resource_names: &[CERT_SECRET],
        namespaced: true,
    },
    // The caBundle of its own webhook configuration, patched in at start.
    Access {
        api_group: "admissionregistration.k8s.io",
        resource: "validatingwebhookconfigurations",
        verbs: &["get", "patch"],
        resource_names: &[WEBHOOK_CONFIG],
        namespaced: false,
    },
];
