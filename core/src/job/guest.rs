//! Guest writes: dirty tracking and write-blocking (active) mirroring.
//!
//! Two ways to report a guest write:
//!
//! - **Two steps** (drivers whose guest writes run concurrently, like the file engine):
//!   [`handle_guest_write_start`](MirrorJob::handle_guest_write_start) *before* the write
//!   touches the source, then [`handle_guest_write_landed`](MirrorJob::handle_guest_write_landed)
//!   once it has. While the job mirrors actively (write-blocking), a started write owns its
//!   chunks from before its source write until its target write completes, so two
//!   overlapping writes reach the source and the target in the same order (QEMU's active
//!   write serialisation). A write that cannot own its chunks yet waits in the FIFO, owning
//!   nothing, and is let through with an [`ActionKind::Admit`] action. Outside active
//!   mirroring a started write owns nothing: its landing only marks its range dirty, an
//!   actively mirrored write that overlaps it waits until it has landed, and an owned write
//!   already landing under it (the mode changed in between) is not mirrored but dirtied.
//! - **One step** ([`handle_guest_write`](MirrorJob::handle_guest_write), for drivers that
//!   write the source and report in one go, never with two overlapping writes between their
//!   landing and their report: simulators, single-threaded drivers). The write is reported
//!   after it landed (so a write racing a copy re-dirties its chunk: no write is lost):
//!   outside active mirroring its range is marked dirty; in
//!   write-blocking mode it becomes an op that waits, owning nothing, until no op owns any of
//!   its chunks and no earlier waiting write overlaps it, then owns them and writes the target.
//!
//! Either way the dirty bits of the chunks a mirrored write covers fully are cleared when it
//! has landed (a partially covered dirty chunk stays dirty for the background copy,
//! as QEMU's active mirror clears only the chunks a write covers whole), and its bytes
//! count as in flight from then until its target write ends.

use super::mirror::{Ending, GuestHold, MirrorJob};
use super::ops::{GuestStage, Op, OpKind, Waiter};
use super::policy::Side;
use super::*;

/// What the driver does with a guest write that has landed on the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestWrite {
    /// Acknowledge the guest now.
    Acknowledge,
    /// Keep the guest's data: a `guest_write` action with this op id will follow; acknowledge
    /// the guest once that action completes.
    Mirror(OpId),
}

/// What the driver does with a guest write it announced with
/// [`handle_guest_write_start`](MirrorJob::handle_guest_write_start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestWriteStart {
    /// Write the source now, then report it with
    /// [`handle_guest_write_landed`](MirrorJob::handle_guest_write_landed) for this op.
    Proceed(OpId),
    /// Do not touch the source yet: an [`ActionKind::Admit`] action for this op follows once
    /// its chunks are free; then write the source and report it as for `Proceed`.
    Wait(OpId),
    /// The job has ended or is aborting and tracks nothing more: write, acknowledge,
    /// report nothing.
    Untracked,
}

impl MirrorJob {
    /// Announces a guest write of `[offset, offset+length)` *before* it touches the source
    /// (see the [module docs](self) for the two-step protocol). Writes before `start()` are
    /// tracked. Errors: [`JobError::OutOfRange`], [`JobError::ZeroLength`]; neither changes
    /// anything.
    pub fn handle_guest_write_start(
        &mut self,
        offset: u64,
        length: u64,
    ) -> Result<GuestWriteStart, JobError> {
        self.check_range(offset, length)?;
        // Before anything else: an untracked write still changes the source.
        self.record_guest_touch(offset, length);
        // An aborting job copies nothing more, and waits for every op: tracking new writes
        // as ops would let a busy guest keep it from ever concluding.
        if self.tracks_no_guest_writes() || matches!(self.ending, Ending::Abort(_)) {
            return Ok(GuestWriteStart::Untracked);
        }
        if !self.mirrors_actively() {
            let op = self.ops.insert(
                OpKind::Guest(GuestStage::Landing {
                    owned: false,
                    overlapped: false,
                }),
                offset,
                length,
            );
            self.mark_awaiting(op);
            self.overlap_owned_landings(offset, length);
            return Ok(GuestWriteStart::Proceed(op));
        }
        let (first_chunk, end_chunk) = self.chunks_of(offset, length);
        let op = self.ops.insert(
            OpKind::Guest(GuestStage::Queued { landed: false }),
            offset,
            length,
        );
        let waiter = Waiter {
            op,
            first_chunk,
            end_chunk,
        };
        // Counted in flight from now on, as a one-step mirrored write is from its report.
        self.guest_bytes_in_flight += length;
        let answer = if self.guest_write_blocked(&waiter, self.ops.waiting.len()) {
            self.ops.push_waiter(waiter);
            GuestWriteStart::Wait(op)
        } else {
            self.admit(waiter, false);
            self.mark_awaiting(op);
            GuestWriteStart::Proceed(op)
        };
        self.pump();
        Ok(answer)
    }

