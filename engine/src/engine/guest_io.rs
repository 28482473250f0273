//! The guest's I/O through a running mirror: writes, zero writes, trims, flushes and
//! reads, routed to the source (and mirrored by the job) or, after the switch-over, to the
//! target. A write is announced to the job before it touches the source (see
//! [`FileMirror::guest_write`]), so the job can order it against its own copies.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use blockmirror_core::job::{CopyMode, GuestWrite, GuestWriteStart, OpId, OpResult};

use crate::io_ops;
use crate::shared::{Shared, State};
use crate::task::GuestPayload;
use crate::workers;

use super::{FileMirror, GuestIoError};

/// The longest `guest_read`: its buffer is allocated whole, so a huge length must be
/// refused before allocating rather than abort the process.
pub const MAX_GUEST_READ_BYTES: u64 = 64 << 20;

/// The longest piece of a `guest_write_zeroes` that is one guest write for the job (pieces
/// start at multiples of it, so they cover whole chunks of any granularity up to it).
pub const MAX_GUEST_ZEROES_PIECE_BYTES: u64 = 64 << 20;

impl FileMirror {
    fn check_range(&self, offset: u64, length: u64) -> Result<(), GuestIoError> {
        let disk_length = self.length();
        if offset.checked_add(length).is_none_or(|end| end > disk_length) {
            return Err(GuestIoError::OutOfRange { offset, length, disk_length });
        }
        Ok(())
    }

    /// The guest writes `data` at `offset`: to the source (or the target after a pivot),
    /// then the job learns of it; in write-blocking mode this returns once the data is on
    /// the target too. Waits while the guest is quiesced.
    ///
    /// The job hears of the write *before* it touches the source (the two-step protocol of
    /// `MirrorJob::handle_guest_write_start`): while it mirrors actively the write owns its
    /// chunks from then until its target write is done, waiting first for any copy or other
    /// guest write there. So overlapping writes from several threads land on the source and
    /// on the target in the same order, whatever the thread timing.
    ///
    /// Returning means written, not durable: a server gives a write with FUA (force unit
    /// access) as this call followed by [`guest_flush`](Self::guest_flush).
    pub fn guest_write(&self, offset: u64, data: Vec<u8>) -> Result<(), GuestIoError> {
        let length = data.len() as u64;
        self.check_guest_io(offset, length)?;
        if length == 0 {
            return Ok(());
        }
        self.guest_modify(offset, length, GuestPayload::Data(Arc::new(data)))
    }

    /// The guest makes `[offset, offset+length)` read as zeroes, as [`guest_write`] of
    /// zeroes would, but with no buffer: the source range is zeroed by the zero range calls
    /// (punching a hole when `may_unmap`, else `FALLOC_FL_ZERO_RANGE`, else plain writes of
    /// a bounded zero buffer), and in write-blocking mode the mirrored target range likewise
    /// (deallocated only if the guest allows it *and* the setup's `unmap` does). After a
    /// pivot the target range is zeroed the same way.
    ///
    /// A long range (an NBD request may ask for up to 4 GiB - 1) is done in pieces of at
    /// most [`MAX_GUEST_ZEROES_PIECE_BYTES`], one after the other, each a guest write of its
    /// own for the job: one piece owns its chunks (in write-blocking mode) only while it is
    /// written, so copies and other guest writes elsewhere do not wait for the whole range.
    /// An error stops at the failing piece (earlier pieces stay zeroed, as a failed write
    /// may leave part of its data).
    ///
    /// [`guest_write`]: Self::guest_write
    pub fn guest_write_zeroes(&self, offset: u64, length: u64, may_unmap: bool) -> Result<(), GuestIoError> {
        self.check_guest_io(offset, length)?;
        let end = offset + length;
        let mut at = offset;
        while at < end {
            let piece_end =
                (at / MAX_GUEST_ZEROES_PIECE_BYTES + 1).saturating_mul(MAX_GUEST_ZEROES_PIECE_BYTES).min(end);
            self.guest_modify(at, piece_end - at, GuestPayload::Zeroes { unmap: may_unmap })?;
            at = piece_end;
        }
        Ok(())
    }

    /// The guest discards `[offset, offset+length)` (an NBD trim): the range reads zero
    /// afterwards on the disk the guest uses, so this is [`guest_write_zeroes`] with
    /// deallocation allowed, and the mirrored target reads zero there too.
    ///
    /// [`guest_write_zeroes`]: Self::guest_write_zeroes
    pub fn guest_trim(&self, offset: u64, length: u64) -> Result<(), GuestIoError> {
        self.guest_write_zeroes(offset, length, true)
    }

    /// Makes every guest write acknowledged so far durable where the guest's data lives:
    /// the source is synced (fdatasync) while the guest lives on it; the target (fdatasync,
    /// or `NBD_CMD_FLUSH` for an NBD target) as well
    /// while the job mirrors actively (write-blocking: acknowledged writes are on both);
    /// after the switch-over, the target only. Outside write-blocking mode the target's
    /// copy is not the guest's data yet (the job syncs it itself before READY and at the
    /// switch-over).
    pub fn guest_flush(&self) -> Result<(), GuestIoError> {
        if self.is_closed() {
            return Err(GuestIoError::Closed);
        }
        let files = &self.shared.files;
        let os = |source| GuestIoError::Os { source };
        let (pivoted, mirrored) = {
            let st = self.shared.lock();
            (st.gate.pivoted, st.job.config().copy_mode == CopyMode::WriteBlocking)
        };
        if !pivoted {
            files.source_flush().map_err(os)?;
        }
        // A switch-over during the source's sync moved the guest to the target: sync it too.
        if pivoted || mirrored || self.pivoted() {
            files.target.flush().map_err(os)?;
        }
        Ok(())
    }


