//! The state every thread of one mirror shares: the job behind a mutex, and the rule that
//! keeps it consistent.
//!
//! Rule: whoever gives the job an input (a completion, a guest write, a verb, a timeout)
//! does so with the lock held and then calls [`State::pump`] before unlocking, which drains
//! `poll_action` (sending I/O to the workers, handling quiesce/unquiesce/pivot at once) and
//! `poll_event` (recording events for the Python side), then wakes every waiter. So the job
//! is never left with undrained outputs, whichever thread touched it last.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use blockmirror_core::job::{
    Action, ActionKind, CopyMode, ErrorAction, Event, IoErrorKind, JobStatus, MirrorJob, Nanos, OpId, OpResult, Operation,
};

use crate::buffers::{AlignedBuf, BufferPool};
use crate::events::EventLog;
use crate::faults::FaultInjector;
use crate::files::OpenedFiles;
use crate::workers::{Task, TaskOutcome, TaskSender};

pub use crate::events::EventRecord;

/// Why the job failed: the error of the `report` that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The error kind.
    pub error: IoErrorKind,
    /// `read` (source) or `write` (target), when an error event named it.
    pub operation: Option<Operation>,
    /// First byte of the failed range, when known.
    pub offset: Option<u64>,
}

/// Byte and operation counters (plain facts, for results and benchmarks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Bytes read from the source by the copy path.
    pub bytes_read: u64,
    /// Bytes written to the target by copies.
    pub bytes_written: u64,
    /// Of those, bytes copied inside the kernel (`copy_file_range`).
    pub bytes_offloaded: u64,
    /// Bytes made zero on the target (zero writes and discards).
    pub bytes_zeroed: u64,
    /// Of those, bytes deallocated by punching holes.
    pub bytes_punched: u64,
    /// Copy reads that returned only zeroes.
    pub zero_reads: u64,
    /// Bytes the guest wrote through the mirror.
    pub guest_bytes_written: u64,
    /// Bytes of guest writes also written to the target (write-blocking mode).
    pub guest_bytes_mirrored: u64,
    /// Target flushes performed.
    pub flushes: u64,
    /// Operations that failed (injected or real).
    pub failed_ops: u64,
    /// Progress total right after the start: the bytes the sync mode selected.
    pub initial_total: u64,
    /// Nanoseconds from the start to `BLOCK_JOB_READY`.
    pub ready_ns: Option<u64>,
    /// Nanoseconds from the start to the end of the job.
    pub end_ns: Option<u64>,
}

/// The guest's side of quiesce and pivot.
#[derive(Debug, Default)]
pub struct GuestGate {
    /// New guest writes wait while held (between quiesce and unquiesce/pivot).
    pub held: bool,
    /// Guest writes between their start and their acknowledgement.
    pub active_writes: usize,
    /// A quiesce op waiting for `active_writes` to reach zero.
    pub quiesce_op: Option<OpId>,
    /// The guest was switched over: its reads and writes go to the target.
    pub pivoted: bool,
}

/// Everything behind the lock.
pub struct State {
    /// The job.
    pub job: MirrorJob,
    /// Buffers of completed reads, waiting for the job's write action for the same op, and
    /// whether the read was only a probe (the write then copies in the kernel).
    read_bufs: HashMap<OpId, (AlignedBuf, bool)>,
    /// Guest writes that waited for their chunks and were admitted (their `admit` action
    /// came); the waiting guest call removes its entry and writes the source.
    pub guest_admitted: HashSet<OpId>,
    /// Guest data of write-blocking writes, waiting for their `guest_write` action.
    pub guest_data: HashMap<OpId, Arc<Vec<u8>>>,
    /// `guest_write` actions that finished (the waiting guest call removes its entry).
    pub guest_done: HashMap<OpId, Result<(), IoErrorKind>>,
    /// Quiesce and pivot state.
    pub gate: GuestGate,
    /// Events not yet taken by the Python side (bounded; repeated errors are counted).
    pub events: EventLog,
    /// `BLOCK_JOB_READY` was seen.
    pub ready_seen: bool,
    /// `BLOCK_JOB_COMPLETED` / `BLOCK_JOB_CANCELLED` was seen.
    pub end_event_seen: bool,
    /// The job failed with this.
    pub failure: Option<Failure>,
    last_report: Option<Failure>,
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
    notify_waiters: bool,
    /// Switch to write-blocking on `BLOCK_JOB_NOT_CONVERGING` (background mode).
    pub auto_converge: bool,
    /// A not-converging event (or the driver's rate watch) asked for that switch.
    switch_to_write_blocking: bool,
    /// Since when (ns) the guest has been dirtying about as fast as the job copies.
    behind_since_ns: Option<u64>,
    /// While a worker feeds its completion in: keep the first new task for that worker.
    keep_one_task: bool,
    /// The task kept for the worker (counted in `tasks_in_flight` like a queued one).
    kept_task: Option<Task>,
    /// Copy reads and writes go to the io_uring thread when it runs (O_DIRECT only).
    pub uring_tasks: Option<TaskSender>,
    /// When the driver thread will wake by itself (it is woken earlier only when the job's
    /// next deadline moves before this, or the job ends).
    pub driver_sleep_until: Option<Nanos>,
    tasks: Option<TaskSender>,
}

