//! Sync modes and range declarations (DESIGN §7 "Fine points").
//!
//! At `start()`, `full` and `top` mark the whole disk dirty and then apply the declarations
//! made so far, in order; `none` starts clean. Guest writes are tracked from the job's
//! creation, so dirty tracking is live before any scan (QEMU-FACTS §3.5, bug #3273).
//!
//! Declaring never loses a guest write: a declaration only cleans whole chunks inside its
//! range that the guest has not written since the job was made (and are not being copied).
//! - `zero` (the source reads zero there and the target reads zero too): `full` and `top`
//!   skip it.
//! - `unallocated` (not in the source's top layer): `top` skips it; `full` copies it.
//! - `allocated`: `full` and `top` copy it (marks it dirty again, rounded out).
//! - `none` ignores declarations.

use super::mirror::MirrorJob;
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

    /// Marks the sync mode's initial selection dirty (called once, by `start`).
    pub(super) fn populate_initial_dirt(&mut self) {
        if self.config.sync == SyncMode::None || self.config.length == 0 {
            return;
        }
        self.mark_dirty(0, self.config.length);
        for (offset, length, state) in std::mem::take(&mut self.early_declarations) {
            self.apply_declaration(offset, length, state);
        }
    }

    fn apply_declaration(&mut self, offset: u64, length: u64, state: RangeState) {
        let skip = match (self.config.sync, state) {
            (SyncMode::None, _) => return,
            (_, RangeState::Allocated) => {
                self.mark_dirty(offset, length);
                return;
            }
            (_, RangeState::Zero) => true,
            (SyncMode::Top, RangeState::Unallocated) => true,
            _ => false,
        };
        if skip {
            self.clean_untouched(offset, length);
        }
    }

    /// Cleans the whole chunks inside `[offset, offset+length)` that the guest never wrote.
    /// Chunks being copied are clean already, and a guest write re-dirtying one marks it
    /// touched, so no chunk an op owns is cleaned here.
    fn clean_untouched(&mut self, offset: u64, length: u64) {
        let granularity = self.config.granularity;
        let start = offset.div_ceil(granularity) * granularity;
        let end = if offset + length == self.config.length {
            offset + length
        } else {
            (offset + length) / granularity * granularity
        };
        let touched = self
            .guest_touched
            .as_ref()
            .expect("full and top keep the guest-touched map");
        let mut position = start;
        while position < end {
            let Some(dirty) = self.bitmap.next_dirty(position, end - position) else {
                break;
            };
            let stop = touched.next_dirty(dirty, end - dirty).unwrap_or(end);
            if stop == dirty {
                position = touched.next_zero(dirty, end - dirty).unwrap_or(end);
                continue;
            }
            self.bitmap
                .reset(dirty, stop - dirty)
                .expect("chunk-aligned, or a run to the disk end");
            position = stop;
        }
    }
}
