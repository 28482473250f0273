//! A reference model and randomized driver for the mirror job (DESIGN §3).
//!
//! Disks are modelled as one content version per 512-byte block: a guest write stamps a
//! fresh version on its blocks; version 0 reads as zeroes. A read snapshots the source when
//! the driver *performs* it; the write applies that snapshot later. Guest writes update the
//! source first, then call `handle_guest_write`; write-blocking `guest_write` actions apply
//! the guest's own version. A failed target write leaves garbage. After every step the
//! invariants are checked; at the end the content is compared.

use blockmirror_core::job::*;
use std::collections::HashMap;

pub const UNIT: u64 = 512;
const GARBAGE: u32 = u32::MAX;
const TORN: u32 = u32::MAX - 1;

/// The shape of one model run, drawn by proptest.
#[derive(Debug, Clone)]
pub struct Setup {
    pub chunks: u64,
    pub granularity: u64,
    /// Bytes past the last whole chunk (a multiple of 512, less than a chunk).
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
    /// Percent of performed actions that fail while faults are on.
    pub fault_percent: u32,
    /// Step at which the job is started.
    pub start_at: usize,
    /// How the finishing phase ends a ready job: complete (true) or soft cancel.
    pub finish_with_complete: bool,
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
    declarations: Vec<(u64, u64, RangeState)>,
    held: bool,
    pivoted: bool,
    snapshot_at_hold: Option<Vec<u32>>,
    faults_on: bool,
    now: u64,
    rng: u64,
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
}

