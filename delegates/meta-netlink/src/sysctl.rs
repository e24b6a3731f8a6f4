//! `/proc/sys` access. `net.*` keys act on the network namespace of the calling
//! thread (the kernel resolves them at open time), so run them inside
//! [`Netns::run`] (or use [`Netns::sysctl_set`]) to act on another namespace.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::netns::Netns;

/// Maps `net.ipv4.ip_forward` or `net/ipv4/ip_forward` to its `/proc/sys` path.
///
/// Keys containing a `/` are taken as paths (so interface names with dots, e.g.
/// `net/ipv4/conf/eth0.100/forwarding`, can be expressed); otherwise dots separate
/// the components like sysctl(8).
pub fn sysctl_path(key: &str) -> Result<PathBuf> {
    let key = key.trim();
    if key.is_empty() || key.contains('\0') {
        return Err(Error::Invalid(format!("bad sysctl key {key:?}")));
    }
    let rel = if key.contains('/') {
        key.trim_start_matches('/').to_string()
    } else {
        key.replace('.', "/")
    };
    if rel
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::Invalid(format!("bad sysctl key {key:?}")));
    }
    Ok(PathBuf::from("/proc/sys").join(rel))
}

/// Reads a sysctl of the calling thread's namespace; the trailing newline is removed.
pub fn sysctl_get(key: &str) -> Result<String> {
    let path = sysctl_path(key)?;
    let s =
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("read sysctl {key}"), e))?;
    Ok(s.trim_end_matches('\n').to_string())
}

/// Writes a sysctl of the calling thread's namespace.
pub fn sysctl_set(key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(key)?;
    std::fs::write(&path, value.as_bytes())
        .map_err(|e| Error::io(format!("write sysctl {key}={value}"), e))
}

/// Sets a sysctl and restores its previous value when dropped.
///
/// The namespace is remembered at creation, so the old value is restored in the
/// right namespace whichever thread drops the guard.
#[derive(Debug)]
pub struct SysctlGuard {
    key: String,
    old: String,
    ns: Option<Netns>,
}

impl SysctlGuard {
    /// Sets `key` to `value` in the calling thread's namespace, remembering the old value.
    pub fn set(key: &str, value: &str) -> Result<SysctlGuard> {
        let ns = Netns::current().ok();
        let old = sysctl_get(key)?;
        sysctl_set(key, value)?;
        Ok(SysctlGuard {
            key: key.to_string(),
            old,
            ns,
        })
    }

    /// Sets `key` to `value` in `ns`, remembering the old value.
    pub fn set_in(ns: &Netns, key: &str, value: &str) -> Result<SysctlGuard> {
        let old = ns.sysctl_get(key)?;
        ns.sysctl_set(key, value)?;
        Ok(SysctlGuard {
            key: key.to_string(),
            old,
            ns: Some(ns.clone()),
        })
    }

    /// The value that will be restored.
    pub fn old_value(&self) -> &str {
        &self.old
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        let res = match &self.ns {
            Some(ns) => ns.sysctl_set(&self.key, &self.old),
            None => sysctl_set(&self.key, &self.old),
        };
        if let Err(e) = res {
            tracing::warn!(key = %self.key, error = %e, "failed to restore sysctl");
        }
    }
}

impl Netns {
    /// Writes a sysctl inside this namespace.
    pub fn sysctl_set(&self, key: &str, value: &str) -> Result<()> {
        self.run(|| sysctl_set(key, value))?
    }

    /// Reads a sysctl inside this namespace.
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        self.run(|| sysctl_get(key))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        assert!(sysctl_path("net/../../etc/passwd").is_err());
        assert!(sysctl_path("").is_err());
        assert!(sysctl_path("net..ipv4").is_err());
    }

    #[test]
    fn read_current() {
        // Reading is harmless and needs no privileges.
        let v = sysctl_get("net.ipv4.ip_forward").unwrap();
        assert!(v == "0" || v == "1", "{v}");
    }
}
