//! Error policies, one per side (`on_source_error`, `on_target_error`): `report`, `ignore`,
//! `stop` and `enospc`, as QEMU's `BlockdevOnError`.
//!
//! Every failed read, write, guest write or flush emits `BLOCK_JOB_ERROR` with the action
//! its policy chose; the failed range was already re-marked dirty by the caller.
//! `report` fails the job (it drains and ends with `BLOCK_JOB_COMPLETED` carrying the
//! error), `ignore` retries later, `stop` pauses like a user pause (`resume` retries),
//! `enospc` is `stop` for "no space" and `report` otherwise. Once the job is winding down
//! (aborting), errors are still reported but change nothing more. `ready` is sticky.
//!
//! Retrying an `ignore`d error backs off: an error that persists (a full disk, a dead
//! device) would otherwise be retried the moment it is reported, forever, each attempt
//! another `BLOCK_JOB_ERROR`. After an ignored error the job issues no new copy, READY
//! flush or final-switch quiesce until a wait has passed (its end is `poll_timeout()`, so a
//! driver sleeps); the wait starts at [`RETRY_BACKOFF_FIRST_NS`] and doubles with each
//! failed round up to [`RETRY_BACKOFF_MAX_NS`], and a successful copy resets it. A round is
//! what was issued before the wait: its other failures do not lengthen the wait. So a side
//! that keeps failing costs at most `max_in_flight` errors per wait, and at least one wait
//! of [`RETRY_BACKOFF_FIRST_NS`] separates two rounds. The chunk stays dirty throughout
//! (a failed chunk under `ignore` is never given up, so the target is never left corrupt):
//! once the fault is gone, the next round succeeds and the job converges.

use super::mirror::{AbortReason, Ending, GuestHold, MirrorJob};
use super::time::Nanos;
use super::*;

/// The first wait after an `ignore`d error, in nanoseconds.
pub const RETRY_BACKOFF_FIRST_NS: u64 = 10_000_000;
/// The longest wait between retries of `ignore`d errors, in nanoseconds.
pub const RETRY_BACKOFF_MAX_NS: u64 = 1_000_000_000;

/// The wait before retrying after `ignore`d errors (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct RetryBackoff {
    /// The wait the next failed round starts.
    next_delay_ns: u64,
    /// No retry before this instant.
    until: Nanos,
}

impl RetryBackoff {
    pub(super) fn new() -> Self {
        Self {
            next_delay_ns: RETRY_BACKOFF_FIRST_NS,
            until: Nanos(0),
        }
    }

    /// An `ignore`d failure at `now`: start a wait, unless one is running (the failure
    /// then belongs to the round that started it).
    fn failed(&mut self, now: Nanos) {
        if now < self.until {
            return;
        }
        self.until = Nanos(now.0.saturating_add(self.next_delay_ns));
        self.next_delay_ns = (self.next_delay_ns * 2).min(RETRY_BACKOFF_MAX_NS);
    }

    /// A copy succeeded: the next failure waits the shortest time again (a wait already
    /// running is kept).
    pub(super) fn succeeded(&mut self) {
        self.next_delay_ns = RETRY_BACKOFF_FIRST_NS;
    }

    /// The end of the running wait, if `now` is inside one.
    pub(super) fn waiting_until(&self, now: Nanos) -> Option<Nanos> {
        (now < self.until).then_some(self.until)
    }
}

/// Which side of the mirror an operation touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// A source read.
    Source,
    /// A target write, zero-write, discard, guest write or flush.
    Target,
}

/// The action a policy takes for an error.
pub(super) fn policy_action(policy: ErrorPolicy, error: IoErrorKind) -> ErrorAction {
    match policy {
        ErrorPolicy::Report => ErrorAction::Report,
        ErrorPolicy::Ignore => ErrorAction::Ignore,
        ErrorPolicy::Stop => ErrorAction::Stop,
        ErrorPolicy::Enospc if error == IoErrorKind::NoSpace => ErrorAction::Stop,
        ErrorPolicy::Enospc => ErrorAction::Report,
    }
}

impl MirrorJob {
    /// Applies the side's policy to a failed operation on `[offset, offset+length)`
    /// (0, 0 for a flush).
    pub(super) fn handle_io_error(
        &mut self,
        side: Side,
        error: IoErrorKind,
        offset: u64,
        length: u64,
    ) {
        let (policy, operation) = match side {
            Side::Source => (self.config.on_source_error, Operation::Read),
            Side::Target => (self.config.on_target_error, Operation::Write),
        };
        let action = policy_action(policy, error);
        self.emit(Event::Error {
            operation,
            action,
            offset,
            length,
            error,
        });
        if matches!(self.ending, Ending::Abort(_)) {
            return;
        }
        if let GuestHold::Held { failed } = &mut self.hold {
            // The final pass failed: stop copying, drain, un-quiesce, try again later.
            *failed = true;
        }
        match action {
            ErrorAction::Report => self.fail(error),
            ErrorAction::Ignore => self.backoff.failed(self.now),
            ErrorAction::Stop => self.user_paused = true,
        }
    }

    /// Whether retries wait now (after `ignore`d errors); if so, the timer is brought
    /// forward to the end of the wait, so the driver calls back then.
    pub(super) fn backing_off(&mut self) -> bool {
        let Some(until) = self.backoff.waiting_until(self.now) else {
            return false;
        };
        self.timer = Some(self.timer.map_or(until, |t| t.min(until)));
        true
    }

    /// Fails the job with `error` (the first failure wins).
    pub(super) fn fail(&mut self, error: IoErrorKind) {
        if matches!(self.ending, Ending::Abort(_)) {
            return;
        }
        self.error.get_or_insert(error);
        self.begin_abort(AbortReason::Failed(error));
    }
}
