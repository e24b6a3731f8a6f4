//! Network configurations and configuration lists. The raw JSON object is the source of
//! truth: unknown keys are kept and passed through unchanged.

use crate::env::valid_name;
use crate::error::{Error, Result};
use crate::result::CniResult;
use crate::version::{self, Version};
use serde_json::{Map, Value};

/// One plugin's network configuration, as found on stdin.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    raw: Map<String, Value>,
    version: Version,
}

fn as_object(v: Value, what: &str) -> Result<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(Error::decode(format!("{what} is not a JSON object"))),
    }
}

fn str_field<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::config(format!(
            "field {key:?} must be a string, got {other}"
        ))),
    }
}

/// Validates a network name (non-empty, `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`), code 7.
pub fn validate_network_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::config("missing network name"));
    }
    if !valid_name(name) {
        return Err(Error::config("invalid characters found in network name")
            .with_details(name.to_string()));
    }
    Ok(())
}

impl NetConf {
    /// Parses stdin bytes: a JSON object (code 6 otherwise) with a valid `name` (code 7),
    /// a supported `cniVersion` (code 1) and, when present, string `type`.
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::decode(format!("error parsing network configuration: {e}")))?;
        Self::from_map(as_object(v, "network configuration")?)
    }

    /// Builds from an already parsed object (same validation as [`NetConf::parse`]).
    pub fn from_map(raw: Map<String, Value>) -> Result<NetConf> {
        Self::from_map_in(raw, version::SUPPORTED)
    }

    /// [`NetConf::from_map`] accepting the versions in `accepted` (code 1 otherwise).
    pub fn from_map_in(raw: Map<String, Value>, accepted: &[Version]) -> Result<NetConf> {
        let name = str_field(&raw, "name")?.unwrap_or("");
        validate_network_name(name)?;
        str_field(&raw, "type")?;
        let ver = str_field(&raw, "cniVersion")
            .map_err(|e| Error::decode(e.msg))?
            .unwrap_or("");
        let version = version::negotiate_in(ver, accepted)?;
        Ok(NetConf { raw, version })
    }

    /// The `cniVersion` (negotiated, hence supported).
    pub fn version(&self) -> Version {
        self.version
    }
    /// The network name.
    pub fn name(&self) -> &str {
        self.raw.get("name").and_then(Value::as_str).unwrap_or("")
    }
    /// The plugin type.
    pub fn plugin_type(&self) -> &str {
        self.raw.get("type").and_then(Value::as_str).unwrap_or("")
    }
    /// The whole object.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }
    /// The whole object, mutable (to inject keys before passing it on).
    pub fn raw_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.raw
    }
    /// A top-level key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.raw.get(key).filter(|v| !v.is_null())
    }
    /// Declared capabilities (`capabilities: {name: true}`).
    pub fn capability(&self, cap: &str) -> bool {
        self.get("capabilities")
            .and_then(|c| c.get(cap))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
    /// `runtimeConfig.<key>`, when present and not null.
    pub fn runtime_config(&self, key: &str) -> Option<&Value> {
        self.get("runtimeConfig")
            .and_then(|r| r.get(key))
            .filter(|v| !v.is_null())
    }
    /// `args.cni.<key>`, when present and not null (CONVENTIONS.md "args in network config").
    pub fn args_cni(&self, key: &str) -> Option<&Value> {
        self.get("args")
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get(key))
            .filter(|v| !v.is_null())
    }
    /// The pod annotations a CRI runtime passes in
    /// `runtimeConfig."io.kubernetes.cri.pod-annotations"` (null or absent gives `None`).
    pub fn pod_annotations(&self) -> Result<Option<Map<String, Value>>> {
        match self.runtime_config("io.kubernetes.cri.pod-annotations") {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(other) => Err(Error::config(format!(
                "runtimeConfig.\"io.kubernetes.cri.pod-annotations\" must be an object or null, got {other}"
            ))),
        }
    }
    /// The `prevResult`, parsed (`None` when absent or null).
    pub fn prev_result(&self) -> Result<Option<CniResult>> {
        match self.get("prevResult") {
            None => Ok(None),
            Some(v) => {
                let mut v = v.clone();
                // A prevResult is in the config's version even when it does not say so.
                if let Value::Object(m) = &mut v {
                    m.entry("cniVersion")
                        .or_insert_with(|| self.version.as_str().into());
                }
                CniResult::from_value(&v)
                    .map(Some)
                    .map_err(|e| e.context("prevResult"))
            }
        }
    }
    /// The `ipam` object, when present.
    pub fn ipam(&self) -> Option<&Map<String, Value>> {
        self.get("ipam")
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty())
    }
    /// `ipam.type` when set and non-empty (None: no IPAM, layer 2 only).
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam()
            .and_then(|m| m.get("type"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    }
    /// Serializes the (possibly modified) object.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.raw).unwrap_or_default()
    }
    /// Deserializes the object into a plugin's typed config (unknown keys ignored by the
    /// target type); errors are code 7 and name the field serde reports.
    pub fn typed<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let v = Value::Object(self.raw.clone());
        serde_path_to_error::deserialize(v).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                Error::config(format!(
                    "invalid {} configuration: {inner}",
                    self.plugin_type()
                ))
            } else {
                Error::config(format!(
                    "invalid {} configuration: field {path:?}: {inner}",
                    self.plugin_type()
                ))
            }
        })
    }

    /// GC: the attachments the runtime still considers valid, from
    /// `cni.dev/valid-attachments` (spec 1.1) or `cni.dev/attachments` (its draft name).
    pub fn gc_valid_attachments(&self) -> Result<Vec<Attachment>> {
        let v = self
            .get("cni.dev/valid-attachments")
            .or_else(|| self.get("cni.dev/attachments"));
        let Some(v) = v else { return Ok(Vec::new()) };
        let arr = v.as_array().ok_or_else(|| {
            Error::config("cni.dev/valid-attachments must be a list of {containerID, ifname}")
        })?;
        arr.iter()
            .map(|a| {
                let cid = a.get("containerID").and_then(Value::as_str);
                let ifn = a.get("ifname").and_then(Value::as_str);
                match (cid, ifn) {
                    (Some(c), Some(i)) => Ok(Attachment {
                        container_id: c.into(),
                        ifname: i.into(),
                    }),
                    _ => Err(Error::config(format!(
                        "cni.dev/valid-attachments entry {a} needs string containerID and ifname"
                    ))),
                }
            })
            .collect()
    }
}

