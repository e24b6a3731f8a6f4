//! `meta-macvlan`: the macvlan delegate as a standalone CNI plugin.

fn main() {
    cni_core::plugin::run(meta_macvlan::Macvlan)
}
