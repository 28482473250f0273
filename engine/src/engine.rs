//! `FileMirror`: a running mirror of one file (or block device) onto another, with its
//! threads. No Python here: the Python binding (blockmirror-py) calls these methods with
//! the GIL released.
//!
//! Threads: a driver thread that gives the job its timeouts (the speed limit) and notices
//! the end; `workers` I/O threads; and the callers' own threads (guest writes, verbs,
//! waits). All of them touch the job only under the shared lock (see `shared`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blockmirror_core::job::{
    CopyMode, GuestWrite, GuestWriteStart, JobError, JobStatus, MirrorConfig, MirrorJob, OpId, OpResult, Progress,
    RangeState, SyncMode,
};

use crate::events::EventRecord;
use crate::extents;
use crate::faults::{FaultInjector, InjectedFault};
use crate::files::{open_files, open_source, OpenError, OpenOptionsSpec};
use crate::io_ops;
use crate::locks::LockError;
use crate::net::NbdClientError;
use crate::shared::{Shared, State};
use crate::stats::{Failure, Stats};
use crate::target::{MirrorTarget, NbdTarget, NbdTargetError, Sides, TargetSide};
use crate::task::{self, GuestPayload};
use crate::uring;
use crate::workers;

/// Everything needed to start a mirror, besides the source and the target.
#[derive(Debug, Clone)]
pub struct MirrorSetup {
    /// The job's configuration (`length` and `discard_reads_zero` are filled in here).
    pub config: MirrorConfig,
    /// O_DIRECT on both files' copy handles (on the source's alone with an NBD target).
    pub direct: bool,
    /// Mirror into an existing target of the same size. An NBD export always exists and is
    /// used as it is, whatever this says.
    pub reuse: bool,
    /// Zero writes may deallocate (punch holes) on the target.
    pub unmap: bool,
    /// Open the source writable so `guest_write` works.
    pub guest_writes: bool,
    /// With `direct`: submit copy reads and writes through io_uring (falls back to the
    /// worker threads where the kernel refuses it).
    pub io_uring: bool,
    /// Let ranges that hold data be copied inside the kernel (`copy_file_range`) when both
    /// sides are regular files and `direct` is off.
    pub offload: bool,
    /// Faults to inject.
    pub faults: Vec<InjectedFault>,
    /// Take QEMU-compatible image locks on the source (see [`locks`](crate::locks)), so
    /// that a QEMU, `qemu-nbd` or `qemu-io` writing it refuses to start, and the mirror
    /// refuses a source such a program writes. Turn it off when this process already holds
    /// the source's lock on a descriptor of its own (a server that serves the source and
    /// mirrors it): locks of two open file descriptions conflict even within one process,
    /// so the mirror's own lock would be refused.
    pub lock_source: bool,
    /// Take QEMU-compatible image locks on the target (see `lock_source` for why a caller
    /// would turn it off). Not for an NBD target: its server locks its own image.
    pub lock_target: bool,
}

impl Default for MirrorSetup {
    /// The job's defaults ([`MirrorConfig::new`]) with buffered I/O into a new sparse target:
    /// no O_DIRECT (so no io_uring), no reuse of an existing target, holes punched for zero
    /// ranges, guest writes possible, in-kernel copies where the files allow, no
    /// faults, both images locked. The same choices as the Python `FileMirror`'s defaults.
    fn default() -> Self {
        Self {
            config: MirrorConfig::new(0),
            direct: false,
            reuse: false,
            unmap: true,
            guest_writes: true,
            io_uring: true,
            offload: true,
            faults: Vec::new(),
            lock_source: true,
            lock_target: true,
        }
    }
}

/// Why a mirror could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Opening or checking the files failed.
    #[error(transparent)]
    Open(OpenError),
    /// Another program uses one of the images in a way the mirror's lock refuses (or the
    /// mirror's use would break what that program's lock protects).
    #[error(transparent)]
    Locked(LockError),
    /// The job rejected its configuration.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The source's allocation could not be read, or a thread could not start.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// How a refused NBD target is reported: an export that cannot be the target (another
