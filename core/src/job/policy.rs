//! Error policies (DESIGN §1, QEMU-FACTS §3.10), one per side.
//!
//! Every failed read, write, guest write or flush emits `BLOCK_JOB_ERROR` with the action
//! its policy chose; the failed range was already re-marked dirty by the caller.
//! `report` fails the job (it drains and ends with `BLOCK_JOB_COMPLETED` carrying the
//! error), `ignore` retries later, `stop` pauses like a user pause (`resume` retries),
//! `enospc` is `stop` for "no space" and `report` otherwise. Once the job is winding down
//! (aborting), errors are still reported but change nothing more. `ready` is sticky.

use super::mirror::{AbortReason, Ending, GuestHold, MirrorJob};
use super::*;

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
            ErrorAction::Ignore => {}
            ErrorAction::Stop => self.user_paused = true,
        }
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
