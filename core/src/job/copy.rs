//! Background copying: picking dirty runs and moving them read → write → done.
//!
//! Protocol (as QEMU's `mirror_iteration`, which also clears dirty bits before it issues
//! the copy): runs are picked from a persistent cursor that
//! wraps to 0 at the end; a run is contiguous dirty chunks that no op owns and no waiting
//! guest write wants, at most `MirrorConfig::largest_copy_in_phase` bytes (`max_io`, or less in
//! write-blocking mode, under a speed limit or a small buffer budget) and within the free
//! buffer budget. Its dirty
//! bits are cleared *when the read is issued*, so a guest write that lands after that
//! re-dirties the chunk and is copied again: no write is lost. A failed read or write
//! re-dirties the run and goes to that side's error policy.

use super::mirror::{Ending, GuestHold, MirrorJob};
use super::ops::{CopyStage, Op, OpKind};
use super::policy::Side;
use super::*;

impl MirrorJob {
    /// Whether background copies may be issued now.
    fn copying_allowed(&self) -> bool {
        matches!(self.status, JobStatus::Running | JobStatus::Ready)
            && !self.user_paused
            && self.ready_flush.is_none()
            && matches!(self.ending, Ending::None | Ending::Graceful { .. })
            && matches!(
                self.hold,
                GuestHold::Free | GuestHold::Quiescing(_) | GuestHold::Held { failed: false }
            )
    }

    /// Keeps the reservation only while the copy can take it soon: write-blocking mode,
    /// copying allowed, not held back by the speed limit or an error back-off, the chunk
    /// still dirty. Otherwise
    /// the guest writes it holds back would wait for nothing (a paused job, a slow limit).
    pub(super) fn settle_reservation(&mut self) {
        let Some(reservation) = self.ops.reservation else {
            return;
        };
        let keep = self.config.copy_mode == CopyMode::WriteBlocking
            && self.copying_allowed()
            && self.limiter.blocked_until(self.now).is_none()
            && self.backoff.waiting_until(self.now).is_none()
            && self.bitmap.get(reservation.chunk << self.chunk_shift);
        if !keep {
            self.ops.drop_reservation();
        }
    }

    /// Issues as many reads as the limits allow.
    pub(super) fn issue_copies(&mut self) {
        if self.bitmap.is_empty() || !self.copying_allowed() || self.backing_off() {
            return;
        }
        while self.copy_ops < self.config.max_in_flight {
            if let Some(until) = self.limiter.blocked_until(self.now) {
                self.timer = Some(until);
                return;
            }
            let Some((first, end)) = self.pick_run() else {
                return;
            };
            self.issue_read(first, end);
        }
    }

    /// The next run `[first, end)` of chunks to copy, or `None`.
    fn pick_run(&mut self) -> Option<(u64, u64)> {
        let budget_chunks = (self.config.buf_size - self.copy_buffer_bytes) >> self.chunk_shift;
        let max_chunks = (self.config.largest_copy_in_phase(self.ready_reached) >> self.chunk_shift).min(budget_chunks);
        if max_chunks == 0 || self.bitmap.is_empty() {
            return None;
        }
        let start = self.cursor.min(self.config.length);
        let reserved = self
            .ops
            .reserved_chunk_free()
            .filter(|&chunk| self.bitmap.get(chunk << self.chunk_shift));
        let found = reserved.or_else(|| {
            self.find_free_dirty(start, self.config.length)
                .or_else(|| self.find_free_dirty(0, start))
        });
        let Some(first) = found else {
            self.reserve_a_busy_chunk(start);
            return None;
        };
        let limit = (first + max_chunks).min(self.chunk_count);
        let first_byte = first << self.chunk_shift;
        let limit_byte = (limit << self.chunk_shift).min(self.config.length);
        let dirty_end = self
            .bitmap
            .next_zero(first_byte, limit_byte - first_byte)
            .map_or(limit, |clean| clean >> self.chunk_shift);
        let end = self
            .ops
            .first_blocked_after(first, dirty_end)
            .unwrap_or(dirty_end);
        Some((first, end))
    }

