//! Prints meta-ipam's CRDs (IpPool, IpBlock, IPAMClaim) as YAML; `meta-ipam-crdgen PATH`
//! writes the file instead. A test checks `deploy/crds/meta-ipam.yaml` equals this output.

use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match meta_ipam_cluster::crd::crds_yaml() {
        Ok(y) => y,
        Err(e) => {
            eprintln!("meta-ipam-crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::env::args_os().nth(1) {
        None => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Some(p) => match std::fs::write(&p, yaml) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meta-ipam-crdgen: {}: {e}", p.to_string_lossy());
                ExitCode::FAILURE
            }
        },
    }
}
