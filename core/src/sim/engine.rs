//! The simulation: state, set-up, the run loop and the guest.

use super::config::{Command, SimConfig, SimConfigError};
use super::device::Device;
use super::disk::{ChunkContent, Disks, Side};
use super::guest::Workload;
use super::queue::EventQueue;
use super::record::{Goal, RunOutcome, Sample, SimEvent, SimEventKind, TraceEntry, Violation};
use super::rng::Rng;
use super::layout;
use crate::fault::FaultPlan;
use crate::job::{ActionKind, GuestWrite, IoErrorKind, JobError, JobStatus, MirrorJob, Nanos, OpId, SyncMode};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Random streams, one per concern, so that one concern's draws never shift another's.
const STREAM_GUEST: u64 = 1;
const STREAM_FAULTS: u64 = 2;
const STREAM_TIMING: u64 = 3;
pub(super) const STREAM_LAYOUT: u64 = 4;
const STREAM_READS: u64 = 5;

/// Why a simulation could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The simulator's configuration is invalid.
    #[error(transparent)]
    Config(#[from] SimConfigError),
    /// The job refused its configuration or a declaration.
    #[error(transparent)]
    Job(#[from] JobError),
    /// Memory for the simulated disks could not be allocated.
    #[error("out of memory: the simulated disks need {bytes} bytes")]
    OutOfMemory {
        /// The size of the allocation that failed.
        bytes: u64,
    },
}

/// Something queued for a future instant.
#[derive(Debug, Clone)]
pub(super) enum Pending {
    /// The guest wants to issue its next write.
    GuestArrival,
    /// Guest write `id` has reached its disk.
    GuestDiskDone { id: u64 },
    /// A job I/O finished (the outcome was drawn when it was issued).
    JobIo { op: OpId, kind: ActionKind, offset: u64, length: u64, failure: Option<IoErrorKind> },
    /// A quiesce, unquiesce or pivot the simulator itself performs has finished.
    SimOpDone { op: OpId },
    /// The job asked to be called back.
    Timeout,
    /// A scripted or automatic command.
    Command(Command),
}

/// A guest write between its issue and its acknowledgement.
#[derive(Debug, Clone)]
pub(super) struct GuestRecord {
    pub offset: u64,
    pub length: u64,
    pub side: Side,
}

/// A guest write the job mirrors (write-blocking): acknowledged after its `guest_write` op.
#[derive(Debug, Clone)]
pub(super) struct Mirrored {
    pub guest_id: u64,
    pub offset: u64,
    pub length: u64,
    /// The version naming the guest's bytes.
    pub version: u64,
    pub action_issued: bool,
}

/// What a completed read captured: the source's chunk versions at completion.
#[derive(Debug, Clone)]
pub(super) struct ReadBuffer {
    pub offset: u64,
    pub length: u64,
    pub first_chunk: u64,
    pub chunks: Vec<ChunkContent>,
    pub zero: bool,
}

/// A deterministic simulation of one mirror job against in-memory disks.
///
/// No I/O, no clock, no threads, no OS randomness: a virtual clock jumps to the earliest
/// pending event (guest write, I/O completion, job timeout, scripted command), and every
/// random choice comes from the seed. See the module documentation for the model.
#[derive(Debug)]
pub struct Simulation {
    pub(super) config: SimConfig,
    pub(super) job: MirrorJob,
    pub(super) disks: Disks,
    pub(super) source_dev: Device,
    pub(super) target_dev: Device,
    pub(super) queue: EventQueue<Pending>,
    pub(super) now_ns: u64,
    pub(super) fault_rng: Rng,
    pub(super) timing_rng: Rng,
    /// Draws which snapshot each chunk of a read returns (`ReadCapture::Either`).
    pub(super) read_rng: Rng,
    // The guest.
    pub(super) workload: Workload,
    pub(super) arrival_scheduled: bool,
    pub(super) guest_blocked: bool,
    pub(super) guest_outstanding: u32,
    pub(super) guest_issued: u32,
    pub(super) held: VecDeque<(u64, u64)>,
    pub(super) next_guest_id: u64,
    pub(super) guest_in_flight: BTreeMap<u64, GuestRecord>,
    pub(super) mirrored: BTreeMap<OpId, Mirrored>,
    pub(super) quiesced: bool,
    pub(super) pending_quiesce: Option<OpId>,
    pub(super) pivoted: bool,
    pub(super) recent_writes: VecDeque<(u64, u64, u64)>,
    // Job I/O.
    pub(super) read_buffers: BTreeMap<OpId, ReadBuffer>,
    /// The source as each read in flight saw it when issued (unless capture is at completion).
    pub(super) read_snapshots: BTreeMap<OpId, Vec<ChunkContent>>,
    pub(super) target_in_flight: BTreeMap<(u64, OpId), u64>,
    pub(super) scripted_faults: FaultPlan,
    pub(super) target_writes_done: u64,
    pub(super) flushed_upto: u64,
    pub(super) flush_covers: BTreeMap<OpId, u64>,
    pub(super) copied_once: Vec<u64>,
    pub(super) failed_chunks: BTreeSet<u64>,
    pub(super) timeout_at: Option<u64>,
    pub(super) deferred: VecDeque<Command>,
    // Records.
    pub(super) events: Vec<SimEvent>,
    pub(super) samples: Vec<Sample>,
    pub(super) next_sample_ns: u64,
    pub(super) trace: Vec<TraceEntry>,
    pub(super) digest: u64,
    pub(super) violations: Vec<Violation>,
    pub(super) steps: u64,
    pub(super) stats: Stats,
}

/// Running counters for the summary.
#[derive(Debug, Clone, Default)]
pub(super) struct Stats {
    pub bytes_copied: u64,
    pub bytes_recopied: u64,
    pub guest_bytes: u64,
    pub guest_writes: u64,
    /// The guest's writes in flight integrated over time (writes × ns) up to
    /// `guest_in_flight_since_ns`: divided by the writes completed, the mean latency.
    pub guest_in_flight_ns: u128,
    pub guest_in_flight_since_ns: u64,
    pub job_events: u64,
    pub ready_events: u64,
    pub error_events: u64,
    pub ready_at_ns: Option<u64>,
    pub concluded_at_ns: Option<u64>,
    pub not_converging_at_ns: Option<u64>,
    pub ending: Option<&'static str>,
    pub end_error: Option<IoErrorKind>,
    pub last_switch_equal: Option<bool>,
    pub equal_at_end: Option<bool>,
}

impl Simulation {
    /// Build the disks, declare the layout, start the job at time 0 and queue the guest
    /// and the scripted commands.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        config.validate()?;
        let mut job = MirrorJob::new(config.job.clone())?;
        let length = config.job.length;
        let granularity = config.job.granularity;
        let initial = layout::build(&config, Rng::derive(config.seed, STREAM_LAYOUT))?;
        if config.layout.declare && config.job.sync != SyncMode::None {
            for &(offset, len, state) in &initial.declarations {
                job.declare(offset, len, state)?;
            }
        }
        let chunks = initial.source.len();
        let copied_once = layout::try_filled(chunks.div_ceil(64), |_| 0u64)?;
        let disks = Disks::new(length, granularity, initial.source, initial.target, initial.fresh_from);
        let workload = Workload::new(&config.guest, length, Rng::derive(config.seed, STREAM_GUEST));
        let scripted_faults = FaultPlan::new(config.faults.scripted.clone());
        let mut sim = Self {
            source_dev: Device::new(config.source),
            target_dev: Device::new(config.target),
            fault_rng: Rng::derive(config.seed, STREAM_FAULTS),
            timing_rng: Rng::derive(config.seed, STREAM_TIMING),
            read_rng: Rng::derive(config.seed, STREAM_READS),
            job,
            disks,
            queue: EventQueue::new(),
            now_ns: 0,
            workload,
            arrival_scheduled: false,
            guest_blocked: false,
            guest_outstanding: 0,
            guest_issued: 0,
            held: VecDeque::new(),
            next_guest_id: 0,
            guest_in_flight: BTreeMap::new(),
            mirrored: BTreeMap::new(),
            quiesced: false,
            pending_quiesce: None,
            pivoted: false,
            recent_writes: VecDeque::new(),
            read_buffers: BTreeMap::new(),
            read_snapshots: BTreeMap::new(),
            target_in_flight: BTreeMap::new(),
            scripted_faults,
            target_writes_done: 0,
            flushed_upto: 0,
            flush_covers: BTreeMap::new(),
            copied_once,
            failed_chunks: BTreeSet::new(),
            timeout_at: None,
            deferred: VecDeque::new(),
            events: Vec::new(),
            samples: Vec::new(),
            next_sample_ns: 0,
            trace: Vec::new(),
            digest: 0xcbf2_9ce4_8422_2325,
            violations: Vec::new(),
            steps: 0,
            stats: Stats::default(),
            config,
        };
        for c in sim.config.commands.clone() {
            sim.queue.push(c.at_ns, Pending::Command(c.command));
        }
        sim.schedule_arrival(sim.config.guest.start_ns);
        sim.job.start(Nanos(0))?;
        sim.drain_job();
        Ok(sim)
    }

    /// Run until `goal`, within the configured [`RunLimits`](super::RunLimits).
    pub fn run_until(&mut self, goal: Goal) -> RunOutcome {
        let limits = self.config.limits;
        self.run_until_within(goal, limits.max_steps, limits.max_duration_ns)
    }

    /// Run until `goal`, processing at most `max_steps` events and advancing virtual time by
    /// at most `max_duration_ns` (a `Time` goal is bounded by its own instant instead).
    pub fn run_until_within(&mut self, goal: Goal, max_steps: u64, max_duration_ns: u64) -> RunOutcome {
        let first_step = self.steps;
        let stop_at_not_converging = self.config.stops_at_not_converging();
        let deadline = match goal {
            Goal::Time(t) => t,
            _ => self.now_ns.saturating_add(max_duration_ns),
        };
        loop {
            match goal {
                Goal::Ready if self.stats.ready_at_ns.is_some() => return RunOutcome::Reached,
                Goal::Concluded if self.job_ended() => return RunOutcome::Reached,
                Goal::Time(t) if self.now_ns >= t => return RunOutcome::Reached,
                Goal::NotConverging if self.stats.not_converging_at_ns.is_some() => return RunOutcome::Reached,
                Goal::Ready | Goal::NotConverging if self.job_ended() => return RunOutcome::Unreachable,
                Goal::Ready | Goal::Concluded if stop_at_not_converging && self.stats.not_converging_at_ns.is_some() => {
                    return RunOutcome::NotConverging
                }
                _ => {}
            }
            match self.queue.peek_time() {
                Some(t) if t <= deadline => {
                    if self.steps - first_step >= max_steps {
                        return RunOutcome::Livelock;
                    }
                    self.step();
                }
                next => {
                    // Nothing happens before the deadline: time passes to it.
                    if next.is_some() || matches!(goal, Goal::Time(_)) {
                        // Only the clock moves: the job learns the time at the next event, so a
                        // run cut into slices does exactly what one long run does.
                        self.advance_to(deadline);
                    }
                    return match goal {
                        Goal::Time(_) => RunOutcome::Reached,
                        _ if next.is_none() => RunOutcome::Stalled,
                        _ => RunOutcome::TimeLimit,
                    };
                }
            }
        }
    }

    /// Run for `duration_ns` of virtual time (a `Time` goal from now).
    pub fn run_for(&mut self, duration_ns: u64) -> RunOutcome {
        let goal = Goal::Time(self.now_ns.saturating_add(duration_ns));
        self.run_until(goal)
    }

    /// Give the job a command now (as a user would), then let the job react.
    pub fn command(&mut self, command: Command) -> Result<(), JobError> {
        let result = self.apply_command(command);
        self.drain_job();
        result
    }

    /// Change the guest's write rate from now on (0 stops its writes).
    pub fn set_write_rate(&mut self, bytes_per_sec: u64) {
        self.config.guest.write_rate_bytes_per_sec = bytes_per_sec;
        let cursor_rng = Rng::derive(self.config.seed ^ self.now_ns, STREAM_GUEST);
        self.workload = Workload::new(&self.config.guest, self.config.job.length, cursor_rng);
        if !self.arrival_scheduled && !self.guest_blocked {
            self.schedule_arrival(self.now_ns);
        }
    }

    /// Change the target's bandwidth from now on (0: unlimited).
    pub fn set_target_bandwidth(&mut self, bytes_per_sec: u64) {
        self.target_dev.set_bandwidth(bytes_per_sec);
    }

    /// Whether the job has concluded (or been dismissed).
    pub(super) fn job_ended(&self) -> bool {
        matches!(self.job.status(), JobStatus::Concluded | JobStatus::Null)
    }

    /// Process the earliest pending event.
    fn step(&mut self) {
        let Some((time_ns, item)) = self.queue.pop() else { return };
        self.advance_to(time_ns);
        self.tell_job_the_time();
        self.steps += 1;
        match item {
            Pending::GuestArrival => self.guest_arrival(),
            Pending::GuestDiskDone { id } => self.guest_disk_done(id),
            Pending::JobIo { op, kind, offset, length, failure } => {
                self.job_io_done(op, kind, offset, length, failure)
            }
            Pending::SimOpDone { op } => self.deliver(op, None, false),
            Pending::Timeout => {
                if self.timeout_at == Some(time_ns) {
                    self.timeout_at = None;
                }
                self.record(TraceEntry::Timeout { time_ns });
                self.job.handle_timeout(Nanos(time_ns));
            }
            Pending::Command(command) => {
                // A refused command is recorded by apply_command and changes nothing.
                let _ = self.apply_command(command);
            }
        }
        self.drain_job();
    }

    /// The job's contract: call `handle_timeout` whenever time advanced (not only at its
    /// `poll_timeout`), or its clock, and with it its rate estimates, ETA and
    /// not-converging window, stand still between speed-limit timers.
    fn tell_job_the_time(&mut self) {
        if self.job.now().0 < self.now_ns {
            self.job.handle_timeout(Nanos(self.now_ns));
        }
    }

    /// Move the clock forward, taking the samples due on the way (the state is constant
    /// between events, so a sample at any instant before `time_ns` sees the current state).
    pub(super) fn advance_to(&mut self, time_ns: u64) {
        let interval = self.config.sample_interval_ns;
        while interval > 0 && self.next_sample_ns <= time_ns && self.samples.len() < self.config.max_samples {
            let sample = self.sample_at(self.next_sample_ns);
            self.samples.push(sample);
            self.next_sample_ns += interval;
        }
        self.now_ns = self.now_ns.max(time_ns);
    }

    /// Append a trace entry and fold it into the digest (FNV-1a over the entry's words).
    pub(super) fn record(&mut self, entry: TraceEntry) {
        for word in entry.words() {
            self.digest = (self.digest ^ word).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(5);
        }
        if self.config.record_trace {
            self.trace.push(entry);
        }
    }

    /// Note a protocol violation.
    pub(super) fn violation(&mut self, message: String) {
        self.violations.push(Violation { time_ns: self.now_ns, message });
    }

    /// Call the job's verb for `command`, recording whether it was accepted.
    pub(super) fn apply_command(&mut self, command: Command) -> Result<(), JobError> {
        let result = match command {
            Command::Pause => self.job.pause(),
            Command::Resume => self.job.resume(),
            Command::SetSpeed(bps) => self.job.set_speed(bps),
            Command::SetCopyMode(mode) => self.job.set_copy_mode(mode),
            Command::Complete => self.job.complete(),
            Command::Cancel { force } => self.job.cancel(force),
            Command::Dismiss => self.job.dismiss(),
        };
        let kind = match &result {
            Ok(()) => SimEventKind::Command(command),
            Err(e) => SimEventKind::CommandRefused(command, e.clone()),
        };
        self.events.push(SimEvent { time_ns: self.now_ns, kind });
        result
    }

    /// Queue the guest's next arrival at `time_ns`, if it still writes then.
    pub(super) fn schedule_arrival(&mut self, time_ns: u64) {
        if self.workload.writing_at(time_ns) && !self.arrival_scheduled {
            self.arrival_scheduled = true;
            self.queue.push(time_ns, Pending::GuestArrival);
        }
    }

    /// The guest wants to write: take a queue slot, or wait for one.
    fn guest_arrival(&mut self) {
        self.arrival_scheduled = false;
        if !self.workload.writing_at(self.now_ns) {
            return;
        }
        if self.guest_outstanding >= self.config.guest.queue_depth {
            // Every slot is taken: the next arrival waits for an acknowledgement.
            self.guest_blocked = true;
            return;
        }
        let (offset, length) = self.workload.next_range();
        self.integrate_guest_in_flight();
        self.guest_outstanding += 1;
        if self.quiesced {
            self.held.push_back((offset, length));
        } else {
            self.issue_guest_write(offset, length);
        }
        let next = self.now_ns.saturating_add(self.workload.next_gap_ns());
        self.schedule_arrival(next);
    }

    /// Send a guest write to the disk the guest currently uses.
    pub(super) fn issue_guest_write(&mut self, offset: u64, length: u64) {
        let side = if self.pivoted { Side::Target } else { Side::Source };
        let id = self.next_guest_id;
        self.next_guest_id += 1;
        let device = if self.pivoted { &mut self.target_dev } else { &mut self.source_dev };
        let done_ns = device.submit(self.now_ns, length, &mut self.timing_rng);
        self.guest_issued += 1;
        self.guest_in_flight.insert(id, GuestRecord { offset, length, side });
        self.queue.push(done_ns, Pending::GuestDiskDone { id });
    }

    /// A guest write reached its disk: record it, and report it to the job while the job
    /// tracks the source.
    fn guest_disk_done(&mut self, id: u64) {
        let rec = self.guest_in_flight.remove(&id).expect("every queued guest write is in flight until done");
        let version = self.disks.fresh();
        self.disks.write_version(rec.side, rec.offset, rec.length, version);
        self.stats.guest_bytes += rec.length;
        self.stats.guest_writes += 1;
        self.note_recent_write(rec.offset, rec.length);
        if rec.side == Side::Target || self.job_ended() {
            self.acknowledge_guest(id);
            return;
        }
        self.record(TraceEntry::GuestWrite { time_ns: self.now_ns, offset: rec.offset, length: rec.length });
        match self.job.handle_guest_write(rec.offset, rec.length) {
            Ok(GuestWrite::Acknowledge) => self.acknowledge_guest(id),
            Ok(GuestWrite::Mirror(op)) => {
                let m = Mirrored { guest_id: id, offset: rec.offset, length: rec.length, version, action_issued: false };
                if self.mirrored.insert(op, m).is_some() {
                    self.violation(format!("guest write mirrored with {op}, which already mirrors another"));
                }
            }
            Err(e) => {
                self.violation(format!("job refused guest write {}+{}: {e}", rec.offset, rec.length));
                self.acknowledge_guest(id);
            }
        }
    }

    /// Adds the writes in flight since the last change to their time integral (call before
    /// every change of `guest_outstanding`).
    fn integrate_guest_in_flight(&mut self) {
        let since = self.stats.guest_in_flight_since_ns;
        let elapsed = u128::from(self.now_ns.saturating_sub(since));
        self.stats.guest_in_flight_ns += u128::from(self.guest_outstanding) * elapsed;
        self.stats.guest_in_flight_since_ns = self.now_ns;
    }

    fn note_recent_write(&mut self, offset: u64, length: u64) {
        let window = self.config.recent_write_window_ns;
        while self.recent_writes.front().is_some_and(|&(t, _, _)| t.saturating_add(window) < self.now_ns) {
            self.recent_writes.pop_front();
        }
        self.recent_writes.push_back((self.now_ns, offset, length));
    }

    /// The guest's write `id` is complete: free its queue slot, and let a quiesce finish
    /// once no started write is left.
    pub(super) fn acknowledge_guest(&mut self, _id: u64) {
        self.guest_issued -= 1;
        self.integrate_guest_in_flight();
        self.guest_outstanding -= 1;
        if self.guest_issued == 0 {
            if let Some(op) = self.pending_quiesce.take() {
                self.queue.push(self.now_ns, Pending::SimOpDone { op });
            }
        }
        if self.guest_blocked {
            self.guest_blocked = false;
            self.schedule_arrival(self.now_ns);
        }
    }
}
