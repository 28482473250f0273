//! The served disk's mirror jobs as QMP sees them: `drive-mirror` starts one, the
//! `block-job-*` / `job-*` commands act on it, and its events go to every monitor client
//! with QEMU's names and fields.
//!
//! Invariants:
//! - One job at a time on the one device (QEMU: the node is busy while a job runs).
//! - Jobs are auto-finalized and auto-dismissed (QEMU's defaults): once a job's last event
//!   is out, the disk has moved to where the job left it and `query-block-jobs` no longer
//!   lists it. The final events (`BLOCK_JOB_COMPLETED` or `BLOCK_JOB_CANCELLED`, the
//!   `concluded` and `null` status changes) are sent together, under the registry lock,
//!   after that move: a client that reads the export or queries the jobs after seeing them
//!   finds the outcome in place.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use blockmirror_core::job::{CopyMode, Event, JobStatus, SyncMode};
use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Value};

use super::disk::{ServedDisk, StartMirrorError};
use super::output::lock;
use crate::engine::{FileMirror, MirrorSetup, StartError, VerbError};
use crate::events::EventRecord;
use crate::image::ImageFormat;
use crate::nbd::NbdUri;
use crate::persist::PersistError;
use crate::qmp::{
    self, verbs, Command, DriveMirrorArgs, JobView, NewImageMode, QmpError, QmpEvent,
};
use crate::target::MirrorTarget;
use crate::verify_online::OnlineVerifyReport;

/// The job on the disk, while it runs.
struct RunningJob {
    id: String,
    mirror: Arc<FileMirror>,
    /// The speed limit now (events and `query-block-jobs` report it).
    speed: Arc<AtomicU64>,
}

#[derive(Default)]
struct Registry {
    job: Option<RunningJob>,
    subscribers: Vec<Sender<QmpEvent>>,
    event_threads: Vec<JoinHandle<()>>,
}

/// The job controller of one served disk (see the module doc).
pub struct JobHost {
    disk: Arc<ServedDisk>,
    device: String,
    setup: MirrorSetup,
    registry: Mutex<Registry>,
}

impl JobHost {
    /// A controller for `disk`, known to QMP as device `device`; jobs open their files as
    /// `setup` says (their job settings come from each command).
    pub fn new(disk: Arc<ServedDisk>, device: String, setup: MirrorSetup) -> Self {
        Self {
            disk,
            device,
            setup,
            registry: Mutex::new(Registry::default()),
        }
    }

    /// A new receiver of every job event from now on (one per monitor client).
    pub fn subscribe(&self) -> Receiver<QmpEvent> {
        let (tx, rx) = crossbeam_channel::unbounded();
        lock(&self.registry).subscribers.push(tx);
        rx
    }

