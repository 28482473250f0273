//! The demo handle in plain Rust (testable on the host): one [`Simulation`] of the core's
//! mirror job, plus the few things a page needs around it: live knobs, a per-chunk state
//! buffer that stays put in memory, and verbs that return typed errors.

use crate::guest_meter::{GuestCost, GuestMeter};
use crate::settings::{bytes_from_js, DemoError, DemoSettings, FaultChoice};
use blockmirror_core::job::{CopyMode, Event, JobStatus, MirrorJob, Nanos, Progress, Rates, Verb};
use blockmirror_core::sim::{Command, Goal, Pattern, SimEvent, SimEventKind, Simulation};

/// "Step" advances to the next event, but never more than this much virtual time (when
/// nothing at all is pending, e.g. an idle guest and a job stopped by an error).
pub const STEP_HORIZON_NS: u64 = 60_000_000_000;

/// A running demo.
#[derive(Debug)]
pub struct Demo {
    sim: Simulation,
    settings: DemoSettings,
    /// One byte per chunk; allocated once with the chunk count as its length, so the page's
    /// pointer into it stays valid until the demo is dropped.
    states: Vec<u8>,
    source_fault: FaultChoice,
    target_fault: FaultChoice,
    /// The readouts as of the last [`Demo::refresh_readouts`].
    readouts: Readouts,
    /// The guest's throughput and latency, sampled at each refresh of the readouts.
    guest_meter: GuestMeter,
    /// The guest write rate the page asked for, bytes per second.
    asked_write_rate: u64,
    /// Whether the job's last `BLOCK_JOB_NOT_CONVERGING` still holds, and how far the
    /// events have been read for it.
    convergence: ConvergenceWatch,
}

/// Whether a `BLOCK_JOB_NOT_CONVERGING` verdict still holds, so that every readout agrees
/// with it (an ETA next to that event must not promise a finite time).
///
/// The verdict holds from the event until the job becomes ready, leaves `running`, mirrors
/// in write-blocking mode (which converges under any write rate), or its dirty bytes fall
/// below three quarters of what they were at the event (the backlog is clearly shrinking;
/// the job itself re-arms its event only after dirty bytes shrink).
#[derive(Debug, Clone, Default)]
struct ConvergenceWatch {
    /// Dirty bytes at the event, while the verdict holds.
    dirty_at_event: Option<u64>,
    /// Events already looked at.
    events_read: usize,
}

impl ConvergenceWatch {
    fn update(&mut self, sim: &Simulation) {
        let events = sim.events();
        for event in &events[self.events_read.min(events.len())..] {
            match &event.kind {
                SimEventKind::Job(Event::NotConverging { dirty_bytes, .. }) => self.dirty_at_event = Some(*dirty_bytes),
                SimEventKind::Job(Event::Ready { .. } | Event::AutoConverge { .. }) => self.dirty_at_event = None,
                _ => {}
            }
        }
        self.events_read = events.len();
        let job = sim.job();
        let over = job.status() != JobStatus::Running
            || job.config().copy_mode == CopyMode::WriteBlocking
            || self.dirty_at_event.is_some_and(|at| job.bitmap().count() < at / 4 * 3);
        if over {
            self.dirty_at_event = None;
        }
    }

    fn holds(&self) -> bool {
        self.dirty_at_event.is_some()
    }
}

