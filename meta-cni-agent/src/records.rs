//! From Node objects and nodes files to [`NodeRecord`]s, and the annotations the agent
//! publishes.

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use meta_netlink::{Mac, format_mac, parse_mac};
use meta_overlay::{NodeRecord, vtep_mac_for};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Node annotation holding the MAC of the node's VXLAN device (`aa:bb:cc:dd:ee:ff`).
pub const ANNOTATION_VTEP_MAC: &str = "meta-cni.io/vtep-mac";
/// Node annotation holding the node's underlay (VTEP) address.
pub const ANNOTATION_UNDERLAY_IP: &str = "meta-cni.io/underlay-ip";

/// A node's pod subnet: `spec.podCIDR`, else the first of `spec.podCIDRs`.
pub fn pod_cidr(node: &Node) -> Option<&str> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidr
        .as_deref()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.pod_cidrs
                .as_ref()
                .and_then(|v| v.first())
                .map(String::as_str)
        })
}

/// What a Node says about the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeView {
    /// Pod subnet and both annotations, valid.
    Ready(NodeRecord),
    /// Something is missing yet (no `podCIDR`, no agent running there yet): the reason.
    Pending(String),
    /// Something is malformed: the reason.
    Invalid(String),
}

/// Reads a Node: its name, `podCIDR` and the two annotations.
pub fn view(node: &Node) -> NodeView {
    let name = node.metadata.name.clone().unwrap_or_default();
    let Some(cidr) = pod_cidr(node) else {
        return NodeView::Pending("no spec.podCIDR".into());
    };
    let pod_subnet: IpNet = match cidr.parse() {
        Ok(n) => n,
        Err(e) => return NodeView::Invalid(format!("spec.podCIDR {cidr:?}: {e}")),
    };
    let ann = node.metadata.annotations.as_ref();
    let get = |k: &str| ann.and_then(|a| a.get(k)).map(String::as_str);
    let (Some(mac), Some(ip)) = (get(ANNOTATION_VTEP_MAC), get(ANNOTATION_UNDERLAY_IP)) else {
        return NodeView::Pending(format!(
            "annotations {ANNOTATION_VTEP_MAC} and {ANNOTATION_UNDERLAY_IP} not published yet"
        ));
    };
    let vtep_mac = match parse_mac(mac) {
        Ok(m) => m,
        Err(e) => return NodeView::Invalid(format!("{ANNOTATION_VTEP_MAC} {mac:?}: {e}")),
    };
    let underlay_ip: IpAddr = match ip.parse() {
        Ok(a) => a,
        Err(e) => return NodeView::Invalid(format!("{ANNOTATION_UNDERLAY_IP} {ip:?}: {e}")),
    };
    NodeView::Ready(NodeRecord {
        name,
        pod_subnet: pod_subnet.trunc(),
        vtep_mac,
        underlay_ip,
    })
}

/// The annotations that publish `rec`.
pub fn annotations(rec: &NodeRecord) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ANNOTATION_VTEP_MAC.to_string(), format_mac(&rec.vtep_mac)),
        (
            ANNOTATION_UNDERLAY_IP.to_string(),
            rec.underlay_ip.to_string(),
        ),
    ])
}

/// Whether `node` already carries the annotations of `rec`.
pub fn published(node: &Node, rec: &NodeRecord) -> bool {
    let have = node.metadata.annotations.as_ref();
    annotations(rec)
        .iter()
        .all(|(k, v)| have.and_then(|a| a.get(k)) == Some(v))
}

/// The JSON merge patch setting just the agent's annotations.
pub fn annotation_patch(rec: &NodeRecord) -> Value {
    json!({"metadata": {"annotations": annotations(rec)}})
}

/// One entry of a nodes file (local mode).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalNode {
    /// Node name.
    pub name: String,
    /// Its pod subnet.
    pub pod_subnet: IpNet,
    /// Its underlay address.
    #[serde(rename = "underlayIP")]
    pub underlay_ip: IpAddr,
    /// Its VTEP MAC; absent = derived from the underlay IP (what the agent does).
    #[serde(rename = "vtepMAC", default)]
    pub vtep_mac: Option<String>,
}

impl LocalNode {
    /// The VTEP MAC: the given one, else the one derived from the underlay IP.
    pub fn mac(&self) -> Result<Mac, String> {
        match &self.vtep_mac {
            Some(s) => {
                parse_mac(s).map_err(|e| format!("node {:?}: vtepMAC {s:?}: {e}", self.name))
            }
            None => Ok(vtep_mac_for(self.underlay_ip)),
        }
    }

