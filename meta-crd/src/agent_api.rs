//! The node agent's local API: the protocol the plugin and `meta-cni-agent` speak over the
//! agent's unix socket (default [`DEFAULT_SOCKET`]), and a small blocking client.
//!
//! # Protocol, version 1
//!
//! One JSON object per line in each direction (`\n`-terminated, UTF-8, at most
//! [`MAX_LINE`] bytes); the client sends a request, the agent answers with exactly one
//! response line, and the client may send further requests on the same connection. Every
//! message carries the protocol version `"v": 1`; an agent answers a request of a version
//! it does not speak with `unsupported-version` and its own `v`.
//!
//! Requests:
//!
//! ```text
//! {"v":1,"op":"nad","namespace":"ns1","name":"blue"}
//! {"v":1,"op":"pod","namespace":"ns1","name":"web","uid":"…"}     (uid optional)
//! {"v":1,"op":"status"}
//! {"v":1,"op":"network-status","namespace":"ns1","name":"web","uid":"…","value":"[…]"}
//! ```
//!
//! `network-status` sets the pod's `k8s.v1.cni.cncf.io/network-status` annotation to
//! `value` through the agent's own, long-lived API connection (a JSON merge patch of the
//! `pods/status` subresource, with the UID as precondition when given) and is answered
//! once the API server has acknowledged it. The agent only patches pods of its own node
//! that its pod cache holds (with that UID); any other is `unknown`.
//!
//! Responses:
//!
//! ```text
//! {"v":1,"ok":true,"nad":{…the NetworkAttachmentDefinition object…}}
//! {"v":1,"ok":true,"pod":{"uid":"…","annotations":{…}}}
//! {"v":1,"ok":true,"status":{"node":"n1","nads":{"synced":true,"count":12},"pods":{"synced":true,"count":3}}}
//! {"v":1,"ok":true}                                              (network-status)
//! {"v":1,"ok":false,"error":"not-synced","message":"…"}
//! {"v":1,"ok":false,"error":"api","code":409,"message":"…"}
//! ```
//!
//! Errors ([`ErrorKind`]): `not-synced` (that cache has not finished its first listing),
//! `unknown` (not in the cache: for a pod also when its UID differs from the requested
//! one), `bad-request`, `unsupported-version`, `forbidden` (the peer is not root; the agent
//! closes the connection after it), `api` (the API server refused or failed the agent's
//! request: `code` is its HTTP status when it answered). None of them means "does not
//! exist": a client falls back to the API server on every error, so a stale or cold cache
//! can never produce a false "NAD not found"; only `api` with 409 or 422 on a
//! `network-status` with a UID is final (the pod was recreated).

use crate::{Error, NetworkAttachmentDefinition, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;

/// Where the agent listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/meta-cni/agent.sock";

/// The longest line either side accepts, newline included.
pub const MAX_LINE: usize = 1 << 20;

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The protocol version.
    pub v: u32,
    /// What is asked.
    #[serde(flatten)]
    pub op: Op,
}

/// The operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// A NetworkAttachmentDefinition from the cluster-wide cache.
    Nad {
        /// metadata.namespace
        namespace: String,
        /// metadata.name
        name: String,
    },
    /// A pod of the agent's node: its UID and annotations.
    Pod {
        /// metadata.namespace
        namespace: String,
        /// metadata.name
        name: String,
        /// When given, a cached pod with another UID is `unknown`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<String>,
    },
    /// The caches' sync state and object counts.
    Status,
    /// Set a pod's network-status annotation (through the API server).
    NetworkStatus {
        /// metadata.namespace
        namespace: String,
        /// metadata.name
        name: String,
        /// When given, the patch's precondition (and the cached pod must have it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<String>,
        /// The annotation's new value.
        value: String,
    },
}

impl Request {
    /// A request of this version.
    pub fn new(op: Op) -> Request {
        Request { v: VERSION, op }
    }
}

/// A pod as the agent serves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMeta {
    /// metadata.uid
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// metadata.annotations
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// One cache's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheState {
    /// Whether its first complete listing has arrived.
    pub synced: bool,
    /// Objects held.
    pub count: usize,
}

/// The answer to `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The agent's node.
    pub node: String,
    /// The NetworkAttachmentDefinition cache (cluster-wide).
    pub nads: CacheState,
    /// The cache of this node's pods.
    pub pods: CacheState,
}

/// Why a request was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The cache has not finished its first listing.
    NotSynced,
    /// Not in the cache (which does not mean it does not exist).
    Unknown,
    /// Not a valid request.
    BadRequest,
    /// A protocol version the agent does not speak.
    UnsupportedVersion,
    /// The peer may not use the socket (not root).
    Forbidden,
    /// The API server refused or failed the agent's request (`code` when it answered).
    Api,
    /// An error this client does not know (a newer agent).
    #[serde(other)]
    Other,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The protocol version.
    pub v: u32,
    /// Whether the request was answered.
    pub ok: bool,
    /// `nad`'s answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nad: Option<Box<NetworkAttachmentDefinition>>,
    /// `pod`'s answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodMeta>,
    /// `status`'s answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorKind>,
    /// A message for humans, with `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// With `api`: the API server's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
}

