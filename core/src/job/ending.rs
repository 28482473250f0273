//! Phases after the bulk copy: READY, pause settling, the final switch, abort, conclusion.
//!
//! - READY (see `docs/mirror-job.md`, "READY, pause and the end"): when the bitmap is empty
//!   and no background copy is in flight, flush the target; if the bitmap is still empty
//!   when the flush succeeds, the job becomes `ready` and emits `BLOCK_JOB_READY` (exactly
//!   once; `ready` is sticky).
//!   Write-blocking guest writes in flight do not hold READY back.
//! - Pause: no new ops; the status becomes paused/standby once no job op is in flight
//!   (guest writes keep flowing). A held guest is un-quiesced first.
//! - Graceful end (`complete()`, or soft cancel in ready): quiesce → copy what is dirty →
//!   once nothing is in flight, recheck: an error in this pass means un-quiesce and go on
//!   (the next quiesce waits for the next convergence point); an empty bitmap means flush →
//!   pivot (complete; the pivot hands the guest to the target, so no un-quiesce follows) or
//!   un-quiesce (cancel) → `waiting` → `pending` → `BLOCK_JOB_COMPLETED` → `concluded`.
//!   The job always ends with the guest un-quiesced or pivoted.
//! - Abort (force cancel, cancel before ready, `report` error, failed quiesce/unquiesce/
//!   pivot): issue nothing new, wait for every op (the driver completes all it polled),
//!   un-quiesce if held, then `aborting` → `BLOCK_JOB_CANCELLED` or `BLOCK_JOB_COMPLETED`
//!   with the error → `concluded`.

use super::mirror::{AbortReason, Ending, GuestHold, MirrorJob};
use super::ops::{AfterUnquiesce, FlushPurpose, OpKind};
use super::policy::Side;
use super::*;

impl MirrorJob {
    /// Moves the phase machine forward as far as it can without new input.
    pub(super) fn advance_phase(&mut self) {
        if !matches!(
            self.status,
            JobStatus::Running | JobStatus::Paused | JobStatus::Ready | JobStatus::Standby
        ) {
            return;
        }
        if let Ending::Abort(reason) = self.ending {
            if !self.ops.is_empty() {
                return;
            }
            if matches!(self.hold, GuestHold::Held { .. }) {
                self.issue_unquiesce(AfterUnquiesce::Abort);
                return;
            }
            self.conclude_abort(reason);
            return;
        }
        if self.user_paused {
            self.settle_pause();
            return;
        }
        match self.status {
            JobStatus::Running
                if self.ready_flush.is_none() && self.bitmap.is_empty() && self.copy_ops == 0 =>
            {
                if self.backing_off() {
                    // The last READY flush failed under `ignore`: flush again after the wait.
                    return;
                }
                if self.config.length == 0 {
                    self.become_ready();
                } else {
                    let op =
                        self.issue_simple(OpKind::Flush(FlushPurpose::Ready), ActionKind::Flush);
                    self.ready_flush = Some(op);
                }
            }
            JobStatus::Ready => self.advance_graceful_end(),
            _ => {}
        }
    }

    /// While a pause is requested: once no job op is in flight, un-quiesce a held guest,
    /// then flip the status to paused/standby.
    fn settle_pause(&mut self) {
        if self.ops.job_ops() != 0 {
            return;
        }
        match self.hold {
            GuestHold::Held { .. } => {
                self.issue_unquiesce(AfterUnquiesce::Continue { retry_now: true })
            }
            GuestHold::Free => match self.status {
                JobStatus::Running => self.set_status(JobStatus::Paused),
                JobStatus::Ready => self.set_status(JobStatus::Standby),
                _ => {}
            },
            _ => unreachable!("quiesce, flush, pivot and unquiesce are job ops, and none is live"),
        }
    }

    fn advance_graceful_end(&mut self) {
        let Ending::Graceful { .. } = self.ending else {
            return;
        };
        match self.hold {
            GuestHold::Free => {
                if self.bitmap.is_empty() && self.copy_ops == 0 {
                    // The convergence point: a good moment to (re)try the switch.
                    self.quiesce_allowed = true;
                }
                if self.quiesce_allowed && !self.backing_off() {
                    self.quiesce_allowed = false;
                    let op = self.issue_simple(OpKind::Quiesce, ActionKind::Quiesce);
                    self.hold = GuestHold::Quiescing(op);
                }
            }
            GuestHold::Held { failed } if self.ops.is_empty() => {
                if failed {
                    self.issue_unquiesce(AfterUnquiesce::Continue { retry_now: false });
                } else if self.bitmap.is_empty() {
                    let op =
                        self.issue_simple(OpKind::Flush(FlushPurpose::Final), ActionKind::Flush);
                    self.hold = GuestHold::FinalFlush(op);
                }
            }
            _ => {}
        }
    }

    /// Queues an op with no range (flush, quiesce, unquiesce, pivot).
    fn issue_simple(&mut self, kind: OpKind, action: ActionKind) -> OpId {
        let op = self.ops.insert(kind, 0, 0);
        self.emit_action(action, op, 0, 0);
        op
    }