/// A (container, interface) pair, as GC names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    /// The container ID.
    pub container_id: String,
    /// The interface name in the container.
    pub ifname: String,
}

/// A network configuration list (`.conflist`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    raw: Map<String, Value>,
    version: Version,
    plugins: Vec<Map<String, Value>>,
    accepted: &'static [Version],
}

impl ConfList {
    /// Parses a conflist. With `cniVersions` (1.1) the newest version we support is chosen.
    pub fn parse(bytes: &[u8]) -> Result<ConfList> {
        Self::parse_in(bytes, version::SUPPORTED)
    }

    /// Parses a conflist a meta plugin runs plugin by plugin, as libcni does: every
    /// [`version::KNOWN`] version is accepted, the legacy 0.1.0/0.2.0 ones included (a
    /// missing `cniVersion` is 0.1.0), and so is every plugin configuration built from it.
    pub fn parse_delegated(bytes: &[u8]) -> Result<ConfList> {
        Self::parse_in(bytes, version::KNOWN)
    }

    fn parse_in(bytes: &[u8], accepted: &'static [Version]) -> Result<ConfList> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::decode(format!("error parsing configuration list: {e}")))?;
        let raw = as_object(v, "configuration list")?;
        validate_network_name(str_field(&raw, "name")?.unwrap_or(""))?;
        let mut chosen = None;
        if let Some(list) = raw.get("cniVersions").and_then(Value::as_array) {
            chosen = list
                .iter()
                .filter_map(Value::as_str)
                .filter_map(Version::parse)
                .filter(|v| accepted.contains(v))
                .max();
        }
        let version = match chosen {
            Some(v) => v,
            None => version::negotiate_in(str_field(&raw, "cniVersion")?.unwrap_or(""), accepted)?,
        };
        let plugins = match raw.get("plugins") {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .enumerate()
                .map(|(i, p)| match p {
                    Value::Object(m)
                        if m.get("type")
                            .and_then(Value::as_str)
                            .is_some_and(|t| !t.is_empty()) =>
                    {
                        Ok(m.clone())
                    }
                    _ => Err(Error::config(format!(
                        "plugins[{i}] must be an object with a non-empty \"type\""
                    ))),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(Error::config("configuration list has no \"plugins\"")),
        };
        Ok(ConfList {
            raw,
            version,
            plugins,
            accepted,
        })
    }

    /// The negotiated version.
    pub fn version(&self) -> Version {
        self.version
    }
    /// The network name.
    pub fn name(&self) -> &str {
        self.raw.get("name").and_then(Value::as_str).unwrap_or("")
    }
    /// The plugin objects as written.
    pub fn plugins(&self) -> &[Map<String, Value>] {
        &self.plugins
    }
    /// A top-level boolean key (`disableCheck`, `disableGC`, `loadOnlyInlinedPlugins`).
    pub fn flag(&self, key: &str) -> bool {
        self.raw.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    /// Builds the configuration handed to plugin `i`, as libcni does: `name` and
    /// `cniVersion` injected, `prevResult` (in this list's version) when given, and
    /// `runtimeConfig` carrying only the capabilities this plugin declares.
    pub fn plugin_conf(
        &self,
        i: usize,
        prev: Option<&CniResult>,
        capability_args: &Map<String, Value>,
    ) -> Result<NetConf> {
        let mut m = self
            .plugins
            .get(i)
            .cloned()
            .ok_or_else(|| Error::internal(format!("no plugin {i} in list {}", self.name())))?;
        m.insert("name".into(), self.name().into());
        m.insert("cniVersion".into(), self.version.as_str().into());
        if let Some(p) = prev {
            m.insert("prevResult".into(), p.to_value(self.version));
        }
        let caps: Vec<String> = m
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|c| {
                c.iter()
                    .filter(|(_, v)| v.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let rc: Map<String, Value> = capability_args
            .iter()
            .filter(|(k, _)| caps.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !rc.is_empty() {
            m.insert("runtimeConfig".into(), Value::Object(rc));
        }
        NetConf::from_map_in(m, self.accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_unknown_keys() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","x":{"y":[1,2]},"bridge":"br0"}"#,
        )
        .unwrap();
        assert_eq!(c.get("x"), Some(&json!({"y":[1,2]})));
        let back: Value = serde_json::from_slice(&c.to_bytes()).unwrap();
        assert_eq!(back["x"]["y"][1], 2);
        assert_eq!(c.name(), "n");
        assert_eq!(c.plugin_type(), "bridge");
    }

    #[test]
    fn errors_have_codes() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, 6);
        assert_eq!(NetConf::parse(b"[1]").unwrap_err().code, 6);
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0","type":"x"}"#)
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"a b"}"#)
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"0.2.0","name":"a"}"#)
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(NetConf::parse(br#"{"name":"a"}"#).unwrap_err().code, 1);
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":5}"#)
                .unwrap_err()
                .code,
            7
        );
    }

    #[test]
    fn runtime_config_and_annotations() {
        let c = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"io.kubernetes.cri.pod-annotations":null,"mac":"aa:bb:cc:dd:ee:ff"},"args":{"cni":{"ips":["10.0.0.5/24"]}}}"#).unwrap();
        assert_eq!(c.pod_annotations().unwrap(), None);
        assert_eq!(c.runtime_config("mac").unwrap(), "aa:bb:cc:dd:ee:ff");
        assert_eq!(c.args_cni("ips").unwrap()[0], "10.0.0.5/24");
        let c = NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"a":"b"}}}"#).unwrap();
        assert_eq!(c.pod_annotations().unwrap().unwrap()["a"], "b");
    }

    #[test]
    fn prev_result_in_conf_version() {
        let c = NetConf::parse(br#"{"cniVersion":"0.4.0","name":"n","prevResult":{"ips":[{"version":"4","address":"10.0.0.2/24"}]}}"#).unwrap();
        let p = c.prev_result().unwrap().unwrap();
        assert_eq!(p.ips[0].address.to_string(), "10.0.0.2/24");
    }

    #[test]
    fn typed_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            #[serde(rename = "isGateway", default)]
            is_gateway: bool,
        }
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","isGateway":"yes"}"#,
        )
        .unwrap();
        let e = c.typed::<T>().unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("\"isGateway\""), "{}", e.msg);
    }

    #[test]
    fn gc_attachments_both_keys() {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let j = json!({"cniVersion":"1.1.0","name":"n", key: [{"containerID":"c1","ifname":"eth0"}]});
            let c = NetConf::parse(j.to_string().as_bytes()).unwrap();
            let a = c.gc_valid_attachments().unwrap();
            assert_eq!(
                a,
                vec![Attachment {
                    container_id: "c1".into(),
                    ifname: "eth0".into()
                }]
            );
        }
        let j = json!({"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":1}]});
        assert_eq!(
            NetConf::parse(j.to_string().as_bytes())
                .unwrap()
                .gc_valid_attachments()
                .unwrap_err()
                .code,
            7
        );
    }

    #[test]
    fn conflist_build() {
        let l = ConfList::parse(br#"{"cniVersion":"0.4.0","cniVersions":["1.0.0","1.1.0","9.0.0"],"name":"net","plugins":[{"type":"bridge","capabilities":{"mac":true}},{"type":"tuning"}]}"#).unwrap();
        assert_eq!(l.version(), Version::V1_1_0);
        let mut caps = Map::new();
        caps.insert("mac".into(), json!("aa:bb:cc:dd:ee:ff"));
        caps.insert("ips".into(), json!(["10.0.0.1/24"]));
        let c0 = l.plugin_conf(0, None, &caps).unwrap();
        assert_eq!(c0.name(), "net");
        assert_eq!(c0.runtime_config("mac").unwrap(), "aa:bb:cc:dd:ee:ff");
        assert!(c0.runtime_config("ips").is_none());
        let c1 = l
            .plugin_conf(1, Some(&CniResult::default()), &caps)
            .unwrap();
        assert!(c1.get("runtimeConfig").is_none());
        assert_eq!(c1.get("prevResult").unwrap()["cniVersion"], "1.1.0");
        assert_eq!(
            ConfList::parse(br#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#)
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(
            ConfList::parse(br#"{"cniVersion":"1.0.0","name":"n","plugins":[{}]}"#)
                .unwrap_err()
                .code,
            7
        );
    }

    #[test]
    fn delegated_conflists_accept_legacy_versions() {
        let legacy = br#"{"cniVersion":"0.2.0","name":"old","plugins":[{"type":"macvlan"},{"type":"tuning"}]}"#;
        // A plugin refuses 0.2.0; a meta plugin handing the list to its plugins does not.
        assert_eq!(ConfList::parse(legacy).unwrap_err().code, 1);
        let l = ConfList::parse_delegated(legacy).unwrap();
        assert_eq!(l.version(), Version::V0_2_0);
        let prev = CniResult::from_value(&json!({"cniVersion": "1.0.0",
            "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]}))
        .unwrap();
        let c1 = l.plugin_conf(1, Some(&prev), &Map::new()).unwrap();
        assert_eq!(c1.version(), Version::V0_2_0);
        // prevResult in the list's (legacy) shape.
        assert_eq!(c1.get("prevResult").unwrap()["ip4"]["ip"], "10.0.0.2/24");
        // No cniVersion at all is 0.1.0, as in libcni.
        let l = ConfList::parse_delegated(br#"{"name":"n","plugins":[{"type":"x"}]}"#).unwrap();
        assert_eq!(l.version(), Version::V0_1_0);
        assert_eq!(
            ConfList::parse_delegated(
                br#"{"cniVersion":"3.0.0","name":"n","plugins":[{"type":"x"}]}"#
            )
            .unwrap_err()
            .code,
            1
        );
    }
}