    /// Every dirty chunk is owned or wanted by guest writes: in write-blocking mode, where
    /// new guest writes keep coming, reserve the first one from the cursor so it gets its turn.
    fn reserve_a_busy_chunk(&mut self, start: u64) {
        if self.config.copy_mode != CopyMode::WriteBlocking || self.ops.reservation.is_some() {
            return;
        }
        let length = self.config.length;
        let dirty = self
            .bitmap
            .next_dirty(start, length - start)
            .or_else(|| self.bitmap.next_dirty(0, start));
        if let Some(dirty) = dirty {
            self.ops.reserve(dirty >> self.chunk_shift);
        }
    }

    /// The first dirty chunk in bytes `[from, to)` that is neither owned nor wanted by a
    /// waiting guest write. Each skip jumps past one blocking op, so this is O(ops) at worst.
    fn find_free_dirty(&self, from: u64, to: u64) -> Option<u64> {
        let mut position = from;
        while position < to {
            let dirty = self.bitmap.next_dirty(position, to - position)?;
            let chunk = dirty >> self.chunk_shift;
            match self.ops.blocked_span_end(chunk) {
                None => return Some(chunk),
                Some(end_chunk) => position = end_chunk << self.chunk_shift,
            }
        }
        None
    }

    /// Clears the run's dirty bits, claims it and queues its read.
    fn issue_read(&mut self, first: u64, end: u64) {
        let offset = first << self.chunk_shift;
        let end_byte = (end << self.chunk_shift).min(self.config.length);
        let length = end_byte - offset;
        self.bitmap
            .reset(offset, length)
            .expect("runs are chunk-aligned or end at the disk end");
        let op = self
            .ops
            .insert(OpKind::Copy(CopyStage::Read), offset, length);
        self.ops.claim(op, first, end);
        if self
            .ops
            .reservation
            .is_some_and(|r| (first..end).contains(&r.chunk))
        {
            self.ops.drop_reservation();
        }
        self.copy_ops += 1;
        self.copy_buffer_bytes += (end - first) << self.chunk_shift;
        self.copy_bytes_in_flight += length;
        self.cursor = if end_byte >= self.config.length {
            0
        } else {
            end_byte
        };
        self.limiter.charge(self.now, length);
        self.emit_action(ActionKind::Read, op, offset, length);
    }

    /// A read or a write of a background copy completed.
    pub(super) fn complete_copy(
        &mut self,
        op: OpId,
        entry: Op,
        stage: CopyStage,
        result: OpResult,
    ) {
        match (stage, result) {
            (CopyStage::Read, OpResult::Ok | OpResult::OkZeroes) => {
                if matches!(self.ending, Ending::Abort(_)) {
                    // Winding down: nothing more is written; the run counts as not copied.
                    self.finish_copy(op, entry, false);
                    return;
                }
                let kind = match result {
                    OpResult::Ok => ActionKind::Write,
                    _ if self.config.discard_reads_zero => ActionKind::Discard,
                    _ => ActionKind::WriteZeroes,
                };
                self.ops.get_mut(op).expect("completing a live op").kind =
                    OpKind::Copy(CopyStage::Write(kind));
                self.emit_action(kind, op, entry.offset, entry.length);
            }
            (CopyStage::Write(_), OpResult::Ok) => self.finish_copy(op, entry, true),
            (_, OpResult::Failed(error)) => {
                self.finish_copy(op, entry, false);
                let side = if stage == CopyStage::Read {
                    Side::Source
                } else {
                    Side::Target
                };
                self.handle_io_error(side, error, entry.offset, entry.length);
            }
            (CopyStage::Write(_), OpResult::OkZeroes) => {
                unreachable!("handle_completion refuses zeroes for anything but a read")
            }
        }
    }

    /// Retires a copy: releases its chunks and buffer; counts it as copied, or re-dirties it.
    fn finish_copy(&mut self, op: OpId, entry: Op, copied: bool) {
        let (first, end) = self.chunks_of(entry.offset, entry.length);
        self.ops.release(first);
        self.ops.remove(op);
        self.copy_ops -= 1;
        self.copy_buffer_bytes -= (end - first) << self.chunk_shift;
        self.copy_bytes_in_flight -= entry.length;
        if copied {
            self.current += entry.length;
            self.copy_rate.add(self.now, entry.length);
            self.backoff.succeeded();
        } else {
            self.mark_dirty(entry.offset, entry.length);
        }
    }
}
