//! Self-provisioning of the serving certificate (`--cert-secret`).
//!
//! The webhook makes its own CA and a serving certificate for its Service's DNS names
//! (`<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`, plus
//! `--cert-dns-names` and `--cert-ip-addresses`), ECDSA P-256 both, and keeps them in a
//! Secret of its namespace, so that restarts and replicas share them:
//!
//! | key       | content                                   |
//! |-----------|-------------------------------------------|
//! | `tls.crt` | the serving certificate, PEM              |
//! | `tls.key` | its private key, PEM (PKCS#8)             |
//! | `ca.crt`  | the CA certificate, PEM                   |
//! | `ca.key`  | the CA's private key, PEM (PKCS#8)        |
//! | `ca-previous.crt` | after a CA rollover: the CA before, while it is valid |
//! | `ca-rollover-since` | after a CA rollover: when it began, Unix seconds |
//!
//! (type `kubernetes.io/tls` when the webhook creates it). [`Provisioner::ensure_secret`]
//! creates the Secret when absent (a replica that loses the race, `409 Conflict`, takes
//! the winner's), and replaces the serving certificate, keeping the CA, when less than a
//! third of its lifetime is left, when it lacks one of the names, or when it does not
//! parse; updates carry the `resourceVersion` they were computed from, so two replicas
//! renewing at once converge on one certificate. [`Provisioner::ensure_ca_bundle`] writes
//! the CA into `clientConfig.caBundle` of every webhook of the ValidatingWebhookConfiguration
//! named by `--webhook-config-name` (one strategic merge patch keyed by webhook name, only
//! when some caBundle differs). [`Provisioner::run`] repeats both every
//! `--cert-check-interval` and at the renewal time, and swaps the served key in a
//! [`CertStore`] when the Secret's changed, whoever changed it, with no restart.
//!
//! The CA lives `--ca-validity` ([`CA_VALIDITY`] by default). A CA that would expire before
//! a new serving certificate does is rolled over in two steps, so that no client ever sees
//! a certificate it cannot verify: first a new CA is made while the serving certificate of
//! the old one stays, and the caBundle becomes both CAs; only after a grace period
//! ([`ProvisionConfig::rollover_grace`], three check intervals: time for every replica and
//! the API server to learn the new CA) does the new CA sign the served certificate. The old
//! CA stays in the caBundle until it expires. (A CA that does not parse at all is replaced
//! at once, with a new serving certificate.)

use crate::Error;
use crate::tls::{CertStore, certified_key};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The Secret key of the serving certificate.
pub const KEY_TLS_CRT: &str = "tls.crt";
/// The Secret key of the serving certificate's private key.
pub const KEY_TLS_KEY: &str = "tls.key";
/// The Secret key of the CA certificate.
pub const KEY_CA_CRT: &str = "ca.crt";
/// The Secret key of the CA's private key.
pub const KEY_CA_KEY: &str = "ca.key";
/// The Secret key of the CA before the last rollover (while it is valid).
pub const KEY_CA_PREVIOUS: &str = "ca-previous.crt";
/// The Secret key of the time the last CA rollover began (Unix seconds, decimal).
pub const KEY_ROLLOVER_SINCE: &str = "ca-rollover-since";
/// How long a CA made by the webhook is valid by default: 10 years.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The field manager of the webhook's writes.
pub const FIELD_MANAGER: &str = "meta-cni-webhook";

/// How far before "now" a certificate's validity starts (clock skew between nodes): a
/// tenth of the validity, at most 5 minutes.
fn backdate(validity: Duration) -> Duration {
    (validity / 10).min(Duration::from_secs(300))
}

/// A CA: its certificate and the key that signs with it.
pub struct Authority {
    cert_pem: String,
    key_pem: String,
    not_after: SystemTime,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A certificate signed by an [`Authority`] and its private key, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl Authority {
    /// A new self-signed CA named `common_name`, valid from now for `validity`.
    pub fn generate(common_name: &str, validity: Duration) -> Result<Authority, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        let not_after = now + validity;
        params.not_before = (now - backdate(validity)).into();
        params.not_after = not_after.into();
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Authority::from_pem(&cert_pem, &key_pem)
    }