    /// Reports that the source write of a guest write announced with
    /// [`handle_guest_write_start`](Self::handle_guest_write_start) has finished, with its
    /// result (`Ok` or `Failed`). This completes the op's `admit` action, if it had one.
    /// Returns whether to acknowledge the guest now or after a `guest_write` action for the
    /// op completes. A failed source write only marks its range dirty (the source may hold
    /// part of it); the guest gets the error from its driver, the job no event.
    ///
    /// Errors: [`JobError::UnknownOp`] if `op` is no started guest write that may land (never
    /// announced, already landed, or still waiting for its `admit` action to be polled),
    /// [`JobError::BadResult`] for `OkZeroes`. Neither changes anything.
    pub fn handle_guest_write_landed(
        &mut self,
        op: OpId,
        result: OpResult,
    ) -> Result<GuestWrite, JobError> {
        let entry = *self
            .ops
            .get(op)
            .filter(|e| e.awaiting_completion)
            .filter(|e| matches!(e.kind, OpKind::Guest(GuestStage::Landing { .. })))
            .ok_or(JobError::UnknownOp(op))?;
        let OpKind::Guest(GuestStage::Landing { owned, overlapped }) = entry.kind else {
            unreachable!("filtered above")
        };
        if result == OpResult::OkZeroes {
            return Err(JobError::BadResult {
                op,
                kind: ActionKind::Admit.as_str(),
                result: "zeroes",
            });
        }
        let answer = if owned && !overlapped && result == OpResult::Ok && self.mirrors_actively()
        {
            self.ops.get_mut(op).expect("looked up above").kind =
                OpKind::Guest(GuestStage::Mirroring);
            self.mirror_landed(op, entry.offset, entry.length);
            GuestWrite::Mirror(op)
        } else {
            // Not mirrored (any more): the landing only dirties its range. An owned write
            // gives its chunks back; the writes it held back may go.
            if owned {
                let (first, _) = self.chunks_of(entry.offset, entry.length);
                self.ops.release(first);
                self.guest_bytes_in_flight -= entry.length;
            } else {
                self.ops.waiters_may_start = true;
            }
            self.ops.remove(op);
            self.dirty_by_guest(entry.offset, entry.length);
            GuestWrite::Acknowledge
        };
        self.pump();
        Ok(answer)
    }

    /// Reports that the guest wrote `[offset, offset+length)` of the source (the write has
    /// completed there), for drivers that never have two overlapping guest writes between
    /// landing and report (see the [module docs](self)). Returns whether to acknowledge the
    /// guest now or after a `guest_write` action for the returned op completes.
    ///
    /// Writes before `start()` are tracked. Errors: [`JobError::OutOfRange`],
    /// [`JobError::ZeroLength`]; neither changes anything.
    pub fn handle_guest_write(&mut self, offset: u64, length: u64) -> Result<GuestWrite, JobError> {
        self.check_range(offset, length)?;
        self.record_guest_touch(offset, length);
        if self.tracks_no_guest_writes() {
            return Ok(GuestWrite::Acknowledge);
        }
        let answer = if self.mirrors_actively() {
            let (first_chunk, end_chunk) = self.chunks_of(offset, length);
            let op = self.ops.insert(
                OpKind::Guest(GuestStage::Queued { landed: true }),
                offset,
                length,
            );
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
            self.dirty_by_guest(offset, length);
            GuestWrite::Acknowledge
        };
        self.pump();
        Ok(answer)
    }

    fn tracks_no_guest_writes(&self) -> bool {
        matches!(
            self.status,
            JobStatus::Concluded | JobStatus::Null | JobStatus::Aborting
        )
    }

