//! AdmissionReview `admission.k8s.io/v1`: the request body decoded into what
//! [`crate::admission::admit`] needs, and the verdict encoded as the response body.

use crate::admission::{Decision, Kind, Operation, Request};
use crate::error::{Error, Result};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<RawRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize, Default)]
struct UserInfo {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    #[serde(default)]
    uid: String,
    kind: Option<GroupVersionKind>,
    #[serde(default)]
    sub_resource: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    user_info: UserInfo,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    old_object: Option<Value>,
}

/// A decoded request and the uid its response must carry.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// `request.uid`.
    pub uid: String,
    /// The request.
    pub request: Request,
}

fn not_null(v: Option<Value>) -> Option<Value> {
    v.filter(|v| !v.is_null())
}

/// Decodes an AdmissionReview request body. Anything else (not JSON, another API version
/// or kind, no request, no uid, no kind) is an [`Error::Review`].
pub fn decode(body: &[u8]) -> Result<Decoded> {
    if body.is_empty() {
        return Err(Error::Review("empty body".into()));
    }
    // An object: serde would also read a struct from a JSON list of its fields.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Error::Review("the body is not a JSON object".into()));
    }
    let r: Review = serde_json::from_slice(body).map_err(|e| Error::Review(e.to_string()))?;
    match r.api_version.as_deref() {
        Some("admission.k8s.io/v1") => {}
        Some(v) => {
            return Err(Error::Review(format!(
                "apiVersion {v:?}: only admission.k8s.io/v1 is served"
            )));
        }
        None => return Err(Error::Review("no apiVersion".into())),
    }
    if r.kind.as_deref() != Some("AdmissionReview") {
        return Err(Error::Review(format!(
            "kind {:?}: expected \"AdmissionReview\"",
            r.kind.unwrap_or_default()
        )));
    }
    let req = r
        .request
        .ok_or_else(|| Error::Review("no request".into()))?;
    if req.uid.is_empty() {
        return Err(Error::Review("request.uid is empty".into()));
    }
    let gvk = req
        .kind
        .ok_or_else(|| Error::Review("request.kind is missing".into()))?;
    let object = not_null(req.object);
    let old_object = not_null(req.old_object);
    // The object's own metadata, when the request does not say (e.g. generateName).
    let meta = |key: &str| {
        object
            .as_ref()
            .or(old_object.as_ref())
            .and_then(|o| o.get("metadata"))
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_default()
    };
    let name = if req.name.is_empty() {
        meta("name")
    } else {
        req.name
    };
    let namespace = if req.namespace.is_empty() {
        meta("namespace")
    } else {
        req.namespace
    };
    Ok(Decoded {
        uid: req.uid,
        request: Request {
            kind: Kind::of(&gvk.group, &gvk.kind),
            sub_resource: req.sub_resource,
            operation: Operation::parse(&req.operation),
            namespace,
            name,
            user: req.user_info.username,
            object,
            old_object,
        },
    })
}

/// The AdmissionReview response body for `decision` on the request `uid`: a refusal
/// carries HTTP-style code 403 (Forbidden) and the message; warnings either way.
pub fn encode(uid: &str, decision: &Decision) -> Vec<u8> {
    let mut response = json!({"uid": uid, "allowed": decision.allowed});
    if !decision.allowed {
        response["status"] = json!({
            "code": 403,
            "reason": "Forbidden",
            "message": decision.message.clone().unwrap_or_default(),
        });
    }
    if !decision.warnings.is_empty() {
        response["warnings"] = json!(decision.warnings);
    }
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    serde_json::to_vec(&review).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn decodes_a_pod_request() {
        let d = decode(&body(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "subResource": "status", "operation": "UPDATE", "namespace": "ns",
                        "userInfo": {"username": "alice"},
                        "object": {"metadata": {"name": "p"}}, "oldObject": null}
        })))
        .unwrap();
        assert_eq!(d.uid, "u1");
        assert_eq!(d.request.kind, Kind::Pod);
        assert_eq!(d.request.sub_resource, "status");
        assert_eq!(d.request.operation, Operation::Update);
        assert_eq!(
            (d.request.namespace.as_str(), d.request.name.as_str()),
            ("ns", "p")
        );
        assert_eq!(d.request.user, "alice");
        assert!(d.request.old_object.is_none());
    }

    #[test]
    fn refuses_what_is_not_a_v1_review() {
        for (b, want) in [
            (b"".to_vec(), "empty body"),
            (b"{".to_vec(), "EOF"),
            (b"[]".to_vec(), "not a JSON object"),
            (b"  ".to_vec(), "not a JSON object"),
            (body(json!({"kind": "AdmissionReview"})), "no apiVersion"),
            (
                body(json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"})),
                "only admission.k8s.io/v1",
            ),
            (
                body(json!({"apiVersion": "admission.k8s.io/v1", "kind": "Pod"})),
                "expected",
            ),
            (
                body(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})),
                "no request",
            ),
            (
                body(
                    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "request": {"kind": {"kind": "Pod"}}}),
                ),
                "uid",
            ),
            (
                body(
                    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "request": {"uid": "x"}}),
                ),
                "request.kind",
            ),
            (
                body(
                    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "request": {"uid": 5, "kind": {"kind": "Pod"}}}),
                ),
                "invalid type",
            ),
        ] {
            let e = decode(&b)
                .err()
                .unwrap_or_else(|| panic!("{want}: decoded"));
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn encodes_verdicts() {
        let v: Value = serde_json::from_slice(&encode(
            "u",
            &Decision {
                allowed: false,
                message: Some("no".into()),
                warnings: vec!["w".into()],
            },
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "response": {"uid": "u", "allowed": false, "warnings": ["w"],
                                "status": {"code": 403, "reason": "Forbidden", "message": "no"}}})
        );
        let v: Value = serde_json::from_slice(&encode(
            "u",
            &Decision {
                allowed: true,
                ..Default::default()
            },
        ))
        .unwrap();
        assert_eq!(v["response"], json!({"uid": "u", "allowed": true}));
    }
}