impl Response {
    fn empty(ok: bool) -> Response {
        Response {
            v: VERSION,
            ok,
            nad: None,
            pod: None,
            status: None,
            error: None,
            message: None,
            code: None,
        }
    }

    /// The answer to a request that returns nothing (`network-status`).
    pub fn done() -> Response {
        Response::empty(true)
    }

    /// The API server's refusal or failure of the agent's request (`code`: its HTTP
    /// status, when it answered).
    pub fn api_error(code: Option<u16>, message: impl Into<String>) -> Response {
        Response {
            code,
            ..Response::error(ErrorKind::Api, message)
        }
    }

    /// The answer to `nad`.
    pub fn nad(nad: NetworkAttachmentDefinition) -> Response {
        Response {
            nad: Some(Box::new(nad)),
            ..Response::empty(true)
        }
    }

    /// The answer to `pod`.
    pub fn pod(pod: PodMeta) -> Response {
        Response {
            pod: Some(pod),
            ..Response::empty(true)
        }
    }

    /// The answer to `status`.
    pub fn status(status: Status) -> Response {
        Response {
            status: Some(status),
            ..Response::empty(true)
        }
    }

    /// A refusal.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response {
            error: Some(kind),
            message: Some(message.into()),
            ..Response::empty(false)
        }
    }
}

/// `msg` as one protocol line (JSON and a newline).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these types cannot fail (string keys, no non-finite floats).
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Decodes one request line (with or without its newline); a line that is not a request
/// of this version is the response to send instead.
pub fn decode_request(line: &[u8]) -> std::result::Result<Request, Box<Response>> {
    let refuse = |kind, m: String| Box::new(Response::error(kind, m));
    let v: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| refuse(ErrorKind::BadRequest, format!("not JSON: {e}")))?;
    match v.get("v").and_then(serde_json::Value::as_u64) {
        Some(n) if n == u64::from(VERSION) => {}
        Some(n) => {
            return Err(refuse(
                ErrorKind::UnsupportedVersion,
                format!("protocol version {n} is not spoken here (this agent speaks {VERSION})"),
            ));
        }
        None => {
            return Err(refuse(
                ErrorKind::BadRequest,
                "no protocol version (\"v\": 1)".into(),
            ));
        }
    }
    serde_json::from_value(v)
        .map_err(|e| refuse(ErrorKind::BadRequest, format!("invalid request: {e}")))
}

/// Decodes one response line.
pub fn decode_response(line: &[u8]) -> Result<Response> {
    serde_json::from_slice(line).map_err(|e| Error::Agent(format!("invalid response: {e}")))
}

/// A connection to the agent with one deadline for everything done on it.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    deadline: Instant,
}