/// The shared part of one mirror.
pub struct Shared {
    /// The job and its bookkeeping.
    pub state: Mutex<State>,
    /// Wakes the driver thread (the next timeout may have moved, or the job ended).
    pub driver_wake: Condvar,
    /// Wakes API callers (status, events, guest write acknowledgements, the gate).
    pub changed: Condvar,
    /// The open files.
    pub files: OpenedFiles,
    /// Copy buffers.
    pub pool: BufferPool,
    /// Injected faults.
    pub faults: FaultInjector,
    /// Zero writes may deallocate.
    pub unmap: bool,
    /// Copies of ranges that hold data run in the kernel (`copy_file_range`).
    pub offload: bool,
    /// Time zero of this mirror.
    pub clock: Instant,
}

impl Shared {
    /// Builds the shared state around a job (not started yet).
    pub fn new(
        job: MirrorJob,
        files: OpenedFiles,
        faults: FaultInjector,
        (unmap, offload, auto_converge): (bool, bool, bool),
        tasks: TaskSender,
    ) -> Self {
        let buffer_bytes = job.config().max_io as usize;
        Self {
            state: Mutex::new(State {
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
                driver_sleep_until: None,
                notify_waiters: false,
                auto_converge,
                switch_to_write_blocking: false,
                behind_since_ns: None,
                keep_one_task: false,
                kept_task: None,
                uring_tasks: None,
                tasks: Some(tasks),
            }),
            driver_wake: Condvar::new(),
            changed: Condvar::new(),
            files,
            pool: BufferPool::new(buffer_bytes),
            faults,
            unmap,
            offload,
            clock: Instant::now(),
        }
    }

