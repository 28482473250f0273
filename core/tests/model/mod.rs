//! A reference model and randomized driver for the mirror job (its invariants are listed in `checks.rs`).
//!
//! Disks are modelled as one content version per 512-byte block: a guest write stamps a
//! fresh version on its blocks; version 0 reads as zeroes. A read snapshots the source when
//! the driver *performs* it; the write applies that snapshot later. Write-blocking
//! `guest_write` actions apply the guest's own version. A failed target write leaves
//! garbage. After every step the invariants are checked; at the end the content is compared.
//!
//! Guest writes follow the setup's [`GuestProtocol`]. With the two-step protocol a write is
//! several steps that other writes, completions and verbs interleave with, as on a real
//! machine where guest writes run on their own threads: it is announced, may wait for its
//! `admit` action, lands on the source at a step of its own, and is reported at a later one.
//! Several such writes can be in progress at once, overlapping each other and the copies.

use blockmirror_core::job::*;
use std::collections::HashMap;

mod checks;

const GARBAGE: u32 = u32::MAX;
const TORN: u32 = u32::MAX - 1;

/// How the model's guest reports its writes to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestProtocol {
    /// `handle_guest_write` in the same step as the source write (one write at a time).
    OneStep,
    /// `handle_guest_write_start`, then (once admitted) the source write at a step of its
    /// own, then `handle_guest_write_landed` at a later step.
    TwoStep,
    /// Concurrent writes reported with the one-step call after landing at an earlier step:
    /// what a driver that writes the source before telling the job does. Unsafe with
    /// overlapping writes in write-blocking mode; kept to show the model catches it.
    ReportAfterLanding,
}

/// Where a guest write of the model stands (two-step and report-after-landing protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landing {
    /// Announced; its `admit` action has not been performed yet.
    AwaitingAdmit,
    /// May write the source now.
    MayLand,
    /// On the source; not reported yet.
    Landed,
}

/// A guest write in progress (started, not yet reported).
#[derive(Debug, Clone, Copy)]
pub(super) struct InProgress {
    /// The two-step op, if any.
    pub(super) op: Option<OpId>,
    offset: u64,
    length: u64,
    version: u32,
    stage: Landing,
    /// The source write fails (the source then holds some of it).
    fails: bool,
}

/// The shape of one model run, drawn by proptest.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Bytes per content version: 512 (block model) or 1 (byte model, tiny disks).
    pub unit: u64,
    pub chunks: u64,
    pub granularity: u64,
    /// Units past the last whole chunk (less than a chunk).
    pub tail_units: u64,
    pub max_io_chunks: u64,
    pub buf_chunks: u64,
    pub max_in_flight: usize,
    pub speed: u64,
    pub sync: SyncMode,
    pub copy_mode: CopyMode,
    pub on_source_error: ErrorPolicy,
    pub on_target_error: ErrorPolicy,
    pub discard_reads_zero: bool,
    /// The job switches itself to write-blocking when it stops converging.
    pub auto_converge: bool,
    /// Percent of performed actions that fail while faults are on.
    pub fault_percent: u32,
    /// Step at which the job is started.
    pub start_at: usize,
    /// How the finishing phase ends a ready job: complete (true) or soft cancel.
    pub finish_with_complete: bool,
    pub guest_protocol: GuestProtocol,
    pub seed: u64,
}

/// One step of the random program: `kind` picks what happens, `a` and `b` parameterise it.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub kind: u8,
    pub a: u32,
    pub b: u32,
}

pub struct Model {
    pub setup: Setup,
    pub job: MirrorJob,
    length: u64,
    source: Vec<u32>,
    target: Vec<u32>,
    next_version: u32,
    pending: Vec<Action>,
    buffers: HashMap<OpId, (Vec<u32>, bool)>,
    guest_versions: HashMap<OpId, u32>,
    /// Mirrored guest writes not yet acknowledged.
    unacknowledged: usize,
    /// Guest writes started and not yet reported.
    pub(super) in_progress: Vec<InProgress>,
    declarations: Vec<(u64, u64, RangeState)>,
    held: bool,
    pivoted: bool,
    snapshot_at_hold: Option<Vec<u32>>,
    faults_on: bool,
    now: u64,
    rng: u64,
    log_position: u64,
    // What the checks remember.
    seen_status: JobStatus,
    ready_events: usize,
    ever_ready: bool,
    last_current: u64,
    report_errors: Vec<IoErrorKind>,
    switch_failures: Vec<IoErrorKind>,
    cancel_requested: bool,
    force_cancelled: bool,
    end: Option<Event>,
    pub steps: usize,
    /// `BLOCK_JOB_AUTO_CONVERGE` events seen.
    pub auto_converged: usize,
}

