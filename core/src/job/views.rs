//! Read-only views of a job for drivers and visualisation: status, progress, rates, the
//! bitmap and the ops that own chunks.

use super::mirror::{GuestHold, MirrorJob};
use super::ops::{CopyStage, GuestStage, OpKind};
use super::time::Nanos;
use super::*;
use crate::bitmap::HBitmap;
use crate::names::names;

/// Progress in bytes: `total = current + remaining` (dirty bytes plus bytes in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Bytes copied (or zeroed) so far.
    pub current: u64,
    /// `current` plus what remains.
    pub total: u64,
}

/// Rate estimates over a sliding window of virtual time (2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    /// Bytes per second the guest newly dirties.
    pub dirty_bytes_per_sec: u64,
    /// Bytes per second the job copies.
    pub copy_bytes_per_sec: u64,
    /// Estimated nanoseconds until ready (0 once ready), or `None`: "not at this rate".
    /// Before ready it is `None` whenever the copy rate does not exceed the dirty rate, and
    /// whenever the job is not converging
    /// ([`MirrorJob::is_not_converging`](super::MirrorJob::is_not_converging)): a finite
    /// ETA and `BLOCK_JOB_NOT_CONVERGING` never contradict each other, even when the 2 s
    /// rates here look better than the rule's window.
    pub eta_ready_ns: Option<u64>,
}

/// What an operation that owns (or waits for) chunks is doing (for visualisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpViewKind {
    /// A background copy reading the source.
    Reading,
    /// A background copy writing the target.
    Writing,
    /// A write-blocking guest write writing the source; it owns its chunks.
    GuestLanding,
    /// A write-blocking guest write writing the target.
    GuestWriting,
    /// A write-blocking guest write waiting for its chunks (owns nothing yet).
    WaitingGuestWrite,
}

names!(
    OpViewKind,
    "op view kind",
    ConfigError,
    Reading = "reading",
    Writing = "writing",
    GuestLanding = "guest_landing",
    GuestWriting = "guest_writing",
    WaitingGuestWrite = "waiting_guest_write",
);

/// A read-only view of one operation that owns or waits for chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpView {
    /// The op id.
    pub op: OpId,
    /// What it is doing.
    pub kind: OpViewKind,
    /// First byte of its range.
    pub offset: u64,
    /// Bytes in its range (the chunks owned are this range rounded out to chunks).
    pub length: u64,
}

impl MirrorJob {
    /// The configuration in use (with `buf_size` rounded, `speed_bytes_per_sec` and
    /// `copy_mode` as last set).
    pub fn config(&self) -> &MirrorConfig {
        &self.config
    }

    /// The current status.
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// `(current, total)`: `total = current + dirty bytes + bytes in flight`.
    pub fn progress(&self) -> Progress {
        Progress {
            current: self.current,
            total: self.current + self.remaining_bytes(),
        }
    }

    /// Dirty bytes, counting the last (partial) chunk by its real size.
    pub fn dirty_bytes(&self) -> u64 {
        let mut dirty = self.bitmap.count();
        let tail = self.config.length % self.config.granularity;
        if tail != 0 && self.bitmap.get(self.config.length - 1) {
            dirty -= self.config.granularity - tail;
        }
        dirty
    }

    /// Bytes of background copies and write-blocking guest writes in flight (including
    /// guest writes still waiting for their chunks).
    pub fn bytes_in_flight(&self) -> u64 {
        self.copy_bytes_in_flight + self.guest_bytes_in_flight
    }

    fn remaining_bytes(&self) -> u64 {
        self.dirty_bytes() + self.bytes_in_flight()
    }

    /// Dirty and copy rates over the last 2 s of virtual time, and the ETA to ready (`None`
    /// while not converging, see [`Rates::eta_ready_ns`]).
    pub fn rates(&self) -> Rates {
        let dirty_bytes_per_sec = self.dirty_rate.per_sec(self.now);
        let copy_bytes_per_sec = self.copy_rate.per_sec(self.now);
        let eta_ready_ns = if self.ready_reached {
            Some(0)
        } else if self.is_not_converging() {
            None
        } else if copy_bytes_per_sec > dirty_bytes_per_sec {
            let remaining = self.remaining_bytes() as u128;
            u64::try_from(
                remaining * 1_000_000_000 / (copy_bytes_per_sec - dirty_bytes_per_sec) as u128,
            )
            .ok()
        } else {
            None
        };
        Rates {
            dirty_bytes_per_sec,
            copy_bytes_per_sec,
            eta_ready_ns,
        }
    }