    /// The lock. A thread that panicked while holding it left the job possibly half-updated:
    /// the state is marked broken (so the mirror ends with an internal error) and the lock
    /// is made usable again, so that no later call panics in turn.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        let guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.recover(guard)
    }

    fn recover<'a>(&'a self, mut guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        if self.state.is_poisoned() {
            guard.mark_broken("a mirror thread panicked while it held the job's lock");
            self.state.clear_poison();
            self.changed.notify_all();
            self.driver_wake.notify_all();
        }
        guard
    }

    /// Waits on `changed` for at most `timeout`, surviving a poisoned lock like `lock`.
    pub fn wait_changed<'a>(&'a self, guard: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        let (guard, _) = self.changed.wait_timeout(guard, timeout).unwrap_or_else(PoisonError::into_inner);
        self.recover(guard)
    }

    /// Waits on `driver_wake` for at most `timeout`, surviving a poisoned lock like `lock`.
    pub fn wait_driver<'a>(&'a self, guard: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        let (guard, _) = self.driver_wake.wait_timeout(guard, timeout).unwrap_or_else(PoisonError::into_inner);
        self.recover(guard)
    }

    /// A thread of this mirror panicked (caught where it runs): marks the mirror broken and
    /// wakes every waiter, so the job ends at once with an internal error instead of
    /// waiting forever for the dead thread's I/O.
    pub fn thread_panicked(&self, what: &str) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.mark_broken(what);
        let mut st = self.recover(st);
        st.notify_waiters = false;
        drop(st);
        self.changed.notify_all();
        self.driver_wake.notify_all();
    }

    /// Nanoseconds since this mirror was created (the job's clock).
    pub fn now(&self) -> Nanos {
        Nanos(self.clock.elapsed().as_nanos() as u64)
    }

    /// Drains the job's outputs and wakes everyone (see the module rule).
    pub fn pump(&self, st: &mut State) {
        if st.broken {
            // The job may be half-updated (see `State::broken`): never touch it again.
            self.changed.notify_all();
            self.driver_wake.notify_all();
            return;
        }
        st.pump(self);
        if std::mem::take(&mut st.notify_waiters) || st.finished() {
            self.changed.notify_all();
        }
        let driver_late = match (st.job.poll_timeout(), st.driver_sleep_until) {
            (Some(next), Some(sleep_until)) => next < sleep_until,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if driver_late || st.finished() {
            self.driver_wake.notify_all();
        }
    }

    /// Called by a worker when its task is done: feeds the result to the job. Returns one
    /// of the tasks this caused (typically the same op's write after its read) for the
    /// calling worker to run next, sparing a hand-off through the queue and a wake-up.
    pub fn finish_task(&self, outcome: TaskOutcome) -> Option<Task> {
        self.finish(outcome, true)
    }

    /// Like `finish_task`, but every task it causes is queued (for the io_uring thread).
    pub fn finish_task_routed(&self, outcome: TaskOutcome) {
        let kept = self.finish(outcome, false);
        debug_assert!(kept.is_none());
    }

    fn finish(&self, outcome: TaskOutcome, keep_one: bool) -> Option<Task> {
        let mut st = self.lock();
        self.faults.panic_if_armed();
        st.tasks_in_flight -= 1;
        let (op, result) = match outcome {
            TaskOutcome::Read { op, result } => match result {
                Ok(done) => {
                    if !done.offloaded {
                        st.stats.bytes_read += done.buf.as_slice().len() as u64;
                    }
                    if done.zero {
                        st.stats.zero_reads += 1;
                        self.pool.give_back(done.buf);
                        (op, OpResult::OkZeroes)
                    } else {
                        st.read_bufs.insert(op, (done.buf, done.offloaded));
                        (op, OpResult::Ok)
                    }
                }
                Err(kind) => (op, OpResult::Failed(kind)),
            },
            TaskOutcome::Write { op, buf, offloaded, result } => {
                let len = buf.as_slice().len() as u64;
                self.pool.give_back(buf);
                if result.is_ok() {
                    st.stats.bytes_written += len;
                    if offloaded {
                        st.stats.bytes_read += len;
                        st.stats.bytes_offloaded += len;
                    }
                }
                (op, to_op_result(result))
            }
            TaskOutcome::GuestWrite { op, length, result } => {
                if result.is_ok() {
                    st.stats.guest_bytes_mirrored += length;
                }
                st.guest_done.insert(op, result);
                st.notify_waiters = true;
                (op, to_op_result(result))
            }
            TaskOutcome::Zero { op, length, result } => {
                if let Ok(punched) = result {
                    st.stats.bytes_zeroed += length;
                    if punched {
                        st.stats.bytes_punched += length;
                    }
                }
                (op, to_op_result(result.map(|_| ())))
            }
            TaskOutcome::Flush { op, result } => {
                if result.is_ok() {
                    st.stats.flushes += 1;
                }
                (op, to_op_result(result))
            }
        };
        if matches!(result, OpResult::Failed(_)) {
            st.stats.failed_ops += 1;
        }
        st.keep_one_task = keep_one;
        st.complete(op, result);
        self.pump(&mut st);
        st.keep_one_task = false;
        st.kept_task.take()
    }
}

/// Runs the body of one of the mirror's threads. A panic in it marks the mirror broken
/// (see `State::broken`) instead of leaving every waiter to wait forever for the dead
/// thread's I/O.
pub fn guarded(shared: &Shared, name: &str, body: impl FnOnce()) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        shared.thread_panicked(&format!("the {name} thread panicked: {msg}"));
    }
}

fn to_op_result(r: Result<(), IoErrorKind>) -> OpResult {
    match r {
        Ok(()) => OpResult::Ok,
        Err(kind) => OpResult::Failed(kind),
    }
}

impl State {
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

    /// Ends the quiesce when the last guest write in progress has finished.
    pub fn guest_write_finished(&mut self) {
        self.gate.active_writes -= 1;
        if self.gate.active_writes == 0 {
            if let Some(op) = self.gate.quiesce_op.take() {
                self.complete(op, OpResult::Ok);
            }
        }
    }

    fn send(&mut self, task: Task) {
        self.tasks_in_flight += 1;
        if let (Some(ring), Task::Read { .. } | Task::Write { .. }) = (&self.uring_tasks, &task) {
            ring.send(task).expect("the ring thread lives until its sender is dropped");
            return;
        }
        if self.keep_one_task && self.kept_task.is_none() {
            self.kept_task = Some(task);
            return;
        }
        let sender = self.tasks.as_ref().expect("tasks are only dispatched before shutdown");
        sender.send(task).expect("workers live until the task sender is dropped");
    }

    /// Drops the task senders so the workers (and the ring thread) exit once idle.
    pub fn close_tasks(&mut self) {
        self.tasks = None;
        self.uring_tasks = None;
    }

