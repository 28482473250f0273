//! io_uring for O_DIRECT copies: one thread submits the copy path's reads and writes and
//! reaps their completions in batches, instead of one blocked worker thread per I/O that
//! must be woken for every completion (which costs most on a busy CPU).
//!
//! Only copy reads and writes come here (with `direct=True` and a local target: an NBD
//! target's writes are socket requests); zero writes, flushes and guest writes stay on the
//! worker pool. If the kernel refuses io_uring (old kernel,
//! seccomp), `spawn` fails and the driver keeps using the worker pool for everything.
//!
//! Invariants:
//! - Capacity: at most `capacity` I/Os are in the ring at once, where `capacity` is the
//!   smaller of the submission and completion queue sizes the kernel gave. Each I/O in the
//!   ring holds exactly one submission entry (pending or consumed) and will post exactly one
//!   completion, so pushing never finds the submission queue full and the completion queue
//!   never overflows. Tasks beyond the capacity wait in the task queue: the ring's size
//!   bounds concurrency, never correctness.
//! - Buffers: once an I/O's entry is pushed, its buffer belongs to the kernel until its
//!   completion is reaped. If the ring fails (`io_uring_enter` returns an error other than
//!   a transient one), the ops are reported failed to the job at once, but their buffers are
//!   withheld: freed or reused only if a completion for them still arrives, and otherwise
//!   leaked when the thread ends (the kernel may still read or write them, even after the
//!   ring is closed). A failed ring is never entered again: the copy I/O that follows runs
//!   on this thread with blocking calls, as the workers do.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use blockmirror_core::job::{IoErrorKind, OpId};
use crossbeam_channel::TryRecvError;
use io_uring::{opcode, types, IoUring};
use rustix::io::Errno;

use crate::buffers::AlignedBuf;
use crate::faults::{FaultOp, FaultSide};
use crate::shared::{guarded, Shared};
use crate::task::{CopyWritten, Task, TaskOutcome, TaskReceiver};

/// Fewest submission entries a ring is made with.
const MIN_RING_ENTRIES: u32 = 8;

/// Most submission entries a ring is made with (the kernel allows 32768): past a few
/// thousand I/Os in flight a single thread gains nothing, and the rings' memory grows.
const MAX_RING_ENTRIES: u32 = 4096;

/// The submission queue size asked for `depth` I/Os at once: a power of two (as the kernel
/// rounds to anyway) within [`MIN_RING_ENTRIES`, `MAX_RING_ENTRIES`], whatever `depth` is.
pub fn ring_entries(depth: usize) -> u32 {
    let clamped = depth.clamp(MIN_RING_ENTRIES as usize, MAX_RING_ENTRIES as usize) as u32;
    // Both bounds are powers of two, so the result stays within them.
    clamped.next_power_of_two()
}

/// A failure `submit_and_wait` returns instead of entering the kernel: the test seam for
/// the ring's error path. Production rings have none.
#[derive(Debug, Clone, Copy)]
pub struct InjectedSubmitFailure {
    /// The call (counting from 1) that fails; later calls never happen (the ring is failed).
    pub call: u64,
    /// The errno it fails with.
    pub errno: i32,
}

/// One I/O in the ring.
struct InFlight {
    op: OpId,
    offset: u64,
    buf: AlignedBuf,
    /// Bytes done so far (short transfers are resubmitted for the rest).
    done: usize,
    is_read: bool,
}

struct Ring {
    ring: IoUring,
    /// Most I/Os in the ring at once (see the module's capacity invariant).
    capacity: usize,
    /// The I/Os whose entries were pushed, by `user_data`.
    in_flight: HashMap<u64, InFlight>,
    next_id: u64,
    /// The ring failed: it is never entered again (see the module's buffer invariant).
    failed: bool,
    /// Buffers of I/Os that were in the ring when it failed, by `user_data`: the kernel may
    /// still use them, so they are released only by their completion, or leaked.
    withheld: HashMap<u64, AlignedBuf>,
    inject: Option<InjectedSubmitFailure>,
    submit_calls: u64,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Still the kernel's (also when this thread unwinds from a panic): closing the ring
        // does not wait for its I/O, so freeing these could hand the kernel's target memory
        // to the allocator. Leak them instead; this happens only after a failure.
        for (_, buf) in self.withheld.drain() {
            std::mem::forget(buf);
        }
        for (_, io) in self.in_flight.drain() {
            std::mem::forget(io.buf);
        }
    }
}