    /// Refuses guest I/O on a closed mirror or outside the disk.
    fn check_guest_io(&self, offset: u64, length: u64) -> Result<(), GuestIoError> {
        if self.is_closed() {
            return Err(GuestIoError::Closed);
        }
        self.check_range(offset, length)
    }

    /// One guest write of `payload` over a non-empty range inside the disk: the two-step
    /// protocol with the job around the source write, then the mirrored target write when
    /// the job asks for one (see [`guest_write`](Self::guest_write)).
    fn guest_modify(&self, offset: u64, length: u64, payload: GuestPayload) -> Result<(), GuestIoError> {
        let shared = &self.shared;
        // Write intent: the chunks are durably marked in the bitmap file before the source
        // changes; the ticket keeps them from being cleared until the job has the landing.
        let _intent =
            crate::persist::mark_guest_write(shared, offset, length).map_err(|source| GuestIoError::Os { source })?;
        let mut st = shared.lock();
        while st.gate.held && !st.gate.pivoted && !st.finished() {
            st = shared.wait_changed(st, Duration::from_secs(1));
        }
        let to_target = st.gate.pivoted;
        st.gate.active_writes += 1;
        // A pivot cannot happen while this write is active (quiesce waits for it), so a
        // write that goes to the source is the job's to track until it has landed.
        let (st, tracked) = if to_target { (st, None) } else { Self::start_tracking(shared, st, offset, length) };
        drop(st);

        let written = if to_target {
            workers::write_guest_payload(shared, &shared.files.target, offset, length, &payload)
        } else {
            match &payload {
                GuestPayload::Data(data) => shared.files.source_write(data, offset),
                GuestPayload::Zeroes { unmap } => shared.files.source_zero_range(offset, length, *unmap),
            }
        };

        let mut st = shared.lock();
        if written.is_ok() {
            st.stats.guest_bytes_written += length;
        }
        if let Some(op) = tracked.filter(|_| !st.broken) {
            let result = match &written {
                Ok(()) => OpResult::Ok,
                Err(e) => OpResult::Failed(io_ops::error_kind(e)),
            };
            match st.job.handle_guest_write_landed(op, result) {
                Ok(GuestWrite::Acknowledge) => {}
                Ok(GuestWrite::Mirror(op)) => {
                    st.guest_data.insert(op, payload);
                    shared.pump(&mut st);
                    while !st.guest_done.contains_key(&op) && !st.finished() {
                        st = shared.wait_changed(st, Duration::from_secs(1));
                    }
                    // A failed target write is the job's business (its policy acted); the
                    // guest's own write to the source succeeded.
                    st.guest_done.remove(&op);
                    st.guest_data.remove(&op);
                }
                Err(e) => {
                    st.internal_error.get_or_insert(format!("guest write landing refused: {e}"));
                }
            }
        }
        st.guest_write_finished();
        shared.pump(&mut st);
        drop(st);
        written.map_err(|source| GuestIoError::Os { source })
    }

    /// Announces a guest write to the job and, if it must wait for its chunks, waits for
    /// its admission. Returns the lock and the op to report the landing for, or `None` if
    /// the job no longer tracks writes.
    fn start_tracking<'a>(
        shared: &'a Shared,
        mut st: MutexGuard<'a, State>,
        offset: u64,
        length: u64,
    ) -> (MutexGuard<'a, State>, Option<OpId>) {
        if st.broken {
            return (st, None); // the job may be half-updated: never touch it again
        }
        let (op, admitted) = match st.job.handle_guest_write_start(offset, length) {
            Ok(GuestWriteStart::Proceed(op)) => (op, true),
            Ok(GuestWriteStart::Wait(op)) => (op, false),
            Ok(GuestWriteStart::Untracked) => return (st, None),
            Err(e) => {
                st.internal_error.get_or_insert(format!("guest write refused: {e}"));
                return (st, None);
            }
        };
        shared.pump(&mut st);
        // A waiting write is let through by its `admit` action (dispatch records it). The job
        // never concludes while a write waits: the copies it waits for end, even when
        // cancelled, and then its admission comes.
        if !admitted {
            while !st.guest_admitted.remove(&op) {
                if st.finished() {
                    return (st, None);
                }
                st = shared.wait_changed(st, Duration::from_secs(1));
            }
        }
        (st, Some(op))
    }

    /// The guest reads `length` bytes at `offset` (from the target after a pivot).
    pub fn guest_read(&self, offset: u64, length: u64) -> Result<Vec<u8>, GuestIoError> {
        if self.is_closed() {
            return Err(GuestIoError::Closed);
        }
        self.check_range(offset, length)?;
        if length > MAX_GUEST_READ_BYTES {
            return Err(GuestIoError::TooLong { length, limit: MAX_GUEST_READ_BYTES });
        }
        let to_target = self.shared.lock().gate.pivoted;
        let files = &self.shared.files;
        let mut buf = vec![0u8; length as usize];
        let read = if to_target {
            files.target.read_exact(&mut buf, offset)
        } else {
            files.source_read(&mut buf, offset)
        };
        read.map_err(|source| GuestIoError::Os { source })?;
        Ok(buf)
    }
}
