//! The local API: [`meta_crd::agent_api`]'s protocol on a unix socket (default
//! `/run/meta-cni/agent.sock`, `--socket` / `META_CNI_AGENT_SOCKET`), answered from the
//! caches of [`crate::cache`].
//!
//! Only root may use it, checked twice: the socket is mode 0600 (its directory, when the
//! agent creates it, 0700), and every connection's peer credentials (`SO_PEERCRED`) must
//! say uid 0; any other peer gets one `forbidden` response and the connection is closed.
//! A connection that sends nothing for [`IDLE`] is closed.
//!
//! `network-status` is the one request that is not answered from the caches: the agent
//! patches the pod through its own API connection (kept open for the agent's life, so a
//! patch costs one round trip, no TLS handshake or client setup) and answers once the API
//! server has, within [`PATCH_TIMEOUT`]. Only pods of this node that the pod cache holds
//! (with the given UID) are patched.

use crate::cache::Shared;
use crate::{Error, Result, Shutdown};
use meta_crd::agent_api::{self, ErrorKind, MAX_LINE, Op, PodMeta, Request, Response};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// How long a connection may stay silent.
pub const IDLE: Duration = Duration::from_secs(30);

/// How long a `network-status` patch may wait for the API server.
pub const PATCH_TIMEOUT: Duration = Duration::from_secs(10);

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// A bound socket; removes its file when dropped.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
}