/// size, read-only, coarser blocks) is invalid input, as a wrong local target is
/// ([`OpenError::Invalid`]); an export that could not be reached is an OS error opening the
/// URI ([`OpenError::Os`], with the socket's errno when there is one). The existing variants
/// keep every caller's match on `StartError` whole.
fn nbd_start_error(error: NbdTargetError) -> StartError {
    let (uri, source) = match error {
        NbdTargetError::Connect { uri, source: NbdClientError::Connect { source, .. } } => (uri, source),
        NbdTargetError::Connect { uri, source } => (uri, std::io::Error::other(source)),
        refused => return StartError::Open(OpenError::Invalid(refused.to_string())),
    };
    StartError::Open(OpenError::Os { path: uri.into(), source })
}

impl From<OpenError> for StartError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Locked(e) => StartError::Locked(e),
            other => StartError::Open(other),
        }
    }
}

/// Why a guest I/O call failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestIoError {
    /// The range does not lie within the disk.
    #[error("range {offset}+{length} lies outside the disk of {disk_length} bytes")]
    OutOfRange {
        /// First byte.
        offset: u64,
        /// Bytes.
        length: u64,
        /// Disk length.
        disk_length: u64,
    },
    /// The mirror was closed.
    #[error("the mirror is closed")]
    Closed,
    /// A read longer than one call may allocate.
    #[error("a read of {length} bytes is longer than the limit of {limit} bytes per call; read in pieces")]
    TooLong {
        /// Bytes asked for.
        length: u64,
        /// [`MAX_GUEST_READ_BYTES`].
        limit: u64,
    },
    /// The OS refused the read or write.
    #[error("{source}")]
    Os {
        /// The OS error.
        source: std::io::Error,
    },
}

/// The longest `guest_read`: its buffer is allocated whole, so a huge length must be
/// refused before allocating rather than abort the process.
pub const MAX_GUEST_READ_BYTES: u64 = 64 << 20;

/// The longest piece of a `guest_write_zeroes` that is one guest write for the job (pieces
/// start at multiples of it, so they cover whole chunks of any granularity up to it).
pub const MAX_GUEST_ZEROES_PIECE_BYTES: u64 = 64 << 20;

/// Why a verb was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerbError {
    /// The job refused it.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A thread of the mirror panicked; the job is no longer touched (see `State::broken`).
    #[error("the mirror failed internally and takes no more verbs: {0}")]
    Broken(String),
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// What was waited for happened.
    Reached,
    /// The job ended first.
    Ended,
    /// The timeout passed.
    TimedOut,
}

/// A running mirror.
pub struct FileMirror {
    shared: Arc<Shared>,
    /// The driver and worker threads, joined by `close`.
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

/// Declares the source's holes to the job before it starts, so no guest write can race the
/// scan: `full` skips holes when the target was created here (it reads zero); `top` skips
/// what the source does not allocate, documented as copying only allocated extents onto a
/// target that reads zero; `none` ignores declarations.
fn declare_holes(job: &mut MirrorJob, shared_files: &Sides, config: &MirrorConfig) -> Result<(), StartError> {
    let state = match config.sync {
        SyncMode::Full if shared_files.target_created => RangeState::Zero,
        SyncMode::Top => RangeState::Unallocated,
        _ => return Ok(()),
    };
    if shared_files.source.is_block_device {
        return Ok(());
    }
    let holes = extents::holes(&shared_files.source.copy, config.length)
        .map_err(|source| StartError::Os { what: "scanning the source's allocation (SEEK_DATA/SEEK_HOLE)", source })?;
    for hole in holes {
        if let Some(chunks) = extents::whole_chunks(&hole, config.granularity, config.length) {
            job.declare(chunks.start, chunks.end - chunks.start, state)?;
        }
    }
    Ok(())
}

impl FileMirror {
    /// Opens the files, scans the source, starts the job and its threads: the local case
    /// of [`start_to`](Self::start_to).
    pub fn start(source: &Path, target: &Path, setup: MirrorSetup) -> Result<Self, StartError> {
        Self::start_to(source, MirrorTarget::Path(target.to_owned()), setup)
    }

