//! Sync modes and range declarations (the choices are recorded in `docs/mirror-job.md`,
//! "Sync modes and declarations").
//!
//! At `start()`, `full` and `top` mark the whole disk dirty and then apply the declarations
//! made so far, in order; `none` starts clean. Guest writes are tracked from the job's
//! creation, so dirty tracking is live before any scan: a guest write that lands while the
//! driver is still probing the source (and declaring ranges) is never missed.
//!
//! Declaring never loses a guest write: a declaration only cleans whole chunks inside its
//! range whose dirt is still the initial selection's: not written by the guest since the
//! job was made, and not re-dirtied by a failed copy (the target may hold anything there).
//! - `zero` (the source reads zero there and the target reads zero too): `full` and `top`
//!   skip it.
//! - `unallocated` (not in the source's top layer): `top` skips it; `full` copies it.
//! - `allocated`: `full` and `top` copy it (the default). Before `start()` it re-selects a
//!   range an earlier declaration removed; after `start()` it changes nothing (the range was
//!   selected at start unless declared otherwise, and guest writes since are tracked).
//! - `none` ignores declarations.

use super::mirror::{Ending, GuestHold, MirrorJob};
use super::*;

impl MirrorJob {
    /// Declares what the driver knows about a source range, before or after `start()`.
    /// Errors: [`JobError::OutOfRange`], [`JobError::ZeroLength`]. Declarations after the
    /// job ended change nothing.
    pub fn declare(&mut self, offset: u64, length: u64, state: RangeState) -> Result<(), JobError> {
        self.check_range(offset, length)?;
        match self.status {
            JobStatus::Created => self.early_declarations.push((offset, length, state)),
            JobStatus::Running | JobStatus::Paused | JobStatus::Ready | JobStatus::Standby => {
                self.apply_declaration(offset, length, state);
                self.pump();
            }
            _ => {}
        }
        Ok(())
    }

    /// Reports that the target was found to differ from the source in `[offset,
    /// offset+length)` (a verify read both while neither changed): its chunks are marked
    /// dirty, so the job copies them again, as if the guest had written there (a switch-over
    /// already asked for copies them before it pivots). Returns whether the job took it:
    /// only while it still copies (running, paused, ready, standby; not aborting, and not
    /// once the switch-over's pivot or the final un-quiesce is out). Errors:
    /// [`JobError::OutOfRange`], [`JobError::ZeroLength`].
    pub fn handle_target_mismatch(&mut self, offset: u64, length: u64) -> Result<bool, JobError> {
        self.check_range(offset, length)?;
        self.record_guest_touch(offset, length);
        if !matches!(self.status, JobStatus::Running | JobStatus::Paused | JobStatus::Ready | JobStatus::Standby)
            || matches!(self.ending, Ending::Abort(_))
            // Past the last look at the bitmap: the switch (or the end without one) is
            // under way and copies nothing more.
            || matches!(self.hold, GuestHold::Pivoting(_) | GuestHold::Pivoted | GuestHold::Unquiescing(_))
        {
            return Ok(false);
        }
        self.mark_dirty(offset, length);
        self.pump();
        Ok(true)
    }

    /// Marks the sync mode's initial selection dirty (called once, by `start`).
    pub(super) fn populate_initial_dirt(&mut self) {
        if self.config.sync == SyncMode::None || self.config.length == 0 {
            return;
        }
        self.select(0, self.config.length);
        for (offset, length, state) in std::mem::take(&mut self.early_declarations) {
            self.apply_declaration(offset, length, state);
        }
    }

    fn apply_declaration(&mut self, offset: u64, length: u64, state: RangeState) {
        let skip = match (self.config.sync, state) {
            (SyncMode::None, _) => return,
            (_, RangeState::Allocated) => {
                if self.status == JobStatus::Created {
                    self.select(offset, length);
                }
                return;
            }
            (_, RangeState::Zero) => true,
            (SyncMode::Top, RangeState::Unallocated) => true,
            _ => false,
        };
        if skip {
            self.clean_unprotected(offset, length);
        }
    }

    /// Marks a range dirty as part of the initial selection (declarations may clean it).
    fn select(&mut self, offset: u64, length: u64) {
        self.bitmap
            .set(offset, length)
            .expect("declared ranges are checked against the disk");
    }

    /// Cleans the whole chunks inside `[offset, offset+length)` that the guest never wrote.
    /// Chunks being copied are clean already, and a guest write or failure re-dirtying one
    /// protects it, so no chunk an op owns or the job has written is cleaned here.
    fn clean_unprotected(&mut self, offset: u64, length: u64) {
        let granularity = self.config.granularity;
        let start = offset.div_ceil(granularity) * granularity;
        let end = if offset + length == self.config.length {
            offset + length
        } else {
            (offset + length) / granularity * granularity
        };
        if self.protect_everything {
            return;
        }
        let mut position = start;
        while position < end {
            let Some(dirty) = self.bitmap.next_dirty(position, end - position) else {
                break;
            };
            let protected = self.protected.as_ref();
            let stop = protected
                .and_then(|p| p.next_dirty(dirty, end - dirty))
                .unwrap_or(end);
            if stop == dirty {
                position = protected
                    .and_then(|p| p.next_zero(dirty, end - dirty))
                    .unwrap_or(end);
                continue;
            }
            self.bitmap
                .reset(dirty, stop - dirty)
                .expect("chunk-aligned, or a run to the disk end");
            position = stop;
        }
    }
}