    /// The dirty bitmap (one bit per chunk; items are bytes).
    pub fn bitmap(&self) -> &HBitmap {
        &self.bitmap
    }

    /// Ops that own or wait for chunks, by ascending op id.
    pub fn ops(&self) -> impl Iterator<Item = OpView> + '_ {
        self.ops.iter().filter_map(|(op, entry)| {
            let kind = match entry.kind {
                OpKind::Copy(CopyStage::Read) => OpViewKind::Reading,
                OpKind::Copy(CopyStage::Write(_)) => OpViewKind::Writing,
                OpKind::Guest(GuestStage::Landing { owned: true, .. }) => OpViewKind::GuestLanding,
                OpKind::Guest(GuestStage::Mirroring) => OpViewKind::GuestWriting,
                OpKind::Guest(GuestStage::Queued { .. }) => OpViewKind::WaitingGuestWrite,
                _ => return None,
            };
            Some(OpView {
                op,
                kind,
                offset: entry.offset,
                length: entry.length,
            })
        })
    }

    /// The ranges of every guest write the job knows of and has not finished with: announced
    /// and not yet landed (owning its chunks or not), waiting for its chunks, or being
    /// mirrored to the target. Unlike [`ops`](Self::ops), this includes a background-mode
    /// write between its announcement and its landing, which owns nothing yet may already
    /// be on the source: a reader that must know both sides are still (an online verify)
    /// checks its range against these.
    pub fn guest_writes_in_flight(&self) -> impl Iterator<Item = core::ops::Range<u64>> + '_ {
        self.ops.iter().filter_map(|(_, entry)| match entry.kind {
            OpKind::Guest(_) => Some(entry.offset..entry.offset + entry.length),
            _ => None,
        })
    }

    /// Number of live ops of every kind (each owes the driver or the job a completion).
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    /// The error that failed the job (`report` policy, or a failed quiesce/unquiesce/pivot).
    pub fn error(&self) -> Option<IoErrorKind> {
        self.error
    }

    /// Whether a `BLOCK_JOB_NOT_CONVERGING` episode is under way: true from the step that
    /// emits the event while its rule (the stall or the forecast, see the event) still
    /// holds, and false once neither does or convergence stops being watched (paused,
    /// write-blocking, holding the guest, aborting). Before ready, the ETA is `None`
    /// throughout.
    pub fn is_not_converging(&self) -> bool {
        self.convergence.in_episode()
    }

    /// Whether READY was reached (it stays true).
    pub fn is_ready_reached(&self) -> bool {
        self.ready_reached
    }

    /// Whether a pause (user or `stop` policy) is in force; the status says whether it has
    /// taken effect yet.
    pub fn is_pause_requested(&self) -> bool {
        self.user_paused
    }

    /// Whether the job holds the guest: a `quiesce` completed and no `unquiesce` or `pivot`
    /// has completed since.
    pub fn is_guest_held(&self) -> bool {
        matches!(
            self.hold,
            GuestHold::Held { .. }
                | GuestHold::FinalFlush(_)
                | GuestHold::Pivoting(_)
                | GuestHold::Unquiescing(_)
        )
    }

    /// The last instant the driver supplied.
    pub fn now(&self) -> Nanos {
        self.now
    }
}

/// A summary, not the bitmaps: a 1 TiB job's bitmap alone is megabytes of words.
impl std::fmt::Debug for MirrorJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorJob")
            .field("status", &self.status)
            .field("length", &self.config.length)
            .field("granularity", &self.config.granularity)
            .field("copy_mode", &self.config.copy_mode)
            .field("progress", &self.progress())
            .field("dirty_bytes", &self.dirty_bytes())
            .field("ops_in_flight", &self.ops.len())
            .field("pause_requested", &self.user_paused)
            .field("ending", &self.ending)
            .field("hold", &self.hold)
            .field("error", &self.error)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}