    /// Runs one command. `Quit` is the monitor's business and answers `{}` here. A bug that
    /// panics while running it becomes an error reply: the client gets an answer, and the
    /// monitor thread that asked lives on.
    pub fn execute(self: &Arc<Self>, command: Command) -> Result<Value, QmpError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_command(command))).unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(QmpError::generic(format!("internal error while running the command: {why}")))
        })
    }

    fn run_command(self: &Arc<Self>, command: Command) -> Result<Value, QmpError> {
        match command {
            Command::DriveMirror(args) => self.drive_mirror(args).map(|()| json!({})),
            Command::QueryBlockJobs => Ok(Value::Array(
                self.views().iter().map(qmp::block_job_info).collect(),
            )),
            Command::QueryJobs => Ok(Value::Array(
                self.views().iter().map(qmp::job_info).collect(),
            )),
            Command::BlockJobComplete { device } => self.block_verb(&device, |job| job.complete()),
            Command::JobComplete { id } => self.job_verb(&id, |job| job.complete()),
            Command::BlockJobCancel { device, force } => {
                self.block_verb(&device, |job| job.cancel(force))
            }
            Command::JobCancel { id } => self.job_verb(&id, |job| job.cancel(true)),
            Command::BlockJobPause { device } => self.block_verb(&device, |job| job.pause()),
            Command::JobPause { id } => self.job_verb(&id, |job| job.pause()),
            Command::BlockJobResume { device } => self.block_verb(&device, |job| job.resume()),
            Command::JobResume { id } => self.job_verb(&id, |job| job.resume()),
            Command::BlockJobSetSpeed { device, speed } => {
                let result = self.block_verb(&device, |job| job.set_speed(speed));
                if result.is_ok() {
                    if let Some(job) = lock(&self.registry).job.as_ref().filter(|j| j.id == device)
                    {
                        job.speed.store(speed, Ordering::SeqCst);
                    }
                }
                result
            }
            Command::BlockJobChange { id, copy_mode } => {
                self.job_verb(&id, |job| job.set_copy_mode(copy_mode))
            }
            // Jobs are dismissed by themselves once concluded: none is left to dismiss.
            Command::JobDismiss { .. } => Err(verbs::job_not_found()),
            Command::Verify { id, granularity, repair } => {
                let mirror = self.running(&id).ok_or_else(verbs::job_not_found)?;
                let report = mirror
                    .verify_online(granularity.unwrap_or(VERIFY_GRANULARITY), repair)
                    .map_err(|e| QmpError::generic(e.to_string()))?;
                Ok(verify_reply(&report))
            }
            Command::QueryBitmap => self.query_bitmap(),
            Command::Quit => Ok(json!({})),
        }
    }

    /// `x-blockmirror-query-bitmap`: `filename`, `resumable` (a file left by an unfinished
    /// job is there) and, while a file is open, its newest `generation` and the `stats` of
    /// its use since it was opened.
    fn query_bitmap(&self) -> Result<Value, QmpError> {
        let path = self.disk.bitmap_path().ok_or_else(|| {
            QmpError::generic("the server keeps no bitmap file: start it with --bitmap PATH")
        })?;
        let mut reply = json!({
            "filename": path.display().to_string(),
            "resumable": self.disk.has_left_behind_bitmap(),
        });
        let intent = self.disk.bitmap_intent();
        if let Some(generation) = intent.as_ref().and_then(|intent| intent.generation()) {
            reply["generation"] = json!(generation);
        }
        if let Some(stats) = intent.map(|intent| intent.stats()) {
            reply["stats"] = json!({
                "marks-free": stats.marks_free,
                "marks-waited": stats.marks_waited,
                "file-writes": stats.file_writes,
                "chunks-cleared": stats.chunks_cleared,
            });
        }
        Ok(reply)
    }

    fn drive_mirror(self: &Arc<Self>, args: DriveMirrorArgs) -> Result<(), QmpError> {
        if args.device != self.device {
            return Err(verbs::device_not_found(&args.device));
        }
        let id = args.job_id.clone().unwrap_or_else(|| args.device.clone());
        let mut registry = lock(&self.registry);
        if let Some(job) = &registry.job {
            if job.id == id {
                return Err(QmpError::generic(format!("Job ID '{id}' already in use")));
            }
            return Err(QmpError::generic(format!(
                "Node '{}' is busy: block device is in use by block job: mirror",
                self.device
            )));
        }
        let setup = self.job_setup(&args)?;
        let target = mirror_target(&args)?;
        let mirror = self
            .disk
            .start_mirror(target, setup, args.resume, args.bitmap_min_generation)
            .map_err(|e| start_error(&args.target, e))?;
        let speed = Arc::new(AtomicU64::new(args.speed));
        // A job is born `created` without an event (its initial state); QEMU reports that
        // first change too, before `running`, and clients wait for it.
        let created = Event::StatusChange {
            status: JobStatus::Created,
        };
        Self::broadcast(
            &mut registry,
            qmp::job_events(&id, &created, args.speed, SystemTime::now()),
        );
        registry.job = Some(RunningJob {
            id: id.clone(),
            mirror: Arc::clone(&mirror),
            speed: Arc::clone(&speed),
        });
        let host = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name(format!("bm-serve-job-{id}"))
            .spawn(move || host.forward_events(&id, mirror, &speed))
            .map_err(|e| QmpError::generic(format!("cannot start the job's event thread: {e}")))?;
        registry.event_threads.retain(|t| !t.is_finished());
        registry.event_threads.push(thread);
        Ok(())
    }

    /// The mirror setup for a `drive-mirror`: the server's file options, the command's job.
    fn job_setup(&self, args: &DriveMirrorArgs) -> Result<MirrorSetup, QmpError> {
        // The target's format (QEMU's default: the source's, raw here). A qcow2 target gets
        // the backing file its sync mode needs (see `image::plan`).
        let target_format = match args.format.as_deref() {
            None => None,
            Some(name) => Some(ImageFormat::parse(name).map_err(|_| {
                QmpError::generic(format!(
                    "blockmirror serve writes raw and qcow2 targets only: format '{name}' is not supported"
                ))
            })?),
        };
        if !args.auto_finalize || !args.auto_dismiss {
            return Err(QmpError::generic(
                "blockmirror serve runs jobs with auto-finalize and auto-dismiss on (QEMU's defaults) only",
            ));
        }
        let mut setup = self.setup.clone();
        let config = &mut setup.config;
        // A raw image has no backing file: `top` copies the whole disk, as QEMU does
        // (`sync=top` without a backing file becomes `full`). A qcow2 disk's `top` is its
        // own (the target gets the same backing file).
        config.sync = if args.sync == SyncMode::Top && self.disk.format() == ImageFormat::Raw {
            SyncMode::Full
        } else {
            args.sync
        };
        config.copy_mode = args.copy_mode;
        config.speed_bytes_per_sec = args.speed;
        config.on_source_error = args.on_source_error;
        config.on_target_error = args.on_target_error;
        if let Some(granularity) = args.granularity {
            config.granularity = granularity;
        }
        if let Some(buf_size) = args.buf_size {
            config.buf_size = buf_size;
        }
        config.validate().map_err(|e| verbs::config_error(&e))?;
        setup.unmap = args.unmap;
        setup.reuse = args.mode == NewImageMode::Existing;
        setup.target_format = target_format;
        Ok(setup)
    }

    /// The running job's id and mirror, if a job runs: a live view reads its status,
    /// progress and dirty bitmap from the mirror (under the mirror's own lock).
    pub fn running_job(&self) -> Option<(String, Arc<FileMirror>)> {
        lock(&self.registry)
            .job
            .as_ref()
            .map(|j| (j.id.clone(), Arc::clone(&j.mirror)))
    }

    fn running(&self, id: &str) -> Option<Arc<FileMirror>> {
        lock(&self.registry)
            .job
            .as_ref()
            .filter(|j| j.id == id)
            .map(|j| Arc::clone(&j.mirror))
    }

    fn block_verb(
        &self,
        device: &str,
        verb: impl FnOnce(
            &mut blockmirror_core::job::MirrorJob,
        ) -> Result<(), blockmirror_core::job::JobError>,
    ) -> Result<Value, QmpError> {
        let mirror = self
            .running(device)
            .ok_or_else(|| verbs::block_job_not_found(device))?;
        run_verb(device, &mirror, verb)
    }

    fn job_verb(
        &self,
        id: &str,
        verb: impl FnOnce(
            &mut blockmirror_core::job::MirrorJob,
        ) -> Result<(), blockmirror_core::job::JobError>,
    ) -> Result<Value, QmpError> {
        let mirror = self.running(id).ok_or_else(verbs::job_not_found)?;
        run_verb(id, &mirror, verb)
    }

    fn views(&self) -> Vec<JobView> {
        let registry = lock(&self.registry);
        let Some(job) = &registry.job else {
            return Vec::new();
        };
        let snapshot = job.mirror.snapshot();
        let (paused, busy, dirty) = job
            .mirror
            .verb(|j| {
                Ok((
                    j.is_pause_requested(),
                    j.ops_in_flight() > 0,
                    j.dirty_bytes(),
                ))
            })
            .unwrap_or((false, false, 1));
        let error = snapshot
            .failure
            .map(|f| f.error.message())
            .or(snapshot.internal_error.clone());
        vec![JobView {
            id: job.id.clone(),
            status: snapshot.status,
            progress: snapshot.progress,
            speed: job.speed.load(Ordering::SeqCst),
            paused,
            busy,
            io_status_failed: snapshot.failure.is_some(),
            ready: matches!(snapshot.status, JobStatus::Ready | JobStatus::Standby),
            error,
            actively_synced: snapshot.copy_mode == CopyMode::WriteBlocking
                && dirty == 0
                && snapshot.ready,
            auto_finalize: true,
            auto_dismiss: true,
        }]
    }

    fn broadcast(registry: &mut Registry, events: Vec<QmpEvent>) {
        registry
            .subscribers
            .retain(|tx| events.iter().all(|e| tx.send(e.clone()).is_ok()));
    }

    /// The job's event thread: sends its events as they come; once the job has ended, moves
    /// the disk, dismisses the job, closes it (its files and their image locks are released
    /// unless the disk now lives on the target) and sends the final events (see the module
    /// doc): a client that starts a new job on the same target after them finds it free.
    fn forward_events(&self, id: &str, mirror: Arc<FileMirror>, speed: &AtomicU64) {
        let to_qmp = |record: &EventRecord| {
            qmp::job_events(
                id,
                &record.event,
                speed.load(Ordering::SeqCst),
                SystemTime::now(),
            )
        };
        let mut final_events = Vec::new();
        while let Some(record) = mirror.next_event(None) {
            let terminal = matches!(
                record.event,
                Event::Completed { .. } | Event::Cancelled { .. }
            );
            if terminal || !final_events.is_empty() {
                final_events.extend(to_qmp(&record));
            } else {
                let events = to_qmp(&record);
                Self::broadcast(&mut lock(&self.registry), events);
            }
        }
        let mut registry = lock(&self.registry);
        if let Err(e) = self.disk.end_mirror() {
            eprintln!("blockmirror serve: job {id}: cannot keep serving the target after the switch-over: {e}");
        }
        let _ = mirror.verb(|job| job.dismiss());
        for record in mirror.take_events() {
            final_events.extend(to_qmp(&record));
        }
        registry.job = None;
        mirror.close();
        // The last holder (the disk and the registry let go above; a live view or a verify
        // holds one only for the length of a call).
        drop(mirror);
        Self::broadcast(&mut registry, final_events);
    }

    /// Force-cancels a running job and waits until it has ended and its events are out.
    pub fn shutdown(&self) {
        let threads = {
            let mut registry = lock(&self.registry);
            if let Some(job) = &registry.job {
                let _ = job.mirror.verb(|j| j.cancel(true));
            }
            std::mem::take(&mut registry.event_threads)
        };
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// `x-blockmirror-verify`'s segment size when the command names none.
const VERIFY_GRANULARITY: u64 = 1 << 20;

/// An online verify's report as QMP's reply: ranges as `{offset, length}` objects.
fn verify_reply(report: &OnlineVerifyReport) -> Value {
    let ranges = |ranges: &[std::ops::Range<u64>]| -> Value {
        ranges.iter().map(|r| json!({"offset": r.start, "length": r.end - r.start})).collect()
    };
    json!({
        "length": report.length,
        "granularity": report.granularity,
        "verified-bytes": report.verified_bytes,
        "differing": ranges(&report.differing),
        "skipped": ranges(&report.skipped),
        "repaired": ranges(&report.repaired),
        "elapsed-secs": report.elapsed_secs,
    })
}

fn run_verb(
    id: &str,
    mirror: &FileMirror,
    verb: impl FnOnce(
        &mut blockmirror_core::job::MirrorJob,
    ) -> Result<(), blockmirror_core::job::JobError>,
) -> Result<Value, QmpError> {
    match mirror.verb(verb) {
        Ok(()) => Ok(json!({})),
        Err(VerbError::Job(e)) => Err(verbs::job_error(id, &e)),
        Err(e @ VerbError::Broken(_)) => Err(QmpError::generic(e.to_string())),
    }
}

/// A target path, or an NBD URI (`nbd://`, `nbd+unix://`): an export used as it is, so
/// only with `mode: existing`, as QEMU takes an NBD target only as an existing image.
fn mirror_target(args: &DriveMirrorArgs) -> Result<MirrorTarget, QmpError> {
    if !NbdUri::looks_like_uri(&args.target) {
        let path = PathBuf::from(&args.target);
        // QEMU would create the image over it; an existing file is never replaced here.
        if args.mode != NewImageMode::Existing && path.symlink_metadata().is_ok() {
            return Err(QmpError::generic(format!(
                "'{}' exists: blockmirror serve does not replace an image; pass \"mode\": \"existing\" to \
                 mirror into it",
                args.target
            )));
        }
        return Ok(MirrorTarget::Path(path));
    }
    let uri = NbdUri::parse(&args.target)
        .map_err(|e| QmpError::generic(format!("'{}': {e}", args.target)))?;
    if args.mode != NewImageMode::Existing {
        return Err(QmpError::generic(format!(
            "'{}' is an NBD export: it cannot be created; use mode 'existing'",
            args.target
        )));
    }
    Ok(MirrorTarget::Nbd(uri))
}

fn start_error(target: &str, e: StartMirrorError) -> QmpError {
    match e {
        e @ (StartMirrorError::RemoteSource(_) | StartMirrorError::NoBitmap) => QmpError::generic(e.to_string()),
        StartMirrorError::Start(StartError::Bitmap(PersistError::Exists { path })) => QmpError::generic(format!(
            "bitmap file {} exists: a previous mirror of this disk did not finish; pass \"resume\": true \
             (with \"mode\": \"existing\" and the same target) to copy only what it left to do, or remove \
             the file to start over",
            path.display()
        )),
        StartMirrorError::Start(StartError::Bitmap(PersistError::StaleGeneration { found, expected_at_least })) => {
            QmpError::generic(format!(
                "the bitmap file's newest generation is {found}, older than the {expected_at_least} asked for: \
                 it is a stale copy and may miss changed chunks; put the newest file back, or remove it and \
                 copy everything again"
            ))
        }
        StartMirrorError::Start(StartError::Bitmap(PersistError::ResumeNeedsReuse)) => {
            QmpError::generic("resuming needs the existing target: pass \"mode\": \"existing\" with \"resume\"")
        }
        StartMirrorError::Busy => QmpError::generic("block device is in use by block job: mirror"),
        StartMirrorError::Start(StartError::Job(e)) => verbs::job_error("", &e),
        StartMirrorError::Start(e) => QmpError::generic(format!("Could not open '{target}': {e}")),
    }
}