impl Model {
    pub fn new(setup: Setup) -> Self {
        let unit_bytes = setup.unit;
        let length = setup.chunks * setup.granularity + setup.tail_units * unit_bytes;
        let units = length.div_ceil(unit_bytes) as usize;
        let mut config = MirrorConfig::new(length);
        config.granularity = setup.granularity;
        config.max_io = setup.max_io_chunks * setup.granularity;
        config.buf_size = setup.buf_chunks * setup.granularity;
        config.max_in_flight = setup.max_in_flight;
        config.speed_bytes_per_sec = setup.speed;
        config.sync = setup.sync;
        config.copy_mode = setup.copy_mode;
        config.on_source_error = setup.on_source_error;
        config.on_target_error = setup.on_target_error;
        config.discard_reads_zero = setup.discard_reads_zero;
        config.not_converging_window_ns = 50_000_000;
        config.auto_converge = setup.auto_converge;
        let job = MirrorJob::new(config).expect("the model draws valid configs");
        let mut rng = setup.seed | 1;
        let mut source: Vec<u32> = (0..units as u32).map(|i| 1_000_000 + i).collect();
        let mut target = vec![GARBAGE; units];
        let mut declarations = Vec::new();
        // Runs of the source that are zero / unallocated, as the driver would find them.
        let mut unit = 0;
        while unit < units {
            let run = (xorshift(&mut rng) % 12 + 1) as usize;
            let end = (unit + run).min(units);
            let special = xorshift(&mut rng) % 3 == 0;
            if special {
                let (offset, len) = (
                    unit as u64 * unit_bytes,
                    ((end as u64) * unit_bytes).min(length) - unit as u64 * unit_bytes,
                );
                match setup.sync {
                    SyncMode::Full | SyncMode::None => {
                        source[unit..end].fill(0);
                        declarations.push((offset, len, RangeState::Zero));
                    }
                    _ => declarations.push((offset, len, RangeState::Unallocated)),
                }
            }
            unit = end;
        }
        match setup.sync {
            // The target reads zero, as the zero declarations require.
            SyncMode::Full => target.fill(0),
            // The target shares the source's backing: unallocated ranges read the same.
            SyncMode::Top => {
                for &(offset, len, _) in &declarations {
                    let (a, b) = units_of(unit_bytes, offset, len);
                    target[a..b].copy_from_slice(&source[a..b]);
                }
            }
            // Only writes after the start are copied: the target starts as the source.
            _ => target.copy_from_slice(&source),
        }
        // Interleave some "allocated" declarations (always truthful, never harmful).
        if xorshift(&mut rng) % 2 == 0 && length > unit_bytes {
            declarations.insert(0, (unit_bytes, length - unit_bytes, RangeState::Allocated));
        }
        declarations.reverse(); // popped from the back in order
        Self {
            setup,
            job,
            length,
            source,
            target,
            next_version: 1,
            pending: Vec::new(),
            buffers: HashMap::new(),
            guest_versions: HashMap::new(),
            unacknowledged: 0,
            in_progress: Vec::new(),
            declarations,
            held: false,
            pivoted: false,
            snapshot_at_hold: None,
            faults_on: true,
            now: 0,
            rng,
            log_position: 0,
            seen_status: JobStatus::Created,
            ready_events: 0,
            ever_ready: false,
            last_current: 0,
            report_errors: Vec::new(),
            switch_failures: Vec::new(),
            cancel_requested: false,
            force_cancelled: false,
            end: None,
            steps: 0,
            auto_converged: 0,
        }
    }

    fn random(&mut self) -> u64 {
        xorshift(&mut self.rng)
    }

    /// Runs the random program, then the finishing phase, checking everything.
    pub fn run(&mut self, program: &[Step]) {
        for (index, step) in program.iter().enumerate() {
            if index == self.setup.start_at && self.job.status() == JobStatus::Created {
                self.job.start(Nanos(self.now)).expect("start from created");
                self.after_input("start");
            }
            self.step(*step);
        }
        if self.job.status() == JobStatus::Created {
            self.job.start(Nanos(self.now)).expect("start from created");
            self.after_input("start");
        }
        self.finish();
        self.check_end();
    }

