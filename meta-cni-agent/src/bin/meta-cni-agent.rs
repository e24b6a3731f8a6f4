//! `meta-cni-agent`: the per-node daemon of meta-cni's primary VXLAN overlay. See
//! `meta-cni-agent --help` and the `meta_cni_agent` library.

use meta_cni_agent::{self as agent, config};
use std::collections::BTreeMap;
use std::process::ExitCode;

fn init_logging(filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .and_then(|s| EnvFilter::try_new(s).ok())
        .or_else(|| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let args = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    let cfg = match config::parse(args, &env) {
        Ok(config::Command::Help) => {
            print!("{}", config::help());
            return ExitCode::SUCCESS;
        }
        Ok(config::Command::Version) => {
            println!("meta-cni-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(config::Command::Run(c)) => c,
        Err(e) => {
            eprintln!("meta-cni-agent: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    init_logging(&cfg.log_level);
    match agent::run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}