impl Listener {
    /// Binds `path`: creates its directory (mode 0700) when missing, replaces a stale
    /// socket file (never anything else), and sets the socket's mode to 0600. Must run on
    /// a tokio runtime.
    pub fn bind(path: &Path) -> Result<Listener> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(format!("create {}", dir.display())))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) => {
                use std::os::unix::fs::FileTypeExt;
                if !m.file_type().is_socket() {
                    return Err(Error::Config(format!(
                        "{} exists and is not a socket; refusing to replace it",
                        path.display()
                    )));
                }
                std::fs::remove_file(path)
                    .map_err(io_err(format!("remove the stale {}", path.display())))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("stat {}", path.display()))(e)),
        }
        let listener =
            UnixListener::bind(path).map_err(io_err(format!("bind {}", path.display())))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(format!("chmod 0600 {}", path.display())))?;
        tracing::info!(socket = %path.display(), "local API listening");
        Ok(Listener {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The answer to `req` from `state` (`network-status` is [`set_network_status`]'s).
pub fn answer(state: &Shared, req: &Request) -> Response {
    let s = state.lock();
    match &req.op {
        Op::NetworkStatus { .. } => Response::error(
            ErrorKind::Unknown,
            "network-status is not answered from the caches",
        ),
        Op::Status => Response::status(s.status()),
        Op::Nad { namespace, name } => {
            if !s.nads.synced() {
                return Response::error(ErrorKind::NotSynced, "the NAD cache is not synced yet");
            }
            match s.nads.get(namespace, name) {
                Some(n) => Response::nad(n.clone()),
                None => Response::error(
                    ErrorKind::Unknown,
                    format!("NetworkAttachmentDefinition {namespace}/{name} is not in the cache"),
                ),
            }
        }
        Op::Pod {
            namespace,
            name,
            uid,
        } => {
            if !s.pods.synced() {
                return Response::error(ErrorKind::NotSynced, "the pod cache is not synced yet");
            }
            match s.pods.get(namespace, name) {
                Some(p) if uid.is_none() || uid == &p.uid => Response::pod(PodMeta::clone(p)),
                Some(p) => Response::error(
                    ErrorKind::Unknown,
                    format!(
                        "pod {namespace}/{name} is cached with UID {}, not {}",
                        p.uid.as_deref().unwrap_or("(none)"),
                        uid.as_deref().unwrap_or_default()
                    ),
                ),
                None => Response::error(
                    ErrorKind::Unknown,
                    format!(
                        "pod {namespace}/{name} is not in the cache of node {}",
                        s.node
                    ),
                ),
            }
        }
    }
}

/// The answer to a `network-status` request: `value` patched onto pod `namespace/name`
/// (a JSON merge patch of `pods/status`, the UID as precondition when given) through
/// `client`, once the API server has acknowledged it. Without a client (local mode), or
/// for a pod the cache does not hold with that UID, `unknown`: the plugin then patches
/// it itself.
pub async fn set_network_status(
    state: &Shared,
    client: Option<&::kube::Client>,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
    value: &str,
) -> Response {
    {
        let s = state.lock();
        if !s.pods.synced() {
            return Response::error(ErrorKind::NotSynced, "the pod cache is not synced yet");
        }
        match s.pods.get(namespace, name) {
            Some(p) if uid.is_none() || uid == p.uid.as_deref() => {}
            Some(p) => {
                return Response::error(
                    ErrorKind::Unknown,
                    format!(
                        "pod {namespace}/{name} is cached with UID {}, not {}",
                        p.uid.as_deref().unwrap_or("(none)"),
                        uid.unwrap_or_default()
                    ),
                );
            }
            None => {
                return Response::error(
                    ErrorKind::Unknown,
                    format!(
                        "pod {namespace}/{name} is not in the cache of node {}",
                        s.node
                    ),
                );
            }
        }
    }
    let Some(client) = client else {
        return Response::error(ErrorKind::Unknown, "this agent has no API connection");
    };
    let api: ::kube::Api<k8s_openapi::api::core::v1::Pod> =
        ::kube::Api::namespaced(client.clone(), namespace);
    let patch = meta_crd::network_status_patch(value, uid);
    let pp = ::kube::api::PatchParams::default();
    let merge = ::kube::api::Patch::Merge(&patch);
    let fut = api.patch_status(name, &pp, &merge);
    match tokio::time::timeout(PATCH_TIMEOUT, fut).await {
        Ok(Ok(_)) => Response::done(),
        Ok(Err(::kube::Error::Api(s))) => Response::api_error(Some(s.code), s.message.clone()),
        Ok(Err(e)) => Response::api_error(None, e.to_string()),
        Err(_) => Response::api_error(
            None,
            format!("the API server did not answer within {PATCH_TIMEOUT:?}"),
        ),
    }
}

/// Serves `listener` until `shutdown`, one task per connection; `client` patches
/// network-status (none: `network-status` is refused as `unknown`).
pub async fn serve(
    listener: Listener,
    state: Shared,
    client: Option<::kube::Client>,
    mut shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            r = listener.listener.accept() => match r {
                Ok((stream, _)) => {
                    let state = state.clone();
                    let client = client.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, state, client).await {
                            tracing::debug!("local API connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("local API accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn connection(
    stream: UnixStream,
    state: Shared,
    client: Option<::kube::Client>,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (rd, mut wr) = stream.into_split();
    if cred.uid() != 0 {
        tracing::warn!(
            uid = cred.uid(),
            pid = ?cred.pid(),
            "local API: refused a connection from a non-root peer"
        );
        let r = Response::error(
            ErrorKind::Forbidden,
            format!(
                "only root may use the meta-cni agent's socket; the peer is uid {}",
                cred.uid()
            ),
        );
        wr.write_all(&agent_api::encode(&r)).await?;
        return wr.shutdown().await;
    }
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut rd).take(MAX_LINE as u64);
        let read = limited.read_until(b'\n', &mut line);
        let n = match tokio::time::timeout(IDLE, read).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            let r = Response::error(
                ErrorKind::BadRequest,
                format!("request longer than {MAX_LINE} bytes or not newline-terminated"),
            );
            wr.write_all(&agent_api::encode(&r)).await?;
            return wr.shutdown().await;
        }
        let r = match agent_api::decode_request(&line) {
            Ok(Request {
                op:
                    Op::NetworkStatus {
                        namespace,
                        name,
                        uid,
                        value,
                    },
                ..
            }) => {
                let r = set_network_status(
                    &state,
                    client.as_ref(),
                    &namespace,
                    &name,
                    uid.as_deref(),
                    &value,
                )
                .await;
                tracing::debug!(
                    "local API: network-status of pod {namespace}/{name}: ok={} {}",
                    r.ok,
                    r.message.as_deref().unwrap_or_default()
                );
                r
            }
            Ok(req) => answer(&state, &req),
            Err(refusal) => *refusal,
        };
        wr.write_all(&agent_api::encode(&r)).await?;
    }
}
