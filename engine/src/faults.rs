//! Deterministic fault injection for tests: make chosen operations fail with a chosen error.
//!
//! The rules are the core's [`FaultRule`] (side, operation kind, nth, count, error; see
//! `blockmirror_core::fault` and docs/faults.md), the same the simulator uses. The engine
//! adds one thing for its own tests: a rule may instead make the worker that runs the
//! operation panic ([`PanicAt`]), outside the job's lock or while holding it, to test the
//! mirror's survival of a broken thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub use blockmirror_core::fault::{FaultOp, FaultRule, Side as FaultSide};
use blockmirror_core::fault::FaultPlan;
use blockmirror_core::job::IoErrorKind;

/// Where a panicking rule makes the worker panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicAt {
    /// In the I/O itself, with no lock held.
    Io,
    /// While the worker feeds the (failed) result to the job, holding the job's lock.
    UnderLock,
}

/// One rule to inject: a core [`FaultRule`], optionally panicking instead of failing.
#[derive(Debug, Clone)]
pub struct InjectedFault {
    /// Which operations fail, and how.
    pub rule: FaultRule,
    /// Panic instead of (or, `UnderLock`, after) failing.
    pub panic: Option<PanicAt>,
}

impl From<FaultRule> for InjectedFault {
    fn from(rule: FaultRule) -> Self {
        Self { rule, panic: None }
    }
}

impl InjectedFault {
    /// The same rule, making the worker panic at `at` when it matches.
    pub fn panicking(mut self, at: PanicAt) -> Self {
        self.panic = Some(at);
        self
    }
}

/// The rules in force, shared by the I/O workers.
#[derive(Debug, Default)]
pub struct FaultInjector {
    plan: Mutex<FaultPlan>,
    /// `panics[i]`: what rule `i` of the plan does besides failing.
    panics: Vec<Option<PanicAt>>,
    injected: Mutex<u64>,
    /// A `PanicAt::UnderLock` rule matched: the next `panic_if_armed` panics.
    armed: AtomicBool,
}

impl FaultInjector {
    /// An injector with these rules.
    pub fn new(faults: Vec<InjectedFault>) -> Self {
        let panics = faults.iter().map(|f| f.panic).collect();
        let plan = FaultPlan::new(faults.into_iter().map(|f| f.rule).collect());
        Self { plan: Mutex::new(plan), panics, injected: Mutex::new(0), armed: AtomicBool::new(false) }
    }

    /// Counts one operation and returns the error it must fail with, if any.
    pub fn check(&self, side: FaultSide, op: FaultOp) -> Option<IoErrorKind> {
        let mut plan = self.plan.lock().expect("fault rules lock poisoned");
        let hit = plan.check(side, op).map(|index| (plan.rules()[index].error, self.panics[index]));
        // Released before any panic, so the injector itself stays usable.
        drop(plan);
        let (error, panic) = hit?;
        *self.injected.lock().expect("fault counter lock poisoned") += 1;
        match panic {
            Some(PanicAt::Io) => panic!("injected panic in an I/O worker (fault rule)"),
            Some(PanicAt::UnderLock) => self.armed.store(true, Ordering::SeqCst),
            None => {}
        }
        Some(error)
    }

    /// Panics if a `PanicAt::UnderLock` rule matched since the last call (called by a
    /// worker with the job's lock held).
    pub fn panic_if_armed(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("injected panic under the job's lock (fault rule)");
        }
    }

    /// How many operations were failed on purpose.
    pub fn injected(&self) -> u64 {
        *self.injected.lock().expect("fault counter lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_and_count_select_the_failing_operations() {
        let rule = FaultRule::new(FaultSide::Target, FaultOp::Write, 2, 2, IoErrorKind::NoSpace).unwrap();
        let inj = FaultInjector::new(vec![rule.into()]);
        let seen: Vec<_> = (0..5).map(|_| inj.check(FaultSide::Target, FaultOp::Write).is_some()).collect();
        assert_eq!(seen, [false, true, true, false, false]);
        assert_eq!(inj.check(FaultSide::Source, FaultOp::Read), None);
        assert_eq!(inj.injected(), 2);
    }
}
