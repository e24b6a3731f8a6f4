//! Subjects that are a delegate binary, run in the node namespace of a [`World`] with three
//! pods (as a runtime would run it), on the real kernel.

use super::{Bed, PodIface, Subject};
use crate::{Invocation, REFERENCE_DIR, Run, World, iface_state, run_in};
use meta_netlink::{NamedNetns, Netlink, NetlinkOps};
use serde_json::Value;
use std::path::PathBuf;

/// Pods per bed.
pub const PODS: usize = 3;

/// A delegate binary under contract.
pub struct KernelSubject {
    /// Name (and fixture file).
    pub name: &'static str,
    /// The binary (`env!("CARGO_BIN_EXE_<name>")` of the delegate's crate).
    pub bin: PathBuf,
    /// Prepares a fresh world's node namespace (a master, an underlay, the subnet file
    /// ...); only ever touches that namespace and the world's directory.
    pub setup: fn(&World),
    /// The base configuration in a version; IPAM data under `w.path("ipam")`.
    pub conf: fn(&World, &str) -> Value,
    /// Node links the delegate creates once and keeps for every attachment of the network
    /// (its bridge, its VXLAN segment): not residue.
    pub infra: &'static [&'static str],
    /// Whether the base configuration makes firewall rules (masquerade, spoof check).
    pub firewall: bool,
}

impl Subject for KernelSubject {
    fn name(&self) -> &str {
        self.name
    }
    fn bed(&self) -> Box<dyn Bed + '_> {
        let mut w = World::new(PODS);
        let pods: Vec<Option<NamedNetns>> =
            std::mem::take(&mut w.pods).into_iter().map(Some).collect();
        let paths = pods
            .iter()
            .flatten()
            .map(|p| p.path().display().to_string())
            .collect();
        (self.setup)(&w);
        Box::new(KernelBed {
            s: self,
            pods,
            paths,
            w,
        })
    }
}

/// A [`KernelSubject`]'s bed: the world (node + pods) and its directory.
pub struct KernelBed<'a> {
    s: &'a KernelSubject,
    pods: Vec<Option<NamedNetns>>,
    paths: Vec<String>,
    w: World,
}

impl KernelBed<'_> {
    /// The world (node namespace and scratch directory).
    pub fn world(&self) -> &World {
        &self.w
    }
}

/// Comments of the nftables rules of attachments in `ns` (`meta-cni:masq:...` and
/// `meta-cni:mac:...`; the shared rules such as `meta-cni:base` are infrastructure).
/// Fails when `nft` cannot be run.
pub fn nft_tags(ns: &meta_netlink::Netns) -> Vec<String> {
    let out = ns
        .run(|| {
            std::process::Command::new("nft")
                .args(["-j", "list", "ruleset"])
                .output()
        })
        .expect("thread in the node namespace")
        .expect("run nft (Debian nftables)");
    assert!(
        out.status.success(),
        "nft -j list ruleset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("nft JSON");
    let mut tags: Vec<String> = doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("rule")?.get("comment")?.as_str())
        .filter(|c| c.starts_with("meta-cni:masq:") || c.starts_with("meta-cni:mac:"))
        .map(str::to_string)
        .collect();
    tags.sort();
    tags
}

impl Bed for KernelBed<'_> {
    fn conf(&self, version: &str) -> Value {
        (self.s.conf)(&self.w, version)
    }
    fn pods(&self) -> usize {
        self.paths.len()
    }
    fn netns(&self, pod: usize) -> String {
        self.paths[pod].clone()
    }
    fn run(&self, inv: &Invocation, stdin: &[u8]) -> Run {
        run_in(self.w.node.netns(), &self.s.bin, inv, stdin)
    }
    fn drop_pod(&mut self, pod: usize) {
        let p = self.pods[pod].take().expect("pod already dropped");
        drop(p);
        assert!(!std::path::Path::new(&self.paths[pod]).exists());
    }
    fn pod_iface(&self, pod: usize, ifname: &str) -> Option<PodIface> {
        let ns = self.pods[pod].as_ref()?.netns();
        let st = iface_state(ns, ifname)?;
        let mut nl = Netlink::open(Some(ns)).expect("netlink");
        let mac = nl
            .link_by_name(ifname)
            .expect("links")
            .and_then(|l| l.mac)
            .map(|m| meta_netlink::format_mac(&m));
        Some(PodIface {
            kind: st.kind,
            mac,
            mtu: st.mtu,
            up: st.up,
            addrs: st.addrs,
        })
    }
    fn ipam_dir(&self) -> PathBuf {
        self.w.path("ipam")
    }
    fn links(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut nl = Netlink::open(Some(self.w.node.netns())).expect("netlink");
        for l in nl.links().expect("links") {
            if l.kind.as_deref() == Some("vxlan") {
                for f in nl.fdbs(l.index).expect("fdbs") {
                    if f.self_ && f.mac != [0; 6] {
                        out.push(format!(
                            "node fdb {} {} dst {:?}",
                            l.name,
                            meta_netlink::format_mac(&f.mac),
                            f.dst
                        ));
                    }
                }
            }
            if !self.s.infra.contains(&l.name.as_str()) {
                out.push(format!("node link {} kind={:?}", l.name, l.kind));
            }
        }
        for (i, p) in self.pods.iter().enumerate() {
            let Some(p) = p else { continue };
            let mut nl = Netlink::open(Some(p.netns())).expect("netlink");
            for l in nl.links().expect("links") {
                if l.name != "lo" {
                    out.push(format!("pod{i} link {} kind={:?}", l.name, l.kind));
                }
            }
        }
        out.sort();
        out
    }
    fn has_firewall(&self) -> bool {
        self.s.firewall
    }
    fn firewall_tags(&self) -> Vec<String> {
        nft_tags(self.w.node.netns())
    }
}

/// `CNI_PATH` of contract runs (bundled IPAM runs in-process; anything else is found here).
pub const CNI_PATH: &str = REFERENCE_DIR;
