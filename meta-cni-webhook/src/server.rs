//! The HTTPS server: TLS on every connection (no plaintext listener), HTTP/1.1, the routes
//!
//! | path        | method | answer                                                       |
//! |-------------|--------|--------------------------------------------------------------|
//! | `/validate` | POST   | the [`Handler`]'s AdmissionReview response (200), or 4xx      |
//! | `/healthz`  | GET    | 200 `ok` while the process serves                             |
//! | `/readyz`   | GET    | 200 `ok` when [`Handler::ready`], else 503                    |
//! | `/metrics`  | GET    | Prometheus metrics ([`crate::metrics`]), OpenMetrics text     |
//!
//! and the checks made before the handler sees a body: an unknown path is 404, a wrong
//! method 405, a `Content-Type` other than `application/json` (parameters such as
//! `charset` allowed) 415, a body over the limit 413 (from `Content-Length` before reading,
//! or while reading, so a huge body is never buffered whole), an empty body 400, a body not
//! received within [`BODY_TIMEOUT`] 408. The handler runs on tokio's blocking pool, so a
//! slow one never stalls other connections; a handler that panics costs that request a 500
//! and nothing else.

use crate::Error;
use crate::certs::Validity;
use crate::metrics::{Metrics, Rejection};
use crate::tls::CertStore;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What the admission logic answers for one AdmissionReview request body.
pub struct Answer {
    /// The AdmissionReview response, serialized (the HTTP 200 body).
    pub body: Vec<u8>,
    /// For metrics: "NetworkAttachmentDefinition", "Pod", or "other".
    pub kind: &'static str,
    /// For metrics: "CREATE", "UPDATE", "DELETE", "CONNECT" or "other".
    pub operation: &'static str,
    /// For metrics: true = allowed.
    pub allowed: bool,
}

/// The admission logic behind `POST /validate`.
pub trait Handler: Send + Sync + 'static {
    /// Err(message) = the body is not a valid AdmissionReview v1 request: HTTP 400 with the message.
    fn handle(&self, body: &[u8]) -> Result<Answer, String>;
    /// Whether the handler is ready to answer (e.g. its caches are synced); /readyz reports it.
    fn ready(&self) -> bool;
}

/// The default of `--max-request-bytes`: 3 MiB (an AdmissionReview of an UPDATE carries the
/// object twice, and etcd takes objects up to 1.5 MiB) plus 256 KiB for the envelope.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024 + 256 * 1024;
/// How long a client may take for the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a server needs besides its listener.
pub struct Server {
    /// The TLS configuration ([`crate::tls::server_config`]).
    pub tls: Arc<rustls::ServerConfig>,
    /// The admission logic.
    pub handler: Arc<dyn Handler>,
    /// Where requests are counted.
    pub metrics: Arc<Metrics>,
    /// The certificate being served (its expiry is a metric).
    pub certs: Arc<CertStore>,
    /// The largest request body accepted, in bytes.
    pub max_request_bytes: usize,
    /// How long, after shutdown is asked for, requests in flight may take to finish.
    pub shutdown_grace: Duration,
}

struct Ctx {
    handler: Arc<dyn Handler>,
    metrics: Arc<Metrics>,
    certs: Arc<CertStore>,
    max_request_bytes: usize,
}

impl Server {
    /// Accepts connections on `listener` until `shutdown` completes; then stops accepting,
    /// lets the requests in flight finish (at most [`Server::shutdown_grace`]) and returns.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future) -> Result<(), Error> {
        let acceptor = TlsAcceptor::from(self.tls);
        let ctx = Arc::new(Ctx {
            handler: self.handler,
            metrics: self.metrics,
            certs: self.certs,
            max_request_bytes: self.max_request_bytes,
        });
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving the
                        // connections there are, try again shortly.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let ctx = ctx.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        ctx.metrics.handshake_failed();
                        tracing::debug!(%peer, "TLS handshake: {e}");
                        return;
                    }
                    Err(_) => {
                        ctx.metrics.handshake_failed();
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let svc = service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move { Ok::<_, Infallible>(route(&ctx, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), svc);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, "connection: {e}");
                }
            });
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(self.shutdown_grace) => {
                tracing::warn!("requests still in flight after the shutdown grace period");
            }
        }
        Ok(())
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: impl Into<String>) -> Resp {
    let mut b = body.into();
    b.push('\n');
    respond(status, "text/plain; charset=utf-8", b)
}

fn reject(ctx: &Ctx, why: Rejection, status: StatusCode, msg: impl Into<String>) -> Resp {
    ctx.metrics.rejected(why);
    let msg = msg.into();
    tracing::debug!(status = status.as_u16(), reason = why.as_str(), "{msg}");
    text(status, msg)
}

fn method_not_allowed(ctx: &Ctx, allow: &'static str) -> Resp {
    let mut r = reject(
        ctx,
        Rejection::MethodNotAllowed,
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

async fn route(ctx: &Ctx, req: Request<Incoming>) -> Resp {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match req.uri().path() {
        "/validate" if req.method() == Method::POST => validate(ctx, req).await,
        "/validate" => method_not_allowed(ctx, "POST"),
        "/healthz" | "/readyz" | "/metrics" if !get => method_not_allowed(ctx, "GET"),
        "/healthz" => text(StatusCode::OK, "ok"),
        "/readyz" if ctx.handler.ready() => text(StatusCode::OK, "ok"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        "/metrics" => {
            let served = ctx.certs.current();
            if let Some(v) = served
                .end_entity_cert()
                .ok()
                .and_then(|der| Validity::of(der).ok())
            {
                ctx.metrics.serving_cert(&v);
            }
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ctx.metrics.encode(),
            )
        }
        _ => reject(ctx, Rejection::NotFound, StatusCode::NOT_FOUND, "not found"),
    }
}

/// `application/json`, in any case, with or without parameters.
fn is_json(v: Option<&HeaderValue>) -> bool {
    v.and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

async fn validate(ctx: &Ctx, req: Request<Incoming>) -> Resp {
    let start = Instant::now();
    let limit = ctx.max_request_bytes;
    if !is_json(req.headers().get(header::CONTENT_TYPE)) {
        return reject(
            ctx,
            Rejection::UnsupportedMediaType,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an AdmissionReview is Content-Type: application/json",
        );
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(ctx, limit);
    }
    let body =
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), limit).collect())
            .await
        {
            Err(_) => {
                return reject(
                    ctx,
                    Rejection::Timeout,
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                );
            }
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return too_large(ctx, limit);
            }
            Ok(Err(e)) => {
                return reject(
                    ctx,
                    Rejection::BadBody,
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                );
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
    if body.is_empty() {
        return reject(
            ctx,
            Rejection::EmptyBody,
            StatusCode::BAD_REQUEST,
            "empty request body; expected an AdmissionReview",
        );
    }
    let handler = ctx.handler.clone();
    match tokio::task::spawn_blocking(move || handler.handle(&body)).await {
        Ok(Ok(answer)) => {
            ctx.metrics.answered(
                answer.kind,
                answer.operation,
                answer.allowed,
                start.elapsed(),
            );
            respond(StatusCode::OK, "application/json", answer.body)
        }
        Ok(Err(msg)) => reject(ctx, Rejection::InvalidReview, StatusCode::BAD_REQUEST, msg),
        Err(e) => {
            tracing::error!("the admission handler failed: {e}");
            reject(
                ctx,
                Rejection::Internal,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            )
        }
    }
}

fn too_large(ctx: &Ctx, limit: usize) -> Resp {
    reject(
        ctx,
        Rejection::PayloadTooLarge,
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over {limit} bytes"),
    )
}
