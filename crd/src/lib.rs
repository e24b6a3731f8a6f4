//! Kubernetes-facing types of meta-cni. Filled by the meta-plugin issue.