impl Ring {
    fn new(entries: u32, inject: Option<InjectedSubmitFailure>) -> io::Result<Self> {
        let ring = IoUring::new(entries)?;
        let params = ring.params();
        let capacity = params.sq_entries().min(params.cq_entries()) as usize;
        Ok(Self {
            ring,
            capacity,
            in_flight: HashMap::new(),
            next_id: 0,
            failed: false,
            withheld: HashMap::new(),
            inject,
            submit_calls: 0,
        })
    }

    /// Pushes one I/O's entry; the caller keeps `in_flight` below `capacity` beforehand.
    fn push(&mut self, shared: &Shared, io: InFlight) {
        debug_assert!(!self.failed, "a failed ring is never used again");
        let files = &shared.files;
        let len = io.buf.as_slice().len();
        let addr = io.buf.as_slice().as_ptr() as usize;
        let pos = io.offset + io.done as u64;
        let rest = (len - io.done) as u32;
        // The rest of a short transfer may no longer be aligned: `handle_for` then picks the
        // buffered handle.
        let rest_addr = addr + io.done;
        let entry = if io.is_read {
            let fd = files.source.handle_for(pos, rest as usize, rest_addr).as_raw_fd();
            opcode::Read::new(types::Fd(fd), rest_addr as *mut u8, rest).offset(pos).build()
        } else {
            let target = files.target.file().expect("the ring is started only for a local target");
            let fd = target.handle_for(pos, rest as usize, rest_addr).as_raw_fd();
            opcode::Write::new(types::Fd(fd), rest_addr as *const u8, rest).offset(pos).build()
        };
        let id = self.next_id;
        self.next_id += 1;
        let entry = entry.user_data(id);
        // Moving the `AlignedBuf` into the map does not move its heap bytes.
        self.in_flight.insert(id, io);
        // SAFETY: the entry names `rest` bytes inside the buffer now owned by `in_flight`,
        // which is neither touched, freed nor reused until the kernel's completion for `id`
        // is reaped (or, if the ring fails first, never: see `withheld` and `Drop`). The fd
        // stays open that long: the files live in `Shared`, which outlives this thread.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        // Each I/O in the ring holds one entry and `in_flight.len() <= capacity <= sq_entries`.
        pushed.expect("the submission queue has room for every I/O in flight (capacity invariant)");
    }

    /// Takes one task into the ring (or finishes it at once on an injected fault, or runs
    /// it here when the ring has failed).
    fn intake(&mut self, shared: &Shared, task: Task) {
        if self.failed {
            shared.finish_task_routed(crate::workers::run(shared, task));
            return;
        }
        let (op, offset, buf, is_read) = match task {
            Task::Read { op, offset, buf } => (op, offset, buf, true),
            Task::Write { op, offset, buf, zero_runs, .. } => {
                debug_assert!(zero_runs.is_empty(), "a write with zero pieces goes to the workers");
                (op, offset, buf, false)
            }
            _ => unreachable!("only copy reads and writes are routed to the ring"),
        };
        let (side, fault_op) =
            if is_read { (FaultSide::Source, FaultOp::Read) } else { (FaultSide::Target, FaultOp::Write) };
        let io = InFlight { op, offset, buf, done: 0, is_read };
        match shared.faults.check(side, fault_op) {
            Some(kind) => finish(shared, io, Err(kind)),
            None => self.push(shared, io),
        }
    }

    fn submit_and_wait(&mut self) -> io::Result<()> {
        self.submit_calls += 1;
        if let Some(inject) = self.inject.filter(|i| i.call == self.submit_calls) {
            return Err(io::Error::from_raw_os_error(inject.errno));
        }
        self.ring.submit_and_wait(1).map(drop)
    }

