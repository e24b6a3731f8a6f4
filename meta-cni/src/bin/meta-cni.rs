//! `meta-cni`: the multi-network meta CNI plugin kubelet's runtime calls.
//!
//! With `META_CNI_HANDOFF_WORKER=<dir>` in its environment it is instead the detached
//! worker that DEL starts to clear pods' network-status ([`meta_cni::handoff`]).
//!
//! `meta-cni install [FLAGS]` is the DaemonSet's installer ([`meta_cni::install`]); the
//! runtime never passes arguments to a plugin.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "install") {
        std::process::exit(meta_cni::install::main(&args[2..]));
    }
    if let Some(spool) = std::env::var_os(meta_cni::handoff::WORKER_ENV) {
        cni_core::plugin::init_logging();
        meta_cni::handoff::run_worker(
            std::path::Path::new(&spool),
            &mut meta_cni::handoff::KubeClearer,
        );
        return;
    }
    cni_core::plugin::run(meta_cni::MetaPlugin)
}
