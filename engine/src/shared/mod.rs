//! The state every thread of one mirror shares: the job behind a mutex, and the rule that
//! keeps it consistent.
//!
//! Rule: whoever gives the job an input (a completion, a guest write, a verb, a timeout)
//! does so with the lock held and then calls [`Shared::pump`] before unlocking, which drains
//! `poll_action` (sending I/O to the workers, handling quiesce/unquiesce/pivot at once) and
//! `poll_event` (recording events for the API's callers), then wakes every waiter. So the
//! job is never left with undrained outputs, whichever thread touched it last.
//!
//! - [`State`] (`state`): what the lock guards.
//! - `gate`: the guest's side of quiesce and pivot.
//! - `dispatch`: the drain itself (actions to tasks, events to the log).
//! - here: the lock, the condition variables, and feeding task outcomes back in.

mod dispatch;
mod gate;
mod state;

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use blockmirror_core::job::{CopyMode, IoErrorKind, MirrorConfig, MirrorJob, Nanos, OpResult};

pub use gate::GuestGate;
pub use state::{ReadBuf, State};

use crate::buffers::BufferPool;
use crate::faults::FaultInjector;
use crate::target::Sides;
use crate::task::{Task, TaskOutcome, TaskSender};

/// The shared part of one mirror.
pub struct Shared {
    /// The job and its bookkeeping.
    pub state: Mutex<State>,
    /// Wakes the driver thread (the next timeout may have moved, or the job ended).
    pub driver_wake: Condvar,
    /// Wakes API callers (status, events, guest write acknowledgements, the gate).
    pub changed: Condvar,
    /// Both sides (the source file, the local or remote target).
    pub files: Sides,
    /// Copy buffers.
    pub pool: BufferPool,
    /// Injected faults.
    pub faults: FaultInjector,
    /// Zero writes may deallocate.
    pub unmap: bool,
    /// Copies of ranges that hold data run in the kernel (`copy_file_range`).
    pub offload: bool,
    /// The piece size a copy's zeroes are found in (see `zero_runs`).
    pub zero_piece: usize,
    /// Time zero of this mirror.
    pub clock: Instant,
    /// The persistent write-intent bitmap, when the mirror keeps one (set once, at start).
    pub intent: OnceLock<Arc<crate::persist::WriteIntent>>,
}

impl Shared {
    /// Builds the shared state around a job (not started yet).
    pub fn new(
        job: MirrorJob,
        files: Sides,
        faults: FaultInjector,
        (unmap, offload): (bool, bool),
        tasks: TaskSender,
    ) -> Self {
        // The longest copy the job can ever ask for (no speed limit, background mode):
        // copies get no longer than this, so every pooled buffer serves any of them.
        let longest = MirrorConfig {
            speed_bytes_per_sec: 0,
            copy_mode: CopyMode::Background,
            ..job.config().clone()
        };
        let buffer_bytes = longest.largest_copy() as usize;
        let zero_piece = crate::zero_runs::piece_bytes(longest.granularity);
        Self {
            state: Mutex::new(State::new(job, tasks)),
            driver_wake: Condvar::new(),
            changed: Condvar::new(),
            files,
            pool: BufferPool::new(buffer_bytes),
            faults,
            unmap,
            offload,
            zero_piece,
            clock: Instant::now(),
            intent: OnceLock::new(),
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
                    st.stats.bytes_read += done.bytes_read;
                    if done.zero {
                        st.stats.zero_reads += 1;
                        self.pool.give_back(done.buf);
                        (op, OpResult::OkZeroes)
                    } else {
                        st.read_bufs.insert(op, ReadBuf { buf: done.buf, offloaded: done.offloaded, zero_runs: done.zero_runs });
                        (op, OpResult::Ok)
                    }
                }
                Err(kind) => (op, OpResult::Failed(kind)),
            },
            TaskOutcome::Write { op, buf, result } => {
                if let Some(buf) = buf {
                    self.pool.give_back(buf);
                }
                if let Ok(written) = result {
                    st.stats.bytes_written += written.data;
                    st.stats.bytes_read += written.in_kernel;
                    st.stats.bytes_offloaded += written.in_kernel;
                    st.stats.bytes_zeroed += written.zeroed;
                    st.stats.bytes_punched += written.punched;
                }
                (op, to_op_result(result.map(drop)))
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
