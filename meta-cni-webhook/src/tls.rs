//! TLS of the webhook: a rustls server configuration (TLS 1.2 and 1.3 only, ring) whose
//! certificate comes from a [`CertStore`], swapped atomically on reload, and the file mode's
//! watcher ([`watch_files`]) that reloads `--tls-cert-file`/`--tls-private-key-file` when
//! their content changes (cert-manager renewing a mounted Secret).

use crate::Error;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The crypto provider of every TLS object of the crate: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate and key, swappable while connections are being accepted: each
/// handshake takes the one current at its start, so a swap never breaks a handshake or an
/// established connection.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// A store serving `key`.
    pub fn new(key: CertifiedKey) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Serve `key` from the next handshake on.
    pub fn set(&self, key: CertifiedKey) {
        let key = Arc::new(key);
        match self.current.write() {
            Ok(mut g) => *g = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }

    /// The certificate and key being served.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A rustls server configuration: TLS 1.3 and 1.2 only, no client authentication, ALPN
/// `http/1.1`, the certificate of `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A certificate chain (the serving certificate first) and its private key from PEM; fails
/// when either does not parse or the key is not the certificate's.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, Error> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Tls("no certificate in the certificate PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Tls(format!("private key PEM: {e}")))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| Error::Tls(e.to_string()))
}

/// The certificate and key files of file mode.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// `--tls-cert-file`: the certificate chain, PEM.
    pub cert: PathBuf,
    /// `--tls-private-key-file`: the private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::File {
        path: path.to_path_buf(),
        source,
    })
}

impl CertFiles {
    /// Both files' contents, certificate first.
    fn contents(&self) -> Result<(Vec<u8>, Vec<u8>), Error> {
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    /// Loads the pair.
    pub fn load(&self) -> Result<CertifiedKey, Error> {
        let (c, k) = self.contents()?;
        certified_key(&c, &k)
    }
}

/// Watches `files` every `interval` and serves their content from `store` whenever it
/// changes and forms a valid pair. A pair caught half-written (the certificate renewed but
/// not yet the key) does not match and is retried on the next round; the old pair stays in
/// use meanwhile. Runs until dropped.
pub async fn watch_files(files: CertFiles, store: Arc<CertStore>, interval: Duration) {
    let mut applied = files.contents().ok();
    let mut last_failed: Option<(Vec<u8>, Vec<u8>)> = None;
    loop {
        tokio::time::sleep(interval).await;
        let now = match files.contents() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("serving certificate files: {e}; keeping the one in use");
                continue;
            }
        };
        if applied.as_ref() == Some(&now) || last_failed.as_ref() == Some(&now) {
            continue;
        }
        match certified_key(&now.0, &now.1) {
            Ok(key) => {
                store.set(key);
                tracing::info!(cert = %files.cert.display(), "serving certificate reloaded");
                applied = Some(now);
                last_failed = None;
            }
            Err(e) => {
                tracing::warn!(
                    cert = %files.cert.display(),
                    "changed serving certificate files not usable (yet): {e}; keeping the one in use"
                );
                last_failed = Some(now);
            }
        }
    }
}