impl Client {
    /// Connects to the socket at `path`; every later request must be answered before
    /// `timeout` (counted from now) runs out.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client> {
        let deadline = Instant::now() + timeout;
        let s = UnixStream::connect(path)
            .map_err(|e| Error::Agent(format!("connect {}: {e}", path.display())))?;
        Ok(Client {
            reader: BufReader::new(s),
            deadline,
        })
    }

    fn left(&self) -> Result<Duration> {
        let d = self.deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(Error::Agent("no answer in time".into()))
        } else {
            Ok(d)
        }
    }

    /// Sends `req` and reads its response, which must arrive within `timeout` from now
    /// (for a request that waits on the API server); the connection's deadline moves
    /// out to that if it is earlier.
    pub fn ask_within(&mut self, req: &Request, timeout: Duration) -> Result<Response> {
        self.deadline = self.deadline.max(Instant::now() + timeout);
        self.ask(req)
    }

    /// Sends `req` and reads its response.
    pub fn ask(&mut self, req: &Request) -> Result<Response> {
        let io = |what: &'static str| move |e: std::io::Error| Error::Agent(format!("{what}: {e}"));
        let left = self.left()?;
        let s = self.reader.get_mut();
        s.set_write_timeout(Some(left)).map_err(io("set timeout"))?;
        s.write_all(&encode(req)).map_err(io("send"))?;
        let left = self.left()?;
        self.reader
            .get_mut()
            .set_read_timeout(Some(left))
            .map_err(io("set timeout"))?;
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(io("receive"))?;
        if n == 0 {
            return Err(Error::Agent("the agent closed the connection".into()));
        }
        if line.last() != Some(&b'\n') {
            return Err(Error::Agent("truncated or oversized response".into()));
        }
        let r = decode_response(&line)?;
        if r.v != VERSION {
            return Err(Error::Agent(format!(
                "the agent speaks protocol version {}, not {VERSION}",
                r.v
            )));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(v: serde_json::Value) -> Vec<u8> {
        encode(&v)
    }

    #[test]
    fn requests_round_trip_in_the_documented_shape() {
        let r = Request::new(Op::Nad {
            namespace: "ns1".into(),
            name: "blue".into(),
        });
        let text = String::from_utf8(encode(&r)).unwrap();
        assert_eq!(
            text,
            "{\"v\":1,\"op\":\"nad\",\"namespace\":\"ns1\",\"name\":\"blue\"}\n"
        );
        assert_eq!(decode_request(text.as_bytes()).unwrap(), r);
        let p = decode_request(&line(
            json!({"v":1,"op":"pod","namespace":"a","name":"b","uid":"u1"}),
        ))
        .unwrap();
        assert_eq!(
            p.op,
            Op::Pod {
                namespace: "a".into(),
                name: "b".into(),
                uid: Some("u1".into())
            }
        );
        let s = decode_request(br#"{"v":1,"op":"status"}"#).unwrap();
        assert_eq!(s.op, Op::Status);
        let ns = Request::new(Op::NetworkStatus {
            namespace: "a".into(),
            name: "b".into(),
            uid: Some("u1".into()),
            value: "[]".into(),
        });
        let text = String::from_utf8(encode(&ns)).unwrap();
        assert_eq!(
            text,
            "{\"v\":1,\"op\":\"network-status\",\"namespace\":\"a\",\"name\":\"b\",\"uid\":\"u1\",\"value\":\"[]\"}\n"
        );
        assert_eq!(decode_request(text.as_bytes()).unwrap(), ns);
        // a network-status without its value is refused
        let e = decode_request(&line(
            json!({"v":1,"op":"network-status","namespace":"a","name":"b"}),
        ))
        .unwrap_err();
        assert_eq!(e.error, Some(ErrorKind::BadRequest));
    }

    #[test]
    fn done_and_api_errors_in_the_documented_shape() {
        let done = String::from_utf8(encode(&Response::done())).unwrap();
        assert_eq!(done, "{\"v\":1,\"ok\":true}\n");
        let e = Response::api_error(Some(409), "conflict");
        let text = String::from_utf8(encode(&e)).unwrap();
        assert_eq!(
            text,
            "{\"v\":1,\"ok\":false,\"error\":\"api\",\"message\":\"conflict\",\"code\":409}\n"
        );
        assert_eq!(decode_response(text.as_bytes()).unwrap(), e);
    }

    #[test]
    fn bad_requests_get_a_named_refusal() {
        let cases = [
            (b"nope".to_vec(), ErrorKind::BadRequest, "not JSON"),
            (
                line(json!({"op":"status"})),
                ErrorKind::BadRequest,
                "no protocol version",
            ),
            (
                line(json!({"v":2,"op":"status"})),
                ErrorKind::UnsupportedVersion,
                "version 2",
            ),
            (
                line(json!({"v":1,"op":"delete-everything"})),
                ErrorKind::BadRequest,
                "invalid request",
            ),
            (
                line(json!({"v":1,"op":"nad","namespace":"a"})),
                ErrorKind::BadRequest,
                "name",
            ),
        ];
        for (input, kind, needle) in cases {
            let r = decode_request(&input).unwrap_err();
            assert!(!r.ok);
            assert_eq!(r.error, Some(kind), "{}", String::from_utf8_lossy(&input));
            let m = r.message.unwrap();
            assert!(m.contains(needle), "{m}");
        }
    }

    #[test]
    fn responses_round_trip_and_unknown_errors_are_other() {
        let r = Response::error(ErrorKind::NotSynced, "NAD cache not synced");
        let text = String::from_utf8(encode(&r)).unwrap();
        assert_eq!(
            text,
            "{\"v\":1,\"ok\":false,\"error\":\"not-synced\",\"message\":\"NAD cache not synced\"}\n"
        );
        assert_eq!(decode_response(text.as_bytes()).unwrap(), r);
        let r = decode_response(br#"{"v":1,"ok":false,"error":"brand-new"}"#).unwrap();
        assert_eq!(r.error, Some(ErrorKind::Other));
        let nad: NetworkAttachmentDefinition = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "blue", "namespace": "ns1"},
            "spec": {"config": "{\"cniVersion\":\"1.0.0\",\"type\":\"bridge\"}"}
        }))
        .unwrap();
        let r = Response::nad(nad.clone());
        let back = decode_response(&encode(&r)).unwrap();
        assert!(back.ok);
        assert_eq!(back.nad.unwrap().spec.config, nad.spec.config);
        let p = Response::pod(PodMeta {
            uid: Some("u".into()),
            annotations: BTreeMap::from([("k".into(), "v".into())]),
        });
        assert_eq!(
            String::from_utf8(encode(&p)).unwrap(),
            "{\"v\":1,\"ok\":true,\"pod\":{\"uid\":\"u\",\"annotations\":{\"k\":\"v\"}}}\n"
        );
        assert!(decode_response(b"{").is_err());
    }
}
