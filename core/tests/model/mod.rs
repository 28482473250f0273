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
mod guest;

pub use guest::GuestProtocol;
use guest::{InProgress, Landing};

const GARBAGE: u32 = u32::MAX;
const TORN: u32 = u32::MAX - 1;

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
    in_progress: Vec<InProgress>,
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
            85 => self.damage_target(step.a as u64, step.b as u64),
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

    /// The target changes behind the job's back (another writer) and a verify reports it:
    /// the job must copy the range again, so every end check holds as if nothing had
    /// happened. A job that no longer copies refuses; the damage is then undone (nothing
    /// can repair a target once its job stopped copying).
    fn damage_target(&mut self, a: u64, b: u64) {
        if self.length == 0 || self.pivoted {
            return;
        }
        let unit = self.setup.unit;
        let units = self.length.div_ceil(unit);
        let first = a % units;
        let count = (b % 4 + 1).min(units - first);
        let (start, end) = (first as usize, (first + count) as usize);
        let saved = self.target[start..end].to_vec();
        self.target[start..end].fill(DAMAGED);
        let offset = first * unit;
        let length = (count * unit).min(self.length - offset);
        match self.job.handle_target_mismatch(offset, length) {
            Ok(true) => {}
            Ok(false) => self.target[start..end].copy_from_slice(&saved),
            Err(e) => panic!("an in-range mismatch refused: {e}"),
        }
        self.after_input("target mismatch");
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

}

pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// What a damaged target unit holds: no version the model ever writes.
const DAMAGED: u32 = u32::MAX;

fn units_of(unit: u64, offset: u64, length: u64) -> (usize, usize) {
    (
        (offset / unit) as usize,
        (offset + length).div_ceil(unit) as usize,
    )
}
