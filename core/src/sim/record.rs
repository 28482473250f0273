//! What a simulation records: timestamped events, time-series samples, a step trace, and
//! the summary of a run.

use super::config::Command;
use crate::job::{ActionKind, Event, IoErrorKind, JobError, JobStatus, OpId};
use super::config::SimConfigError;
use crate::names::names;

/// What `run_until` runs towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// The job has emitted `BLOCK_JOB_READY`.
    Ready,
    /// The job is concluded (or dismissed).
    Concluded,
    /// Virtual time has reached this instant.
    Time(u64),
    /// The job has emitted `BLOCK_JOB_NOT_CONVERGING`.
    NotConverging,
}

/// How `run_until` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunOutcome {
    /// The goal was reached.
    Reached,
    /// The step budget ran out while events kept happening: a livelock (or a budget too small).
    Livelock,
    /// Nothing is pending, so nothing will ever happen again (e.g. a job paused by a `stop`
    /// error that nobody resumes).
    Stalled,
    /// The virtual-time budget ran out (e.g. a background mirror that never converges).
    TimeLimit,
    /// The job concluded without reaching the goal (e.g. cancelled before ready).
    Unreachable,
    /// The job reported `BLOCK_JOB_NOT_CONVERGING` before reaching ready or concluded, and
    /// the run was set to stop there ([`SimConfig::stops_at_not_converging`](super::SimConfig::stops_at_not_converging)).
    NotConverging,
}

names!(
    RunOutcome,
    "run outcome",
    SimConfigError,
    Reached = "reached",
    Livelock = "livelock",
    Stalled = "stalled",
    TimeLimit = "time_limit",
    Unreachable = "unreachable",
    NotConverging = "not_converging",
);

/// Something that happened in the simulation, beyond the job's own events.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimEventKind {
    /// An event the job emitted.
    Job(Event),
    /// A scripted (or automatic) command the job accepted.
    Command(Command),
    /// A command the job refused; the job did not change.
    CommandRefused(Command, JobError),
}

/// A timestamped record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    /// Virtual time.
    pub time_ns: u64,
    /// What happened.
    pub kind: SimEventKind,
}

/// One point of the time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Virtual time.
    pub time_ns: u64,
    /// The job's status.
    pub status: JobStatus,
    /// Bytes dirty in the job's bitmap.
    pub dirty_bytes: u64,
    /// Progress `current`.
    pub current: u64,
    /// Progress `total`.
    pub total: u64,
    /// The job's estimate of the guest dirtying rate.
    pub dirty_bytes_per_sec: u64,
    /// The job's estimate of its copy rate.
    pub copy_bytes_per_sec: u64,
    /// Bytes the guest has written so far.
    pub guest_bytes: u64,
    /// Bytes the job has written to the target so far (copies, zeroes, guest writes).
    pub target_bytes: u64,
}

/// One step of the trace: an action issued, a completion delivered, or an input given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TraceEntry {
    /// The job asked for an action.
    Action {
        /// When.
        time_ns: u64,
        /// What.
        kind: ActionKind,
        /// Which op.
        op: OpId,
        /// First byte.
        offset: u64,
        /// Bytes.
        length: u64,
    },
    /// The simulator delivered a completion.
    Completion {
        /// When.
        time_ns: u64,
        /// Which op.
        op: OpId,
        /// The failure injected, if any.
        error: Option<IoErrorKind>,
        /// Whether a read returned zeroes.
        zero: bool,
    },
    /// A guest write reached the source and was reported to the job.
    GuestWrite {
        /// When.
        time_ns: u64,
        /// First byte.
        offset: u64,
        /// Bytes.
        length: u64,
    },
    /// `handle_timeout` was called.
    Timeout {
        /// When.
        time_ns: u64,
    },
}