    /// Returns the action's immediate result when the driver handles it without I/O.
    fn dispatch(&mut self, shared: &Shared, action: Action) -> Option<OpResult> {
        let Action { kind, op, offset, length } = action;
        match kind {
            ActionKind::Read => {
                let buf = shared.pool.take(length as usize);
                self.send(Task::Read { op, offset, buf });
                None
            }
            ActionKind::Write => match self.read_bufs.remove(&op) {
                Some((buf, offloaded)) => {
                    self.send(Task::Write { op, offset, buf, offloaded });
                    None
                }
                None => {
                    self.internal_error.get_or_insert(format!("write for {op} without a completed read"));
                    Some(OpResult::Failed(IoErrorKind::Io))
                }
            },
            ActionKind::WriteZeroes | ActionKind::Discard => {
                if let Some((buf, _)) = self.read_bufs.remove(&op) {
                    shared.pool.give_back(buf);
                }
                self.send(Task::Zero { op, offset, length, discard: kind == ActionKind::Discard });
                None
            }
            ActionKind::Admit => {
                // The waiting guest call writes the source, then reports the landing.
                self.guest_admitted.insert(op);
                self.notify_waiters = true;
                None
            }
            ActionKind::GuestWrite => match self.guest_data.remove(&op) {
                Some(data) => {
                    self.send(Task::GuestWrite { op, offset, data });
                    None
                }
                None => {
                    self.internal_error.get_or_insert(format!("guest_write for {op} without guest data"));
                    Some(OpResult::Failed(IoErrorKind::Io))
                }
            },
            ActionKind::Flush => {
                self.send(Task::Flush { op });
                None
            }
            ActionKind::Quiesce => {
                self.notify_waiters = true;
                self.gate.held = true;
                if self.gate.active_writes == 0 {
                    Some(OpResult::Ok)
                } else {
                    self.gate.quiesce_op = Some(op);
                    None
                }
            }
            ActionKind::Unquiesce => {
                self.notify_waiters = true;
                self.gate.held = false;
                Some(OpResult::Ok)
            }
            ActionKind::Pivot => {
                self.notify_waiters = true;
                self.gate.pivoted = true;
                self.gate.held = false;
                Some(OpResult::Ok)
            }
            other => {
                self.internal_error.get_or_insert(format!("unknown action {other}"));
                Some(OpResult::Failed(IoErrorKind::Io))
            }
        }
    }

    fn record(&mut self, shared: &Shared, event: Event) {
        let time_ns = shared.clock.elapsed().as_nanos() as u64;
        self.notify_waiters = true;
        match &event {
            Event::NotConverging { .. } if self.auto_converge => {
                self.switch_to_write_blocking = self.job.config().copy_mode == CopyMode::Background;
            }
            Event::Ready { .. } => {
                self.ready_seen = true;
                self.stats.ready_ns = Some(time_ns);
            }
            Event::Error { operation, action: ErrorAction::Report, offset, error, .. } => {
                self.last_report = Some(Failure { error: *error, operation: Some(*operation), offset: Some(*offset) });
            }
            Event::Completed { error, .. } => {
                self.end_event_seen = true;
                self.stats.end_ns = Some(time_ns);
                if let Some(kind) = error {
                    let named = self.last_report.filter(|f| f.error == *kind);
                    self.failure = Some(named.unwrap_or(Failure { error: *kind, operation: None, offset: None }));
                }
            }
            Event::Cancelled { .. } => {
                self.end_event_seen = true;
                self.stats.end_ns = Some(time_ns);
            }
            _ => {}
        }
        self.events.push(time_ns, event);
    }

    fn pump(&mut self, shared: &Shared) {
        loop {
            let mut immediate = Vec::new();
            while let Some(action) = self.job.poll_action() {
                if let Some(result) = self.dispatch(shared, action) {
                    immediate.push((action.op, result));
                }
            }
            while let Some(event) = self.job.poll_event() {
                self.record(shared, event);
            }
            if std::mem::take(&mut self.switch_to_write_blocking) {
                // Background copying lost the race against the guest: mirror actively, which
                // converges under any write rate (DESIGN §3.7). Refused only when ending.
                let _ = self.job.set_copy_mode(CopyMode::WriteBlocking);
                continue;
            }
            if immediate.is_empty() {
                break;
            }
            for (op, result) in immediate {
                self.complete(op, result);
            }
        }
        if self.finished() && self.stats.end_ns.is_none() {
            self.stats.end_ns = Some(shared.clock.elapsed().as_nanos() as u64);
        }
    }
}