    /// Marks a landed guest write's range dirty and counts it in the dirty rate.
    fn dirty_by_guest(&mut self, offset: u64, length: u64) {
        let before = self.bitmap.count();
        self.mark_dirty(offset, length);
        let newly_dirty = self.bitmap.count() - before;
        self.dirty_rate.add(self.now, newly_dirty);
    }

    /// A started write needs no polled action before it may land.
    fn mark_awaiting(&mut self, op: OpId) {
        self.ops
            .get_mut(op)
            .expect("just inserted")
            .awaiting_completion = true;
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

    /// Whether `waiter`, behind the first `earlier` waiting writes, must go on waiting: an
    /// earlier waiting write overlaps it, the copy's reservation holds it back, an op owns
    /// one of its chunks, or an unowned guest write still lands on one of them.
    fn guest_write_blocked(&self, waiter: &Waiter, earlier: usize) -> bool {
        let overlaps = |first: u64, end: u64| first < waiter.end_chunk && waiter.first_chunk < end;
        self.ops
            .waiting
            .iter()
            .take(earlier)
            .any(|w| overlaps(w.first_chunk, w.end_chunk))
            || self.ops.reservation_blocks(waiter)
            || self
                .ops
                .first_owned_in(waiter.first_chunk, waiter.end_chunk)
                .is_some()
            || (self.ops.unowned_landings() > 0
                && self.ops.iter().any(|(_, e)| {
                    matches!(e.kind, OpKind::Guest(GuestStage::Landing { owned: false, .. })) && {
                        let (first, end) = self.chunks_of(e.offset, e.length);
                        overlaps(first, end)
                    }
                }))
    }

    /// An unowned write starts over chunks an owned write is landing on: the two may land in
    /// either order, so the owned one must not clean those chunks when it lands.
    fn overlap_owned_landings(&mut self, offset: u64, length: u64) {
        let (first, end) = self.chunks_of(offset, length);
        let granularity = self.config.granularity;
        for e in self.ops.iter_mut() {
            if let OpKind::Guest(GuestStage::Landing {
                owned: true,
                overlapped,
            }) = &mut e.kind
            {
                let (e_first, e_end) = (
                    e.offset / granularity,
                    (e.offset + e.length).div_ceil(granularity),
                );
                if e_first < end && first < e_end {
                    *overlapped = true;
                }
            }
        }
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
            if self.guest_write_blocked(&waiter, index) {
                index += 1;
                continue;
            }
            self.ops.waiting.remove(index);
            self.admit(waiter, true);
        }
    }

    /// Gives a waiting (or new) guest write its chunks: a two-step write may now write the
    /// source (with an `admit` action when `announce`), a one-step write writes the target.
    fn admit(&mut self, waiter: Waiter, announce: bool) {
        let entry = self
            .ops
            .get_mut(waiter.op)
            .expect("waiting guest writes are live ops");
        let OpKind::Guest(GuestStage::Queued { landed }) = entry.kind else {
            unreachable!("only queued guest writes are admitted")
        };
        let (offset, length) = (entry.offset, entry.length);
        entry.kind = if landed {
            OpKind::Guest(GuestStage::Mirroring)
        } else {
            OpKind::Guest(GuestStage::Landing {
                owned: true,
                overlapped: false,
            })
        };
        self.ops
            .claim(waiter.op, waiter.first_chunk, waiter.end_chunk);
        if landed {
            self.emit_action(ActionKind::GuestWrite, waiter.op, offset, length);
        } else if announce {
            self.emit_action(ActionKind::Admit, waiter.op, offset, length);
        }
    }

    /// An owned two-step write landed and is mirrored (its bytes count in flight since its
    /// start): clean what it covers, ask for its target write.
    fn mirror_landed(&mut self, op: OpId, offset: u64, length: u64) {
        self.protect(offset, length);
        self.clean_fully_covered(offset, length);
        self.emit_action(ActionKind::GuestWrite, op, offset, length);
    }

    /// Cleans the chunks a mirrored guest write covers fully (the disk's partial last chunk
    /// counts as fully covered when the write reaches the disk end). This happens once the
    /// write has *landed*: the source holds exactly its data there now (no overlapping write
    /// can land in between: a two-step write owns its chunks and waits for unowned writes; a
    /// one-step driver lands and reports in one go), and any later write re-dirties the
    /// chunk, so a write that waits can never clean the mark of a newer one.
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
