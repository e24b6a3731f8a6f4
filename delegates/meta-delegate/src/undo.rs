//! The undo stack of an ADD: every step that changes something pushes how to take it back;
//! when ADD fails, the steps are undone in reverse order, each failure logged (never
//! returned: the ADD's own error is what the runtime must see).
//!
//! ```
//! use meta_delegate::undo::transaction;
//! let mut log = Vec::new();
//! let r: cni_core::Result<()> = transaction(&mut log, |log, undo| {
//!     log.push("link");
//!     undo.push("delete link", |log: &mut Vec<&str>| { log.push("-link"); Ok(()) });
//!     log.push("ipam");
//!     undo.push("release IPAM", |log: &mut Vec<&str>| { log.push("-ipam"); Ok(()) });
//!     Err(cni_core::Error::internal("routes failed"))
//! });
//! assert!(r.is_err());
//! assert_eq!(log, ["link", "ipam", "-ipam", "-link"]);
//! ```

use cni_core::Result;

type Step<'a, C> = Box<dyn FnOnce(&mut C) -> Result<()> + 'a>;

/// Undo steps over a context `C` (the netlink handles an ADD holds, or `()`), which each
/// step gets when it runs, so steps need not borrow what the ADD itself still uses.
pub struct Undo<'a, C = ()> {
    steps: Vec<(&'static str, Step<'a, C>)>,
}

impl<C> Default for Undo<'_, C> {
    fn default() -> Self {
        Undo { steps: Vec::new() }
    }
}

impl<'a, C> Undo<'a, C> {
    /// Records how to undo the step just done; `what` names it in the log.
    pub fn push(&mut self, what: &'static str, step: impl FnOnce(&mut C) -> Result<()> + 'a) {
        self.steps.push((what, Box::new(step)));
    }

    /// How many steps are recorded.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Undoes every step, newest first, logging failures.
    pub fn run(self, ctx: &mut C) {
        for (what, step) in self.steps.into_iter().rev() {
            if let Err(e) = step(ctx) {
                tracing::warn!("rollback: {what}: {e}");
            }
        }
    }
}

/// Runs an ADD body with an undo stack: on `Err`, what the body recorded is undone (in
/// reverse) before the error is returned; on `Ok`, the steps are dropped unrun.
pub fn transaction<'a, C, T>(
    ctx: &mut C,
    body: impl FnOnce(&mut C, &mut Undo<'a, C>) -> Result<T>,
) -> Result<T> {
    let mut undo = Undo::default();
    match body(ctx, &mut undo) {
        Ok(v) => Ok(v),
        Err(e) => {
            undo.run(ctx);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_core::Error;

    #[test]
    fn success_runs_nothing() {
        let mut n = 0;
        let r = transaction(&mut n, |_, u| {
            u.push("a", |n: &mut i32| {
                *n += 1;
                Ok(())
            });
            Ok(7)
        });
        assert_eq!((r.unwrap(), n), (7, 0));
    }

    #[test]
    fn failure_undoes_in_reverse_and_keeps_going_past_failed_steps() {
        let mut log: Vec<String> = Vec::new();
        let r: Result<()> = transaction(&mut log, |_, u| {
            u.push("one", |l: &mut Vec<String>| {
                l.push("1".into());
                Ok(())
            });
            u.push("two", |_| Err(Error::internal("cannot")));
            u.push("three", |l: &mut Vec<String>| {
                l.push("3".into());
                Ok(())
            });
            assert_eq!(u.len(), 3);
            Err(Error::config("bad"))
        });
        assert_eq!(r.unwrap_err().code, 7, "the body's error is returned");
        assert_eq!(log, ["3", "1"]);
    }
}
