//! `meta-cni-webhook serve`: the validating admission webhook (HTTPS, AdmissionReview v1
//! on `POST /validate`); `meta-cni-webhook validate FILE...`: the same checks on
//! manifests, offline.

use clap::{Parser, Subcommand};
use meta_cni_webhook::cache::Cache;
use meta_cni_webhook::cli::AdmissionOpts;
use meta_cni_webhook::handler::Admitter;
use meta_cni_webhook::serve::{ServeOpts, termination_signal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "meta-cni-webhook",
    version,
    about = "The meta-cni admission webhook"
)]
struct Cli {
    /// Log filter (RUST_LOG syntax; RUST_LOG wins when set).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve AdmissionReview requests for NADs and pods over HTTPS.
    Serve {
        #[command(flatten)]
        serve: Box<ServeOpts>,
        #[command(flatten)]
        admission: AdmissionOpts,
    },
    /// Check NAD and pod manifests (YAML, several documents, or JSON) as if they were
    /// applied in the order given; exits 1 when any object is refused.
    Validate {
        #[command(flatten)]
        admission: AdmissionOpts,
        /// Manifest files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

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
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match cli.command {
        Command::Validate { admission, files } => {
            match meta_cni_webhook::offline::validate_files(&admission.settings(), &files) {
                Ok(outcomes) => {
                    for o in &outcomes {
                        println!("{o}");
                    }
                    let refused = outcomes.iter().filter(|o| !o.decision.allowed).count();
                    println!("{} objects checked, {refused} refused", outcomes.len());
                    if refused > 0 {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("meta-cni-webhook validate: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve { serve, admission } => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("meta-cni-webhook: tokio runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(serve_main(*serve, admission)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("meta-cni-webhook serve: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn serve_main(
    serve: ServeOpts,
    admission: AdmissionOpts,
) -> Result<(), meta_cni_webhook::error::Error> {
    let client = meta_cni_webhook::serve::kube_client(&serve).await?;
    let cache = Cache::new();
    tokio::spawn(cache.clone().run(client));
    let handler = Arc::new(Admitter {
        settings: admission.settings(),
        world: cache,
        ready: Cache::ready,
    });
    meta_cni_webhook::serve::run(serve, handler, termination_signal()).await
}
