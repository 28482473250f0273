//! Fault rules: make chosen I/O operations fail with a chosen error. One rule type for
//! every driver that injects faults: the simulator ([`crate::sim`]) and the file engine.
//!
//! A rule matches operations of one kind on one side; the `nth` matching operation
//! (counting from 1, in issue order) and the `count - 1` after it fail (`count == 0`: every
//! one from the nth on). A failing operation is not performed, as if the OS had refused it.
//! The driver counts with a [`FaultPlan`]; the rules themselves hold no state.
//!
//! The dict form the faces accept (`{"side", "op", "nth", "count", "error"}`) is
//! documented in docs/faults.md.

use crate::job::IoErrorKind;
use crate::names::names;

/// Which disk an operation touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The disk the guest writes until the pivot; the job reads it.
    Source,
    /// The mirror; the job writes it.
    Target,
}

/// Which operations a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FaultOp {
    /// Copy reads (source).
    Read,
    /// Data writes: copies and write-blocking guest writes (target).
    Write,
    /// Zero writes and discards (target).
    Zero,
    /// Flushes (target).
    Flush,
    /// Any of the above.
    #[default]
    Any,
}

names!(
    Side,
    "side",
    FaultRuleError,
    Source = "source",
    Target = "target"
);
names!(
    FaultOp,
    "fault op",
    FaultRuleError,
    Read = "read",
    Write = "write",
    Zero = "zero",
    Flush = "flush",
    Any = "any"
);

impl FaultOp {
    /// The kind of operation an action of this kind performs (`None`: no I/O to fail).
    pub fn of_action(kind: crate::job::ActionKind) -> Option<Self> {
        use crate::job::ActionKind as A;
        match kind {
            A::Read => Some(FaultOp::Read),
            A::Write | A::GuestWrite => Some(FaultOp::Write),
            A::WriteZeroes | A::Discard => Some(FaultOp::Zero),
            A::Flush => Some(FaultOp::Flush),
            _ => None,
        }
    }
}

/// An invalid fault rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FaultRuleError {
    /// `nth` is 0.
    #[error("fault nth counts from 1")]
    NthZero,
    /// An unknown side or operation name.
    #[error("unknown {what} {name:?}")]
    UnknownName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
    },
}

/// One rule: the `nth` (from 1) to `nth + count - 1` operations of kind `op` on `side`
/// fail with `error` (`count` 0: all from the nth on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRule {
    /// The side it applies to.
    pub side: Side,
    /// The operations it matches.
    pub op: FaultOp,
    /// The first matching operation that fails, counting from 1.
    pub nth: u64,
    /// How many matching operations fail from the nth on (0: all of them).
    pub count: u64,
    /// The error they fail with.
    pub error: IoErrorKind,
}

impl FaultRule {
    /// A rule; `nth` must be at least 1.
    pub fn new(
        side: Side,
        op: FaultOp,
        nth: u64,
        count: u64,
        error: IoErrorKind,
    ) -> Result<Self, FaultRuleError> {
        if nth == 0 {
            return Err(FaultRuleError::NthZero);
        }
        Ok(Self {
            side,
            op,
            nth,
            count,
            error,
        })
    }

    /// The `nth` (from 1) operation of any kind on `side` fails once.
    pub fn once(side: Side, nth: u64, error: IoErrorKind) -> Result<Self, FaultRuleError> {
        Self::new(side, FaultOp::Any, nth, 1, error)
    }

    /// Whether the rule counts this operation.
    pub fn matches(&self, side: Side, op: FaultOp) -> bool {
        self.side == side && (self.op == FaultOp::Any || self.op == op)
    }

    /// Whether the `seen`-th matching operation (from 1) fails.
    pub fn fails_at(&self, seen: u64) -> bool {
        seen >= self.nth && (self.count == 0 || seen - self.nth < self.count)
    }
}

/// Rules and what each has counted: the driver calls [`check`](Self::check) once per
/// operation, when it issues it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    rules: Vec<FaultRule>,
    seen: Vec<u64>,
}

impl FaultPlan {
    /// A plan with these rules, nothing counted yet.
    pub fn new(rules: Vec<FaultRule>) -> Self {
        let seen = vec![0; rules.len()];
        Self { rules, seen }
    }

    /// The rules.
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// Counts one operation in every rule that matches it; returns the index of the first
    /// rule for which it fails, if any.
    pub fn check(&mut self, side: Side, op: FaultOp) -> Option<usize> {
        let mut hit = None;
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.matches(side, op) {
                continue;
            }
            self.seen[index] += 1;
            if hit.is_none() && rule.fails_at(self.seen[index]) {
                hit = Some(index);
            }
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_and_count_select_the_failing_operations() {
        let rule =
            FaultRule::new(Side::Target, FaultOp::Write, 2, 2, IoErrorKind::NoSpace).unwrap();
        let mut plan = FaultPlan::new(vec![rule]);
        let seen: Vec<_> = (0..5)
            .map(|_| plan.check(Side::Target, FaultOp::Write).is_some())
            .collect();
        assert_eq!(seen, [false, true, true, false, false]);
        assert_eq!(plan.check(Side::Source, FaultOp::Read), None);
        let every = FaultRule::new(Side::Target, FaultOp::Any, 2, 0, IoErrorKind::Io).unwrap();
        let mut plan = FaultPlan::new(vec![every]);
        let seen: Vec<_> = [FaultOp::Write, FaultOp::Flush, FaultOp::Zero]
            .iter()
            .map(|&op| plan.check(Side::Target, op).is_some())
            .collect();
        assert_eq!(seen, [false, true, true]);
        assert_eq!(
            FaultRule::new(Side::Source, FaultOp::Read, 0, 1, IoErrorKind::Io),
            Err(FaultRuleError::NthZero)
        );
    }
}