/// What the page shows besides the chunks, taken at one instant of virtual time so that
/// the numbers on screen agree with each other.
#[derive(Debug, Clone, PartialEq)]
pub struct Readouts {
    /// The job's rate estimates as of the simulation's clock, not the job's: the job only
    /// learns the time when something happens to it, so while it is paused, stopped by an
    /// error or idle its own clock (and with it its sliding windows) stands still.
    pub rates: Rates,
    /// The verbs the job would accept now, in [`Verb::ALL`] order.
    pub accepted_verbs: Vec<Verb>,
    /// What mirroring costs the guest, over the last 2 s.
    pub guest: GuestCost,
    /// Whether the job's `BLOCK_JOB_NOT_CONVERGING` still holds (see [`ConvergenceWatch`]).
    pub not_converging: bool,
    /// The simulation's event count and the job's status when `accepted_verbs` was asked.
    /// What a verb's extra checks look at (a pause or cancel requested, an error winding the
    /// job down, ready reached) only changes through a command or a job event, and every one
    /// of those is recorded in the simulation's event list; so while this key holds, the
    /// answer does, and asking again (a copy of the job per verb) is skipped.
    verbs_asked_at: (usize, JobStatus),
}

impl Readouts {
    /// Takes the readouts of `sim`, reusing `previous`'s verbs when nothing they depend on
    /// has happened since.
    fn of(sim: &Simulation, previous: Option<&Readouts>) -> Self {
        let mut job = sim.job().clone();
        job.handle_timeout(Nanos(sim.now_ns()));
        let rates = job.rates();
        // The verbs are asked of the job as it is: a command reaches it without a clock tick.
        let key = (sim.events().len(), sim.job().status());
        let accepted_verbs = match previous {
            Some(p) if p.verbs_asked_at == key => p.accepted_verbs.clone(),
            _ => Verb::ALL.into_iter().filter(|&verb| accepts(sim.job(), verb)).collect(),
        };
        Self {
            rates,
            accepted_verbs,
            guest: GuestCost::default(),
            not_converging: false,
            verbs_asked_at: key,
        }
    }
}

/// Whether `job` would accept `verb` now: the core's verb table, then the verb itself tried
/// on a copy of the job (the core's own extra checks, e.g. `resume` needs a pause in force),
/// so the answer is always the core's and a refused button cannot be offered.
fn accepts(job: &MirrorJob, verb: Verb) -> bool {
    if !verb.allowed_in(job.status()) {
        return false;
    }
    let mut what_if = job.clone();
    let result = match verb {
        Verb::Start => what_if.start(job.now()),
        Verb::Pause => what_if.pause(),
        Verb::Resume => what_if.resume(),
        Verb::SetSpeed => what_if.set_speed(job.config().speed_bytes_per_sec),
        Verb::Complete => what_if.complete(),
        Verb::Cancel => what_if.cancel(false),
        Verb::Dismiss => what_if.dismiss(),
        Verb::Change => what_if.set_copy_mode(job.config().copy_mode),
        // A verb newer than this page: the table's answer.
        _ => Ok(()),
    };
    result.is_ok()
}

