//! `meta-cni-agent`: the per-node daemon of meta-cni's primary VXLAN overlay. See
//! `meta-cni-agent --help` and the `meta_cni_agent` library.

use meta_cni_agent::{self as agent, config};
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
    let cfg = match config::parse(std::env::args_os()) {
        Ok(c) => c,
        // --help/--version on stdout (exit 0); refused options on stderr (exit 2)
        Err(agent::Error::Cli(e)) => e.exit(),
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
