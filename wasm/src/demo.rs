//! The demo handle in plain Rust (testable on the host): one [`Simulation`] of the core's
//! mirror job, plus the few things a page needs around it: live knobs, a per-chunk state
//! buffer that stays put in memory, and verbs that return typed errors.

use crate::guest_meter::{GuestCost, GuestMeter};
use crate::readouts::Readouts;
use crate::settings::{bytes_from_js, DemoError, DemoSettings, FaultChoice};
use blockmirror_core::job::{CopyMode, JobStatus, Progress, Rates, Verb};
use blockmirror_core::sim::{Command, Goal, Pattern, SimEvent, Simulation};

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
}

impl Demo {
    /// A fresh simulation with the job started at virtual time 0 and an idle guest.
    pub fn new(settings: DemoSettings) -> Result<Self, DemoError> {
        let sim = Simulation::new(settings.sim_config()?)?;
        let chunks = usize::try_from(sim.chunks()).expect("the chunk count is capped at MAX_CHUNKS");
        let readouts = Readouts::of(&sim, None, GuestCost::default());
        let mut demo = Self {
            sim,
            settings,
            states: Vec::with_capacity(chunks),
            source_fault: FaultChoice::None,
            target_fault: FaultChoice::None,
            readouts,
            guest_meter: GuestMeter::default(),
            asked_write_rate: 0,
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
        self.readouts = Readouts::of(&self.sim, Some(&self.readouts), self.guest_meter.cost());
    }

    /// What mirroring costs the guest (throughput and latency over the last 2 s), as of the
    /// last [`refresh_readouts`](Self::refresh_readouts).
    pub fn guest_cost(&self) -> GuestCost {
        self.readouts.guest
    }

    /// Whether a `BLOCK_JOB_NOT_CONVERGING` episode is under way, the core's verdict
    /// ([`MirrorJob::is_not_converging`](blockmirror_core::job::MirrorJob::is_not_converging)),
    /// as of the last [`refresh_readouts`](Self::refresh_readouts): before ready there is
    /// then no time to ready to show.
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

/// Demos and runs the tests of this crate share.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use blockmirror_core::sim::SimEventKind;

    pub(crate) const MIB: f64 = 1048576.0;

    pub(crate) fn demo(disk_mib: f64, target_policy: &str) -> Demo {
        let settings = DemoSettings::parse(disk_mib * MIB, 65536.0, "background", "report", target_policy, 3)
            .expect("valid settings");
        Demo::new(settings).expect("a demo")
    }

    pub(crate) fn job_events(d: &Demo) -> Vec<&'static str> {
        d.events_since(0)
            .iter()
            .filter_map(|e| match &e.kind {
                SimEventKind::Job(ev) => Some(ev.type_name()),
                _ => None,
            })
            .collect()
    }

    /// Runs in frame-sized slices until `done`, like the page does; panics after `max_ms`.
    pub(crate) fn run_until(d: &mut Demo, max_ms: u64, done: impl Fn(&Demo) -> bool) {
        for _ in 0..max_ms / 16 {
            if done(d) {
                return;
            }
            d.run_for(16_000_000, 100_000);
        }
        panic!("not done after {max_ms} ms of virtual time; status {}", d.status());
    }

    /// Runs a busy demo frame by frame, refreshing the readouts as the page does.
    pub(crate) fn busy_with_readouts(mode: &str, virtual_ms: u64) -> Demo {
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

    pub(crate) fn accepted(d: &mut Demo) -> Vec<Verb> {
        d.refresh_readouts();
        d.accepted_verbs().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use blockmirror_core::job::Event;
    use blockmirror_core::sim::{ChunkState, SimEventKind};

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
