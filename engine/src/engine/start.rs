//! Starting a mirror: opening both sides, declaring the source's holes to the job, and
//! spawning the I/O threads (workers, io_uring) and the driver. A start that fails part
//! way removes the target it created and lets the threads it started end.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use blockmirror_core::job::{JobError, MirrorConfig, MirrorJob, RangeState, SyncMode};

use crate::extents;
use crate::faults::FaultInjector;
use crate::files::{open_files, open_source, open_source_image, OpenOptionsSpec};
use crate::image::allocation;
use crate::shared::Shared;
use crate::target::{MirrorTarget, NbdTarget, Sides, TargetSide};
use crate::task;
use crate::uring;
use crate::workers;

use super::errors::nbd_start_error;
use super::{FileMirror, MirrorSetup, StartError};

/// Declares the source's holes to the job before it starts, so no guest write can race the
/// scan: `full` skips holes when the target was created here (it reads zero); `top` skips
/// what the source does not allocate, documented as copying only allocated extents onto a
/// target that reads zero; `none` ignores declarations.
///
/// For a qcow2 source the holes come from imago's mapping instead: `full` skips what reads
/// as zero through the whole chain, `top` what the top layer does not hold itself (a
/// created target reads it from the same backing file).
fn declare_holes(job: &mut MirrorJob, shared_files: &Sides, config: &MirrorConfig) -> Result<(), StartError> {
    let state = match config.sync {
        SyncMode::Full if shared_files.target_created => RangeState::Zero,
        SyncMode::Top => RangeState::Unallocated,
        _ => return Ok(()),
    };
    let holes = if let Some(chain) = &shared_files.source_image {
        let scan = if state == RangeState::Zero { allocation::zero_in_chain(chain) } else { allocation::below_top(chain) };
        scan.map_err(|source| StartError::Os { what: "reading the source image's allocation", source })?
    } else if shared_files.source.is_block_device {
        return Ok(());
    } else {
        extents::holes(&shared_files.source.copy, config.length)
            .map_err(|source| StartError::Os { what: "scanning the source's allocation (SEEK_DATA/SEEK_HOLE)", source })?
    };
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
    /// its minimum block size (else [`OpenError::Invalid`](crate::files::OpenError::Invalid) with the reason, such as "Source
    /// and target image have different sizes"); an export that cannot be reached is
    /// [`OpenError::Os`](crate::files::OpenError::Os) for its URI. Nothing is known of
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
            format: setup.format,
            target_format: setup.target_format,
            sync: setup.config.sync,
        };
        let files: Sides = match &target {
            MirrorTarget::Path(path) => open_files(source, path, &spec)?.into(),
            MirrorTarget::Nbd(uri) => {
                let (source_side, file_length) = open_source(source, &spec)?;
                let source_image = open_source_image(source, &source_side, &spec)?.map(Arc::new);
                let length = source_image.as_ref().map_or(file_length, |chain| chain.size());
                let nbd = NbdTarget::open(uri, length, setup.config.granularity).map_err(nbd_start_error)?;
                let target = TargetSide::Nbd(Arc::new(nbd));
                Sides { source: source_side, source_image, target, length, target_created: false }
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
        let attached =
            setup.bitmap.as_ref().map(|b| crate::persist::attach(b, &files, &target, setup.reuse, &mut job, &config));
        let intent = match attached {
            Some(Err(e)) => {
                remove_created(&files);
                return Err(e.into());
            }
            attached => attached.and_then(Result::ok),
        };
        let worker_count = config.max_in_flight.clamp(1, 32);
        let (task_tx, task_rx) = task::queue();
        let local_target = files.target.file().is_some();
        // io_uring and in-kernel copies reach files directly: raw files only.
        let raw_source = files.source_image.is_none();
        let offload = setup.offload
            && !setup.direct
            && local_target
            && raw_source
            && !files.source.is_block_device
            && !files.target.is_block_device();
        let shared =
            Arc::new(Shared::new(job, files, FaultInjector::new(setup.faults), (setup.unmap, offload), task_tx));
        if let Some(intent) = &intent {
            let _ = shared.intent.set(Arc::clone(intent));
        }
        let mut workers = workers::spawn(&shared, task_rx, worker_count)
            .map_err(|source| StartError::Os { what: "starting the I/O threads", source })?;
        if setup.direct && setup.io_uring && local_target && raw_source {
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
        // Without its cleaning thread the bitmap only grows: still correct, resumes copy more.
        if let (Some(intent), Some(b)) = (intent, &setup.bitmap) {
            threads.extend(crate::persist::spawn_cleaner(&shared, intent, b.clean_interval).ok());
        }
        // `drive` runs inside `guarded`: a panic there marks the mirror broken.
        Ok(Self { shared, threads: Mutex::new(threads), closed: AtomicBool::new(false), online_verify: Mutex::new(()) })
    }
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
