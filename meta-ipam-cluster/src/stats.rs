//! Process-wide counters of meta-ipam, per network: what one process (the plugin's
//! invocation, or the agent with its hot-plug and reconciler) did since they were last
//! taken. The plugin hands them to the agent through the spool record of its invocation;
//! the agent adds them to its `meta_cni_ipam_*_total` metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// What happened for one network.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Addresses allocated.
    pub allocations: u64,
    /// Addresses released.
    pub releases: u64,
    /// Conditional writes refused with 409 (another node wrote first) and retried.
    pub conflicts: u64,
    /// Requests sent to the API server.
    pub api_requests: u64,
    /// Addresses skipped because an overlapping range of the scope holds them.
    pub overlap_skips: u64,
    /// Addresses handed out while the API server was unreachable that an overlapping
    /// range turned out to hold as well (found when the journal was written).
    pub overlap_conflicts: u64,
}

impl Counters {
    /// Whether nothing was counted.
    pub fn is_zero(&self) -> bool {
        *self == Counters::default()
    }

    fn add(&mut self, o: &Counters) {
        self.allocations += o.allocations;
        self.releases += o.releases;
        self.conflicts += o.conflicts;
        self.api_requests += o.api_requests;
        self.overlap_skips += o.overlap_skips;
        self.overlap_conflicts += o.overlap_conflicts;
    }
}

static STATS: Mutex<BTreeMap<String, Counters>> = Mutex::new(BTreeMap::new());

/// Adds `c` to the counters of `network` (nothing for zero counters or no network).
pub fn record(network: &str, c: &Counters) {
    if network.is_empty() || c.is_zero() {
        return;
    }
    let mut m = STATS.lock().unwrap_or_else(|e| e.into_inner());
    m.entry(network.to_string()).or_default().add(c);
}

/// The counters since the last call, by network; resets them.
pub fn take() -> BTreeMap<String, Counters> {
    std::mem::take(&mut *STATS.lock().unwrap_or_else(|e| e.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_per_network_and_reset_when_taken() {
        // Other tests of this crate may record meanwhile: only this test's networks count.
        let one = Counters {
            allocations: 1,
            api_requests: 3,
            ..Counters::default()
        };
        record("stats-test-a", &one);
        record("stats-test-a", &one);
        record("stats-test-b", &Counters::default());
        record("", &one);
        let m = take();
        assert_eq!(
            m["stats-test-a"],
            Counters {
                allocations: 2,
                api_requests: 6,
                ..Counters::default()
            }
        );
        assert!(!m.contains_key("stats-test-b"));
        assert!(!m.contains_key(""));
        assert!(!take().contains_key("stats-test-a"));
    }
}