    /// Reaps every posted completion: finishes its I/O, or resubmits the rest of a short
    /// transfer (which keeps its place in the ring, so the capacity holds).
    fn reap(&mut self, shared: &Shared) {
        let reaped: Vec<(u64, i32)> = self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (id, res) in reaped {
            if let Some(buf) = self.withheld.remove(&id) {
                // The kernel is done with it after all: it may be reused.
                shared.pool.give_back(buf);
                continue;
            }
            let mut io = self.in_flight.remove(&id).expect("every completion belongs to a submitted I/O");
            let len = io.buf.as_slice().len();
            if res < 0 {
                finish(shared, io, Err(IoErrorKind::from_errno(-res)));
            } else if res == 0 {
                // End of file before the range's end: the source shrank (or a zero-byte write).
                finish(shared, io, Err(IoErrorKind::Io));
            } else {
                io.done += res as usize;
                if io.done < len && !self.failed {
                    self.push(shared, io);
                } else if io.done < len {
                    finish(shared, io, Err(IoErrorKind::Io));
                } else {
                    finish(shared, io, Ok(()));
                }
            }
        }
    }

    /// The ring itself failed: completions already posted are taken, every other I/O in it
    /// fails at once (the job's policies act) and its buffer is withheld.
    fn fail(&mut self, shared: &Shared, err: &io::Error) {
        self.failed = true;
        self.reap(shared);
        let kind = crate::io_ops::error_kind(err);
        let lost: Vec<(u64, InFlight)> = self.in_flight.drain().collect();
        shared.lock().stats.buffers_withheld += lost.len() as u64;
        for (id, io) in lost {
            self.withheld.insert(id, io.buf);
            let outcome = if io.is_read {
                TaskOutcome::Read { op: io.op, result: Err(kind) }
            } else {
                TaskOutcome::Write { op: io.op, buf: None, result: Err(kind) }
            };
            shared.finish_task_routed(outcome);
        }
    }
}

fn finish(shared: &Shared, io: InFlight, result: Result<(), IoErrorKind>) {
    let outcome = if io.is_read {
        TaskOutcome::Read {
            op: io.op,
            result: result.map(|()| crate::workers::full_read_done(io.buf, io.offset, shared.zero_piece)),
        }
    } else {
        let data = io.buf.as_slice().len() as u64;
        TaskOutcome::Write { op: io.op, buf: Some(io.buf), result: result.map(|()| CopyWritten { data, ..Default::default() }) }
    };
    // Whatever this completion causes goes through the shared state's dispatch, which
    // routes copy I/O back to this ring's queue: nothing is kept for this thread.
    shared.finish_task_routed(outcome);
}

/// An error of `io_uring_enter` after which the ring works again: interrupted (EINTR), or
/// short of kernel memory or completion room for now (EAGAIN, EBUSY; reaping makes room).
fn transient(err: &io::Error) -> bool {
    matches!(Errno::from_io_error(err), Some(Errno::INTR | Errno::AGAIN | Errno::BUSY))
}

fn run(shared: &Shared, ring: &mut Ring, tasks: &TaskReceiver) {
    loop {
        if ring.in_flight.is_empty() {
            match tasks.recv() {
                Ok(task) => ring.intake(shared, task),
                Err(_) => return,
            }
        }
        // Fill the ring up to its capacity; further tasks wait in the queue.
        while ring.in_flight.len() < ring.capacity {
            match tasks.try_recv() {
                Ok(task) => ring.intake(shared, task),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) if ring.in_flight.is_empty() => return,
                Err(TryRecvError::Disconnected) => break,
            }
        }
        if ring.in_flight.is_empty() {
            continue;
        }
        match ring.submit_and_wait() {
            Ok(()) => ring.reap(shared),
            Err(e) if transient(&e) => ring.reap(shared),
            Err(e) => ring.fail(shared, &e),
        }
    }
}

