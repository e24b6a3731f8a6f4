//! The node's local state: `<dataDir>/state.json` (the last known server copy of every
//! block this node touched, and the journal of changes not yet written to the API server),
//! read and written only under `flock(<dataDir>/lock)`, replaced atomically (temporary
//! file, fsync, rename, fsync of the directory). A change is journalled here before it is
//! sent, so a kill -9 at any point leaves either nothing or a journalled change that the
//! next invocation (or the agent's reconciler) replays idempotently.

use crate::crd::{Allocation, IpBlockSpec};
use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The server's copy of one block as last seen (spec and resourceVersion).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Remote {
    /// The block's spec.
    pub spec: IpBlockSpec,
    /// Its resourceVersion (the precondition of the next write).
    pub rv: String,
}

/// One journalled change of a block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Op {
    /// Block name.
    pub block: String,
    /// Offset in the block.
    pub offset: u32,
    /// The owner the change is for.
    pub owner: String,
    /// `Some`: allocate to this; `None`: release (only if still held by `owner`).
    pub alloc: Option<Allocation>,
}

/// One journalled change of an address reservation (`enable_overlapping_ranges`): written
/// after the block change it goes with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResOp {
    /// IpReservation name.
    pub name: String,
    /// The address.
    pub ip: String,
    /// The pool whose block holds it.
    pub pool: String,
    /// The owner the change is for.
    pub owner: String,
    /// `Some`: reserve for this; `None`: release (only if still held by `owner`).
    pub holder: Option<Allocation>,
}

/// A reservation this node made and the server holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reserved {
    /// Its owner.
    pub owner: String,
    /// The object's UID (the precondition of its deletion).
    pub uid: String,
}

/// What applying an op to a block spec found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The spec changed.
    Changed,
    /// It already was so.
    Noop,
    /// The offset is held by another owner: the op cannot apply.
    Conflict,
}

impl Op {
    /// Applies the op to `spec` (sets or clears `emptySince` as allocations come and go).
    pub fn apply(&self, spec: &mut IpBlockSpec, now: u64) -> Applied {
        let k = self.offset.to_string();
        let r = match (&self.alloc, spec.allocations.get(&k)) {
            (Some(_), Some(cur)) if cur.owner == self.owner => Applied::Noop,
            (Some(_), Some(_)) => Applied::Conflict,
            (Some(a), None) => {
                spec.allocations.insert(k, a.clone());
                Applied::Changed
            }
            (None, Some(cur)) if cur.owner == self.owner => {
                spec.allocations.remove(&k);
                Applied::Changed
            }
            (None, _) => Applied::Noop,
        };
        if spec.allocations.is_empty() {
            if spec.empty_since.is_none() {
                spec.empty_since = Some(now);
            }
        } else {
            spec.empty_since = None;
        }
        r
    }
}

/// The node's state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Pools known to exist on the server.
    #[serde(default)]
    pub pools: BTreeSet<String>,
    /// Last known server copies by block name.
    #[serde(default)]
    pub blocks: BTreeMap<String, Remote>,
    /// Changes not yet on the server, in order.
    #[serde(default)]
    pub pending: Vec<Op>,
    /// Reservations this node made, by name.
    #[serde(default)]
    pub reservations: BTreeMap<String, Reserved>,
    /// Reservation changes not yet on the server, in order (after `pending`).
    #[serde(default)]
    pub pending_res: Vec<ResOp>,
    /// For each pool this node allocates from: the pools of the same scope whose subnets
    /// overlap it, as last listed (an ADD while the API server is unreachable refuses a
    /// pool that overlaps another, as it cannot reserve the address).
    #[serde(default)]
    pub overlaps: BTreeMap<String, BTreeSet<String>>,
    /// Addresses found reserved through an overlapping range, with when (seconds since the
    /// epoch): skipped for a while instead of asked again on every ADD.
    #[serde(default)]
    pub foreign: BTreeMap<String, u64>,
}