impl TraceEntry {
    /// The entry as words, for the running digest.
    pub(crate) fn words(&self) -> [u64; 5] {
        match *self {
            TraceEntry::Action { time_ns, kind, op, offset, length } => {
                [time_ns, 1 + kind as u64, op.0, offset, length]
            }
            TraceEntry::Completion { time_ns, op, error, zero } => {
                let e = error.map_or(0, |e| 1000 + e.errno() as u64);
                [time_ns, 100 + u64::from(zero), op.0, e, 0]
            }
            TraceEntry::GuestWrite { time_ns, offset, length } => [time_ns, 200, 0, offset, length],
            TraceEntry::Timeout { time_ns } => [time_ns, 300, 0, 0, 0],
        }
    }
}

/// Something the job did that a correct job never does, seen by the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time.
    pub time_ns: u64,
    /// What went wrong.
    pub message: String,
}

/// How a run ended, in numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSummary {
    /// Virtual time now.
    pub time_ns: u64,
    /// When `BLOCK_JOB_READY` fired.
    pub ready_at_ns: Option<u64>,
    /// When the job concluded.
    pub concluded_at_ns: Option<u64>,
    /// When the job first emitted `BLOCK_JOB_NOT_CONVERGING`.
    pub not_converging_at_ns: Option<u64>,
    /// The job's status now.
    pub status: JobStatus,
    /// Progress `current` now.
    pub current: u64,
    /// Progress `total` now.
    pub total: u64,
    /// Bytes the job wrote to the target (copies, zeroes, discards, guest writes).
    pub bytes_copied: u64,
    /// Of those, background copies of chunks the job had already copied once.
    pub bytes_recopied: u64,
    /// Bytes the guest wrote.
    pub guest_bytes_written: u64,
    /// Guest writes made.
    pub guest_writes: u64,
    /// Events the job emitted.
    pub events: u64,
    /// `BLOCK_JOB_READY` events (at most 1 for a correct job).
    pub ready_events: u64,
    /// `BLOCK_JOB_ERROR` events.
    pub error_events: u64,
    /// `"completed"`, `"cancelled"` or None (the job has not ended).
    pub ending: Option<&'static str>,
    /// The error a `BLOCK_JOB_COMPLETED` carried.
    pub error: Option<IoErrorKind>,
    /// Whether the guest was switched to the target.
    pub pivoted: bool,
    /// Whether the job reached ready.
    pub converged: bool,
    /// Whether the source equals the target now.
    pub equal: bool,
    /// For a `BLOCK_JOB_COMPLETED` without error: whether the target equalled the source at
    /// the switch moment (the pivot, or the un-quiesce that ended the final drain).
    pub equal_at_end: Option<bool>,
    /// Events processed by the simulator.
    pub steps: u64,
    /// Protocol violations seen.
    pub violations: u64,
    /// Digest of the step trace (equal digests: equal runs, with overwhelming likelihood).
    pub trace_digest: u64,
}

/// What `chunk_states` writes for each chunk (one byte per chunk). When several apply, the
/// first in this order wins: in flight, failed, recently written, dirty, clean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChunkState {
    /// In sync, or not selected for copying.
    Clean = 0,
    /// Dirty in the job's bitmap.
    Dirty = 1,
    /// A background copy is reading it.
    Reading = 2,
    /// A copy or a write-blocking guest write is writing it to the target.
    Writing = 3,
    /// The last job I/O that touched it failed (until a later write succeeds).
    Failed = 4,
    /// The guest wrote it within the recent-write window.
    GuestWritten = 5,
    /// A write-blocking guest write waits for another op to release it.
    Waiting = 6,
}

names!(
    ChunkState,
    "chunk state",
    SimConfigError,
    Clean = "clean",
    Dirty = "dirty",
    Reading = "reading",
    Writing = "writing",
    Failed = "failed",
    GuestWritten = "guest_written",
    Waiting = "waiting",
);

impl ChunkState {
    /// The state a `chunk_states` byte stands for (None for a byte no state has).
    pub fn from_byte(byte: u8) -> Option<Self> {
        Self::ALL.get(usize::from(byte)).copied()
    }
}
