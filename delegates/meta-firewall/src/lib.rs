//! nftables (JSON) masquerade and anti-spoofing rules for meta-cni delegates.
//!
//! Behaviour follows the `ipMasq` and `macspoofchk` options of the reference
//! containernetworking/plugins bridge plugin, implemented with nftables' JSON interface:
//! documents are built with `serde_json` and applied atomically as `nft -j -f -` would;
//! state is read back as with `nft -j list table ...`. By default both are done
//! in-process by speaking nf_tables' netlink protocol directly (`nfnl`: the documents are
//! encoded into the messages `nft` would send, one batch per transaction); `META_CNI_NFT=lib`
//! uses libnftables instead ([`libnft`], loaded at run time, falling back to spawning `nft`
//! where it is missing) and `META_CNI_NFT=exec` spawns `nft` ([`Backend`]).
//!
//! # Layout
//!
//! * `table inet meta_cni` (masquerade, IPv4 and IPv6 in one table):
//!   * `chain postrouting` — `type nat hook postrouting priority srcnat (100)`, holding
//!     three fixed rules commented `meta-cni:base`: `ip daddr 224.0.0.0/4 return`,
//!     `ip6 daddr ff00::/8 return`, `goto masq_checks`;
//!   * `chain masq_checks` — one rule per attachment IP:
//!     `ip saddr <ip> ip daddr != <ip's subnet> masquerade`, commented with the tag
//!     `meta-cni:masq:<network-hash>:<ifname>:<container-id>`; and at most one node-level
//!     rule of the node agent ([`Nftables::ensure_node_masq`]):
//!     `ip saddr <node pod subnet> ip daddr != <cluster CIDR> masquerade`, commented
//!     `meta-cni:node-masq:<subnet>:<cluster CIDR>` (not an attachment tag, so teardown
//!     and GC of attachments never remove it).
//! * `table bridge meta_cni` (MAC spoof check):
//!   * `chain prerouting` — `type filter hook prerouting priority -300`, one rule per
//!     attachment: `iifname "<host_ifname>" jump mac_<hash>`;
//!   * `chain mac_<hash>` (hash of network hash, container ID and ifname) —
//!     `ether saddr <mac> return` then `drop`;
//!
//!   all three rules commented with the tag
//!   `meta-cni:mac:<network-hash>:<ifname>:<container-id>`.
//!
//! `<network-hash>` is [`network_hash`] of the CNI network name, so every rule records the
//! network it belongs to. Tags are described in [`Tag`]; the 128-byte comment limit of
//! nftables bounds container IDs to 81 bytes (masquerade) and 82 bytes (MAC spoof check)
//! with a 15-byte interface name.
//!
//! Setup replaces the attachment's rules in one transaction (so running it twice leaves
//! one rule set); teardown and [`Firewall::gc`] find rules by listing and delete them by
//! handle, needing only the tag's keys (the container's netns may be gone). Teardown of
//! absent rules or tables succeeds. Like CNI GC, [`Firewall::gc`] is per network: it only
//! removes rules whose network hash is that of the network being collected, so the
//! attachments of other networks (absent from its `valid` set) are left alone. Tables,
//! base chains and `masq_checks` stay when their last attachment goes away;
//! per-attachment `mac_*` chains are deleted.
//!
//! # Namespaces and concurrency
//!
//! The netlink backend and libnftables open their sockets on the calling thread (and `nft`,
//! when spawned, runs as a child of it), so every command acts on that thread's network
//! namespace: call from a
//! thread already inside the target namespace. Every
//! list-then-modify sequence holds an exclusive `flock` on a lock file
//! ([`DEFAULT_LOCK_PATH`] unless configured with [`Nftables::with_lock_path`]; its
//! directory is created on demand).

#![deny(missing_docs)]

use std::collections::{BTreeSet, HashSet};

use ipnet::IpNet;

pub mod doc;
mod error;
pub mod libnft;
mod nfnl;
mod nft;
mod tag;

