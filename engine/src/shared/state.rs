//! [`State`]: everything behind the mirror's lock, and the questions about it that every
//! thread asks (has the job finished, is it ending, is the mirror broken).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use blockmirror_core::job::{CopyMode, IoErrorKind, JobStatus, MirrorJob, Nanos, OpId, OpResult};

use super::GuestGate;
use crate::buffers::AlignedBuf;
use crate::events::EventLog;
use crate::stats::{Failure, Stats};
use crate::task::{Task, TaskSender};

/// Everything behind the lock.
pub struct State {
    /// The job.
    pub job: MirrorJob,
    /// Buffers of completed reads, waiting for the job's write action for the same op, and
    /// whether the read was only a probe (the write then copies in the kernel).
    pub(super) read_bufs: HashMap<OpId, (AlignedBuf, bool)>,
    /// Guest writes that waited for their chunks and were admitted (their `admit` action
    /// came); the waiting guest call removes its entry and writes the source.
    pub guest_admitted: HashSet<OpId>,
    /// Guest data of write-blocking writes, waiting for their `guest_write` action.
    pub guest_data: HashMap<OpId, Arc<Vec<u8>>>,
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
    /// Switch to write-blocking on `BLOCK_JOB_NOT_CONVERGING` (background mode).
    pub auto_converge: bool,
    /// A not-converging event (or the driver's rate watch) asked for that switch.
    pub(super) switch_to_write_blocking: bool,
    /// Since when (ns) the guest has been dirtying about as fast as the job copies.
    behind_since_ns: Option<u64>,
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
    pub(super) fn new(job: MirrorJob, auto_converge: bool, tasks: TaskSender) -> Self {
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
            auto_converge,
            switch_to_write_blocking: false,
            behind_since_ns: None,
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

    /// Auto-converge's rate watch (called by the driver thread): the job's not-converging
    /// event waits for dirty bytes to stop reaching new lows, which a noisy equilibrium
    /// keeps postponing; this watch asks only whether the guest newly dirties at least 90 %
    /// of what the job copies, for a whole window. Then `pump` switches to write-blocking.
    pub fn watch_convergence(&mut self, now: Nanos) {
        let window_ns = self.job.config().not_converging_window_ns;
        let watching = self.auto_converge
            && window_ns != 0
            && self.job.config().copy_mode == CopyMode::Background
            && self.job.status() == JobStatus::Running;
        let rates = self.job.rates();
        let behind = rates.copy_bytes_per_sec > 0
            && u128::from(rates.dirty_bytes_per_sec) * 10 >= u128::from(rates.copy_bytes_per_sec) * 9;
        if !watching || !behind {
            self.behind_since_ns = None;
            return;
        }
        let since = *self.behind_since_ns.get_or_insert(now.0);
        if now.0.saturating_sub(since) >= window_ns {
            self.switch_to_write_blocking = true;
        }
    }

    /// Drops the task senders so the workers (and the ring thread) exit once idle.
    pub fn close_tasks(&mut self) {
        self.tasks = None;
        self.uring_tasks = None;
    }
}