    /// Opens the source and the target, scans the source, starts the job and its threads.
    ///
    /// An NBD target ([`MirrorTarget::Nbd`]) is connected to and used as it is: its size
    /// must be the source's, it must be writable, and the job's granularity a multiple of
    /// its minimum block size (else [`OpenError::Invalid`] with the reason, such as "Source
    /// and target image have different sizes"); an export that cannot be reached is
    /// [`OpenError::Os`] for its URI. Nothing is known of
    /// what it holds, so `sync=full` copies every range, writing the source's zero ranges
    /// as `NBD_CMD_WRITE_ZEROES` (or zero buffers when the server lacks it), and discards
    /// are never taken to read zero. It is not checked against the source's identity: an
    /// export of the source itself must not be named (the mirror would write over the
    /// guest's data with stale copies). Image locks and target creation do not apply.
    pub fn start_to(source: &Path, target: MirrorTarget, setup: MirrorSetup) -> Result<Self, StartError> {
        Self::start_inner(source, target, setup, None)
    }

    /// `start_to`, with a failure injected into the io_uring ring's submissions (tests only).
    pub(crate) fn start_inner(
        source: &Path,
        target: MirrorTarget,
        setup: MirrorSetup,
        ring_failure: Option<uring::InjectedSubmitFailure>,
    ) -> Result<Self, StartError> {
        // Check the knobs before touching any file (the length is not known yet: that the
        // bitmap can hold it is checked when the job is built below).
        setup.config.validate().map_err(JobError::from)?;
        let spec = OpenOptionsSpec {
            direct: setup.direct,
            reuse: setup.reuse,
            guest_writes: setup.guest_writes,
            lock_source: setup.lock_source,
            lock_target: setup.lock_target,
        };
        let files: Sides = match &target {
            MirrorTarget::Path(path) => open_files(source, path, &spec)?.into(),
            MirrorTarget::Nbd(uri) => {
                let (source_side, length) = open_source(source, &spec)?;
                let nbd = NbdTarget::open(uri, length, setup.config.granularity).map_err(nbd_start_error)?;
                Sides { source: source_side, target: TargetSide::Nbd(Arc::new(nbd)), length, target_created: false }
            }
        };
        let mut config = setup.config.clone();
        config.length = files.length;
        config.discard_reads_zero = setup.unmap && files.target.discard_reads_zero();
        let remove_created = |files: &Sides| {
            if let (true, MirrorTarget::Path(path)) = (files.target_created, &target) {
                let _ = std::fs::remove_file(path);
            }
        };
        let mut job = match MirrorJob::new(config.clone()) {
            Ok(job) => job,
            Err(e) => {
                remove_created(&files);
                return Err(e.into());
            }
        };
        if let Err(e) = declare_holes(&mut job, &files, &config) {
            remove_created(&files);
            return Err(e);
        }
        let worker_count = config.max_in_flight.clamp(1, 32);
        let (task_tx, task_rx) = task::queue();
        let local_target = files.target.file().is_some();
        let offload = setup.offload
            && !setup.direct
            && local_target
            && !files.source.is_block_device
            && !files.target.is_block_device();
        let shared =
            Arc::new(Shared::new(job, files, FaultInjector::new(setup.faults), (setup.unmap, offload), task_tx));
        let mut workers = workers::spawn(&shared, task_rx, worker_count)
            .map_err(|source| StartError::Os { what: "starting the I/O threads", source })?;
        if setup.direct && setup.io_uring && local_target {
            let (ring_tx, ring_rx) = task::queue();
            // Refused by the kernel (or a sandbox): the workers do all the I/O instead.
            // Sized for twice the job's copy operations (each has one I/O in the ring at a
            // time); `spawn` clamps the size and bounds its submissions to it.
            if let Ok(ring) = uring::spawn(&shared, ring_rx, config.max_in_flight.saturating_mul(2), ring_failure) {
                shared.lock().uring_tasks = Some(ring_tx);
                workers.push(ring);
            }
        }
        {
            let mut st = shared.lock();
            let now = shared.now();
            if let Err(e) = st.job.start(now) {
                // Let the workers exit (they end when the task sender is gone).
                st.close_tasks();
                drop(st);
                for w in workers {
                    let _ = w.join();
                }
                remove_created(&shared.files);
                return Err(e.into());
            }
            st.stats.initial_total = st.job.progress().total;
            shared.pump(&mut st);
        }
        let driver_shared = Arc::clone(&shared);
        let driver = std::thread::Builder::new()
            .name("blockmirror-driver".into())
            .spawn(move || crate::shared::guarded(&driver_shared, "driver", || crate::driver::drive(&driver_shared)))
            .map_err(|source| StartError::Os { what: "starting the driver thread", source })?;
        let mut threads = workers;
        threads.push(driver);
        // `drive` runs inside `guarded`: a panic there marks the mirror broken.
        Ok(Self { shared, threads: Mutex::new(threads), closed: AtomicBool::new(false) })
    }

