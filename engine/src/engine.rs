//! `FileMirror`: a running mirror of one file (or block device) onto another, with its
//! threads. No Python here: the Python binding (blockmirror-py) calls these methods with
//! the GIL released.
//!
//! Threads: a driver thread that gives the job its timeouts (the speed limit) and notices
//! the end; `workers` I/O threads; and the callers' own threads (guest writes, verbs,
//! waits). All of them touch the job only under the shared lock (see `shared`).
//!
//! Submodules, one concern each (everything public is re-exported here):
//! - `setup`: [`MirrorSetup`] and its defaults.
//! - `errors`: [`StartError`], [`GuestIoError`], [`VerbError`].
//! - `start`: opening the sides and starting the job and its threads.
//! - `guest_io`: the guest's reads, writes, zeroes, trims and flushes.
//! - `handles`: the files' descriptors and the NBD connection, lent to a server.
//! - `waits`: [`WaitOutcome`] and the waits for READY, the end and events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use blockmirror_core::job::{CopyMode, JobError, JobStatus, MirrorJob, Progress};

use crate::shared::Shared;
use crate::stats::{Failure, Stats};

mod errors;
mod guest_io;
mod handles;
mod setup;
mod start;
mod waits;

pub use errors::{GuestIoError, StartError, VerbError};
pub use guest_io::{MAX_GUEST_READ_BYTES, MAX_GUEST_ZEROES_PIECE_BYTES};
pub use setup::MirrorSetup;
pub use waits::WaitOutcome;

/// A running mirror.
pub struct FileMirror {
    shared: Arc<Shared>,
    /// The driver and worker threads, joined by `close`.
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Held by an online verify (one at a time: the job's guest-touch record is shared).
    online_verify: Mutex<()>,
}

impl FileMirror {
    /// The disk length in bytes.
    pub fn length(&self) -> u64 {
        self.shared.files.length
    }

    /// Waits until no other online verify runs, and keeps others out while held.
    pub(crate) fn online_verify_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.online_verify.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation of the bitmap file's newest slot, when the mirror keeps one and it
    /// is still there (see [`crate::persist::WriteIntent::generation`]).
    pub fn bitmap_generation(&self) -> Option<u64> {
        self.write_intent().and_then(|intent| intent.generation())
    }

    /// The mirror's bitmap file (its marks, generation and counters), when it keeps one.
    pub fn write_intent(&self) -> Option<&Arc<crate::persist::WriteIntent>> {
        self.shared.intent.get()
    }

    /// Both sides' open files (for readers inside the engine, such as the online verify).
    pub(crate) fn sides(&self) -> &crate::target::Sides {
        &self.shared.files
    }

    /// Whether the guest was switched over: its reads and writes now go to the target.
    pub fn pivoted(&self) -> bool {
        self.shared.lock().gate.pivoted
    }

    /// Runs a verb on the job under the lock, then drains its outputs.
    pub fn verb<T>(&self, f: impl FnOnce(&mut MirrorJob) -> Result<T, JobError>) -> Result<T, VerbError> {
        let mut st = self.shared.lock();
        if st.broken {
            return Err(VerbError::Broken(st.internal_error.clone().unwrap_or_default()));
        }
        let r = f(&mut st.job);
        self.shared.pump(&mut st);
        Ok(r?)
    }

    /// Status, progress, counters, failure and internal error, read together.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.shared.lock();
        Snapshot {
            status: st.job.status(),
            progress: st.job.progress(),
            copy_mode: st.job.config().copy_mode,
            stats: st.stats,
            failure: st.failure,
            internal_error: st.internal_error.clone(),
            events_dropped: st.events.dropped(),
            finished: st.finished(),
            ready: st.ready_seen,
            pivoted: st.gate.pivoted,
            injected_faults: self.shared.faults.injected(),
        }
    }

    /// Force-cancels a job that has not ended, waits for the end, stops every thread.
    /// Idempotent; afterwards guest I/O fails with `Closed`.
    ///
    /// The files stay open as long as this value lives (its threads and guest calls use
    /// them without a lock); drop it to close them, as the Python binding does in `close`.
    pub fn close(&self) {
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_closed() {
            return;
        }
        {
            let mut st = self.shared.lock();
            if !st.ending() {
                let _ = st.job.cancel(true);
                self.shared.pump(&mut st);
            }
        }
        self.wait_end(None);
        self.shared.lock().close_tasks();
        self.shared.driver_wake.notify_all();
        for t in threads.drain(..) {
            let _ = t.join();
        }
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether `close` ran.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Drop for FileMirror {
    fn drop(&mut self) {
        self.close();
    }
}

/// A consistent view of the mirror.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Job status.
    pub status: JobStatus,
    /// Job progress.
    pub progress: Progress,
    /// Current copy mode.
    pub copy_mode: CopyMode,
    /// Counters.
    pub stats: Stats,
    /// Why the job failed, if it did.
    pub failure: Option<Failure>,
    /// A broken internal invariant, if any.
    pub internal_error: Option<String>,
    /// Events dropped from a long undelivered queue (see `events`).
    pub events_dropped: u64,
    /// The job ended and all I/O finished.
    pub finished: bool,
    /// `BLOCK_JOB_READY` was seen.
    pub ready: bool,
    /// The guest was switched over to the target.
    pub pivoted: bool,
    /// Operations failed on purpose by the fault injector.
    pub injected_faults: u64,
}