    /// As a record.
    pub fn record(&self) -> Result<NodeRecord, String> {
        Ok(NodeRecord {
            name: self.name.clone(),
            pod_subnet: self.pod_subnet.trunc(),
            vtep_mac: self.mac()?,
            underlay_ip: self.underlay_ip,
        })
    }
}

/// Parses a nodes file: a JSON array of [`LocalNode`]s with unique names and valid MACs.
pub fn parse_nodes_file(text: &str) -> Result<Vec<LocalNode>, String> {
    let nodes: Vec<LocalNode> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut seen = std::collections::BTreeSet::new();
    for n in &nodes {
        if !seen.insert(n.name.as_str()) {
            return Err(format!("node {:?} is listed twice", n.name));
        }
        n.mac()?;
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    fn node(cidr: Option<&str>, ann: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                annotations: Some(
                    ann.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn views() {
        let full = [
            (ANNOTATION_VTEP_MAC, "02:6d:c0:a8:4d:02"),
            (ANNOTATION_UNDERLAY_IP, "192.168.77.2"),
        ];
        let v = view(&node(Some("10.244.1.0/24"), &full));
        let NodeView::Ready(r) = v else {
            panic!("{v:?}")
        };
        assert_eq!(r.name, "n1");
        assert_eq!(r.pod_subnet.to_string(), "10.244.1.0/24");
        assert_eq!(r.vtep_mac, [2, 0x6d, 192, 168, 77, 2]);
        assert!(published(&node(None, &full), &r));
        assert!(!published(&node(None, &full[..1]), &r));
        assert_eq!(
            annotation_patch(&r),
            json!({"metadata": {"annotations": {
                "meta-cni.io/underlay-ip": "192.168.77.2",
                "meta-cni.io/vtep-mac": "02:6d:c0:a8:4d:02"}}})
        );
        assert!(matches!(view(&node(None, &full)), NodeView::Pending(_)));
        assert!(matches!(
            view(&node(Some("10.244.1.0/24"), &full[..1])),
            NodeView::Pending(_)
        ));
        assert!(matches!(
            view(&node(Some("bad"), &full)),
            NodeView::Invalid(_)
        ));
        let bad_mac = [
            (ANNOTATION_VTEP_MAC, "zz"),
            (ANNOTATION_UNDERLAY_IP, "192.168.77.2"),
        ];
        let v = view(&node(Some("10.244.1.0/24"), &bad_mac));
        assert!(
            matches!(&v, NodeView::Invalid(m) if m.contains("vtep-mac")),
            "{v:?}"
        );
        let bad_ip = [
            (ANNOTATION_VTEP_MAC, "02:6d:c0:a8:4d:02"),
            (ANNOTATION_UNDERLAY_IP, "192.168.77"),
        ];
        let v = view(&node(Some("10.244.1.0/24"), &bad_ip));
        assert!(
            matches!(&v, NodeView::Invalid(m) if m.contains("underlay-ip")),
            "{v:?}"
        );
        // podCIDRs when podCIDR is absent
        let mut n = node(None, &full);
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.244.9.0/24".into()]);
        assert_eq!(pod_cidr(&n), Some("10.244.9.0/24"));
    }

    #[test]
    fn nodes_file() {
        let text = r#"[
            {"name": "a", "podSubnet": "10.244.1.0/24", "underlayIP": "192.168.1.2"},
            {"name": "b", "podSubnet": "10.244.2.0/24", "underlayIP": "192.168.1.3",
             "vtepMAC": "02:00:00:00:00:03"}
        ]"#;
        let n = parse_nodes_file(text).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].record().unwrap().vtep_mac, [2, 0x6d, 192, 168, 1, 2]);
        assert_eq!(n[1].record().unwrap().vtep_mac, [2, 0, 0, 0, 0, 3]);
        let dup = r#"[{"name": "a", "podSubnet": "10.244.1.0/24", "underlayIP": "192.168.1.2"},
                      {"name": "a", "podSubnet": "10.244.2.0/24", "underlayIP": "192.168.1.3"}]"#;
        assert!(parse_nodes_file(dup).unwrap_err().contains("twice"));
        let unknown = r#"[{"name": "a", "podSubnet": "10.244.1.0/24", "underlayIp": "1.2.3.4"}]"#;
        assert!(
            parse_nodes_file(unknown)
                .unwrap_err()
                .contains("underlayIp")
        );
        let mac = r#"[{"name": "a", "podSubnet": "10.244.1.0/24", "underlayIP": "1.2.3.4", "vtepMAC": "x"}]"#;
        assert!(parse_nodes_file(mac).unwrap_err().contains("vtepMAC"));
        assert!(parse_nodes_file("{}").is_err());
    }
}
