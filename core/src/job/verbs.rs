//! Commands from the user: start, pause, resume, set_speed, change (the copy mode),
//! complete, cancel and dismiss (QEMU's job verbs), each checked against
//! [`VERB_TABLE`](super::VERB_TABLE). A refused verb returns a typed error naming the status
//! and the verb, and changes nothing.

use super::mirror::{AbortReason, Ending, GuestHold, MirrorJob};
use super::time::Nanos;
use super::*;

impl MirrorJob {
    fn check_verb(&self, verb: Verb) -> Result<(), JobError> {
        if verb.allowed_in(self.status) {
            Ok(())
        } else {
            Err(JobError::VerbNotAllowed {
                verb,
                status: self.status,
            })
        }
    }

    /// Starts the job at `now`: marks the sync mode's selection dirty and begins copying.
    /// A job paused before the start becomes paused at once.
    pub fn start(&mut self, now: Nanos) -> Result<(), JobError> {
        self.check_verb(Verb::Start)?;
        self.advance_clock(now);
        self.dirty_rate.start(now);
        self.copy_rate.start(now);
        self.populate_initial_dirt();
        self.set_status(JobStatus::Running);
        self.pump();
        Ok(())
    }

    /// Requests a pause: no new ops; the status becomes `paused` (or `standby` if ready)
    /// once in-flight job ops finish. Refused if a pause is already requested, or the job
    /// is winding down.
    pub fn pause(&mut self) -> Result<(), JobError> {
        self.check_verb(Verb::Pause)?;
        if self.user_paused || matches!(self.ending, Ending::Abort(_)) {
            return Err(JobError::VerbNotAllowed {
                verb: Verb::Pause,
                status: self.status,
            });
        }
        self.user_paused = true;
        self.pump();
        Ok(())
    }

    /// Resumes after a pause or a `stop` error (the failed range is retried).
    pub fn resume(&mut self) -> Result<(), JobError> {
        self.check_verb(Verb::Resume)?;
        if !self.user_paused {
            return Err(JobError::VerbNotAllowed {
                verb: Verb::Resume,
                status: self.status,
            });
        }
        self.user_paused = false;
        match self.status {
            JobStatus::Paused => self.set_status(JobStatus::Running),
            JobStatus::Standby => self.set_status(JobStatus::Ready),
            _ => {}
        }
        self.pump();
        Ok(())
    }

    /// Sets the speed limit in bytes/s (0 = unlimited); takes effect at once.
    pub fn set_speed(&mut self, bytes_per_sec: u64) -> Result<(), JobError> {
        self.check_verb(Verb::SetSpeed)?;
        self.limiter.set_speed(bytes_per_sec);
        self.config.speed_bytes_per_sec = bytes_per_sec;
        self.pump();
        Ok(())
    }

    /// Switches the copy mode while the job runs (like QEMU's `block-job-change`, in both
    /// directions). Guest writes already answered keep their answer.
    pub fn set_copy_mode(&mut self, mode: CopyMode) -> Result<(), JobError> {
        self.check_verb(Verb::Change)?;
        self.config.copy_mode = mode;
        self.pump();
        Ok(())
    }

    /// Starts the final switch (only when ready or standby): quiesce, copy what is dirty,
    /// flush, pivot. A second call is harmless; after a cancel request (or once a failure
    /// is winding the job down) it is refused with [`JobError::CancelRequested`].
    pub fn complete(&mut self) -> Result<(), JobError> {
        self.check_verb(Verb::Complete)?;
        if self.cancel_requested || matches!(self.ending, Ending::Abort(_)) {
            return Err(JobError::CancelRequested);
        }
        if self.ending == Ending::None {
            self.ending = Ending::Graceful { pivot: true };
            self.quiesce_allowed = true;
        }
        self.pump();
        Ok(())
    }

    /// Cancels. Before ready, or with `force`: stop issuing, drain, `BLOCK_JOB_CANCELLED`.
    /// A soft cancel in ready (or standby, which resumes) drains like `complete` without the
    /// pivot and ends with `BLOCK_JOB_COMPLETED`. Once the pivot is out, a cancel is too
    /// late and is ignored; a second cancel only upgrades soft to force.
    pub fn cancel(&mut self, force: bool) -> Result<(), JobError> {
        self.check_verb(Verb::Cancel)?;
        self.cancel_requested = true;
        if matches!(self.hold, GuestHold::Pivoting(_) | GuestHold::Pivoted)
            || matches!(self.ending, Ending::Abort(_))
        {
            return Ok(());
        }
        if self.status == JobStatus::Created {
            self.begin_abort(AbortReason::Cancelled);
            self.conclude_abort(AbortReason::Cancelled);
            return Ok(());
        }
        if force || !self.ready_reached {
            self.begin_abort(AbortReason::Cancelled);
        } else {
            if self.ending == Ending::None {
                self.quiesce_allowed = true;
            }
            self.ending = Ending::Graceful { pivot: false };
            if self.user_paused {
                self.user_paused = false;
                if self.status == JobStatus::Standby {
                    self.set_status(JobStatus::Ready);
                }
            }
        }
        self.pump();
        Ok(())
    }

    /// Removes a concluded job: status `null`.
    pub fn dismiss(&mut self) -> Result<(), JobError> {
        self.check_verb(Verb::Dismiss)?;
        self.set_status(JobStatus::Null);
        Ok(())
    }
}
