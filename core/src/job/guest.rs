//! Guest writes: dirty tracking and write-blocking (active) mirroring.
//!
//! The driver reports a guest write *after* it completed on the source (DESIGN §3.1).
//! In background mode, and whenever the job is not mirroring actively, the range is marked
//! dirty. In write-blocking mode the job answers [`GuestWrite::Mirror`]: the write becomes
//! an op that waits, owning nothing, until no op owns any of its chunks and no earlier
//! waiting write overlaps it (FIFO: target writes to a chunk land in guest order). It then
//! owns its chunks and emits a `guest_write` action for the guest's whole range. The dirty
//! bits of the chunks it covers fully are cleared when it is reported (a partially covered
//! dirty chunk stays dirty for the background copy, QEMU-FACTS §9.7); its bytes count as in
//! flight from then on.

use super::mirror::{Ending, GuestHold, MirrorJob};
use super::ops::{Op, OpKind, Waiter};
use super::policy::Side;
use super::*;

/// What the driver does with a guest write it reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestWrite {
    /// Acknowledge the guest now.
    Acknowledge,
    /// Keep the guest's data: a `guest_write` action with this op id will follow; acknowledge
    /// the guest once that action completes.
    Mirror(OpId),
}

impl MirrorJob {
    /// Reports that the guest wrote `[offset, offset+length)` of the source (the write has
    /// completed there). Returns whether to acknowledge the guest now or after a
    /// `guest_write` action for the returned op completes.
    ///
    /// Writes before `start()` are tracked. Errors: [`JobError::OutOfRange`],
    /// [`JobError::ZeroLength`]; neither changes anything.
    pub fn handle_guest_write(&mut self, offset: u64, length: u64) -> Result<GuestWrite, JobError> {
        self.check_range(offset, length)?;
        if matches!(
            self.status,
            JobStatus::Concluded | JobStatus::Null | JobStatus::Aborting
        ) {
            return Ok(GuestWrite::Acknowledge);
        }
        let answer = if self.mirrors_actively() {
            let (first_chunk, end_chunk) = self.chunks_of(offset, length);
            let op = self
                .ops
                .insert(OpKind::Guest { waiting: true }, offset, length);
            self.ops.push_waiter(Waiter {
                op,
                first_chunk,
                end_chunk,
            });
            self.protect(offset, length);
            self.clean_fully_covered(offset, length);
            self.guest_bytes_in_flight += length;
            GuestWrite::Mirror(op)
        } else {
            let before = self.bitmap.count();
            self.mark_dirty(offset, length);
            let newly_dirty = self.bitmap.count() - before;
            self.dirty_rate.add(self.now, newly_dirty);
            GuestWrite::Acknowledge
        };
        self.pump();
        Ok(answer)
    }

    /// Whether a guest write now is mirrored to the target before the guest is acknowledged.
    fn mirrors_actively(&self) -> bool {
        self.config.copy_mode == CopyMode::WriteBlocking
            && matches!(
                self.status,
                JobStatus::Running | JobStatus::Paused | JobStatus::Ready | JobStatus::Standby
            )
            && matches!(self.ending, Ending::None | Ending::Graceful { .. })
            && self.hold != GuestHold::Pivoted
    }

    /// Starts every waiting guest write whose chunks are free and that no earlier waiting
    /// write overlaps.
    pub(super) fn start_waiting_guest_writes(&mut self) {
        if !std::mem::take(&mut self.ops.waiters_may_start) {
            return;
        }
        let mut index = 0;
        while index < self.ops.waiting.len() {
            let waiter = self.ops.waiting[index];
            let overlaps_earlier = self
                .ops
                .waiting
                .iter()
                .take(index)
                .any(|w| w.first_chunk < waiter.end_chunk && waiter.first_chunk < w.end_chunk);
            if overlaps_earlier
                || self.ops.reservation_blocks(&waiter)
                || self
                    .ops
                    .first_owned_in(waiter.first_chunk, waiter.end_chunk)
                    .is_some()
            {
                index += 1;
                continue;
            }
            self.ops.waiting.remove(index);
            self.issue_guest_write(waiter);
        }
    }

    fn issue_guest_write(&mut self, waiter: Waiter) {
        let entry = self
            .ops
            .get_mut(waiter.op)
            .expect("waiting guest writes are live ops");
        entry.kind = OpKind::Guest { waiting: false };
        let (offset, length) = (entry.offset, entry.length);
        self.ops
            .claim(waiter.op, waiter.first_chunk, waiter.end_chunk);
        self.emit_action(ActionKind::GuestWrite, waiter.op, offset, length);
    }

    /// Cleans the chunks a mirrored guest write covers fully (the disk's partial last chunk
    /// counts as fully covered when the write reaches the disk end). This happens when the
    /// write is *reported*, not when it starts: the source holds exactly its data there now,
    /// and any later write re-dirties the chunk, so a write that waits can never clean the
    /// mark of a newer one (e.g. after a switch to background mode).
    fn clean_fully_covered(&mut self, offset: u64, length: u64) {
        let granularity = self.config.granularity;
        let full_start = offset.div_ceil(granularity) * granularity;
        let end = offset + length;
        let full_end = if end == self.config.length {
            end
        } else {
            end / granularity * granularity
        };
        if full_end > full_start {
            self.bitmap
                .reset(full_start, full_end - full_start)
                .expect("whole chunks, or a run to the disk end");
        }
    }

    /// A write-blocking guest write completed on the target.
    pub(super) fn complete_guest_write(&mut self, op: OpId, entry: Op, result: OpResult) {
        let (first, _) = self.chunks_of(entry.offset, entry.length);
        self.ops.release(first);
        self.ops.remove(op);
        self.guest_bytes_in_flight -= entry.length;
        match result {
            OpResult::Ok | OpResult::OkZeroes => {
                self.current += entry.length;
                self.copy_rate.add(self.now, entry.length);
            }
            OpResult::Failed(error) => {
                self.mark_dirty(entry.offset, entry.length);
                self.handle_io_error(Side::Target, error, entry.offset, entry.length);
            }
        }
    }
}