impl Model {
    pub fn new(setup: Setup) -> Self {
        let length = setup.chunks * setup.granularity + setup.tail_units * UNIT;
        let units = length.div_ceil(UNIT) as usize;
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
                    unit as u64 * UNIT,
                    ((end as u64) * UNIT).min(length) - unit as u64 * UNIT,
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
                    let (a, b) = units_of(offset, len);
                    target[a..b].copy_from_slice(&source[a..b]);
                }
            }
            // Only writes after the start are copied: the target starts as the source.
            _ => target.copy_from_slice(&source),
        }
        // Interleave some "allocated" declarations (always truthful, never harmful).
        if xorshift(&mut rng) % 2 == 0 && length > UNIT {
            declarations.insert(0, (UNIT, length - UNIT, RangeState::Allocated));
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
            declarations,
            held: false,
            pivoted: false,
            snapshot_at_hold: None,
            faults_on: true,
            now: 0,
            rng,
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
        (0..self.pending.len())
            .filter(|&i| self.pending[i].kind != ActionKind::Quiesce || self.unacknowledged == 0)
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
        let (a, b) = units_of(action.offset, action.length);
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
        if self.held || self.pivoted || self.unacknowledged >= 6 || self.length == 0 {
            return;
        }
        let units = self.length.div_ceil(UNIT);
        // Two thirds of the writes go to a hot spot of three chunks, so writes overlap each
        // other and the copies often.
        let hot_units = (3 * self.setup.granularity / UNIT).min(units);
        let first = if a % 3 == 0 {
            a / 3 % units
        } else {
            a / 3 % hot_units
        };
        let count = (b % (3 * self.setup.granularity / UNIT + 2) + 1).min(units - first);
        let offset = first * UNIT;
        let length = (count * UNIT).min(self.length - offset);
        let version = self.next_version;
        self.next_version += 1;
        let (x, y) = units_of(offset, length);
        self.source[x..y].fill(version);
        match self
            .job
            .handle_guest_write(offset, length)
            .expect("in-range guest write")
        {
            GuestWrite::Acknowledge => {}
            GuestWrite::Mirror(op) => {
                self.guest_versions.insert(op, version);
                self.unacknowledged += 1;
            }
        }
        self.after_input("guest write");
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
            Some(action) if action.kind != ActionKind::Read && result == OpResult::OkZeroes => {
                assert!(matches!(
                    self.job.handle_completion(op, result),
                    Err(JobError::BadResult { .. })
                ));
            }
            _ if polled => return, // a real completion: not bad input
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

    /// Drains the outputs (the driver rule) and checks the invariants.
    fn after_input(&mut self, what: &str) {
        let trace = std::env::var_os("BM_MODEL_TRACE").is_some();
        if trace {
            eprintln!(
                "-- {what}: status {} progress {:?} ops {:?}",
                self.job.status(),
                self.job.progress(),
                self.job.ops().collect::<Vec<_>>()
            );
        }
        let reads_allowed = !matches!(self.job.status(), JobStatus::Paused | JobStatus::Standby)
            || matches!(what, "resume" | "cancel");
        while let Some(action) = self.job.poll_action() {
            assert!(self.end.is_none(), "no action after the end");
            assert!(
                action.offset + action.length <= self.length,
                "{action:?} within the disk"
            );
            if action.kind == ActionKind::Read {
                assert!(reads_allowed, "no copy starts while paused ({what})");
                assert_eq!(
                    action.offset % self.setup.granularity,
                    0,
                    "runs start on a chunk"
                );
                assert!(action.length <= self.setup.max_io_chunks * self.setup.granularity);
            }
            if trace {
                eprintln!("   action {action:?}");
            }
            self.pending.push(action);
        }
        while let Some(event) = self.job.poll_event() {
            if trace {
                eprintln!("   event {event:?}");
            }
            self.check_event(event, what);
        }
        self.check_state(what);
    }

    fn check_event(&mut self, event: Event, what: &str) {
        match &event {
            Event::StatusChange { status } => {
                assert!(
                    self.seen_status.can_become(*status),
                    "{} -> {status} ({what})",
                    self.seen_status
                );
                if self.ever_ready {
                    assert!(
                        !matches!(status, JobStatus::Running | JobStatus::Paused),
                        "invariant 8: ready is sticky"
                    );
                }
                self.seen_status = *status;
                if *status == JobStatus::Ready {
                    self.ever_ready = true;
                }
            }
            Event::Ready { .. } => {
                self.ready_events += 1;
                assert_eq!(self.ready_events, 1, "invariant 4: READY fires once");
                assert!(
                    self.job.bitmap().is_empty(),
                    "invariant 4: READY with an empty bitmap"
                );
                assert!(
                    !self
                        .job
                        .ops()
                        .any(|v| matches!(v.kind, OpViewKind::Reading | OpViewKind::Writing)),
                    "invariant 4: READY with no copy in flight"
                );
            }
            Event::Error { action, error, .. } => {
                if *action == ErrorAction::Report {
                    self.report_errors.push(*error);
                }
            }
            Event::Completed { .. } | Event::Cancelled { .. } => {
                assert!(self.end.is_none(), "one end event");
                self.end = Some(event.clone());
            }
            Event::NotConverging { .. } => {
                assert_eq!(self.job.config().copy_mode, CopyMode::Background);
            }
            other => panic!("unexpected event {other:?}"),
        }
    }

    fn check_state(&mut self, what: &str) {
        assert_eq!(
            self.seen_status,
            self.job.status(),
            "every status change is reported ({what})"
        );
        // Invariant 2: never two owners of a chunk.
        let g = self.setup.granularity;
        let mut owned: Vec<(u64, u64)> = self
            .job
            .ops()
            .filter(|v| v.kind != OpViewKind::WaitingGuestWrite)
            .map(|v| (v.offset / g, (v.offset + v.length).div_ceil(g)))
            .collect();
        owned.sort_unstable();
        for pair in owned.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "invariant 2: chunks {:?} and {:?} overlap ({what})",
                pair[0],
                pair[1]
            );
        }
        // Progress: current only grows; total = current + dirty + in flight, all recounted here.
        let progress = self.job.progress();
        assert!(
            progress.current >= self.last_current,
            "current never shrinks"
        );
        self.last_current = progress.current;
        let in_flight: u64 = self.job.ops().map(|v| v.length).sum();
        let dirty: u64 = (0..self.length.div_ceil(g))
            .filter(|c| self.job.bitmap().get(c * g))
            .map(|c| g.min(self.length - c * g))
            .sum();
        assert_eq!(
            progress.total,
            progress.current + dirty + in_flight,
            "progress accounting ({what})"
        );
        // Every polled read or write is visible as an op owning its range.
        for action in &self.pending {
            if matches!(
                action.kind,
                ActionKind::Read
                    | ActionKind::Write
                    | ActionKind::WriteZeroes
                    | ActionKind::Discard
            ) {
                assert!(self.job.ops().any(|v| v.op == action.op
                    && v.offset == action.offset
                    && v.length == action.length));
            }
        }
        if self.job.status() == JobStatus::Concluded {
            assert!(
                self.pending.is_empty(),
                "concluded only after every polled action completed"
            );
            assert_eq!(self.job.ops_in_flight(), 0);
            assert!(
                !self.held,
                "the job ends with the guest un-quiesced or pivoted"
            );
        }
    }

    fn check_end(&self) {
        let end = self.end.as_ref().expect("an end event");
        if let Some(path) = std::env::var_os("BM_MODEL_STATS") {
            use std::io::Write;
            let kind = match end {
                Event::Cancelled { .. } => "cancelled".to_string(),
                Event::Completed { error: Some(_), .. } => "failed".to_string(),
                Event::Completed { pivoted, .. } => format!("completed pivoted={pivoted}"),
                _ => "other".to_string(),
            };
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .unwrap();
            writeln!(
                file,
                "{kind} steps={} ready={} sync={:?} mode={:?}",
                self.steps,
                self.ever_ready,
                self.setup.sync,
                self.job.config().copy_mode
            )
            .unwrap();
        }
        match end {
            Event::Cancelled { .. } => assert!(
                self.force_cancelled,
                "cancelled only by a cancel before ready or a force"
            ),
            Event::Completed {
                error: Some(error),
                pivoted,
                ..
            } => {
                assert!(!pivoted);
                assert!(
                    self.report_errors.first() == Some(error)
                        || self.switch_failures.contains(error),
                    "the error is a reported one: {error:?} vs {:?} / {:?}",
                    self.report_errors,
                    self.switch_failures
                );
            }
            Event::Completed {
                error: None,
                pivoted,
                current,
                total,
            } => {
                assert_eq!(current, total);
                assert_eq!(*pivoted, self.pivoted);
                // Invariant 5: target == source at the quiesce (the guest was held since).
                let snapshot = self
                    .snapshot_at_hold
                    .as_ref()
                    .expect("a graceful end quiesces");
                assert_eq!(
                    &self.target, snapshot,
                    "invariant 5: target equals the source at the switch"
                );
                if *pivoted {
                    assert_eq!(self.target, self.source);
                }
            }
            other => panic!("{other:?}"),
        }
        if self.report_errors.is_empty() && self.switch_failures.is_empty() && !self.force_cancelled
        {
            // Invariant 6 and 7: with faults stopped, ignore/stop and write-blocking converge.
            assert!(
                matches!(end, Event::Completed { error: None, .. }),
                "converged to a clean end: {end:?}"
            );
        }
    }
}

pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn units_of(offset: u64, length: u64) -> (usize, usize) {
    (
        (offset / UNIT) as usize,
        (offset + length).div_ceil(UNIT) as usize,
    )
}
