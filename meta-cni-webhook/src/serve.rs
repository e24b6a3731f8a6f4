//! `meta-cni-webhook serve`: its flags ([`ServeOpts`]) and [`run`].
//!
//! Two ways to get the serving certificate, exactly one of which is chosen:
//!
//! - file mode, `--tls-cert-file` and `--tls-private-key-file` (e.g. a cert-manager
//!   Secret mounted into the pod, its CA injected into the webhook configuration by
//!   cert-manager's cainjector): the files are read every `--cert-check-interval` and
//!   served as soon as they change and form a valid pair;
//! - self-provisioning, `--cert-secret NAME` ([`crate::certs`]): the webhook makes its CA
//!   and serving certificate, keeps them in that Secret of `--namespace`, writes the CA into
//!   the caBundles of `--webhook-config-name`, renews and reloads by itself.
//!
//! Either way the server speaks HTTPS only ([`crate::server`]).

use crate::Error;
use crate::certs::{CA_VALIDITY, CaBundle, ProvisionConfig, Provisioner};
use crate::metrics::Metrics;
use crate::server::{DEFAULT_MAX_REQUEST_BYTES, Handler, Server};
use crate::tls::{CertFiles, CertStore, server_config, watch_files};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The flags of `meta-cni-webhook serve`.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeOpts {
    /// Address and port of the HTTPS listener.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serving certificate (chain, PEM), reloaded when it changes; with --tls-private-key-file.
    #[arg(
        long,
        requires = "tls_private_key_file",
        conflicts_with = "cert_secret"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of --tls-cert-file (PEM), reloaded when it changes.
    #[arg(long, requires = "tls_cert_file", conflicts_with = "cert_secret")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Self-provisioning: the Secret of --namespace that holds the webhook's own CA and
    /// serving certificate (created when absent, renewed before expiry).
    #[arg(long, required_unless_present = "tls_cert_file")]
    pub cert_secret: Option<String>,
    /// The webhook's namespace (of --cert-secret and of the Service).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// The webhook's Service: the self-provisioned serving certificate is for SVC, SVC.NS,
    /// SVC.NS.svc and SVC.NS.svc.cluster.local.
    #[arg(long, default_value = "meta-cni-webhook")]
    pub service_name: String,
    /// The ValidatingWebhookConfiguration whose webhooks get the CA as caBundle
    /// (self-provisioning; none: the caBundle is left alone).
    #[arg(long)]
    pub webhook_config_name: Option<String>,
    /// More DNS names for the self-provisioned serving certificate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub cert_dns_names: Vec<String>,
    /// IP addresses for the self-provisioned serving certificate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub cert_ip_addresses: Vec<IpAddr>,
    /// Validity of the self-provisioned serving certificate (e.g. 8760h, 30d); renewed when
    /// a third of it is left.
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    pub cert_validity: Duration,
    /// Validity of the self-provisioned CA; at least three times --cert-validity.
    #[arg(long, default_value = "3650d", value_parser = parse_duration)]
    pub ca_validity: Duration,
    /// How often the certificate files (file mode) or the Secret and the caBundle
    /// (self-provisioning) are checked for changes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub cert_check_interval: Duration,
    /// The largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Kubeconfig for the API (the watch caches and self-provisioning); default: in-cluster,
    /// or $KUBECONFIG.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// After SIGTERM, how long requests in flight may take to finish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl ServeOpts {
    /// Defaults, as with no flags but the certificate's.
    pub fn new(listen: SocketAddr) -> ServeOpts {
        ServeOpts {
            listen,
            tls_cert_file: None,
            tls_private_key_file: None,
            cert_secret: None,
            namespace: None,
            service_name: "meta-cni-webhook".into(),
            webhook_config_name: None,
            cert_dns_names: Vec::new(),
            cert_ip_addresses: Vec::new(),
            cert_validity: Duration::from_secs(8760 * 3600),
            ca_validity: CA_VALIDITY,
            cert_check_interval: Duration::from_secs(10),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            kubeconfig: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A duration flag: a number and a unit, `ms`, `s`, `m`, `h` or `d` (`90s`, `8760h`, `30d`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?}: a unit is needed (ms, s, m, h, d)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number then a unit, e.g. 90s"))?;
    let per = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    };
    n.checked_mul(per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too long"))
}

enum Mode {
    Files(CertFiles),
    Secret(ProvisionConfig),
}

fn mode(opts: &ServeOpts) -> Result<Mode, Error> {
    if opts.max_request_bytes == 0 {
        return Err(Error::Flags("--max-request-bytes must not be 0".into()));
    }
    if opts.cert_check_interval.is_zero() {
        return Err(Error::Flags("--cert-check-interval must not be 0".into()));
    }
    match (
        &opts.tls_cert_file,
        &opts.tls_private_key_file,
        &opts.cert_secret,
    ) {
        (Some(cert), Some(key), None) => Ok(Mode::Files(CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        })),
        (None, None, Some(secret)) => {
            let namespace = opts
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    Error::Flags("--cert-secret needs --namespace (or $POD_NAMESPACE)".into())
                })?;
            if opts.cert_validity < Duration::from_secs(3) {
                return Err(Error::Flags("--cert-validity must be at least 3s".into()));
            }
            if opts.cert_validity > opts.ca_validity / 3 {
                return Err(Error::Flags(
                    "--cert-validity must be at most a third of --ca-validity".into(),
                ));
            }
            Ok(Mode::Secret(ProvisionConfig {
                namespace,
                secret_name: secret.clone(),
                service_name: opts.service_name.clone(),
                webhook_config_name: opts.webhook_config_name.clone(),
                extra_dns_names: opts.cert_dns_names.clone(),
                ip_addresses: opts.cert_ip_addresses.clone(),
                validity: opts.cert_validity,
                ca_validity: opts.ca_validity,
                check_interval: opts.cert_check_interval,
            }))
        }
        (None, None, None) => Err(Error::Flags(
            "either --tls-cert-file and --tls-private-key-file, or --cert-secret".into(),
        )),
        (_, _, Some(_)) => Err(Error::Flags(
            "--cert-secret excludes --tls-cert-file and --tls-private-key-file".into(),
        )),
        _ => Err(Error::Flags(
            "--tls-cert-file and --tls-private-key-file go together".into(),
        )),
    }
}

