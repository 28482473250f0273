//! [`State`]: everything behind the mirror's lock, and the questions about it that every
//! thread asks (has the job finished, is it ending, is the mirror broken).

use std::collections::{HashMap, HashSet};

use blockmirror_core::job::{IoErrorKind, JobStatus, MirrorJob, Nanos, OpId, OpResult};

use super::GuestGate;
use crate::buffers::AlignedBuf;
use crate::events::EventLog;
use crate::stats::{Failure, Stats};
use crate::task::{GuestPayload, Task, TaskSender};
use crate::zero_runs::ZeroRuns;

/// A completed copy read, kept until the job asks for its write.
pub struct ReadBuf {
    /// The data.
    pub buf: AlignedBuf,
    /// The data pieces were only probed: the write copies them in the kernel.
    pub offloaded: bool,
    /// The pieces that read as zero.
    pub zero_runs: ZeroRuns,
}

/// Everything behind the lock.
pub struct State {
    /// The job.
    pub job: MirrorJob,
    /// Completed reads, waiting for the job's write action for the same op.
    pub(super) read_bufs: HashMap<OpId, ReadBuf>,
    /// Guest writes that waited for their chunks and were admitted (their `admit` action
    /// came); the waiting guest call removes its entry and writes the source.
    pub guest_admitted: HashSet<OpId>,
    /// What write-blocking guest writes wrote, waiting for their `guest_write` action.
    pub guest_data: HashMap<OpId, GuestPayload>,
    /// `guest_write` actions that finished (the waiting guest call removes its entry).
    pub guest_done: HashMap<OpId, Result<(), IoErrorKind>>,
    /// Quiesce and pivot state.
    pub gate: GuestGate,
    /// Events not yet taken by the API's callers (bounded; repeated errors are counted).
    pub events: EventLog,
    /// `BLOCK_JOB_READY` was seen.
    pub ready_seen: bool,
    /// `BLOCK_JOB_COMPLETED` / `BLOCK_JOB_CANCELLED` was seen.
    pub end_event_seen: bool,
    /// The job failed with this.
    pub failure: Option<Failure>,
    /// The last error event whose policy was `report`: it names the failure's operation.
    pub(super) last_report: Option<Failure>,
    /// An internal invariant broke (a job error the driver did not expect).
    pub internal_error: Option<String>,
    /// A thread of this mirror panicked: the job may be half-updated, so nothing touches it
    /// again; the mirror counts as finished (waits end, `close` proceeds) and verbs fail.
    pub broken: bool,
    /// Counters.
    pub stats: Stats,
    /// Tasks sent to workers and not yet finished.
    pub tasks_in_flight: usize,
    /// Something API callers may wait for changed (an event, the gate, a guest write's
    /// target write): `pump` wakes them only then, not on every I/O completion.
    pub(super) notify_waiters: bool,
    /// While a worker feeds its completion in: keep the first new task for that worker.
    pub(super) keep_one_task: bool,
    /// The task kept for the worker (counted in `tasks_in_flight` like a queued one).
    pub(super) kept_task: Option<Task>,
    /// Copy reads and writes go to the io_uring thread when it runs (O_DIRECT only).
    pub uring_tasks: Option<TaskSender>,
    /// When the driver thread will wake by itself (it is woken earlier only when the job's
    /// next deadline moves before this, or the job ends).
    pub driver_sleep_until: Option<Nanos>,
    /// The worker pool's queue; `None` once `close_tasks` ran.
    pub(super) tasks: Option<TaskSender>,
}

impl State {
    /// The state of a job not started yet, dispatching to the worker queue `tasks`.
    pub(super) fn new(job: MirrorJob, tasks: TaskSender) -> Self {
        Self {
            job,
            read_bufs: HashMap::new(),
            guest_admitted: HashSet::new(),
            guest_data: HashMap::new(),
            guest_done: HashMap::new(),
            gate: GuestGate::default(),
            events: EventLog::default(),
            ready_seen: false,
            end_event_seen: false,
            failure: None,
            last_report: None,
            internal_error: None,
            broken: false,
            stats: Stats::default(),
            tasks_in_flight: 0,
            notify_waiters: false,
            keep_one_task: false,
            kept_task: None,
            uring_tasks: None,
            driver_sleep_until: None,
            tasks: Some(tasks),
        }
    }

    /// Whether the job has ended and no worker still touches the files. A broken mirror
    /// counts as finished: its job will never end by itself (workers still running stop
    /// when `close` drops their queue, and `close` joins them before the files go).
    pub fn finished(&self) -> bool {
        self.broken || matches!(self.job.status(), JobStatus::Concluded | JobStatus::Null) && self.tasks_in_flight == 0
    }

    /// Whether the job has ended or is winding down (no more guest-write tracking needed).
    pub fn ending(&self) -> bool {
        self.broken || matches!(self.job.status(), JobStatus::Aborting | JobStatus::Concluded | JobStatus::Null)
    }

    /// Marks the mirror broken (see `broken`), keeping the first internal error.
    pub fn mark_broken(&mut self, why: &str) {
        self.broken = true;
        self.internal_error.get_or_insert_with(|| why.to_owned());
        self.notify_waiters = true;
    }

    /// Feeds one completion to the job. A completion for an op the job no longer waits for
    /// (after a forced cancel) is dropped; any other refusal is an internal error.
    pub fn complete(&mut self, op: OpId, result: OpResult) {
        if self.broken {
            return;
        }
        if let Err(e) = self.job.handle_completion(op, result) {
            if self.ending() {
                return;
            }
            self.internal_error.get_or_insert(format!("job refused the completion of {op}: {e}"));
        }
    }

    /// Drops the task senders so the workers (and the ring thread) exit once idle.
    pub fn close_tasks(&mut self) {
        self.tasks = None;
        self.uring_tasks = None;
    }
}
