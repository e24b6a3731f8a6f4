//! `meta-vxlan`: the vxlan delegate as a standalone CNI plugin.

fn main() {
    cni_core::plugin::run(meta_vxlan::Vxlan::default())
}