    /// The CA of `cert_pem` signing with `key_pem`.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let der = first_der(cert_pem)?;
        let validity = Validity::of(&der)?;
        if key.subject_public_key_info() != validity.spki {
            return Err(Error::Tls("the CA key is not the CA certificate's".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)?;
        Ok(Authority {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            not_after: validity.not_after,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// When the CA expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// A new serving certificate (fresh key, `serverAuth`) for `dns_names` and `ips`, valid
    /// from now for `validity` but not past the CA; its common name is the first DNS name.
    pub fn issue(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        validity: Duration,
    ) -> Result<Issued, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            dns_names.first().map_or("meta-cni-webhook", String::as_str),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = dns_names
            .iter()
            .map(|n| Ok(SanType::DnsName(n.clone().try_into()?)))
            .chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, rcgen::Error>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - backdate(validity)).into();
        params.not_after = (now + validity).min(self.not_after).into();
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn first_der(pem: &str) -> Result<CertificateDer<'static>, Error> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| Error::Tls(format!("certificate PEM: {e}")))
}

/// Whether the first certificate of `cert_pem` names the first of `ca_pem` as its issuer
/// and carries its signature.
pub fn issued_by(cert_pem: &str, ca_pem: &str) -> bool {
    match (first_der(cert_pem), first_der(ca_pem)) {
        (Ok(cert), Ok(ca)) => issued_by_der(&cert, &ca),
        _ => false,
    }
}

/// [`issued_by`] for DER certificates.
pub fn issued_by_der(cert: &[u8], ca: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(cert),
        x509_parser::parse_x509_certificate(ca),
    ) else {
        return false;
    };
    cert.issuer().as_raw() == ca.subject().as_raw()
        && cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// What the webhook needs to know of a certificate.
#[derive(Clone, Debug)]
pub struct Validity {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The DNS names among its subject alternative names.
    pub dns_names: Vec<String>,
    /// The IP addresses among its subject alternative names.
    pub ips: Vec<IpAddr>,
    /// The raw subject (DER).
    pub subject: Vec<u8>,
    /// The raw issuer (DER).
    pub issuer: Vec<u8>,
    /// The SubjectPublicKeyInfo (DER).
    pub spki: Vec<u8>,
}

fn time_of(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

impl Validity {
    /// Parses a DER certificate.
    pub fn of(der: &[u8]) -> Result<Validity, Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Error::Tls(format!("certificate: {e}")))?;
        let mut dns_names = Vec::new();
        let mut ips = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(n) => {
                        dns_names.push((*n).to_string())
                    }
                    x509_parser::extensions::GeneralName::IPAddress(b) => {
                        if let Ok(a) = <[u8; 4]>::try_from(*b) {
                            ips.push(IpAddr::from(a));
                        } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                            ips.push(IpAddr::from(a));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Validity {
            not_before: time_of(cert.validity().not_before),
            not_after: time_of(cert.validity().not_after),
            dns_names,
            ips,
            subject: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            spki: cert.public_key().raw.to_vec(),
        })
    }

    /// Parses the first certificate of a PEM text.
    pub fn of_pem(pem: &str) -> Result<Validity, Error> {
        Validity::of(&first_der(pem)?)
    }

    /// When a certificate is renewed: once two thirds of its lifetime have passed.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }
}

/// What the Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// The CA certificate.
    pub ca_cert_pem: String,
    /// The CA's private key.
    pub ca_key_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
    /// After a CA rollover: the CA before (kept in the caBundle while it is valid).
    pub previous_ca_pem: Option<String>,
    /// After a CA rollover: when it began (Unix seconds).
    pub rollover_since: Option<u64>,
}

impl Bundle {
    /// The bundle in a Secret; `None` when a key is missing or not UTF-8.
    pub fn from_secret(secret: &Secret) -> Option<Bundle> {
        let data = secret.data.as_ref()?;
        let get = |k: &str| {
            data.get(k)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        Some(Bundle {
            ca_cert_pem: get(KEY_CA_CRT)?,
            ca_key_pem: get(KEY_CA_KEY)?,
            cert_pem: get(KEY_TLS_CRT)?,
            key_pem: get(KEY_TLS_KEY)?,
            previous_ca_pem: get(KEY_CA_PREVIOUS),
            rollover_since: get(KEY_ROLLOVER_SINCE).and_then(|t| t.trim().parse().ok()),
        })
    }

    /// The Secret's data for this bundle: every key of the module doc, `None` for those to
    /// remove.
    fn data(&self) -> BTreeMap<String, Option<ByteString>> {
        let b = |v: &String| Some(ByteString(v.clone().into_bytes()));
        BTreeMap::from([
            (KEY_TLS_CRT.to_string(), b(&self.cert_pem)),
            (KEY_TLS_KEY.to_string(), b(&self.key_pem)),
            (KEY_CA_CRT.to_string(), b(&self.ca_cert_pem)),
            (KEY_CA_KEY.to_string(), b(&self.ca_key_pem)),
            (
                KEY_CA_PREVIOUS.to_string(),
                self.previous_ca_pem.as_ref().and_then(b),
            ),
            (
                KEY_ROLLOVER_SINCE.to_string(),
                self.rollover_since.and_then(|t| b(&t.to_string())),
            ),
        ])
    }

    /// Writes this bundle into `data`, keeping other keys.
    fn write_into(&self, data: &mut BTreeMap<String, ByteString>) {
        for (k, v) in self.data() {
            match v {
                Some(v) => data.insert(k, v),
                None => data.remove(&k),
            };
        }
    }

    /// What clients must trust: the CA, and after a rollover the previous CA while it is
    /// valid at `now` (PEMs, concatenated).
    pub fn ca_bundle_pem(&self, now: SystemTime) -> String {
        let mut out = self.ca_cert_pem.clone();
        if let Some(prev) = &self.previous_ca_pem
            && Validity::of_pem(prev).is_ok_and(|v| v.not_after > now)
        {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(prev);
        }
        out
    }

    /// The serving certificate and key for rustls.
    pub fn certified_key(&self) -> Result<CertifiedKey, Error> {
        certified_key(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
    }

    /// The serving certificate's validity.
    pub fn serving(&self) -> Result<Validity, Error> {
        Validity::of_pem(&self.cert_pem)
    }
}

/// Where and for what names the webhook provisions its certificate.
#[derive(Clone, Debug)]
pub struct ProvisionConfig {
    /// The webhook's namespace (of the Secret and the Service).
    pub namespace: String,
    /// The Secret's name (`--cert-secret`).
    pub secret_name: String,
    /// The webhook's Service (`--service-name`).
    pub service_name: String,
    /// The ValidatingWebhookConfiguration whose caBundles to keep (`--webhook-config-name`).
    pub webhook_config_name: Option<String>,
    /// More DNS names (`--cert-dns-names`).
    pub extra_dns_names: Vec<String>,
    /// IP addresses (`--cert-ip-addresses`).
    pub ip_addresses: Vec<IpAddr>,
    /// The serving certificate's validity (`--cert-validity`).
    pub validity: Duration,
    /// The CA's validity (`--ca-validity`); at least three times `validity`.
    pub ca_validity: Duration,
    /// How often to look at the Secret and the caBundles (`--cert-check-interval`).
    pub check_interval: Duration,
}

impl ProvisionConfig {
    /// The common name of the CA.
    pub fn ca_name(&self) -> String {
        format!("{}.{} webhook CA", self.service_name, self.namespace)
    }

    /// How long a CA rollover keeps serving the certificate of the previous CA: three check
    /// intervals, at least 2 s.
    pub fn rollover_grace(&self) -> Duration {
        (self.check_interval * 3).max(Duration::from_secs(2))
    }

    /// The serving certificate's DNS names: the Service's four, then the extra ones.
    pub fn dns_names(&self) -> Vec<String> {
        let (s, n) = (&self.service_name, &self.namespace);
        let mut names = vec![
            format!("{s}.{n}.svc"),
            s.clone(),
            format!("{s}.{n}"),
            format!("{s}.{n}.svc.cluster.local"),
        ];
        for extra in &self.extra_dns_names {
            if !names.contains(extra) {
                names.push(extra.clone());
            }
        }
        names
    }
}

/// Whether `b` is in the first step of a CA rollover: its serving certificate `leaf` is
/// the previous CA's, the grace period has not ended and the certificate outlives it.
fn in_rollover_grace(cfg: &ProvisionConfig, b: &Bundle, leaf: &Validity, now: SystemTime) -> bool {
    let (Some(prev), Some(since)) = (&b.previous_ca_pem, b.rollover_since) else {
        return false;
    };
    let end = UNIX_EPOCH + Duration::from_secs(since) + cfg.rollover_grace();
    now < end && leaf.not_after > end && issued_by(&b.cert_pem, prev)
}

/// The earliest time at which [`needs`] may change its mind about `b`: the end of a
/// rollover's grace period while in it, else the serving certificate's renewal; or the CA's
/// rollover, if sooner.
fn next_due(cfg: &ProvisionConfig, b: &Bundle) -> Option<SystemTime> {
    let leaf = b.serving().ok()?;
    let ca = Validity::of_pem(&b.ca_cert_pem).ok()?;
    let ca_due = ca.not_after.checked_sub(cfg.validity).unwrap_or(UNIX_EPOCH);
    let leaf_due = match b.rollover_since {
        Some(since) if in_rollover_grace(cfg, b, &leaf, SystemTime::now()) => {
            UNIX_EPOCH + Duration::from_secs(since) + cfg.rollover_grace()
        }
        _ => leaf.renew_at(),
    };
    Some(leaf_due.min(ca_due))
}

/// Why `b` must be replaced now (a serving certificate to renew, `Some(false)`; the
/// whole bundle, CA included, `Some(true)`), or `None` when it is good.
fn needs(cfg: &ProvisionConfig, b: &Bundle, now: SystemTime) -> Option<(bool, String)> {
    let ca = match Authority::from_pem(&b.ca_cert_pem, &b.ca_key_pem) {
        Ok(ca) => ca,
        Err(e) => return Some((true, format!("unusable CA: {e}"))),
    };
    if ca.not_after() < now + cfg.validity {
        return Some((true, "the CA expires before a new certificate would".into()));
    }
    let leaf = match b.serving() {
        Ok(v) => v,
        Err(e) => return Some((false, format!("unusable serving certificate: {e}"))),
    };
    if !issued_by(&b.cert_pem, &b.ca_cert_pem) {
        if in_rollover_grace(cfg, b, &leaf, now) {
            // Still the previous CA's certificate, on purpose; see the module doc.
            return b
                .certified_key()
                .err()
                .map(|e| (false, format!("unusable serving key: {e}")));
        }
        return Some((false, "serving certificate not signed by the CA".into()));
    }
    if let Err(e) = b.certified_key() {
        return Some((false, format!("unusable serving key: {e}")));
    }
    if now >= leaf.renew_at() {
        return Some((false, "less than a third of its lifetime left".into()));
    }
    if let Some(n) = cfg
        .dns_names()
        .into_iter()
        .find(|n| !leaf.dns_names.contains(n))
    {
        return Some((false, format!("lacks the DNS name {n}")));
    }
    if let Some(ip) = cfg.ip_addresses.iter().find(|ip| !leaf.ips.contains(ip)) {
        return Some((false, format!("lacks the IP address {ip}")));
    }
    None
}

/// A new serving certificate from `ca`; the rollover fields from `old`.
fn issue_with(
    cfg: &ProvisionConfig,
    ca: &Authority,
    old: Option<&Bundle>,
) -> Result<Bundle, Error> {
    let leaf = ca.issue(&cfg.dns_names(), &cfg.ip_addresses, cfg.validity)?;
    Ok(Bundle {
        ca_cert_pem: ca.cert_pem().to_string(),
        ca_key_pem: ca.key_pem().to_string(),
        cert_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
        previous_ca_pem: old.and_then(|o| o.previous_ca_pem.clone()),
        rollover_since: old.and_then(|o| o.rollover_since),
    })
}

/// A new CA. When `old` has a CA still valid, it becomes the previous CA, and when its
/// serving certificate is that CA's and outlives the grace period, that certificate
/// stays for now (the first step of a rollover); otherwise a new serving certificate.
fn new_bundle(
    cfg: &ProvisionConfig,
    old: Option<&Bundle>,
    now: SystemTime,
) -> Result<Bundle, Error> {
    let ca = Authority::generate(&cfg.ca_name(), cfg.ca_validity)?;
    let Some(old) = old.filter(|o| {
        Authority::from_pem(&o.ca_cert_pem, &o.ca_key_pem).is_ok_and(|c| c.not_after() > now)
    }) else {
        return issue_with(cfg, &ca, None);
    };
    let since = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Through the grace period the old CA's serving certificate stays: the one there is,
    // or a new one from the old CA when that one ends sooner (when even the old CA does,
    // there is nothing to wait for).
    let lasts = now + cfg.rollover_grace() + Duration::from_secs(1);
    let old_ca = Authority::from_pem(&old.ca_cert_pem, &old.ca_key_pem)?;
    let kept = if issued_by(&old.cert_pem, &old.ca_cert_pem)
        && old.certified_key().is_ok()
        && old.serving().is_ok_and(|v| v.not_after > lasts)
    {
        Some((old.cert_pem.clone(), old.key_pem.clone()))
    } else if old_ca.not_after() > lasts {
        let leaf = old_ca.issue(&cfg.dns_names(), &cfg.ip_addresses, cfg.validity)?;
        Some((leaf.cert_pem, leaf.key_pem))
    } else {
        None
    };
    let mut b = match kept {
        Some((cert_pem, key_pem)) => Bundle {
            ca_cert_pem: ca.cert_pem().to_string(),
            ca_key_pem: ca.key_pem().to_string(),
            cert_pem,
            key_pem,
            previous_ca_pem: None,
            rollover_since: None,
        },
        None => issue_with(cfg, &ca, None)?,
    };
    b.previous_ca_pem = Some(old.ca_cert_pem.clone());
    b.rollover_since = Some(since);
    Ok(b)
}

/// What [`Provisioner::ensure_ca_bundle`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaBundle {
    /// No `--webhook-config-name`.
    NotConfigured,
    /// The ValidatingWebhookConfiguration does not exist (yet).
    Missing,
    /// Every webhook already had the CA.
    UpToDate,
    /// The caBundle of this many webhooks was written.
    Patched(usize),
}

/// Keeps the certificate Secret and the caBundles right; see the module doc.
#[derive(Clone)]
pub struct Provisioner {
    secrets: Api<Secret>,
    webhooks: Api<ValidatingWebhookConfiguration>,
    cfg: ProvisionConfig,
}

/// How often a create or update that conflicts is retried in one
/// [`Provisioner::ensure_secret`].
const CONFLICT_RETRIES: usize = 8;

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Provisioner {
    /// A provisioner for `cfg`, talking through `client`.
    pub fn new(client: kube::Client, cfg: ProvisionConfig) -> Provisioner {
        Provisioner {
            secrets: Api::namespaced(client.clone(), &cfg.namespace),
            webhooks: Api::all(client),
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProvisionConfig {
        &self.cfg
    }

    fn secret_ref(&self) -> String {
        format!("Secret {}/{}", self.cfg.namespace, self.cfg.secret_name)
    }

    /// Makes sure the Secret holds a usable, current bundle for the configured names and
    /// returns it: creates the Secret when absent, renews the serving certificate (or, when
    /// the CA is unusable or expiring, everything) when due. Conflicting writes by another
    /// replica are re-read and re-judged, so replicas converge on one bundle.
    pub async fn ensure_secret(&self) -> Result<Bundle, Error> {
        let name = &self.cfg.secret_name;
        for _ in 0..CONFLICT_RETRIES {
            let existing = self
                .secrets
                .get_opt(name)
                .await
                .map_err(|e| Error::kube(format!("get {}", self.secret_ref()), e))?;
            let Some(mut secret) = existing else {
                let bundle = new_bundle(&self.cfg, None, SystemTime::now())?;
                let mut data = BTreeMap::new();
                bundle.write_into(&mut data);
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_string(),
                            FIELD_MANAGER.to_string(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(data),
                    ..Secret::default()
                };
                match self.secrets.create(&post_params(), &secret).await {
                    Ok(_) => {
                        tracing::info!(
                            secret = %self.secret_ref(),
                            "created the webhook's CA and serving certificate"
                        );
                        return Ok(bundle);
                    }
                    Err(e) if is_status(&e, 409) => continue,
                    Err(e) => {
                        return Err(Error::kube(format!("create {}", self.secret_ref()), e));
                    }
                }
            };
            let current = Bundle::from_secret(&secret);
            let now = SystemTime::now();
            let (bundle, why) = match &current {
                Some(b) => match needs(&self.cfg, b, now) {
                    None => return Ok(b.clone()),
                    Some((false, why)) => {
                        // `needs` said the CA is fine.
                        let ca = Authority::from_pem(&b.ca_cert_pem, &b.ca_key_pem)?;
                        (issue_with(&self.cfg, &ca, Some(b))?, why)
                    }
                    Some((true, why)) => (new_bundle(&self.cfg, Some(b), now)?, why),
                },
                None => (
                    new_bundle(&self.cfg, None, now)?,
                    "missing or non-UTF-8 keys".to_string(),
                ),
            };
            // Keep whatever else the Secret holds; the resourceVersion read above makes a
            // concurrent change a conflict.
            bundle.write_into(secret.data.get_or_insert_with(BTreeMap::new));
            match self.secrets.replace(name, &post_params(), &secret).await {
                Ok(_) => {
                    tracing::info!(secret = %self.secret_ref(), %why, "renewed the serving certificate");
                    return Ok(bundle);
                }
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(Error::kube(format!("update {}", self.secret_ref()), e)),
            }
        }
        Err(Error::kube(
            format!("write {}", self.secret_ref()),
            kube::Error::Service(
                format!("still conflicting after {CONFLICT_RETRIES} attempts").into(),
            ),
        ))
    }

    /// Writes `ca_pem` (one CA or several, PEM; see [`Bundle::ca_bundle_pem`]) into
    /// `clientConfig.caBundle` of every webhook of the configured
    /// ValidatingWebhookConfiguration that does not have it yet.
    pub async fn ensure_ca_bundle(&self, ca_pem: &str) -> Result<CaBundle, Error> {
        let Some(name) = &self.cfg.webhook_config_name else {
            return Ok(CaBundle::NotConfigured);
        };
        let what = format!("ValidatingWebhookConfiguration {name}");
        let Some(vwc) = self
            .webhooks
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("get {what}"), e))?
        else {
            return Ok(CaBundle::Missing);
        };
        let want = ByteString(ca_pem.as_bytes().to_vec());
        let stale: Vec<&str> = vwc
            .webhooks
            .iter()
            .flatten()
            .filter(|w| w.client_config.ca_bundle.as_ref() != Some(&want))
            .map(|w| w.name.as_str())
            .collect();
        if stale.is_empty() {
            return Ok(CaBundle::UpToDate);
        }
        // webhooks is a list merged by name: this touches caBundle and nothing else.
        let patch = serde_json::json!({
            "webhooks": stale.iter().map(|n| serde_json::json!({
                "name": n,
                "clientConfig": { "caBundle": &want },
            })).collect::<Vec<_>>(),
        });
        self.webhooks
            .patch(
                name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Strategic(&patch),
            )
            .await
            .map_err(|e| Error::kube(format!("patch caBundle of {what}"), e))?;
        tracing::info!(%name, webhooks = stale.len(), "wrote the CA into caBundle");
        Ok(CaBundle::Patched(stale.len()))
    }

    /// Keeps things right forever: every check interval, and at the serving certificate's
    /// renewal time, [`Provisioner::ensure_secret`] and [`Provisioner::ensure_ca_bundle`];
    /// serves a changed bundle from `store`. `current` is the bundle being served. Errors
    /// are logged and retried on the next round.
    pub async fn run(self, store: std::sync::Arc<CertStore>, mut current: Bundle) {
        let mut failed = false;
        loop {
            let renew_in = next_due(&self.cfg, &current)
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .unwrap_or_default();
            // A little past the renewal time, so that the certificate is due then.
            let mut wait = renew_in + Duration::from_millis(50);
            if failed {
                // Not hammering the API server while it fails.
                wait = wait.max(Duration::from_secs(1));
            }
            tokio::time::sleep(wait.min(self.cfg.check_interval)).await;
            failed = false;
            match self.ensure_secret().await {
                Ok(b) => {
                    if b != current {
                        let now = SystemTime::now();
                        if b.ca_bundle_pem(now) != current.ca_bundle_pem(now) {
                            // Clients learn a new CA before they can see what it signed.
                            if let Err(e) = self.ensure_ca_bundle(&b.ca_bundle_pem(now)).await {
                                failed = true;
                                tracing::warn!("{e}");
                            }
                        }
                        match b.certified_key() {
                            Ok(k) => {
                                store.set(k);
                                tracing::info!("serving the certificate of the Secret, reloaded");
                                current = b;
                            }
                            Err(e) => tracing::warn!("certificate of the Secret not usable: {e}"),
                        }
                    }
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!("serving certificate: {e}");
                }
            }
            match self
                .ensure_ca_bundle(&current.ca_bundle_pem(SystemTime::now()))
                .await
            {
                Ok(CaBundle::Missing) => tracing::warn!(
                    name = self.cfg.webhook_config_name.as_deref().unwrap_or_default(),
                    "ValidatingWebhookConfiguration not found; caBundle not written"
                ),
                Ok(_) => {}
                Err(e) => {
                    failed = true;
                    tracing::warn!("{e}");
                }
            }
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cfg() -> ProvisionConfig {
        ProvisionConfig {
            namespace: "ns".into(),
            secret_name: "certs".into(),
            service_name: "hook".into(),
            webhook_config_name: None,
            extra_dns_names: vec!["localhost".into()],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            validity: Duration::from_secs(3000),
            ca_validity: CA_VALIDITY,
            check_interval: Duration::from_secs(1),
        }
    }

    fn bundle(ca: &Authority, cfg: &ProvisionConfig) -> Bundle {
        let leaf = ca
            .issue(&cfg.dns_names(), &cfg.ip_addresses, cfg.validity)
            .unwrap();
        Bundle {
            ca_cert_pem: ca.cert_pem().into(),
            ca_key_pem: ca.key_pem().into(),
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
            previous_ca_pem: None,
            rollover_since: None,
        }
    }

    fn data(b: &Bundle) -> BTreeMap<String, ByteString> {
        let mut d = BTreeMap::new();
        b.write_into(&mut d);
        d
    }

    #[test]
    fn an_issued_certificate_has_the_names_the_validity_and_the_signature() {
        let c = cfg();
        let ca = Authority::generate("hook.ns webhook CA", CA_VALIDITY).unwrap();
        let b = bundle(&ca, &c);
        let leaf = b.serving().unwrap();
        assert_eq!(
            leaf.dns_names,
            [
                "hook.ns.svc",
                "hook",
                "hook.ns",
                "hook.ns.svc.cluster.local",
                "localhost"
            ]
        );
        assert_eq!(leaf.ips, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let life = leaf.not_after.duration_since(leaf.not_before).unwrap();
        // 3000 s plus the 300 s backdating, to the second.
        assert!((3299..=3301).contains(&life.as_secs()), "{life:?}");
        assert!(issued_by(&b.cert_pem, &b.ca_cert_pem));
        b.certified_key().unwrap();
        assert_eq!(needs(&c, &b, SystemTime::now()), None);
        // The CA reloaded from its PEMs signs the same way.
        let again = Authority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let b2 = bundle(&again, &c);
        assert!(issued_by(&b2.cert_pem, &b.ca_cert_pem));
    }

    #[test]
    fn renewal_is_due_when_a_third_of_the_lifetime_is_left() {
        let c = cfg();
        let ca = Authority::generate("hook.ns webhook CA", CA_VALIDITY).unwrap();
        let b = bundle(&ca, &c);
        let leaf = b.serving().unwrap();
        let life = leaf.not_after.duration_since(leaf.not_before).unwrap();
        assert_eq!(leaf.renew_at(), leaf.not_before + life * 2 / 3);
        let before = leaf.renew_at() - Duration::from_secs(1);
        assert_eq!(needs(&c, &b, before), None);
        let (whole, why) = needs(&c, &b, leaf.renew_at()).unwrap();
        assert!(!whole, "the CA is kept: {why}");
    }

    #[test]
    fn what_makes_a_bundle_unusable() {
        let c = cfg();
        let ca = Authority::generate("hook.ns webhook CA", CA_VALIDITY).unwrap();
        let good = bundle(&ca, &c);
        let now = SystemTime::now();
        // Another CA of the very same name: same issuer DN, not its signature.
        let twin = Authority::generate("hook.ns webhook CA", CA_VALIDITY).unwrap();
        let foreign = Bundle {
            ca_cert_pem: good.ca_cert_pem.clone(),
            ca_key_pem: good.ca_key_pem.clone(),
            ..bundle(&twin, &c)
        };
        assert!(!issued_by(&foreign.cert_pem, &foreign.ca_cert_pem));
        assert!(matches!(needs(&c, &foreign, now), Some((false, _))));
        // A key that is not the certificate's.
        let other = bundle(&ca, &c);
        let mismatched = Bundle {
            key_pem: other.key_pem,
            ..good.clone()
        };
        assert!(matches!(needs(&c, &mismatched, now), Some((false, _))));
        // A name added to the flags.
        let mut more = c.clone();
        more.extra_dns_names.push("hook.example".into());
        assert!(matches!(needs(&more, &good, now), Some((false, w)) if w.contains("hook.example")));
        let mut ip = c.clone();
        ip.ip_addresses.push("10.0.0.1".parse().unwrap());
        assert!(matches!(needs(&ip, &good, now), Some((false, w)) if w.contains("10.0.0.1")));
        // A CA that ends before a new certificate would: everything anew.
        let short = Authority::generate("short", Duration::from_secs(1000)).unwrap();
        assert!(matches!(
            needs(&c, &bundle(&short, &c), now),
            Some((true, _))
        ));
        // Garbage.
        let junk = Bundle {
            ca_cert_pem: "junk".into(),
            ..good.clone()
        };
        assert!(matches!(needs(&c, &junk, now), Some((true, _))));
        let junk = Bundle {
            cert_pem: "junk".into(),
            ..good.clone()
        };
        assert!(matches!(needs(&c, &junk, now), Some((false, _))));
        // A CA key that is not the CA certificate's.
        assert!(Authority::from_pem(ca.cert_pem(), twin.key_pem()).is_err());
    }

    #[test]
    fn a_secret_without_every_key_holds_no_bundle() {
        let ca = Authority::generate("x", CA_VALIDITY).unwrap();
        let b = bundle(&ca, &cfg());
        let mut s = Secret {
            data: Some(data(&b)),
            ..Secret::default()
        };
        assert_eq!(Bundle::from_secret(&s), Some(b));
        s.data.as_mut().unwrap().remove(KEY_CA_KEY);
        assert_eq!(Bundle::from_secret(&s), None);
        s.data = None;
        assert_eq!(Bundle::from_secret(&s), None);
        let mut bad = Secret {
            data: Some(data(&bundle(&ca, &cfg()))),
            ..Secret::default()
        };
        bad.data
            .as_mut()
            .unwrap()
            .insert(KEY_TLS_CRT.into(), ByteString(vec![0xff, 0xfe]));
        assert_eq!(Bundle::from_secret(&bad), None, "not UTF-8");
    }

    #[test]
    fn a_ca_rollover_keeps_the_served_certificate_through_the_grace_period() {
        let mut c = cfg();
        c.validity = Duration::from_secs(600);
        let now = SystemTime::now();
        // A CA that ends before a new certificate would.
        let old_ca = Authority::generate(&c.ca_name(), Duration::from_secs(500)).unwrap();
        let old = bundle(&old_ca, &c);
        assert!(matches!(needs(&c, &old, now), Some((true, _))));

        // Step one: a new CA, the old serving certificate, both CAs trusted.
        let step1 = new_bundle(&c, Some(&old), now).unwrap();
        assert_ne!(step1.ca_cert_pem, old.ca_cert_pem);
        assert_eq!(step1.cert_pem, old.cert_pem);
        assert_eq!(step1.key_pem, old.key_pem);
        assert_eq!(
            step1.previous_ca_pem.as_deref(),
            Some(old.ca_cert_pem.as_str())
        );
        let since = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(step1.rollover_since, Some(since));
        let trusted = step1.ca_bundle_pem(now);
        assert!(trusted.contains(&step1.ca_cert_pem) && trusted.contains(&old.ca_cert_pem));
        assert_eq!(
            needs(&c, &step1, now),
            None,
            "kept through the grace period"
        );
        let end = UNIX_EPOCH + Duration::from_secs(since) + c.rollover_grace();
        assert!(next_due(&c, &step1).unwrap() <= end);
        // The Secret round trip keeps all of it.
        let secret = Secret {
            data: Some(data(&step1)),
            ..Secret::default()
        };
        assert_eq!(Bundle::from_secret(&secret).as_ref(), Some(&step1));

        // Step two, after the grace period: the new CA signs the served certificate; the
        // previous CA stays trusted while valid.
        let later = end + Duration::from_secs(1);
        assert!(matches!(needs(&c, &step1, later), Some((false, _))));
        let new_ca = Authority::from_pem(&step1.ca_cert_pem, &step1.ca_key_pem).unwrap();
        let step2 = issue_with(&c, &new_ca, Some(&step1)).unwrap();
        assert!(issued_by(&step2.cert_pem, &step2.ca_cert_pem));
        assert_eq!(step2.previous_ca_pem, step1.previous_ca_pem);
        assert_eq!(needs(&c, &step2, later), None);
        assert!(step2.ca_bundle_pem(later).contains(&old.ca_cert_pem));
        // Once the previous CA expired, it is no longer in the bundle.
        let after = now + Duration::from_secs(1000);
        assert_eq!(step2.ca_bundle_pem(after), step2.ca_cert_pem);
        // Written without a previous CA, the rollover keys go away.
        let plain = Bundle {
            previous_ca_pem: None,
            rollover_since: None,
            ..step2.clone()
        };
        let mut d = data(&step2);
        plain.write_into(&mut d);
        assert!(!d.contains_key(KEY_CA_PREVIOUS) && !d.contains_key(KEY_ROLLOVER_SINCE));
    }

    #[test]
    fn a_rollover_whose_served_certificate_would_not_last_gets_another_from_the_old_ca() {
        let mut c = cfg();
        c.validity = Duration::from_secs(600);
        let now = SystemTime::now();
        let old_ca = Authority::generate(&c.ca_name(), Duration::from_secs(500)).unwrap();
        // A serving certificate that ends within the grace period.
        let leaf = old_ca
            .issue(&c.dns_names(), &c.ip_addresses, Duration::from_secs(2))
            .unwrap();
        let old = Bundle {
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
            ..bundle(&old_ca, &c)
        };
        let b = new_bundle(&c, Some(&old), now).unwrap();
        assert_ne!(b.cert_pem, old.cert_pem);
        assert!(issued_by(&b.cert_pem, &old.ca_cert_pem), "the old CA's");
        // Not past the old CA.
        assert!(b.serving().unwrap().not_after <= old_ca.not_after());
        assert_eq!(b.previous_ca_pem.as_deref(), Some(old.ca_cert_pem.as_str()));
        assert_eq!(needs(&c, &b, now), None);

        // An old CA that itself ends within the grace period: the new CA signs at once.
        let dying = Authority::generate(&c.ca_name(), Duration::from_secs(2)).unwrap();
        let old = bundle(&dying, &c);
        let b = new_bundle(&c, Some(&old), now).unwrap();
        assert!(issued_by(&b.cert_pem, &b.ca_cert_pem));
        assert_eq!(needs(&c, &b, now), None);

        // And an unusable old CA leaves nothing to trust from before.
        let junk = Bundle {
            ca_cert_pem: "junk".into(),
            ..old
        };
        let b = new_bundle(&c, Some(&junk), now).unwrap();
        assert_eq!(b.previous_ca_pem, None);
        assert_eq!(b.rollover_since, None);
        assert_eq!(needs(&c, &b, now), None);
    }
}