    fn step(&mut self, step: Step) {
        self.steps += 1;
        match step.kind % 100 {
            0..=41 => self.perform_some(step.a as usize, step.b),
            42..=61 => self.guest_write(step.a as u64, step.b as u64),
            86..=91 => {
                self.advance_a_guest_write(step.a as usize);
            }
            62..=65 => {
                self.now += step.a as u64 % 300_000_000;
                self.job.handle_timeout(Nanos(self.now));
                self.after_input("timeout");
            }
            66..=67 => {
                self.verb("pause", |job| job.pause());
            }
            68..=70 => {
                self.verb("resume", |job| job.resume());
            }
            71 => {
                let speed = [0, 1, 64 << 10, 1 << 20, 100 << 20][step.a as usize % 5];
                self.verb("set_speed", move |job| job.set_speed(speed));
            }
            72 => {
                let mode = if step.a % 2 == 0 {
                    CopyMode::Background
                } else {
                    CopyMode::WriteBlocking
                };
                self.verb("set_copy_mode", move |job| job.set_copy_mode(mode));
            }
            73..=75 => {
                self.verb("complete", |job| job.complete());
            }
            76 => self.cancel(false),
            77 if step.a % 4 == 0 => self.cancel(true),
            78..=80 => self.declare_next(),
            81 => self.bad_completion(step.a, step.b),
            82..=84 => {
                if let Some(at) = self.job.poll_timeout() {
                    self.now = self.now.max(at.0);
                    self.job.handle_timeout(Nanos(self.now));
                    self.after_input("timeout at poll_timeout");
                }
            }
            _ => self.perform_some(step.a as usize, step.b),
        }
    }

    /// The finishing phase: faults stop, the job is resumed and unthrottled, ready jobs are
    /// ended; write-blocking keeps the guest writing (faster than the copy). Bounded: a job
    /// that does not conclude is a livelock.
    fn finish(&mut self) {
        self.faults_on = false;
        if self.job.is_pause_requested() {
            self.verb("resume", |job| job.resume());
        }
        self.verb("set_speed", |job| job.set_speed(0));
        let keep_writing = self.job.config().copy_mode == CopyMode::WriteBlocking;
        let mut ended = false;
        for round in 0..200_000 {
            if self.job.status() == JobStatus::Concluded {
                return;
            }
            // Time passes while the guest keeps the driver busy: waits the job set itself
            // (the retry back-off after ignored errors) run out as they would on a machine.
            if round % 10 == 9 {
                self.now += 10_000_000;
                self.job.handle_timeout(Nanos(self.now));
                self.after_input("finish clock");
            }
            if self.job.status() == JobStatus::Ready && !ended {
                ended = true;
                if self.setup.finish_with_complete && !self.cancel_requested {
                    self.verb("complete", |job| job.complete());
                } else {
                    self.cancel(false);
                }
            }
            if keep_writing && round % 2 == 0 && round < 20_000 {
                let (a, b) = (self.random(), self.random());
                self.guest_write(a, b);
            }
            // Invariant 7: write-blocking reaches ready while the guest keeps writing.
            let healthy = !self.cancel_requested
                && self.report_errors.is_empty()
                && self.switch_failures.is_empty();
            if keep_writing && round == 19_999 && healthy {
                assert!(
                    self.ever_ready,
                    "write-blocking did not reach ready under writes"
                );
            }
            if !self.in_progress.is_empty() && (self.performable().is_empty() || round % 3 == 1) {
                let pick = self.random() as usize;
                if self.advance_a_guest_write(pick) {
                    continue;
                }
            }
            if self.performable().is_empty() {
                match self.job.poll_timeout() {
                    Some(at) => {
                        self.now = self.now.max(at.0);
                        self.job.handle_timeout(Nanos(self.now));
                        self.after_input("finish timeout");
                    }
                    None => panic!(
                        "livelock: status {} with nothing to do; pending {:?}; ops {:?}",
                        self.job.status(),
                        self.pending,
                        self.job.ops().collect::<Vec<_>>()
                    ),
                }
            } else {
                let pick = self.random() as usize;
                self.perform_some(pick, u32::MAX);
            }
        }
        panic!(
            "livelock: not concluded after the finishing phase; status {}",
            self.job.status()
        );
    }

