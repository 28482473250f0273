//! Deterministic fault injection for tests: make chosen operations fail with a chosen error.
//!
//! A rule matches operations of one kind on one side; the `nth` matching operation (counting
//! from 1) and the `count - 1` after it fail (`count == 0`: every one from the nth on). The
//! operation is not performed when it fails, exactly as if the OS had refused it.
//!
//! A rule may instead make the worker that runs the operation panic ([`PanicAt`]), outside
//! the job's lock or while holding it: the tests of the mirror's survival of a broken thread.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use blockmirror_core::job::IoErrorKind;

/// Which file an operation touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSide {
    /// The source (copy reads).
    Source,
    /// The target (writes, zero writes, discards, flushes).
    Target,
}

/// Which operations a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// Copy reads.
    Read,
    /// Data writes (copies and write-blocking guest writes).
    Write,
    /// Zero writes and discards.
    Zero,
    /// Flushes.
    Flush,
    /// Any of the above.
    Any,
}

impl FromStr for FaultSide {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "source" => Ok(FaultSide::Source),
            "target" => Ok(FaultSide::Target),
            _ => Err(format!("unknown fault side {s:?} (expected \"source\" or \"target\")")),
        }
    }
}

impl FromStr for FaultOp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(FaultOp::Read),
            "write" => Ok(FaultOp::Write),
            "zero" => Ok(FaultOp::Zero),
            "flush" => Ok(FaultOp::Flush),
            "any" => Ok(FaultOp::Any),
            _ => Err(format!("unknown fault op {s:?} (expected read, write, zero, flush or any)")),
        }
    }
}

/// Parses an error name: `nospace`, `io`, `readonly`, or a positive errno.
pub fn parse_error_kind(s: &str) -> Result<IoErrorKind, String> {
    match s {
        "nospace" => Ok(IoErrorKind::NoSpace),
        "io" => Ok(IoErrorKind::Io),
        "readonly" => Ok(IoErrorKind::ReadOnly),
        other => match other.parse::<i32>() {
            Ok(errno) if errno > 0 => Ok(IoErrorKind::from_errno(errno)),
            _ => Err(format!("unknown fault error {s:?} (expected nospace, io, readonly or an errno)")),
        },
    }
}

/// Where a panicking rule makes the worker panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicAt {
    /// In the I/O itself, with no lock held.
    Io,
    /// While the worker feeds the (failed) result to the job, holding the job's lock.
    UnderLock,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// The side it applies to.
    pub side: FaultSide,
    /// The operations it matches.
    pub op: FaultOp,
    /// The first matching operation that fails, counting from 1.
    pub nth: u64,
    /// How many matching operations fail from the nth on (0: all of them).
    pub count: u64,
    /// The error they fail with.
    pub error: IoErrorKind,
    /// Panic instead of (or, `UnderLock`, after) failing.
    pub panic: Option<PanicAt>,
    /// Matching operations seen so far.
    seen: u64,
}

impl FaultRule {
    /// A rule; `nth` must be at least 1.
    pub fn new(side: FaultSide, op: FaultOp, nth: u64, count: u64, error: IoErrorKind) -> Result<Self, String> {
        if nth == 0 {
            return Err("fault nth counts from 1".into());
        }
        Ok(Self { side, op, nth, count, error, panic: None, seen: 0 })
    }

    /// The same rule, making the worker panic at `at` when it matches.
    pub fn panicking(mut self, at: PanicAt) -> Self {
        self.panic = Some(at);
        self
    }
}

/// The rules in force, shared by the I/O workers.
#[derive(Debug, Default)]
pub struct FaultInjector {
    rules: Mutex<Vec<FaultRule>>,
    injected: Mutex<u64>,
    /// A `PanicAt::UnderLock` rule matched: the next `panic_if_armed` panics.
    armed: AtomicBool,
}

impl FaultInjector {
    /// An injector with these rules.
    pub fn new(rules: Vec<FaultRule>) -> Self {
        Self { rules: Mutex::new(rules), injected: Mutex::new(0), armed: AtomicBool::new(false) }
    }

    /// Counts one operation and returns the error it must fail with, if any.
    pub fn check(&self, side: FaultSide, op: FaultOp) -> Option<IoErrorKind> {
        let mut rules = self.rules.lock().expect("fault rules lock poisoned");
        let mut hit = None;
        let mut panic = None;
        for rule in rules.iter_mut() {
            if rule.side != side || (rule.op != FaultOp::Any && rule.op != op) {
                continue;
            }
            rule.seen += 1;
            let fails = rule.seen >= rule.nth && (rule.count == 0 || rule.seen < rule.nth + rule.count);
            if fails && hit.is_none() {
                hit = Some(rule.error);
                panic = rule.panic;
            }
        }
        // Released before any panic, so the injector itself stays usable.
        drop(rules);
        if hit.is_some() {
            *self.injected.lock().expect("fault counter lock poisoned") += 1;
        }
        match panic {
            Some(PanicAt::Io) => panic!("injected panic in an I/O worker (fault rule)"),
            Some(PanicAt::UnderLock) => self.armed.store(true, Ordering::SeqCst),
            None => {}
        }
        hit
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
        let inj = FaultInjector::new(vec![rule]);
        let seen: Vec<_> = (0..5).map(|_| inj.check(FaultSide::Target, FaultOp::Write).is_some()).collect();
        assert_eq!(seen, [false, true, true, false, false]);
        assert_eq!(inj.check(FaultSide::Source, FaultOp::Read), None);
        assert_eq!(inj.injected(), 2);
    }
}