/// The Kubernetes client of `--kubeconfig`, else the in-cluster (or default) configuration.
pub async fn kube_client(opts: &ServeOpts) -> Result<kube::Client, Error> {
    let cfg = match &opts.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::KubeConfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::KubeConfig(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::KubeConfig(e.to_string()))?,
    };
    kube::Client::try_from(cfg).map_err(|e| Error::KubeConfig(e.to_string()))
}

/// Binds `--listen` and serves until `shutdown` completes; see [`run_on`].
pub async fn run(
    opts: ServeOpts,
    handler: Arc<dyn Handler>,
    shutdown: impl Future,
) -> Result<(), Error> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: opts.listen,
            source,
        })?;
    run_on(listener, opts, handler, shutdown).await
}

/// Serves on `listener` (`--listen` is not used) until `shutdown` completes: gets the
/// serving certificate (from the files, or provisions it: the first Secret round and the
/// caBundle happen before the first connection is accepted; an API server that cannot be
/// reached then is an error), keeps it current in the background, answers HTTPS
/// requests with `handler`, and on shutdown lets requests in flight finish.
pub async fn run_on(
    listener: TcpListener,
    opts: ServeOpts,
    handler: Arc<dyn Handler>,
    shutdown: impl Future,
) -> Result<(), Error> {
    let (store, background) = match mode(&opts)? {
        Mode::Files(files) => {
            let store = CertStore::new(files.load()?);
            let task = tokio::spawn(watch_files(files, store.clone(), opts.cert_check_interval));
            (store, task)
        }
        Mode::Secret(cfg) => {
            let client = kube_client(&opts).await?;
            let prov = Provisioner::new(client, cfg);
            let bundle = prov.ensure_secret().await?;
            let store = CertStore::new(bundle.certified_key()?);
            match prov
                .ensure_ca_bundle(&bundle.ca_bundle_pem(std::time::SystemTime::now()))
                .await
            {
                Ok(CaBundle::Missing) => tracing::warn!(
                    "ValidatingWebhookConfiguration {} not found (yet); caBundle not written",
                    opts.webhook_config_name.as_deref().unwrap_or_default()
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("{e}; retried every --cert-check-interval"),
            }
            let task = tokio::spawn(prov.run(store.clone(), bundle));
            (store, task)
        }
    };
    let server = Server {
        tls: server_config(store.clone())?,
        handler,
        metrics: Arc::new(Metrics::new()),
        certs: store.clone(),
        max_request_bytes: opts.max_request_bytes,
        shutdown_grace: opts.shutdown_grace,
    };
    tracing::info!(addr = ?listener.local_addr().ok(), "serving HTTPS");
    let served = server.serve(listener, shutdown).await;
    background.abort();
    served
}

/// Completes on SIGTERM or SIGINT: the `shutdown` of [`run`] in the binary.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        _ => {
            tracing::warn!("cannot install the SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        opts: ServeOpts,
    }

    fn parse(args: &[&str]) -> Result<ServeOpts, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).map(|c| c.opts)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_duration("8760h"),
            Ok(Duration::from_secs(8760 * 3600))
        );
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in [
            "",
            "10",
            "s",
            "1.5h",
            "10 y",
            "-1s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_mode_flags() {
        let o = parse(&["--tls-cert-file", "/c", "--tls-private-key-file", "/k"]).unwrap();
        assert_eq!(o.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(o.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert!(matches!(mode(&o), Ok(Mode::Files(_))));
        assert!(
            parse(&["--tls-cert-file", "/c"]).is_err(),
            "the key is needed"
        );
        assert!(parse(&["--tls-private-key-file", "/k"]).is_err());
        assert!(parse(&[]).is_err(), "one mode is needed");
        assert!(
            parse(&[
                "--tls-cert-file",
                "/c",
                "--tls-private-key-file",
                "/k",
                "--cert-secret",
                "s"
            ])
            .is_err(),
            "the modes exclude each other"
        );
    }

    #[test]
    fn self_provisioning_flags() {
        let o = parse(&[
            "--cert-secret",
            "webhook-certs",
            "--namespace",
            "kube-system",
            "--webhook-config-name",
            "meta-cni",
            "--cert-dns-names",
            "a.example,b.example",
            "--cert-ip-addresses",
            "127.0.0.1,::1",
            "--cert-validity",
            "30d",
            "--listen",
            "127.0.0.1:9443",
        ])
        .unwrap();
        let Ok(Mode::Secret(cfg)) = mode(&o) else {
            panic!("self-provisioning");
        };
        assert_eq!(cfg.namespace, "kube-system");
        assert_eq!(cfg.secret_name, "webhook-certs");
        assert_eq!(cfg.webhook_config_name.as_deref(), Some("meta-cni"));
        assert_eq!(cfg.validity, Duration::from_secs(30 * 86400));
        assert_eq!(cfg.ip_addresses.len(), 2);
        assert_eq!(
            cfg.dns_names(),
            [
                "meta-cni-webhook.kube-system.svc",
                "meta-cni-webhook",
                "meta-cni-webhook.kube-system",
                "meta-cni-webhook.kube-system.svc.cluster.local",
                "a.example",
                "b.example"
            ]
        );
        let mut no_ns = o.clone();
        no_ns.namespace = None;
        assert!(matches!(mode(&no_ns), Err(Error::Flags(_))));
        let mut long = o.clone();
        long.cert_validity = Duration::from_secs(5 * 365 * 86400);
        assert!(matches!(mode(&long), Err(Error::Flags(_))));
        let mut short = o;
        short.cert_validity = Duration::from_secs(1);
        assert!(matches!(mode(&short), Err(Error::Flags(_))));
        assert!(parse(&["--cert-secret", "s", "--cert-ip-addresses", "nope"]).is_err());
    }
}
