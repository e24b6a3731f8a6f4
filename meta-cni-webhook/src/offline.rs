//! `meta-cni-webhook validate FILE...`: the admission checks on manifests, for CI
//! pipelines and GitOps repositories. The objects of all files are taken in order, as if
//! they were applied one after another to an empty cluster: each NAD is checked against
//! the NADs before it and then exists for what follows; each pod is checked against the
//! NADs applied so far. Kinds other than NADs and pods are skipped.

use crate::admission::{Decision, Kind, Operation, Request, Settings, admit};
use crate::error::{Error, Result};
use crate::world::Objects;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The Kubernetes objects of a manifest: YAML (several documents allowed) or JSON, a
/// `List` (`kubectl get -o yaml`) unpacked into its items. Empty documents are skipped.
pub fn objects_of(text: &str) -> std::result::Result<Vec<Value>, String> {
    let docs: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(v) => vec![v],
        Err(_) => serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?,
    };
    let mut out = Vec::new();
    for d in docs {
        match d {
            Value::Null => {}
            Value::Object(ref m)
                if m.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && m.get("items").is_some_and(Value::is_array) =>
            {
                out.extend(m["items"].as_array().into_iter().flatten().cloned());
            }
            Value::Object(_) => out.push(d),
            other => {
                return Err(format!(
                    "a document is not an object: {}",
                    serde_json::to_string(&other).unwrap_or_default()
                ));
            }
        }
    }
    Ok(out)
}

/// The verdict on one object of the files.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The file it is in.
    pub file: PathBuf,
    /// `Kind namespace/name`.
    pub object: String,
    /// The verdict.
    pub decision: Decision,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.decision.allowed {
            "ok"
        } else {
            "REFUSED"
        };
        write!(f, "{}: {} {verdict}", self.file.display(), self.object)?;
        if let Some(m) = &self.decision.message {
            write!(f, ": {m}")?;
        }
        for w in &self.decision.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        Ok(())
    }
}

/// Checks `objects` (each with the file it came from) in order, with `world` holding
/// what was applied before; admitted NADs are added to it.
pub fn check_objects(
    settings: &Settings,
    world: &mut Objects,
    objects: &[(PathBuf, Value)],
) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (file, object) in objects {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let kind_name = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let kind = Kind::of(group, kind_name);
        if kind == Kind::Other {
            continue;
        }
        let meta = |k: &str| {
            object
                .get("metadata")
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let namespace = match meta("namespace") {
            ns if ns.is_empty() => "default".to_string(),
            ns => ns,
        };
        let name = meta("name");
        let mut object = object.clone();
        if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("namespace".into(), Value::String(namespace.clone()));
        }
        let exists =
            kind == Kind::Nad && crate::world::World::nad(world, &namespace, &name).is_some();
        let req = Request {
            kind,
            sub_resource: String::new(),
            operation: if exists {
                Operation::Update
            } else {
                Operation::Create
            },
            namespace: namespace.clone(),
            name: name.clone(),
            user: String::new(),
            object: Some(object.clone()),
            old_object: None,
        };
        let decision = admit(settings, world, &req);
        if decision.allowed
            && kind == Kind::Nad
            && let Ok(nad) = serde_json::from_value(object)
        {
            world.put_nad(&nad);
        }
        out.push(Outcome {
            file: file.clone(),
            object: format!("{kind_name} {namespace}/{name}"),
            decision,
        });
    }
    out
}

/// Reads the files and checks their objects ([`check_objects`]).
pub fn validate_files(settings: &Settings, files: &[impl AsRef<Path>]) -> Result<Vec<Outcome>> {
    let mut objects = Vec::new();
    for f in files {
        let path = f.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|source| Error::File {
            path: path.clone(),
            source,
        })?;
        let objs = objects_of(&text).map_err(|reason| Error::Parse {
            path: path.clone(),
            reason,
        })?;
        objects.extend(objs.into_iter().map(|o| (path.clone(), o)));
    }
    Ok(check_objects(settings, &mut Objects::default(), &objects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_json_and_lists() {
        let y = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n---\nkind: List\nitems:\n- {kind: Pod}\n- {kind: Pod}\n";
        assert_eq!(objects_of(y).unwrap().len(), 3);
        assert_eq!(objects_of(r#"{"kind": "Pod"}"#).unwrap().len(), 1);
        assert!(objects_of("- a\n").unwrap_err().contains("not an object"));
        assert!(objects_of("a: [").is_err());
    }
}
