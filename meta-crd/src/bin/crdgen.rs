//! Prints the NetworkAttachmentDefinition CRD as YAML (what `deploy/crds/` holds).
//!
//! `crdgen` writes to stdout; `crdgen PATH` writes the file instead. A test checks that the
//! checked-in file equals this output:
//! `cargo run -p meta-crd --features crdgen --bin crdgen deploy/crds/network-attachment-definition.yaml`

use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match meta_crd::crd_yaml() {
        Ok(y) => y,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::env::args_os().nth(1) {
        None => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(&path, yaml) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crdgen: writing {}: {e}", path.to_string_lossy());
                ExitCode::FAILURE
            }
        },
    }
}