/// Starts the ring thread for up to `depth` I/Os at once (clamped, see [`ring_entries`]).
/// The ring is made first, so an unsupported kernel is an error here.
pub fn spawn(
    shared: &Arc<Shared>,
    tasks: TaskReceiver,
    depth: usize,
    inject: Option<InjectedSubmitFailure>,
) -> io::Result<JoinHandle<()>> {
    let mut ring = Ring::new(ring_entries(depth), inject)?;
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name("blockmirror-uring".into())
        .spawn(move || guarded(&shared, "io_uring", || run(&shared, &mut ring, &tasks)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use blockmirror_core::job::ErrorPolicy;

    use super::*;
    use crate::engine::{FileMirror, MirrorSetup, StartError, WaitOutcome};
    use crate::files::OpenError;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("bm-uring-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Mirrors `data` with io_uring and O_DIRECT, then completes; `None` when this machine
    /// cannot run the test (no io_uring, or no O_DIRECT in the temporary directory).
    fn mirror_with_ring(
        name: &str,
        data: &[u8],
        setup: MirrorSetup,
        inject: Option<InjectedSubmitFailure>,
    ) -> Option<crate::engine::Snapshot> {
        if IoUring::new(MIN_RING_ENTRIES).is_err() {
            eprintln!("skipped: the kernel refuses io_uring here");
            return None;
        }
        let dir = temp_dir(name);
        let (source, target) = (dir.join("src.img"), dir.join("dst.img"));
        std::fs::write(&source, data).unwrap();
        let setup = MirrorSetup { direct: true, io_uring: true, ..setup };
        let mirror = match FileMirror::start_inner(&source, crate::MirrorTarget::Path(target.clone()), setup, inject) {
            Err(StartError::Open(OpenError::Invalid(msg))) if msg.contains("O_DIRECT") => {
                eprintln!("skipped: {msg}");
                return None;
            }
            other => other.unwrap(),
        };
        assert_eq!(mirror.wait_ready(Some(Duration::from_secs(60))), WaitOutcome::Reached);
        mirror.verb(|job| job.complete()).unwrap();
        assert_eq!(mirror.wait_end(Some(Duration::from_secs(60))), WaitOutcome::Reached);
        let snap = mirror.snapshot();
        drop(mirror);
        assert!(std::fs::read(&target).unwrap() == data, "the target differs from the source");
        std::fs::remove_dir_all(&dir).unwrap();
        Some(snap)
    }

    fn pattern(length: usize) -> Vec<u8> {
        (0..length).map(|i| (i / 4096 % 251 + 1) as u8).collect()
    }

    #[test]
    fn a_failed_submission_fails_its_ops_withholds_their_buffers_and_the_copy_goes_on() {
        // The second `io_uring_enter` fails: by then the reads of the first are in the
        // kernel or done, and the writes they caused are pushed but never submitted.
        let mut setup = MirrorSetup::default();
        setup.config.on_source_error = ErrorPolicy::Ignore;
        setup.config.on_target_error = ErrorPolicy::Ignore;
        let inject = InjectedSubmitFailure { call: 2, errno: rustix::io::Errno::IO.raw_os_error() };
        let Some(snap) = mirror_with_ring("fail", &pattern(4 << 20), setup, Some(inject)) else { return };
        assert!(snap.stats.failed_ops >= 1, "{snap:?}");
        // At least the never-submitted writes were withheld, not handed back to the pool.
        assert!(snap.stats.buffers_withheld >= 1, "{snap:?}");
        // The ignored errors were retried on the ring thread with blocking calls.
        assert_eq!(snap.failure, None);
        assert_eq!(snap.internal_error, None);
    }

    #[test]
    fn more_copies_than_the_ring_holds_wait_in_the_queue() {
        // 5000 copy operations of one 4 KiB chunk each: twice that asks for more entries
        // than a ring is made with, so the ring's capacity, not the job, bounds submission.
        let mut setup = MirrorSetup::default();
        setup.config.granularity = 4096;
        setup.config.max_io = 4096;
        setup.config.max_in_flight = 5000;
        setup.config.buf_size = 5000 * 4096;
        let Some(snap) = mirror_with_ring("wide", &pattern(24 << 20), setup, None) else { return };
        assert_eq!((snap.stats.failed_ops, snap.stats.buffers_withheld), (0, 0));
        assert_eq!(snap.stats.bytes_written, 24 << 20);
    }

    #[test]
    fn ring_entries_are_clamped_powers_of_two() {
        assert_eq!(ring_entries(0), MIN_RING_ENTRIES);
        assert_eq!(ring_entries(5), 8);
        assert_eq!(ring_entries(32), 32);
        assert_eq!(ring_entries(33), 64);
        assert_eq!(ring_entries(4096), MAX_RING_ENTRIES);
        // `(max_in_flight * 2) as u32` used to wrap or overflow for these.
        assert_eq!(ring_entries(4097), MAX_RING_ENTRIES);
        assert_eq!(ring_entries(usize::MAX), MAX_RING_ENTRIES);
        assert_eq!(ring_entries(1 << 33), MAX_RING_ENTRIES);
    }
}