    /// Indices of pending actions the driver may perform now. A quiesce completes only once
    /// mirrored guest writes already started have been acknowledged.
    fn performable(&self) -> Vec<usize> {
        let guest_idle = self.unacknowledged == 0 && self.in_progress.is_empty();
        (0..self.pending.len())
            .filter(|&i| self.pending[i].kind != ActionKind::Quiesce || guest_idle)
            .collect()
    }

    fn perform_some(&mut self, pick: usize, fault_roll: u32) {
        let candidates = self.performable();
        if candidates.is_empty() {
            return;
        }
        let index = candidates[pick % candidates.len()];
        let action = self.pending.remove(index);
        let fails = self.faults_on && fault_roll % 100 < self.setup.fault_percent;
        let switch_action = matches!(
            action.kind,
            ActionKind::Quiesce | ActionKind::Unquiesce | ActionKind::Pivot
        );
        // Quiesce, unquiesce and pivot failures end the job: make them rarer.
        let fails = fails && (!switch_action || fault_roll % 7 == 0);
        let error = [
            IoErrorKind::NoSpace,
            IoErrorKind::Io,
            IoErrorKind::Other(61),
        ][(fault_roll / 100 % 3) as usize];
        let (a, b) = units_of(self.setup.unit, action.offset, action.length);
        if action.kind == ActionKind::Admit {
            // Not completed with handle_completion: the write may now land (a later step).
            let write = self
                .in_progress
                .iter_mut()
                .find(|w| w.op == Some(action.op))
                .expect("admit for an announced guest write");
            assert_eq!(write.stage, Landing::AwaitingAdmit, "admitted once");
            assert_eq!(
                (write.offset, write.length),
                (action.offset, action.length),
                "admit names the write's range"
            );
            write.stage = Landing::MayLand;
            return;
        }
        let result = match action.kind {
            ActionKind::Read if fails => OpResult::Failed(error),
            ActionKind::Read => {
                let data = self.source[a..b].to_vec();
                let zero = data.iter().all(|&v| v == 0);
                self.buffers.insert(action.op, (data, zero));
                if zero {
                    OpResult::OkZeroes
                } else {
                    OpResult::Ok
                }
            }
            ActionKind::Write | ActionKind::WriteZeroes | ActionKind::Discard => {
                let (data, zero) = self
                    .buffers
                    .remove(&action.op)
                    .expect("invariant 3: a target write follows a read of the same op");
                if action.kind == ActionKind::Write {
                    assert_eq!(data.len(), b - a, "the write covers the read's range");
                } else {
                    assert!(
                        zero,
                        "invariant 3: zeroes are written only where the source read zero"
                    );
                }
                if fails {
                    self.target[a..b].fill(TORN);
                    OpResult::Failed(error)
                } else {
                    self.target[a..b].copy_from_slice(&data);
                    OpResult::Ok
                }
            }
            ActionKind::GuestWrite => {
                let version = self
                    .guest_versions
                    .remove(&action.op)
                    .expect("guest_write for a mirrored guest write");
                self.unacknowledged -= 1;
                if fails {
                    self.target[a..b].fill(TORN);
                    OpResult::Failed(error)
                } else {
                    self.target[a..b].fill(version);
                    OpResult::Ok
                }
            }
            ActionKind::Flush => {
                if fails {
                    OpResult::Failed(error)
                } else {
                    OpResult::Ok
                }
            }
            ActionKind::Quiesce => {
                assert!(!self.held && !self.pivoted, "quiesce only for a free guest");
                if fails {
                    self.switch_failures.push(error);
                    OpResult::Failed(error)
                } else {
                    self.held = true;
                    self.snapshot_at_hold = Some(self.source.clone());
                    OpResult::Ok
                }
            }
            ActionKind::Unquiesce => {
                assert!(self.held, "un-quiesce only a held guest");
                self.held = false;
                if fails {
                    self.switch_failures.push(error);
                    OpResult::Failed(error)
                } else {
                    OpResult::Ok
                }
            }
            ActionKind::Pivot => {
                assert!(self.held, "pivot only with the guest held");
                assert_eq!(
                    self.target, self.source,
                    "invariant 9: at the pivot the target equals the source"
                );
                if fails {
                    self.switch_failures.push(error);
                    OpResult::Failed(error)
                } else {
                    self.pivoted = true;
                    self.held = false;
                    OpResult::Ok
                }
            }
            other => panic!("unknown action kind {other}"),
        };
        self.job
            .handle_completion(action.op, result)
            .expect("completing a polled action");
        self.after_input("completion");
    }

