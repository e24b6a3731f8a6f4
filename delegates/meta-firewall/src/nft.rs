//! The real driver. Three backends apply the same JSON documents ([`crate::doc`]):
//! nf_tables' netlink protocol spoken directly ([`crate::nfnl`], the default),
//! libnftables in-process ([`crate::libnft`]), or the `nft` binary. `META_CNI_NFT=lib`
//! selects libnftables (falling back to `nft` where it cannot be loaded),
//! `META_CNI_NFT=exec` the binary, as does [`Nftables::with_nft_binary`].

use std::collections::{BTreeSet, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

use crate::doc::{self, Listing};
use crate::error::{Error, Result};
use crate::tag::{Tag, network_hash, validate_ifname};
use crate::{Firewall, Mac};

/// Default lock file serialising list-then-modify sequences between plugin processes.
pub const DEFAULT_LOCK_PATH: &str = "/run/meta-cni/firewall.lock";

/// Both of our tables' families.
const BOTH: &[&str] = &[doc::MASQ_FAMILY, doc::MAC_FAMILY];

/// Searched after `$PATH` (a plugin's environment often has a minimal or no `PATH`).
const NFT_FALLBACK_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"];

/// The first executable `nft` in the directories of `path_var` (a `$PATH` value), then in
/// [`NFT_FALLBACK_DIRS`].
fn find_nft(path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let dirs = path_var
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(NFT_FALLBACK_DIRS.iter().map(PathBuf::from));
    let list = std::env::join_paths(dirs).ok()?;
    which::which_in_global("nft", Some(list)).ok()?.next()
}

/// One nftables command.
#[derive(Clone, Copy)]
enum Cmd<'a> {
    /// A JSON document to apply as one transaction (`nft -j -f -`).
    Document(&'a str),
    /// A command in nft's syntax (`list table inet meta_cni`).
    Words(&'a [&'a str]),
}

/// What applies the documents and lists the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nf_tables netlink messages encoded in-process ([`crate::nfnl`]); the default.
    Netlink,
    /// libnftables, loaded at run time ([`crate::libnft`]); `nft` when it cannot be loaded.
    Library,
    /// The `nft` binary, spawned for every command.
    Binary,
}

impl Backend {
    /// The backend `META_CNI_NFT` selects: `lib` → [`Backend::Library`], `exec` →
    /// [`Backend::Binary`], anything else (or unset) → [`Backend::Netlink`].
    pub fn from_env() -> Backend {
        match std::env::var("META_CNI_NFT").as_deref() {
            Ok("lib") => Backend::Library,
            Ok("exec") => Backend::Binary,
            _ => Backend::Netlink,
        }
    }
}

/// nftables driver. Every operation runs on the calling thread (the netlink and
/// libnftables sockets are opened there; a spawned `nft` is its child), so the rules land
/// in the network namespace of that thread; all read-modify-write sequences hold an exclusive `flock` on
/// the lock file and each modification is one atomic transaction of a JSON document, as
/// `nft -j -f -` applies it.
#[derive(Debug, Clone)]
pub struct Nftables {
    nft: Option<PathBuf>,
    backend: Backend,
    lock_path: PathBuf,
    /// The netlink backend's sockets, shared by every driver of the process that is
    /// alive at the same time (see [`crate::nfnl::Sockets::shared`]).
    sockets: std::sync::Arc<crate::nfnl::Sockets>,
}

impl Default for Nftables {
    fn default() -> Self {
        Self::new()
    }
}

impl Nftables {
    /// A driver on the backend of [`Backend::from_env`] (netlink unless `META_CNI_NFT`
    /// says otherwise) that locks [`DEFAULT_LOCK_PATH`]; `nft`, when spawned, is found in
    /// `$PATH` (then `/usr/sbin`, `/sbin`, ...).
    pub fn new() -> Self {
        Nftables {
            nft: None,
            backend: Backend::from_env(),
            lock_path: PathBuf::from(DEFAULT_LOCK_PATH),
            sockets: crate::nfnl::Sockets::shared(),
        }
    }

