//! `meta-cni`: the multi-network meta CNI plugin kubelet's runtime calls.

fn main() {
    cni_core::plugin::run(&meta_cni::MetaPlugin)
}