impl State {
    /// The block as this node sees it: the server copy with the pending ops applied.
    pub fn view(&self, block: &str, now: u64) -> Option<IpBlockSpec> {
        let mut spec = self.blocks.get(block)?.spec.clone();
        for op in self.pending.iter().filter(|o| o.block == block) {
            op.apply(&mut spec, now);
        }
        Some(spec)
    }
}

/// The locked data directory: holds `flock(lock)` until dropped.
pub struct Locked {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn io(what: &str, p: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{what} {}: {e}", p.display()))
}

impl Locked {
    /// Creates `dir` if needed and takes its lock (blocking).
    pub fn open(dir: &Path) -> Result<Locked> {
        std::fs::create_dir_all(dir).map_err(|e| io("mkdir", dir, e))?;
        let p = dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| io("open", &p, e))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io("lock", &p, e))?;
        Ok(Locked {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Reads the state (empty when there is none yet).
    pub fn load(&self) -> Result<State> {
        let p = self.path();
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| io("parse", &p, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io("read", &p, e)),
        }
    }

    /// Replaces the state atomically and durably.
    pub fn save(&self, s: &State) -> Result<()> {
        let p = self.path();
        let tmp = self.dir.join(".state.json.tmp");
        let data = serde_json::to_vec(s).map_err(|e| io("encode", &p, e))?;
        let mut f = File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
        f.write_all(&data).map_err(|e| io("write", &tmp, e))?;
        f.sync_all().map_err(|e| io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| io("rename", &p, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("fsync", &self.dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(owner: &str) -> Allocation {
        Allocation {
            owner: owner.into(),
            namespace: String::new(),
            pod: String::new(),
            pod_uid: String::new(),
            container_id: String::new(),
            node: "n".into(),
            created: 1,
        }
    }

    fn spec() -> IpBlockSpec {
        IpBlockSpec {
            pool: "p".into(),
            cidr: "10.0.0.0/28".into(),
            node: "n".into(),
            lend_from: 12,
            empty_since: Some(0),
            allocations: BTreeMap::new(),
        }
    }

    #[test]
    fn ops_apply_idempotently_and_refuse_other_owners() {
        let mut s = spec();
        let a = Op {
            block: "b".into(),
            offset: 3,
            owner: "u/eth0".into(),
            alloc: Some(alloc("u/eth0")),
        };
        assert_eq!(a.apply(&mut s, 5), Applied::Changed);
        assert_eq!(s.empty_since, None);
        assert_eq!(a.apply(&mut s, 5), Applied::Noop);
        let b = Op {
            owner: "v/eth0".into(),
            alloc: Some(alloc("v/eth0")),
            ..a.clone()
        };
        assert_eq!(b.apply(&mut s, 5), Applied::Conflict);
        // A release by someone else leaves it.
        let rb = Op { alloc: None, ..b };
        assert_eq!(rb.apply(&mut s, 5), Applied::Noop);
        let ra = Op { alloc: None, ..a };
        assert_eq!(ra.apply(&mut s, 7), Applied::Changed);
        assert_eq!(s.empty_since, Some(7));
    }

    #[test]
    fn state_round_trips_under_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let l = Locked::open(d.path()).unwrap();
        assert!(l.load().unwrap().blocks.is_empty());
        let mut st = State::default();
        st.blocks.insert(
            "b".into(),
            Remote {
                spec: spec(),
                rv: "7".into(),
            },
        );
        st.pending.push(Op {
            block: "b".into(),
            offset: 1,
            owner: "u/eth0".into(),
            alloc: Some(alloc("u/eth0")),
        });
        l.save(&st).unwrap();
        let back = l.load().unwrap();
        assert_eq!(back.blocks, st.blocks);
        let v = back.view("b", 9).unwrap();
        assert!(v.allocations.contains_key("1"));
        assert!(back.blocks["b"].spec.allocations.is_empty());
    }
}
