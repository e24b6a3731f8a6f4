//! The crate's single error type.

use nix::errno::Errno;

/// Every failure of this crate.
///
/// Kernel refusals keep their `errno` so that callers can react to the common
/// cases ([`Error::is_not_found`], [`Error::is_exists`]) without string matching.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel answered a netlink request with an error.
    #[error("{op}: {} (errno {errno}){}", errno_desc(*errno), ext_msg(message))]
    Netlink {
        /// What was being done, e.g. `link_add veth0`.
        op: String,
        /// Positive errno value (e.g. 17 for EEXIST).
        errno: i32,
        /// The kernel's extended-ack message, empty when it sent none.
        message: String,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Something looked up by name or value does not exist.
    #[error("{0}: not found")]
    NotFound(String),
    /// Something to be created already exists.
    #[error("{0}: already exists")]
    Exists(String),
    /// The caller passed an invalid argument (bad name, bad MAC, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The running kernel or this crate does not support the request.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A closure run inside a namespace panicked, or a worker thread died.
    #[error("panic in namespace thread: {0}")]
    Panic(String),
    /// Waiting for a condition took too long.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The netlink conversation did not go as the protocol says it should.
    #[error("netlink protocol error: {0}")]
    Protocol(String),
}

fn errno_desc(errno: i32) -> &'static str {
    Errno::from_raw(errno).desc()
}

fn ext_msg(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A netlink error with the given positive errno, as the kernel would send it.
    pub fn netlink(op: impl Into<String>, errno: i32) -> Error {
        Error::Netlink {
            op: op.into(),
            errno: errno.abs(),
            message: String::new(),
        }
    }

    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A nix (errno) failure with context.
    pub(crate) fn nix(context: impl Into<String>, errno: Errno) -> Error {
        Error::io(context, std::io::Error::from_raw_os_error(errno as i32))
    }

    /// True when the object does not exist: `ENOENT`, `ENODEV`, `ESRCH`,
    /// `EADDRNOTAVAIL` (address to delete is missing), `ENXIO`, or [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound(_) => true,
            _ => matches!(
                self.errno().map(Errno::from_raw),
                Some(
                    Errno::ENOENT
                        | Errno::ENODEV
                        | Errno::ESRCH
                        | Errno::EADDRNOTAVAIL
                        | Errno::ENXIO
                )
            ),
        }
    }

    /// True when the object already exists: `EEXIST` or [`Error::Exists`].
    pub fn is_exists(&self) -> bool {
        matches!(self, Error::Exists(_)) || self.errno() == Some(Errno::EEXIST as i32)
    }

    /// True when the kernel does not support the request (`EOPNOTSUPP`, unknown
    /// link kind, ...) or [`Error::Unsupported`].
    pub fn is_unsupported(&self) -> bool {
        if matches!(self, Error::Unsupported(_)) {
            return true;
        }
        matches!(
            self.errno().map(Errno::from_raw),
            Some(Errno::EOPNOTSUPP | Errno::EAFNOSUPPORT | Errno::EPROTONOSUPPORT)
        )
    }

    /// The kernel's answer without the request label (whose `dev` is an interface index):
    /// for callers that describe the request themselves, with interface names.
    pub fn cause(&self) -> String {
        match self {
            Error::Netlink { errno, message, .. } => {
                format!("{} (errno {errno}){}", errno_desc(*errno), ext_msg(message))
            }
            other => other.to_string(),
        }
    }

    /// The positive errno behind this error, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink { errno, .. } => Some(*errno),
            Error::Io { source, .. } => source.raw_os_error().or(match source.kind() {
                std::io::ErrorKind::NotFound => Some(Errno::ENOENT as i32),
                std::io::ErrorKind::AlreadyExists => Some(Errno::EEXIST as i32),
                _ => None,
            }),
            Error::NotFound(_) => Some(Errno::ENOENT as i32),
            Error::Exists(_) => Some(Errno::EEXIST as i32),
            Error::Invalid(_) => Some(Errno::EINVAL as i32),
            Error::Unsupported(_) => Some(Errno::EOPNOTSUPP as i32),
            Error::Timeout(_) => Some(Errno::ETIMEDOUT as i32),
            Error::Panic(_) | Error::Protocol(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_drops_the_request_label() {
        let e = Error::Netlink {
            op: "route_replace 0.0.0.0/0 via 10.99.0.1 dev 3".into(),
            errno: 101,
            message: "Nexthop has invalid gateway".into(),
        };
        assert_eq!(
            e.cause(),
            "Network is unreachable (errno 101): Nexthop has invalid gateway"
        );
        assert!(
            e.to_string()
                .starts_with("route_replace 0.0.0.0/0 via 10.99.0.1 dev 3: ")
        );
        assert_eq!(
            Error::netlink("route_del x dev 4", 19).cause(),
            "No such device (errno 19)"
        );
        assert_eq!(Error::NotFound("eth9".into()).cause(), "eth9: not found");
    }

    #[test]
    fn classification() {
        assert!(Error::netlink("x", -17).is_exists());
        assert!(Error::netlink("x", 19).is_not_found());
        assert!(Error::netlink("x", 99).is_not_found());
        assert!(Error::NotFound("a".into()).is_not_found());
        assert!(!Error::netlink("x", 22).is_not_found());
        assert_eq!(Error::netlink("x", -22).errno(), Some(22));
        let e = Error::io("open", std::io::Error::from_raw_os_error(2));
        assert!(e.is_not_found());
        assert!(Error::netlink("x", 95).is_unsupported());
        let msg = Error::Netlink {
            op: "link_add x".into(),
            errno: 95,
            message: "Unknown device type".into(),
        }
        .to_string();
        assert!(msg.contains("link_add x"), "{msg}");
        assert!(msg.contains("Unknown device type"), "{msg}");
    }
}
