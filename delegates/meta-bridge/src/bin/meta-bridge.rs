//! `meta-bridge`: the bridge delegate as a standalone CNI plugin.

fn main() {
    cni_core::plugin::run(meta_bridge::Bridge::default())
}