impl Demo {
    /// A fresh simulation with the job started at virtual time 0 and an idle guest.
    pub fn new(settings: DemoSettings) -> Result<Self, DemoError> {
        let sim = Simulation::new(settings.sim_config()?)?;
        let chunks = usize::try_from(sim.chunks()).expect("the chunk count is capped at MAX_CHUNKS");
        let readouts = Readouts::of(&sim, None);
        let mut demo = Self {
            sim,
            settings,
            states: Vec::with_capacity(chunks),
            source_fault: FaultChoice::None,
            target_fault: FaultChoice::None,
            readouts,
            guest_meter: GuestMeter::default(),
            asked_write_rate: 0,
            convergence: ConvergenceWatch::default(),
        };
        demo.refresh_chunk_states();
        Ok(demo)
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &DemoSettings {
        &self.settings
    }

    /// The simulation (read-only).
    pub fn sim(&self) -> &Simulation {
        &self.sim
    }

    // ---- the world around the job ----

    /// The guest's write rate from now on (0: idle).
    pub fn set_write_rate(&mut self, bytes_per_sec: f64) -> Result<(), DemoError> {
        let rate = bytes_from_js("write rate", bytes_per_sec)?;
        self.sim.set_write_rate(rate);
        self.asked_write_rate = rate;
        Ok(())
    }

    /// The guest's write pattern from now on: `uniform`, `hot-spot` or `sequential`.
    pub fn set_pattern(&mut self, name: &str) -> Result<(), DemoError> {
        let pattern: Pattern = name.parse()?;
        self.sim.set_pattern(pattern)?;
        Ok(())
    }

    /// The target's bandwidth from now on (0: unlimited).
    pub fn set_target_bandwidth(&mut self, bytes_per_sec: f64) -> Result<(), DemoError> {
        let rate = bytes_from_js("target bandwidth", bytes_per_sec)?;
        self.sim.set_target_bandwidth(rate);
        Ok(())
    }

    /// How source reads fail from now on: `none`, `io` (now and then) or `full`.
    pub fn set_source_fault(&mut self, name: &str) -> Result<(), DemoError> {
        self.source_fault = FaultChoice::from_name(name)?;
        self.apply_faults()
    }

    /// How target I/O fails from now on: `none`, `io` (now and then) or `full` (no space).
    pub fn set_target_fault(&mut self, name: &str) -> Result<(), DemoError> {
        self.target_fault = FaultChoice::from_name(name)?;
        self.apply_faults()
    }

    fn apply_faults(&mut self) -> Result<(), DemoError> {
        let (source_rate, source_error) = self.source_fault.rate_and_error();
        let (target_rate, target_error) = self.target_fault.rate_and_error();
        self.sim.set_random_faults(source_rate, source_error, target_rate, target_error)?;
        Ok(())
    }

    // ---- time ----

    /// Processes up to `events` simulator events (fewer when nothing is pending within
    /// [`STEP_HORIZON_NS`]); returns how many ran.
    pub fn step(&mut self, events: u64) -> u64 {
        let before = self.sim.steps();
        let horizon = self.sim.now_ns().saturating_add(STEP_HORIZON_NS);
        let _ = self.sim.run_until_within(Goal::Time(horizon), events, STEP_HORIZON_NS);
        self.sim.steps() - before
    }

    /// Runs `duration_ns` of virtual time, or fewer if `max_events` events come first (the
    /// page's per-frame budget); returns the events processed.
    pub fn run_for(&mut self, duration_ns: u64, max_events: u64) -> u64 {
        let before = self.sim.steps();
        let goal = Goal::Time(self.sim.now_ns().saturating_add(duration_ns));
        let _ = self.sim.run_until_within(goal, max_events.max(1), duration_ns);
        self.sim.steps() - before
    }

    // ---- verbs (refusals are typed errors, and the job is unchanged) ----

    fn command(&mut self, command: Command) -> Result<(), DemoError> {
        self.sim.command(command)?;
        Ok(())
    }

    /// `pause()`.
    pub fn pause(&mut self) -> Result<(), DemoError> {
        self.command(Command::Pause)
    }

    /// `resume()`: after a pause, or after a `stop` error paused the job.
    pub fn resume(&mut self) -> Result<(), DemoError> {
        self.command(Command::Resume)
    }

    /// `complete()`: switch over (only when ready).
    pub fn complete(&mut self) -> Result<(), DemoError> {
        self.command(Command::Complete)
    }

    /// `cancel(force)`.
    pub fn cancel(&mut self, force: bool) -> Result<(), DemoError> {
        self.command(Command::Cancel { force })
    }

    /// `set_speed(bytes_per_sec)`: the job's own speed limit (0: unlimited).
    pub fn set_job_speed(&mut self, bytes_per_sec: f64) -> Result<(), DemoError> {
        let speed = bytes_from_js("job speed", bytes_per_sec)?;
        self.command(Command::SetSpeed(speed))
    }

    /// Switch the copy mode while running (`background` or `write-blocking`).
    pub fn set_copy_mode(&mut self, name: &str) -> Result<(), DemoError> {
        let mode: CopyMode = name.parse()?;
        self.command(Command::SetCopyMode(mode))
    }

    /// Whether the core's verb table allows `verb` in the current status.
    pub fn verb_allowed(&self, verb: Verb) -> bool {
        verb.allowed_in(self.sim.job().status())
    }

    // ---- getters ----

    /// The job's status.
    pub fn status(&self) -> JobStatus {
        self.sim.job().status()
    }

    /// The job's progress.
    pub fn progress(&self) -> Progress {
        self.sim.job().progress()
    }

    /// The job's rate estimates as of the last [`refresh_readouts`](Self::refresh_readouts).
    pub fn rates(&self) -> Rates {
        self.readouts.rates
    }

    /// The verbs the job would accept, as of the last
    /// [`refresh_readouts`](Self::refresh_readouts).
    pub fn accepted_verbs(&self) -> &[Verb] {
        &self.readouts.accepted_verbs
    }

    /// Whether the job has ended (concluded or dismissed): nothing is copied any more, so
    /// the rates describe a job that is gone.
    pub fn ended(&self) -> bool {
        matches!(self.status(), JobStatus::Concluded | JobStatus::Null)
    }

    /// Takes the rates and the accepted verbs at the simulation's clock (a copy of the job
    /// is told the time and asked; the job itself is untouched). Call once per frame.
    pub fn refresh_readouts(&mut self) {
        let (bytes, writes) = self.sim.guest_written();
        self.guest_meter.sample(self.sim.now_ns(), bytes, writes, self.sim.guest_in_flight_integral_ns());
        self.convergence.update(&self.sim);
        let mut readouts = Readouts::of(&self.sim, Some(&self.readouts));
        readouts.guest = self.guest_meter.cost();
        readouts.not_converging = self.convergence.holds();
        self.readouts = readouts;
    }

    /// What mirroring costs the guest (throughput and latency over the last 2 s), as of the
    /// last [`refresh_readouts`](Self::refresh_readouts).
    pub fn guest_cost(&self) -> GuestCost {
        self.readouts.guest
    }

    /// Whether the job's `BLOCK_JOB_NOT_CONVERGING` still holds, as of the last
    /// [`refresh_readouts`](Self::refresh_readouts): then there is no time to ready to show.
    pub fn not_converging(&self) -> bool {
        self.readouts.not_converging
    }

    /// The guest write rate asked for (what the guest would write if nothing held it back).
    pub fn asked_write_rate(&self) -> u64 {
        self.asked_write_rate
    }

    /// The copy mode in force now (a running job may have been switched).
    pub fn copy_mode(&self) -> CopyMode {
        self.sim.job().config().copy_mode
    }

    /// Bytes dirty in the job's bitmap.
    pub fn dirty_bytes(&self) -> u64 {
        self.sim.job().bitmap().count()
    }

    /// Virtual time now.
    pub fn now_ns(&self) -> u64 {
        self.sim.now_ns()
    }

    /// Events with index `seq` and later (the index is the event's sequence number).
    pub fn events_since(&self, seq: u64) -> &[SimEvent] {
        let events = self.sim.events();
        let from = usize::try_from(seq).unwrap_or(usize::MAX).min(events.len());
        &events[from..]
    }

    // ---- the per-chunk picture ----

    /// Rebuilds the per-chunk states from the simulation.
    pub fn refresh_chunk_states(&mut self) {
        let capacity = self.states.capacity();
        self.sim.chunk_states(&mut self.states);
        debug_assert_eq!(capacity, self.states.capacity(), "the state buffer must not move");
    }

    /// The state bytes as of the last refresh (see `sim::ChunkState`).
    pub fn chunk_states(&self) -> &[u8] {
        &self.states
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockmirror_core::job::Event;
    use blockmirror_core::sim::{ChunkState, SimEventKind};

    const MIB: f64 = 1048576.0;

    fn demo(disk_mib: f64, target_policy: &str) -> Demo {
        let settings = DemoSettings::parse(disk_mib * MIB, 65536.0, "background", "report", target_policy, 3)
            .expect("valid settings");
        Demo::new(settings).expect("a demo")
    }

    fn job_events(d: &Demo) -> Vec<&'static str> {
        d.events_since(0)
            .iter()
            .filter_map(|e| match &e.kind {
                SimEventKind::Job(ev) => Some(ev.type_name()),
                _ => None,
            })
            .collect()
    }

    /// Runs in frame-sized slices until `done`, like the page does; panics after `max_ms`.
    fn run_until(d: &mut Demo, max_ms: u64, done: impl Fn(&Demo) -> bool) {
        for _ in 0..max_ms / 16 {
            if done(d) {
                return;
            }
            d.run_for(16_000_000, 100_000);
        }
        panic!("not done after {max_ms} ms of virtual time; status {}", d.status());
    }

    #[test]
    fn a_quiet_disk_reaches_ready_and_completes() {
        let mut d = demo(64.0, "report");
        d.set_write_rate(1.0 * MIB).unwrap();
        d.set_target_bandwidth(200.0 * MIB).unwrap();
        assert_eq!(d.status(), JobStatus::Running);
        assert_eq!(d.chunk_states().len(), 1024);
        let dirty_or_reading = |s: &u8| *s == ChunkState::Dirty as u8 || *s == ChunkState::Reading as u8;
        assert!(d.chunk_states().iter().all(dirty_or_reading), "sync full starts with every chunk to copy");
        run_until(&mut d, 10_000, |d| d.status() == JobStatus::Ready);
        d.refresh_chunk_states();
        assert!(d.chunk_states().iter().filter(|&&s| s == ChunkState::Clean as u8).count() > 900);
        d.complete().unwrap();
        run_until(&mut d, 10_000, |d| d.status() == JobStatus::Concluded);
        let events = job_events(&d);
        let ready = events.iter().position(|&t| t == "BLOCK_JOB_READY").expect("ready");
        let completed = events.iter().position(|&t| t == "BLOCK_JOB_COMPLETED").expect("completed");
        assert!(ready < completed);
        let p = d.progress();
        assert_eq!(p.current, p.total);
        assert!(d.sim().pivoted());
    }

    #[test]
    fn a_refused_verb_is_a_typed_error_and_changes_nothing() {
        let mut d = demo(16.0, "report");
        let before = d.status();
        let err = d.complete().unwrap_err();
        assert_eq!(err.to_string(), "cannot complete a job in status running");
        assert_eq!(d.status(), before);
        assert!(!d.verb_allowed(Verb::Complete));
        assert!(d.verb_allowed(Verb::Cancel));
        assert!(d.set_pattern("zigzag").is_err());
        assert!(d.set_copy_mode("fast").is_err());
        assert!(d.set_target_fault("sometimes").is_err());
        assert!(d.set_write_rate(-1.0).is_err());
    }

    #[test]
    fn a_full_target_stops_the_job_and_resume_finishes_it() {
        let mut d = demo(32.0, "enospc");
        d.set_target_bandwidth(100.0 * MIB).unwrap();
        d.set_target_fault("full").unwrap();
        assert!(!accepted(&mut d).contains(&Verb::Resume));
        run_until(&mut d, 10_000, |d| d.status() == JobStatus::Paused);
        assert!(accepted(&mut d).contains(&Verb::Resume), "a stop error is a pause Resume ends");
        let stop = d.events_since(0).iter().find_map(|e| match &e.kind {
            SimEventKind::Job(Event::Error { action, error, .. }) => Some((*action, *error)),
            _ => None,
        });
        assert_eq!(
            stop,
            Some((blockmirror_core::job::ErrorAction::Stop, blockmirror_core::job::IoErrorKind::NoSpace))
        );
        d.refresh_chunk_states();
        assert!(d.chunk_states().contains(&(ChunkState::Failed as u8)), "the failed chunk is shown");
        d.set_target_fault("none").unwrap();
        d.resume().unwrap();
        run_until(&mut d, 10_000, |d| d.status() == JobStatus::Ready);
        assert!(job_events(&d).contains(&"BLOCK_JOB_READY"));
    }

    /// The busy-disk scenarios: the guest dirties 160 MiB/s, the target takes 100 MiB/s.
    fn busy(mode: &str, virtual_ms: u64) -> Demo {
        let settings = DemoSettings::parse(64.0 * MIB, 65536.0, mode, "report", "report", 5).unwrap();
        let mut d = Demo::new(settings).unwrap();
        d.set_write_rate(160.0 * MIB).unwrap();
        d.set_target_bandwidth(100.0 * MIB).unwrap();
        for _ in 0..virtual_ms / 16 {
            d.run_for(16_000_000, 1_000_000);
        }
        d
    }

    #[test]
    fn a_busy_disk_in_background_mode_never_becomes_ready_and_says_so() {
        let d = busy("background", 12_000);
        assert_eq!(d.status(), JobStatus::Running);
        assert!(job_events(&d).contains(&"BLOCK_JOB_NOT_CONVERGING"), "{:?}", job_events(&d));
    }

    #[test]
    fn write_blocking_reaches_ready_under_the_same_load() {
        let d = busy("write-blocking", 4_000);
        assert_eq!(d.status(), JobStatus::Ready);
    }

    /// A 32 MiB demo under `policy` whose target either fails one write once (EIO) or is
    /// full from the start (every write: ENOSPC); run for `ms` of virtual time.
    fn policy_run(policy: &str, full: bool, ms: u64) -> Demo {
        let mut settings = DemoSettings::parse(32.0 * MIB, 65536.0, "background", "report", policy, 3).unwrap();
        if !full {
            settings.target_error_once_at_write = 5;
        }
        let mut d = Demo::new(settings).unwrap();
        d.set_write_rate(2.0 * MIB).unwrap();
        d.set_target_bandwidth(100.0 * MIB).unwrap();
        if full {
            d.set_target_fault("full").unwrap();
        }
        for _ in 0..ms / 16 {
            d.run_for(16_000_000, 1_000_000);
        }
        d
    }

    fn errors(d: &Demo) -> usize {
        job_events(d).iter().filter(|&&t| t == "BLOCK_JOB_ERROR").count()
    }

    /// The four policies against a one-off error and a target that stays full: what the
    /// page's policy scenarios tell.
    #[test]
    fn the_four_error_policies_against_a_one_off_error_and_a_full_target() {
        // report: the first error ends the job, either way (with a full target every write
        // then in flight fails too, and each says so).
        for full in [false, true] {
            let d = policy_run("report", full, 3_000);
            assert_eq!(d.status(), JobStatus::Concluded, "report, full={full}");
            assert!(errors(&d) >= 1 && (full || errors(&d) == 1), "{}", errors(&d));
        }
        // ignore: a one-off error is retried and the job gets ready; a full target is
        // retried for ever.
        let d = policy_run("ignore", false, 3_000);
        assert_eq!((d.status(), errors(&d)), (JobStatus::Ready, 1));
        let d = policy_run("ignore", true, 3_000);
        assert_eq!(d.status(), JobStatus::Running);
        assert!(errors(&d) > 10, "the retry loop: {} errors", errors(&d));
        // stop: any error pauses the job until resume.
        for full in [false, true] {
            let d = policy_run("stop", full, 3_000);
            assert_eq!(d.status(), JobStatus::Paused, "stop, full={full}");
        }
        let mut d = policy_run("stop", false, 3_000);
        d.resume().unwrap();
        run_until(&mut d, 5_000, |d| d.status() == JobStatus::Ready);
        // enospc: stops for "no space", reports anything else.
        assert_eq!(policy_run("enospc", true, 3_000).status(), JobStatus::Paused);
        assert_eq!(policy_run("enospc", false, 3_000).status(), JobStatus::Concluded);
    }

    /// Runs a busy demo frame by frame, refreshing the readouts as the page does.
    fn busy_with_readouts(mode: &str, virtual_ms: u64) -> Demo {
        let settings = DemoSettings::parse(256.0 * MIB, 65536.0, mode, "report", "report", 5).unwrap();
        let mut d = Demo::new(settings).unwrap();
        d.set_write_rate(160.0 * MIB).unwrap();
        d.set_target_bandwidth(100.0 * MIB).unwrap();
        for _ in 0..virtual_ms / 16 {
            d.run_for(16_000_000, 1_000_000);
            d.refresh_readouts();
        }
        d
    }

    /// Write-blocking's price: guest writes wait for the slower target, so the guest gets
    /// far less than it asks and each write takes much longer than in background mode.
    #[test]
    fn write_blocking_costs_the_guest_throughput_and_latency() {
        let background = busy_with_readouts("background", 3_000);
        let blocking = busy_with_readouts("write-blocking", 3_000);
        let (b, w) = (background.guest_cost(), blocking.guest_cost());
        let asked = 160.0 * MIB;
        assert!(b.bytes_per_sec > 0.9 * asked, "background: the guest gets its rate: {b:?}");
        assert!(w.bytes_per_sec < 0.5 * asked, "write-blocking: the guest is held back: {w:?}");
        let (lb, lw) = (b.latency_ns.unwrap(), w.latency_ns.unwrap());
        assert!(lw > 5.0 * lb, "write-blocking latency {lw} ns against background {lb} ns");
        assert_eq!(blocking.asked_write_rate(), 160 << 20);
    }

    /// While NOT_CONVERGING holds no readout promises a time to ready.
    #[test]
    fn the_not_converging_verdict_holds_until_write_blocking_takes_over() {
        let mut d = busy_with_readouts("background", 12_000);
        assert!(job_events(&d).contains(&"BLOCK_JOB_NOT_CONVERGING"));
        assert!(d.not_converging(), "the verdict holds while the backlog does not shrink");
        d.set_copy_mode("write-blocking").unwrap();
        d.run_for(16_000_000, 1_000_000);
        d.refresh_readouts();
        assert!(!d.not_converging(), "write-blocking converges under any write rate");
    }

    #[test]
    fn force_cancel_stops_at_once_and_the_target_may_differ() {
        let mut d = demo(64.0, "report");
        d.set_write_rate(4.0 * MIB).unwrap();
        d.set_target_bandwidth(50.0 * MIB).unwrap();
        d.run_for(200_000_000, 1_000_000);
        assert_eq!(d.status(), JobStatus::Running);
        d.cancel(true).unwrap();
        run_until(&mut d, 1_000, |d| d.status() == JobStatus::Concluded);
        let events = job_events(&d);
        assert!(events.contains(&"BLOCK_JOB_CANCELLED"));
        assert!(!events.contains(&"BLOCK_JOB_COMPLETED"));
        assert!(!d.sim().source_equals_target(), "cancelled a fifth of the way through");
    }

    fn accepted(d: &mut Demo) -> Vec<Verb> {
        d.refresh_readouts();
        d.accepted_verbs().to_vec()
    }

    /// The table allows `resume` while running and `pause` while paused; the job refuses
    /// both. The accepted verbs follow the job, and a verb they list is one it takes.
    #[test]
    fn accepted_verbs_are_what_the_job_takes_not_just_the_table() {
        let mut d = demo(64.0, "report");
        d.set_target_bandwidth(50.0 * MIB).unwrap();
        assert!(d.verb_allowed(Verb::Resume), "the table allows resume while running");
        let running = accepted(&mut d);
        assert!(running.contains(&Verb::Pause) && running.contains(&Verb::Cancel));
        assert!(!running.contains(&Verb::Resume) && !running.contains(&Verb::Complete));
        assert!(d.resume().is_err(), "and the job refuses it");
        d.pause().unwrap();
        let paused = accepted(&mut d);
        assert!(paused.contains(&Verb::Resume) && !paused.contains(&Verb::Pause));
        d.resume().unwrap();
        run_until(&mut d, 10_000, |d| d.status() == JobStatus::Ready);
        assert!(accepted(&mut d).contains(&Verb::Complete));
        d.cancel(false).unwrap();
        assert!(!accepted(&mut d).contains(&Verb::Complete), "complete after a cancel is refused");
        assert!(d.complete().is_err());
        run_until(&mut d, 10_000, |d| d.status() == JobStatus::Concluded);
        assert_eq!(accepted(&mut d), [Verb::Dismiss]);
        assert!(d.ended());
    }

    /// The job's own clock stops while it is paused with an idle guest; the readouts are
    /// taken at the simulation's clock, so the copy rate falls to zero instead of holding
    /// its last value.
    #[test]
    fn the_copy_rate_falls_to_zero_while_paused() {
        let mut d = demo(256.0, "report");
        d.set_target_bandwidth(50.0 * MIB).unwrap();
        d.run_for(1_000_000_000, u64::MAX);
        d.refresh_readouts();
        assert!(d.rates().copy_bytes_per_sec > 0);
        d.pause().unwrap();
        run_until(&mut d, 1_000, |d| d.status() == JobStatus::Paused);
        let stalled = d.sim().job().rates().copy_bytes_per_sec;
        assert!(stalled > 0, "the job last saw itself copying");
        d.run_for(3_000_000_000, u64::MAX);
        assert_eq!(d.sim().job().rates().copy_bytes_per_sec, stalled, "the job's clock stands still");
        d.refresh_readouts();
        assert_eq!(d.rates().copy_bytes_per_sec, 0);
        assert_eq!(d.status(), JobStatus::Paused, "reading the readouts changed nothing");
    }

    #[test]
    fn no_chunk_is_in_flight_once_a_force_cancel_has_concluded() {
        let mut d = demo(16.0, "report");
        d.set_write_rate(4.0 * MIB).unwrap();
        d.set_target_bandwidth(20.0 * MIB).unwrap();
        d.run_for(100_000_000, u64::MAX);
        d.cancel(true).unwrap();
        run_until(&mut d, 1_000, |d| d.status() == JobStatus::Concluded);
        d.refresh_chunk_states();
        let busy = [ChunkState::Reading as u8, ChunkState::Writing as u8, ChunkState::Waiting as u8];
        assert!(!d.chunk_states().iter().any(|s| busy.contains(s)));
    }

    #[test]
    fn step_runs_exactly_the_events_asked_for() {
        let mut d = demo(16.0, "report");
        d.set_write_rate(4.0 * MIB).unwrap();
        let before = d.sim().steps();
        assert_eq!(d.step(1), 1);
        assert_eq!(d.step(5), 5);
        assert_eq!(d.sim().steps(), before + 6);
    }

    #[test]
    fn events_since_counts_from_a_sequence_number() {
        let mut d = demo(16.0, "report");
        d.run_for(2_000_000_000, 1_000_000);
        let all = d.events_since(0).len();
        assert!(all >= 2, "at least running and ready");
        assert_eq!(d.events_since(1).len(), all - 1);
        assert_eq!(d.events_since(all as u64).len(), 0);
        assert_eq!(d.events_since(u64::MAX).len(), 0);
    }

    #[test]
    fn the_state_buffer_stays_put() {
        let mut d = demo(16.0, "report");
        d.set_write_rate(8.0 * MIB).unwrap();
        let ptr = d.chunk_states().as_ptr();
        for _ in 0..50 {
            d.run_for(16_000_000, 100_000);
            d.refresh_chunk_states();
            assert_eq!(d.chunk_states().as_ptr(), ptr);
            assert_eq!(d.chunk_states().len(), 256);
        }
    }
}