    fn guest_write(&mut self, a: u64, b: u64) {
        let busy = self.unacknowledged + self.in_progress.len();
        // A driver holds new guest writes from the moment it is asked to quiesce (writes
        // already started finish first), as the file engine's gate does.
        let quiescing = self.pending.iter().any(|a| a.kind == ActionKind::Quiesce);
        if self.held || quiescing || self.pivoted || busy >= 6 || self.length == 0 {
            return;
        }
        let unit = self.setup.unit;
        let units = self.length.div_ceil(unit);
        // Two thirds of the writes go to a hot spot of three chunks, so writes overlap each
        // other and the copies often.
        let hot_units = (3 * self.setup.granularity / unit).min(units);
        // One write in five appends one block to a log that cycles through the first chunk:
        // a stream of partial writes onto one chunk (the write-blocking starvation case).
        let (first, count) = if b % 5 == 0 {
            let chunk_units = (self.setup.granularity / unit).min(units);
            self.log_position = (self.log_position + 1) % chunk_units;
            (self.log_position, 1)
        } else {
            let first = if a % 3 == 0 {
                a / 3 % units
            } else {
                a / 3 % hot_units
            };
            let count = (b % (3 * self.setup.granularity / unit + 2) + 1).min(units - first);
            (first, count)
        };
        let offset = first * unit;
        let length = (count * unit).min(self.length - offset);
        let version = self.next_version;
        self.next_version += 1;
        let mut write = InProgress {
            op: None,
            offset,
            length,
            version,
            stage: Landing::MayLand,
            // Only the two-step report can say that a source write failed.
            fails: self.setup.guest_protocol == GuestProtocol::TwoStep
                && self.faults_on
                && (a ^ b) % 100 < u64::from(self.setup.fault_percent),
        };
        match self.setup.guest_protocol {
            GuestProtocol::OneStep => {
                self.land(&write);
                self.report_landed(write);
            }
            GuestProtocol::ReportAfterLanding => self.in_progress.push(write),
            GuestProtocol::TwoStep => {
                match self
                    .job
                    .handle_guest_write_start(offset, length)
                    .expect("in-range guest write")
                {
                    GuestWriteStart::Proceed(op) => write.op = Some(op),
                    GuestWriteStart::Wait(op) => {
                        write.op = Some(op);
                        write.stage = Landing::AwaitingAdmit;
                    }
                    GuestWriteStart::Untracked => {
                        assert!(
                            self.end.is_some() || self.cancel_requested || !self.report_errors.is_empty()
                                || !self.switch_failures.is_empty(),
                            "only an ended or aborting job tracks nothing"
                        );
                        self.land(&write);
                        return;
                    }
                }
                self.in_progress.push(write);
                self.after_input("guest write start");
            }
        }
    }

    /// Moves one guest write in progress on by a step: lands it, or reports a landed one.
    /// Returns whether a write moved (one waiting for its `admit` cannot).
    fn advance_a_guest_write(&mut self, pick: usize) -> bool {
        let movable: Vec<usize> = (0..self.in_progress.len())
            .filter(|&i| self.in_progress[i].stage != Landing::AwaitingAdmit)
            .collect();
        if movable.is_empty() {
            return false;
        }
        let index = movable[pick % movable.len()];
        if self.in_progress[index].stage == Landing::MayLand {
            let write = self.in_progress[index];
            self.land(&write);
            self.in_progress[index].stage = Landing::Landed;
        } else {
            let write = self.in_progress.remove(index);
            self.report_landed(write);
        }
        true
    }

    /// The guest's write reaches the source: its version, or for a failed write a version
    /// of its own (the source holds something the guest never acknowledged).
    fn land(&mut self, write: &InProgress) {
        let (x, y) = units_of(self.setup.unit, write.offset, write.length);
        let version = if write.fails {
            let torn = self.next_version;
            self.next_version += 1;
            torn
        } else {
            write.version
        };
        self.source[x..y].fill(version);
    }