pub use error::{Error, Result};
pub use nft::{Backend, DEFAULT_LOCK_PATH, Nftables};
pub use tag::{
    MAX_COMMENT_LEN, MAX_IFNAME_LEN, TAG_PREFIX, Tag, network_hash, validate_container_id,
    validate_ifname,
};

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

/// A firewall backend for CNI delegates. All methods act on the network namespace of the
/// calling thread.
pub trait Firewall: Send + Sync {
    /// Masquerades traffic from each address of `ips` to destinations outside that
    /// address's subnet, except multicast (224.0.0.0/4, ff00::/8). Replaces any rules
    /// previously installed for the same `network`/`container_id`/`ifname`.
    fn setup_masq(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        ips: &[IpNet],
    ) -> Result<()>;

    /// Removes the masquerade rules of `network`/`container_id`/`ifname`; succeeds when
    /// there are none.
    fn teardown_masq(&self, network: &str, container_id: &str, ifname: &str) -> Result<()>;

    /// Drops bridge frames entering from `host_ifname` (the host end of the container's
    /// veth) whose Ethernet source address is not `mac`. Replaces any rules previously
    /// installed for the same `network`/`container_id`/`ifname`.
    fn setup_macspoofchk(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        host_ifname: &str,
        mac: Mac,
    ) -> Result<()>;

    /// Removes the MAC spoof-check rules of `network`/`container_id`/`ifname`; succeeds
    /// when there are none.
    fn teardown_macspoofchk(&self, network: &str, container_id: &str, ifname: &str) -> Result<()>;

    /// Sets up an attachment's rules of both features in one go: masquerade of `masq`'s
    /// addresses (when given, as [`Firewall::setup_masq`]) and the MAC spoof check of
    /// `spoof_check` = (host interface, MAC) (when given, as
    /// [`Firewall::setup_macspoofchk`]). [`Nftables`] applies both as one transaction;
    /// the default runs the two calls.
    fn setup_attachment(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        masq: Option<&[IpNet]>,
        spoof_check: Option<(&str, Mac)>,
    ) -> Result<()> {
        if let Some(ips) = masq {
            self.setup_masq(network, container_id, ifname, ips)?;
        }
        if let Some((host_ifname, mac)) = spoof_check {
            self.setup_macspoofchk(network, container_id, ifname, host_ifname, mac)?;
        }
        Ok(())
    }

    /// Removes an attachment's rules of both features; succeeds when there are none.
    /// [`Nftables`] removes both in one transaction; the default runs the two teardowns.
    fn teardown_attachment(&self, network: &str, container_id: &str, ifname: &str) -> Result<()> {
        self.teardown_masq(network, container_id, ifname)?;
        self.teardown_macspoofchk(network, container_id, ifname)
    }

    /// Garbage-collects one network (CNI GC): removes the rules of both features that
    /// belong to `network` (same [`network_hash`]) and whose `(container_id, ifname)` is
    /// not in `valid` (the network's `cni.dev/valid-attachments`). Rules of other networks
    /// are never touched.
    fn gc(&self, network: &str, valid: &HashSet<(String, String)>) -> Result<()>;

    /// The attachment tags currently present (all networks).
    fn list_attachments(&self) -> Result<BTreeSet<Tag>>;
}

/// A [`Firewall`] that does nothing (for networks without masquerade or spoof checking,
/// and for tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopFirewall;

impl Firewall for NoopFirewall {
    fn setup_masq(&self, _: &str, _: &str, _: &str, _: &[IpNet]) -> Result<()> {
        Ok(())
    }

    fn teardown_masq(&self, _: &str, _: &str, _: &str) -> Result<()> {
        Ok(())
    }

    fn setup_macspoofchk(&self, _: &str, _: &str, _: &str, _: &str, _: Mac) -> Result<()> {
        Ok(())
    }

    fn teardown_macspoofchk(&self, _: &str, _: &str, _: &str) -> Result<()> {
        Ok(())
    }

    fn gc(&self, _: &str, _: &HashSet<(String, String)>) -> Result<()> {
        Ok(())
    }

    fn list_attachments(&self) -> Result<BTreeSet<Tag>> {
        Ok(BTreeSet::new())
    }
}
