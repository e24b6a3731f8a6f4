//! The webhook's Prometheus metrics, served on `GET /metrics` (OpenMetrics text format).
//!
//! - `meta_cni_webhook_requests_total{kind,operation,verdict}`: AdmissionReviews answered,
//!   by the object's kind (`NetworkAttachmentDefinition`, `Pod`, `other`), the operation
//!   (`CREATE`, `UPDATE`, `DELETE`, `CONNECT`, `other`) and the verdict (`allowed`, `denied`);
//! - `meta_cni_webhook_request_duration_seconds`: the time from the request's headers to the
//!   answer, for the AdmissionReviews answered (histogram, 0.5 ms to about 4 s);
//! - `meta_cni_webhook_rejected_requests_total{reason}`: requests answered with an HTTP
//!   error instead (`not_found`, `method_not_allowed`, `unsupported_media_type`,
//!   `payload_too_large`, `empty_body`, `bad_body`, `timeout`, `invalid_review`, `internal`);
//! - `meta_cni_webhook_tls_handshake_failures_total`: connections that did not complete a
//!   TLS handshake (plaintext, old protocol versions, clients that distrust the certificate);
//! - `meta_cni_webhook_serving_certificate_expiry_timestamp_seconds`: when the certificate
//!   being served expires (Unix time), e.g. to alert when renewal stalls.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    operation: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    reason: &'static str,
}

/// Why a request got an HTTP error rather than an AdmissionReview answer (the `reason`
/// label of `meta_cni_webhook_rejected_requests_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// An unknown path (404).
    NotFound,
    /// A known path with the wrong method (405).
    MethodNotAllowed,
    /// Not `Content-Type: application/json` (415).
    UnsupportedMediaType,
    /// A body over `--max-request-bytes` (413).
    PayloadTooLarge,
    /// An empty body (400).
    EmptyBody,
    /// The body could not be read (400).
    BadBody,
    /// The body did not arrive in time (408).
    Timeout,
    /// The handler found no valid AdmissionReview in the body (400).
    InvalidReview,
    /// The handler failed (500).
    Internal,
}

impl Rejection {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::NotFound => "not_found",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::UnsupportedMediaType => "unsupported_media_type",
            Rejection::PayloadTooLarge => "payload_too_large",
            Rejection::EmptyBody => "empty_body",
            Rejection::BadBody => "bad_body",
            Rejection::Timeout => "timeout",
            Rejection::InvalidReview => "invalid_review",
            Rejection::Internal => "internal",
        }
    }
}

/// The registry and the metrics in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Histogram,
    rejected: Family<RejectLabels, Counter>,
    handshake_failures: Counter,
    cert_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with the webhook's metrics, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("meta_cni_webhook");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "AdmissionReview requests answered, by kind, operation and verdict",
            requests.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "request_duration_seconds",
            "Time from the request's headers to the AdmissionReview answer",
            duration.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests answered with an HTTP error, by reason",
            rejected.clone(),
        );
        let handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "Connections whose TLS handshake failed",
            handshake_failures.clone(),
        );
        let cert_expiry = Gauge::default();
        registry.register(
            "serving_certificate_expiry_timestamp_seconds",
            "When the serving certificate expires, Unix time",
            cert_expiry.clone(),
        );
        Metrics {
            cert_expiry,
            registry,
            requests,
            duration,
            rejected,
            handshake_failures,
        }
    }

    /// Counts one answered AdmissionReview and its latency.
    pub fn answered(
        &self,
        kind: &'static str,
        operation: &'static str,
        allowed: bool,
        took: Duration,
    ) {
        let verdict = if allowed { "allowed" } else { "denied" };
        self.requests
            .get_or_create(&RequestLabels {
                kind,
                operation,
                verdict,
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts one request answered with an HTTP error.
    pub fn rejected(&self, why: Rejection) {
        self.rejected
            .get_or_create(&RejectLabels {
                reason: why.as_str(),
            })
            .inc();
    }

    /// Counts one failed TLS handshake.
    pub fn handshake_failed(&self) {
        self.handshake_failures.inc();
    }

    /// Records the certificate being served.
    pub fn serving_cert(&self, cert: &crate::certs::Validity) {
        let secs = cert
            .not_after
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.cert_expiry
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    /// The registry, to add more metrics before serving.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Everything in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