    /// Tells the job a guest write has landed.
    fn report_landed(&mut self, write: InProgress) {
        let answer = match write.op {
            Some(op) => {
                let result = if write.fails {
                    OpResult::Failed(IoErrorKind::Io)
                } else {
                    OpResult::Ok
                };
                let answer = self
                    .job
                    .handle_guest_write_landed(op, result)
                    .expect("a landed guest write");
                if write.fails {
                    assert_eq!(
                        answer,
                        GuestWrite::Acknowledge,
                        "a failed source write is not mirrored"
                    );
                }
                answer
            }
            // The one-step call knows nothing of a failed source write: the data is there.
            None => self
                .job
                .handle_guest_write(write.offset, write.length)
                .expect("in-range guest write"),
        };
        if let GuestWrite::Mirror(op) = answer {
            self.guest_versions.insert(op, write.version);
            self.unacknowledged += 1;
        }
        self.after_input("guest write landed");
    }

    fn declare_next(&mut self) {
        if let Some((offset, length, state)) = self.declarations.pop() {
            self.job
                .declare(offset, length, state)
                .expect("in-range declaration");
            self.after_input("declare");
        }
    }

    fn cancel(&mut self, force: bool) {
        let was_ready = self.ever_ready;
        if self.verb("cancel", move |job| job.cancel(force)) {
            self.cancel_requested = true;
            self.force_cancelled |= force || !was_ready;
        }
    }

    /// Runs a verb; a refused verb must change nothing. Returns whether it was accepted.
    fn verb(
        &mut self,
        name: &str,
        run: impl FnOnce(&mut MirrorJob) -> Result<(), JobError>,
    ) -> bool {
        let before = (
            self.job.status(),
            self.job.progress(),
            self.job.dirty_bytes(),
            self.job.ops_in_flight(),
        );
        match run(&mut self.job) {
            Ok(()) => {
                self.after_input(name);
                true
            }
            Err(error) => {
                assert!(
                    matches!(
                        error,
                        JobError::VerbNotAllowed { .. } | JobError::CancelRequested
                    ),
                    "{name}: {error}"
                );
                let after = (
                    self.job.status(),
                    self.job.progress(),
                    self.job.dirty_bytes(),
                    self.job.ops_in_flight(),
                );
                assert_eq!(before, after, "a refused {name} changes nothing");
                assert_eq!(
                    self.job.poll_action(),
                    None,
                    "a refused {name} issues nothing"
                );
                assert_eq!(
                    self.job.poll_event(),
                    None,
                    "a refused {name} reports nothing"
                );
                false
            }
        }
    }

    fn bad_completion(&mut self, a: u32, b: u32) {
        let before = (
            self.job.status(),
            self.job.progress(),
            self.job.ops_in_flight(),
        );
        let op = OpId(a as u64 % 4 + 10_000_000 * (b as u64 % 2));
        let polled = self.pending.iter().any(|p| p.op == op);
        let result = if b % 3 == 0 {
            OpResult::OkZeroes
        } else {
            OpResult::Ok
        };
        let pending = self.pending.iter().find(|p| p.op == op).copied();
        match pending {
            Some(action) if action.kind == ActionKind::Admit => {
                assert_eq!(
                    self.job.handle_completion(op, result),
                    Err(JobError::LandingExpected(op))
                );
            }
            Some(action) if action.kind != ActionKind::Read && result == OpResult::OkZeroes => {
                assert!(matches!(
                    self.job.handle_completion(op, result),
                    Err(JobError::BadResult { .. })
                ));
            }
            _ if polled => return, // a real completion: not bad input
            _ if self
                .in_progress
                .iter()
                .any(|w| w.op == Some(op) && w.stage != Landing::AwaitingAdmit) =>
            {
                assert_eq!(
                    self.job.handle_completion(op, result),
                    Err(JobError::LandingExpected(op))
                );
            }
            _ => assert_eq!(
                self.job.handle_completion(op, result),
                Err(JobError::UnknownOp(op))
            ),
        }
        assert_eq!(
            before,
            (
                self.job.status(),
                self.job.progress(),
                self.job.ops_in_flight()
            )
        );
    }
}

pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn units_of(unit: u64, offset: u64, length: u64) -> (usize, usize) {
    (
        (offset / unit) as usize,
        (offset + length).div_ceil(unit) as usize,
    )
}
