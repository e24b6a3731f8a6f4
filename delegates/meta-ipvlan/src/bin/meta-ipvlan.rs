//! `meta-ipvlan`: the ipvlan delegate as a standalone CNI plugin.

fn main() {
    cni_core::plugin::run(meta_ipvlan::Ipvlan::new())
}