    fn issue_unquiesce(&mut self, then: AfterUnquiesce) {
        let op = self.issue_simple(OpKind::Unquiesce(then), ActionKind::Unquiesce);
        self.hold = GuestHold::Unquiescing(op);
    }

    fn become_ready(&mut self) {
        self.set_status(JobStatus::Ready);
        self.ready_reached = true;
        let progress = self.progress();
        self.emit(Event::Ready {
            current: progress.current,
            total: progress.total,
        });
    }

    pub(super) fn complete_flush(&mut self, op: OpId, purpose: FlushPurpose, result: OpResult) {
        self.ops.remove(op);
        match purpose {
            FlushPurpose::Ready => {
                self.ready_flush = None;
                match result {
                    OpResult::Failed(error) => self.handle_io_error(Side::Target, error, 0, 0),
                    _ => {
                        let converged = self.bitmap.is_empty() && self.copy_ops == 0;
                        if converged
                            && self.status == JobStatus::Running
                            && self.ending == Ending::None
                        {
                            self.become_ready();
                        }
                    }
                }
            }
            FlushPurpose::Final => {
                self.hold = GuestHold::Held { failed: false };
                match result {
                    OpResult::Failed(error) => {
                        self.hold = GuestHold::Held { failed: true };
                        self.handle_io_error(Side::Target, error, 0, 0);
                    }
                    _ if matches!(self.ending, Ending::Abort(_)) => {}
                    _ if !self.bitmap.is_empty() || !self.ops.is_empty() => {
                        // Something got dirty under quiesce: go on, switch later.
                        self.hold = GuestHold::Held { failed: true };
                    }
                    _ => match self.ending {
                        Ending::Graceful { pivot: true } => {
                            let op = self.issue_simple(OpKind::Pivot, ActionKind::Pivot);
                            self.hold = GuestHold::Pivoting(op);
                        }
                        _ => self.issue_unquiesce(AfterUnquiesce::Finish),
                    },
                }
            }
        }
    }

    pub(super) fn complete_quiesce(&mut self, op: OpId, result: OpResult) {
        self.ops.remove(op);
        match result {
            OpResult::Failed(error) => {
                self.hold = GuestHold::Free;
                self.fail(error);
            }
            _ => self.hold = GuestHold::Held { failed: false },
        }
    }

    pub(super) fn complete_unquiesce(&mut self, op: OpId, then: AfterUnquiesce, result: OpResult) {
        self.ops.remove(op);
        self.hold = GuestHold::Free;
        if let OpResult::Failed(error) = result {
            self.fail(error);
            return;
        }
        match then {
            AfterUnquiesce::Continue { retry_now } => self.quiesce_allowed = retry_now,
            AfterUnquiesce::Finish => {
                if !matches!(self.ending, Ending::Abort(_)) {
                    self.finish(false);
                }
            }
            AfterUnquiesce::Abort => {}
        }
    }

    pub(super) fn complete_pivot(&mut self, op: OpId, result: OpResult) {
        self.ops.remove(op);
        match result {
            OpResult::Failed(error) => {
                // The guest is still on the source and held: the abort un-quiesces it.
                self.hold = GuestHold::Held { failed: true };
                self.fail(error);
            }
            _ => {
                self.hold = GuestHold::Pivoted;
                self.finish(true);
            }
        }
    }

    /// Starts winding down: no new ops; a paused job resumes so it can finish.
    pub(super) fn begin_abort(&mut self, reason: AbortReason) {
        self.ending = Ending::Abort(reason);
        self.user_paused = false;
        match self.status {
            JobStatus::Paused => self.set_status(JobStatus::Running),
            JobStatus::Standby => self.set_status(JobStatus::Ready),
            _ => {}
        }
    }

    /// Success: ready → waiting → pending → `BLOCK_JOB_COMPLETED` → concluded.
    fn finish(&mut self, pivoted: bool) {
        if self.status == JobStatus::Standby {
            self.set_status(JobStatus::Ready);
        }
        self.set_status(JobStatus::Waiting);
        self.set_status(JobStatus::Pending);
        let progress = self.progress();
        self.emit(Event::Completed {
            current: progress.current,
            total: progress.total,
            error: None,
            pivoted,
        });
        self.set_status(JobStatus::Concluded);
    }

    /// Abort: → aborting → `BLOCK_JOB_CANCELLED` or `BLOCK_JOB_COMPLETED` with the error →
    /// concluded.
    pub(super) fn conclude_abort(&mut self, reason: AbortReason) {
        self.set_status(JobStatus::Aborting);
        let progress = self.progress();
        self.emit(match reason {
            AbortReason::Cancelled => Event::Cancelled {
                current: progress.current,
                total: progress.total,
            },
            AbortReason::Failed(error) => Event::Completed {
                current: progress.current,
                total: progress.total,
                error: Some(error),
                pivoted: false,
            },
        });
        self.set_status(JobStatus::Concluded);
    }
}