    /// The disk length in bytes.
    pub fn length(&self) -> u64 {
        self.shared.files.length
    }

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
            io_ops::datasync(&files.source.buffered).map_err(os)?;
        }
        // A switch-over during the source's sync moved the guest to the target: sync it too.
        if pivoted || mirrored || self.pivoted() {
            files.target.flush().map_err(os)?;
        }
        Ok(())
    }

    /// Whether the guest was switched over: its reads and writes now go to the target.
    pub fn pivoted(&self) -> bool {
        self.shared.lock().gate.pivoted
    }

    /// A new descriptor of the target's buffered (no O_DIRECT) handle: the same open file
    /// description, so it keeps the target's image lock after the mirror is dropped (the
    /// lock goes only when every descriptor of the description is closed). A server keeps
    /// serving the target through it after the switch-over. An NBD target has no file:
    /// this fails with `Unsupported` (see [`nbd_target`](Self::nbd_target)).
    pub fn target_handle(&self) -> std::io::Result<std::fs::File> {
        match &self.shared.files.target {
            TargetSide::File(side) => side.buffered.try_clone(),
            TargetSide::Nbd(nbd) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("the target is the NBD export {}, not a file", nbd.uri()),
            )),
        }
    }

    /// The NBD target, when the mirror writes to one: the connection the mirror itself
    /// uses (made again after a failure), so that a server keeps serving the disk from the
    /// export after the switch-over, through the same ordering of requests. `None` for a
    /// local target (see [`target_handle`](Self::target_handle)).
    pub fn nbd_target(&self) -> Option<Arc<NbdTarget>> {
        match &self.shared.files.target {
            TargetSide::File(_) => None,
            TargetSide::Nbd(nbd) => Some(Arc::clone(nbd)),
        }
    }

    /// A new descriptor of the source's buffered handle (writable when guest writes are on),
    /// sharing its open file description and image lock like [`target_handle`](Self::target_handle).
    pub fn source_handle(&self) -> std::io::Result<std::fs::File> {
        self.shared.files.source.buffered.try_clone()
    }

    /// Warnings about image locks: one for each side whose filesystem does not support the
    /// locks (the mirror then runs without them, as QEMU does). Empty when both sides are
    /// locked or their locks were turned off.
    pub fn lock_warnings(&self) -> Vec<String> {
        let files = &self.shared.files;
        let target_lock = files.target.file().and_then(|side| side.lock.as_ref());
        files.source.lock.iter().chain(target_lock).filter_map(|l| l.warning()).collect()
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
                GuestPayload::Data(data) => io_ops::write_all(&shared.files.source.buffered, data, offset),
                GuestPayload::Zeroes { unmap } => {
                    io_ops::zero_range(&shared.files.source.buffered, offset, length, *unmap).map(drop)
                }
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
            io_ops::read_exact(&files.source.buffered, &mut buf, offset)
        };
        read.map_err(|source| GuestIoError::Os { source })?;
        Ok(buf)
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

    /// Waits until the job is ready (or has ended, or `timeout` passed).
    pub fn wait_ready(&self, timeout: Option<Duration>) -> WaitOutcome {
        self.wait_for(timeout, |st| {
            if st.ready_seen {
                Some(WaitOutcome::Reached)
            } else if st.finished() {
                Some(WaitOutcome::Ended)
            } else {
                None
            }
        })
    }

    /// Waits until the job has ended and every I/O has finished.
    pub fn wait_end(&self, timeout: Option<Duration>) -> WaitOutcome {
        self.wait_for(timeout, |st| st.finished().then_some(WaitOutcome::Reached))
    }

    fn wait_for(&self, timeout: Option<Duration>, done: impl Fn(&State) -> Option<WaitOutcome>) -> WaitOutcome {
        let deadline = deadline_after(timeout);
        let mut st = self.shared.lock();
        loop {
            if let Some(outcome) = done(&st) {
                return outcome;
            }
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return WaitOutcome::TimedOut,
                },
                // Wake now and then anyway: a caller's own timeout handling stays simple.
                None => Duration::from_secs(1),
            };
            st = self.shared.wait_changed(st, wait);
        }
    }

    /// The next event, waiting up to `timeout`; `None` when none came, or when the job has
    /// ended and every event was taken. A record may stand for several identical errors
    /// (`EventRecord::count`; see `events` for when one is held back to gather them).
    pub fn next_event(&self, timeout: Option<Duration>) -> Option<EventRecord> {
        let deadline = deadline_after(timeout);
        let mut st = self.shared.lock();
        loop {
            let finished = st.finished();
            let held_ns = match st.events.pop(self.shared.now().0, finished) {
                Ok(record) => return Some(record),
                Err(held_ns) => held_ns,
            };
            if finished && held_ns.is_none() {
                return None;
            }
            let mut wait = match deadline {
                Some(d) => d.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?,
                None => Duration::from_secs(1),
            };
            if let Some(ns) = held_ns {
                wait = wait.min(Duration::from_nanos(ns));
            }
            st = self.shared.wait_changed(st, wait);
        }
    }

    /// Takes every event not yet taken (held ones too), for a consumer that outlives the
    /// mirror (the Python binding keeps them after `close`).
    pub fn take_events(&self) -> Vec<EventRecord> {
        self.shared.lock().events.drain()
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

/// The instant `timeout` from now; `None` (wait without end) when there is no timeout or it
/// lies beyond what `Instant` can represent (such a wait never ends in practice either).
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
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

#[cfg(test)]
mod tests {
    use blockmirror_core::job::ConfigError;

    use super::*;

    #[test]
    fn a_bad_configuration_is_refused_before_any_file_is_opened_or_created() {
        let dir = std::env::temp_dir().join(format!("bm-engine-validate-{}", std::process::id()));
        let (source, target) = (dir.join("missing-src.img"), dir.join("dst.img"));
        let mut setup = MirrorSetup::default();
        setup.config.granularity = 1000;
        // The source does not exist: an open error would mean the files came first.
        match FileMirror::start(&source, &target, setup) {
            Err(StartError::Job(JobError::Config(ConfigError::Granularity(1000)))) => {}
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a granularity of 1000 was accepted"),
        }
        assert!(!target.exists(), "the target was created for a refused configuration");
    }
}