    /// Uses `backend` (whatever `META_CNI_NFT` says).
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Uses `path` as the lock file (its directory is created on demand).
    pub fn with_lock_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.lock_path = path.into();
        self
    }

    /// Spawns `path` as the `nft` executable ([`Backend::Binary`]).
    pub fn with_nft_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.nft = Some(path.into());
        self.backend = Backend::Binary;
        self
    }

    /// The lock file in use.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// What runs the commands: `"netlink"` (in-process messages), `"libnftables"`
    /// (in-process library) or `"nft"` (spawned).
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Netlink => "netlink",
            Backend::Library if self.library().is_some() => "libnftables",
            Backend::Library | Backend::Binary => "nft",
        }
    }

    fn library(&self) -> Option<&'static crate::libnft::LibNft> {
        if self.backend != Backend::Library {
            return None;
        }
        crate::libnft::get()
    }

    fn nft_binary(&self) -> Result<PathBuf> {
        if let Some(p) = &self.nft {
            return Ok(p.clone());
        }
        find_nft(std::env::var_os("PATH").as_deref()).ok_or_else(|| Error::NftNotFound {
            searched: format!(
                "$PATH, {}",
                NFT_FALLBACK_DIRS
                    .iter()
                    .map(|d| format!("{d}/nft"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    fn lock(&self) -> Result<Flock<File>> {
        let err = |message: String| Error::Lock {
            path: self.lock_path.clone(),
            message,
        };
        if let Some(dir) = self
            .lock_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(|e| err(format!("cannot open: {e}")))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| err(format!("flock: {e}")))
    }

    /// Runs one command as `nft -j` would (JSON output): in-process when libnftables is
    /// loaded, else the `nft` binary; returns what `nft` prints on stdout on success.
    fn run(&self, operation: &str, cmd: Cmd<'_>) -> Result<String> {
        if let Some(lib) = self.library() {
            let text = match cmd {
                Cmd::Document(d) => d.to_owned(),
                Cmd::Words(w) => w.join(" "),
            };
            return lib.run(&text, true).map_err(|f| {
                classify(
                    operation,
                    format!("libnftables: {}", f.rc),
                    f.stderr.trim().to_owned(),
                )
            });
        }
        let (args, stdin): (Vec<&str>, Option<&[u8]>) = match cmd {
            Cmd::Document(d) => (vec!["-j", "-f", "-"], Some(d.as_bytes())),
            Cmd::Words(w) => (
                std::iter::once("-j").chain(w.iter().copied()).collect(),
                None,
            ),
        };
        let program = self.nft_binary()?;
        let mut child = Command::new(&program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    Error::NftNotFound {
                        searched: program.display().to_string(),
                    }
                } else {
                    Error::Spawn {
                        program: program.clone(),
                        source,
                    }
                }
            })?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error (EPIPE) means nft exited early; its stderr explains why.
            if let Err(e) = pipe.write_all(input) {
                tracing::debug!("writing to nft stdin failed: {e}");
            }
        }
        let out = child.wait_with_output().map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
        if out.status.success() {
            return String::from_utf8(out.stdout).map_err(|e| Error::Parse {
                operation: operation.to_owned(),
                message: e.to_string(),
            });
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(classify(operation, out.status.to_string(), stderr))
    }

    fn apply(&self, document: &Value) -> Result<()> {
        if self.backend == Backend::Netlink {
            tracing::debug!(%document, "nftables batch (netlink)");
            return self.sockets.with(|s| crate::nfnl::apply(s, document));
        }
        let text = document.to_string();
        tracing::debug!(document = %text, "nft -j -f -");
        self.run("apply", Cmd::Document(&text)).map(|_| ())
    }

    /// Lists our table of `family`; `None` if it does not exist.
    fn list(&self, family: &str) -> Result<Option<Listing>> {
        if self.backend == Backend::Netlink {
            return self.sockets.with(|s| crate::nfnl::list(s, family));
        }
        let operation = format!("list table {family} {}", doc::TABLE);
        match self.run(
            &operation,
            Cmd::Words(&["list", "table", family, doc::TABLE]),
        ) {
            Ok(out) => Listing::parse(family, &out)
                .map(Some)
                .map_err(|message| Error::Parse { operation, message }),
            Err(Error::Nft { stderr, .. }) if stderr.contains("No such file or directory") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Under the lock: lists our table of `family`, builds a transaction from the listing
    /// and applies it; returns whether there was one. A transaction that refers to an
    /// object that vanished since the listing (ENOENT: someone outside meta-cni changed our
    /// table in between) is rebuilt from a fresh listing, up to three times.
    fn transact(
        &self,
        family: &str,
        build: impl Fn(Option<&Listing>) -> Option<Value>,
    ) -> Result<bool> {
        self.transact_all(&[family], |l| build(l[0].as_ref()))
    }

    /// [`Nftables::transact`] over several families: one listing each, one transaction
    /// for all of them.
    fn transact_all(
        &self,
        families: &[&str],
        build: impl Fn(&[Option<Listing>]) -> Option<Value>,
    ) -> Result<bool> {
        let _lock = self.lock()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let listings = families
                .iter()
                .map(|f| self.list(f))
                .collect::<Result<Vec<_>>>()?;
            let Some(document) = build(&listings) else {
                return Ok(false);
            };
            match self.apply(&document) {
                Err(Error::Netlink { errno, .. }) if errno == libc::ENOENT && attempt < 3 => {
                    tracing::debug!(
                        ?families,
                        attempt,
                        "our tables changed under us; listing again"
                    );
                }
                other => return other.map(|()| true),
            }
        }
    }

    /// Removes the rules of the tables of `families` whose tag satisfies `doomed`, in one
    /// transaction.
    fn remove(&self, families: &[&str], doomed: impl Fn(&Tag) -> bool) -> Result<()> {
        self.transact_all(families, |listings| {
            let parts = families
                .iter()
                .zip(listings)
                .filter_map(|(f, l)| l.as_ref().and_then(|l| doc::removal(f, l, &doomed)))
                .collect();
            doc::merge(parts)
        })
        .map(|_| ())
    }

    /// Makes sure the node-level masquerade rule `ip saddr <subnet> ip daddr !=
    /// <cluster_cidr> masquerade` (the node agent's: traffic of the node's pods leaving the
    /// cluster CIDR) is the only node-level rule, in `masq_checks` of `table inet
    /// meta_cni`, commented [`doc::node_masq_comment`]. Idempotent: when it is in place no
    /// transaction is applied. Returns whether anything changed. Attachment rules of
    /// other callers are left alone, and per-network GC never removes this rule.
    pub fn ensure_node_masq(&self, subnet: IpNet, cluster_cidr: IpNet) -> Result<bool> {
        if subnet.addr().is_ipv4() != cluster_cidr.addr().is_ipv4() {
            return Err(Error::InvalidInput(format!(
                "node masquerade: subnet {subnet} and cluster CIDR {cluster_cidr} are of \
                 different address families"
            )));
        }
        self.transact(doc::MASQ_FAMILY, |existing| {
            doc::node_masq_setup(&subnet, &cluster_cidr, existing)
        })
    }

    /// Removes every node-level masquerade rule; returns whether there was one.
    pub fn remove_node_masq(&self) -> Result<bool> {
        self.transact(doc::MASQ_FAMILY, |listing| {
            listing.and_then(doc::node_masq_removal)
        })
    }

    /// The attachment tags currently present in both tables (deduplicated).
    pub fn list_attachments(&self) -> Result<BTreeSet<Tag>> {
        let _lock = self.lock()?;
        let mut tags = BTreeSet::new();
        for family in BOTH {
            if let Some(listing) = self.list(family)? {
                tags.extend(listing.tags());
            }
        }
        Ok(tags)
    }
}

fn classify(operation: &str, status: String, stderr: String) -> Error {
    if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
        Error::PermissionDenied { stderr }
    } else if stderr.contains("Protocol not supported")
        || stderr.contains("Operation not supported")
        || stderr.contains("Address family not supported")
    {
        Error::KernelUnsupported { stderr }
    } else {
        Error::Nft {
            operation: operation.to_owned(),
            status,
            stderr,
        }
    }
}

impl Firewall for Nftables {
    fn setup_masq(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        ips: &[IpNet],
    ) -> Result<()> {
        self.setup_attachment(network, container_id, ifname, Some(ips), None)
    }

    fn teardown_masq(&self, network: &str, container_id: &str, ifname: &str) -> Result<()> {
        let tag = Tag::masq(network, container_id, ifname)?;
        self.remove(&[doc::MASQ_FAMILY], |t| *t == tag)
    }

    fn setup_macspoofchk(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        host_ifname: &str,
        mac: Mac,
    ) -> Result<()> {
        self.setup_attachment(
            network,
            container_id,
            ifname,
            None,
            Some((host_ifname, mac)),
        )
    }

    fn teardown_macspoofchk(&self, network: &str, container_id: &str, ifname: &str) -> Result<()> {
        let tag = Tag::mac_spoof_chk(network, container_id, ifname)?;
        self.remove(&[doc::MAC_FAMILY], |t| *t == tag)
    }

    /// One transaction over the tables of the features asked for; a tag is only built
    /// (and its length checked) for those.
    fn setup_attachment(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        masq: Option<&[IpNet]>,
        spoof_check: Option<(&str, Mac)>,
    ) -> Result<()> {
        let masq = match masq {
            Some(ips) => Some((Tag::masq(network, container_id, ifname)?, ips)),
            None => None,
        };
        let spoof_check = match spoof_check {
            Some((host_ifname, mac)) => {
                validate_ifname("host_ifname", host_ifname)?;
                let tag = Tag::mac_spoof_chk(network, container_id, ifname)?;
                Some((tag, host_ifname, mac))
            }
            None => None,
        };
        let families: Vec<&str> = [
            masq.as_ref().map(|_| doc::MASQ_FAMILY),
            spoof_check.as_ref().map(|_| doc::MAC_FAMILY),
        ]
        .into_iter()
        .flatten()
        .collect();
        if families.is_empty() {
            return Ok(());
        }
        self.transact_all(&families, |listings| {
            let mut existing = listings.iter().map(Option::as_ref);
            let mut parts = Vec::new();
            if let Some((tag, ips)) = &masq {
                parts.push(doc::masq_setup(tag, ips, existing.next()?));
            }
            if let Some((tag, host_ifname, mac)) = &spoof_check {
                parts.push(doc::mac_setup(tag, host_ifname, mac, existing.next()?));
            }
            doc::merge(parts)
        })
        .map(|_| ())
    }

    /// Both features' rules of the attachment, in one transaction. A masquerade tag has
    /// a shorter limit on the container ID than a spoof-check tag; an ID too long for it
    /// can have no masquerade rule, so only the spoof check is looked for then.
    fn teardown_attachment(&self, network: &str, container_id: &str, ifname: &str) -> Result<()> {
        let mac_tag = Tag::mac_spoof_chk(network, container_id, ifname)?;
        let masq_tag = Tag::masq(network, container_id, ifname).ok();
        self.remove(BOTH, |t| *t == mac_tag || masq_tag.as_ref() == Some(t))
    }

    fn gc(&self, network: &str, valid: &HashSet<(String, String)>) -> Result<()> {
        let hash = network_hash(network);
        self.remove(BOTH, |t| t.is_garbage(&hash, valid))
    }

    fn list_attachments(&self) -> Result<BTreeSet<Tag>> {
        Nftables::list_attachments(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_errors() {
        let e = classify(
            "apply",
            "1".into(),
            "netlink: Error: Protocol not supported".into(),
        );
        assert!(matches!(e, Error::KernelUnsupported { .. }));
        assert!(e.to_string().contains("modprobe"));
        let e = classify("apply", "1".into(), "Error: Operation not permitted".into());
        assert!(matches!(e, Error::PermissionDenied { .. }));
        assert!(e.to_string().contains("CAP_NET_ADMIN"));
        let e = classify("apply", "1".into(), "Error: syntax".into());
        assert!(matches!(e, Error::Nft { .. }));
    }

    #[test]
    fn nft_is_searched_in_path_first() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let nft = d.path().join("nft");
        std::fs::write(&nft, "#!/bin/sh\n").unwrap();
        let path = std::env::join_paths([empty.path(), d.path()]).unwrap();
        // not executable: skipped (found in a fallback directory, if at all)
        assert_ne!(find_nft(Some(&path)), Some(nft.clone()));
        std::fs::set_permissions(&nft, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_nft(Some(&path)), Some(nft));
        // no PATH: only the fallback directories
        if let Some(p) = find_nft(None) {
            assert!(
                NFT_FALLBACK_DIRS
                    .iter()
                    .any(|d| p.parent() == Some(Path::new(d))),
                "{p:?}"
            );
        }
    }

    #[test]
    fn missing_binary_is_actionable() {
        let fw = Nftables::new()
            .with_nft_binary("/nonexistent/nft")
            .with_lock_path(std::env::temp_dir().join("meta-firewall-test-missing.lock"));
        let err = fw.teardown_masq("n", "c1", "eth0").unwrap_err();
        assert!(matches!(err, Error::NftNotFound { .. }), "{err}");
        assert!(err.to_string().contains("install the nftables package"));
    }

    #[test]
    fn invalid_input_rejected_before_running_nft() {
        let fw = Nftables::new().with_nft_binary("/nonexistent/nft");
        assert!(matches!(
            fw.setup_macspoofchk("n", "c1", "eth0", "bad name", [0; 6]),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            fw.teardown_masq("n", "-bad", "eth0"),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            fw.teardown_macspoofchk("n", "c1", "bad:name"),
            Err(Error::InvalidInput(_))
        ));
    }
}
