//! Scenario runs: each workload, each copy mode, scripted commands, the run bounds.

mod sim_common;
use blockmirror_core::job::{CopyMode, Event, JobStatus, MirrorConfig, SyncMode};
use blockmirror_core::sim::{
    ChunkState, Command, Goal, Pattern, ReadCapture, RunLimits, RunOutcome, ScriptedCommand, SimConfig, SimConfigError, SimError,
    SimEventKind, Simulation, MAX_CHUNKS,
};
use sim_common::*;

fn completes_equal(config: blockmirror_core::sim::SimConfig) -> Simulation {
    let mut config = config;
    config.complete_on_ready = true;
    let mut sim = Simulation::new(config).expect("valid config");
    assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached, "events: {:?}", event_types(&sim));
    let summary = sim.summary();
    assert_eq!(summary.ending, Some("completed"));
    assert_eq!(summary.error, None);
    assert_eq!(summary.equal_at_end, Some(true), "target differs from the source at the switch");
    assert!(summary.pivoted);
    assert_clean(&sim);
    sim
}

#[test]
fn idle_guest_full_copy_takes_length_over_bandwidth() {
    let sim = completes_equal(base(64 * MIB));
    let ready = sim.summary().ready_at_ns.expect("ready");
    // 64 MiB at 200 MiB/s is 320 ms; allow for latency and the pipeline filling.
    assert!((320 * MS..360 * MS).contains(&ready), "ready at {ready} ns");
    assert_eq!(sim.summary().bytes_copied, 64 * MIB);
    assert_eq!(sim.summary().bytes_recopied, 0);
    let types = event_types(&sim);
    assert_eq!(types.iter().filter(|t| **t == "BLOCK_JOB_READY").count(), 1);
    assert_eq!(types.last(), Some(&"JOB_STATUS_CHANGE"));
}

#[test]
fn every_workload_converges_below_the_copy_rate_in_background_mode() {
    for pattern in [Pattern::Uniform, Pattern::HOT_SPOT_90_10, Pattern::Sequential] {
        let mut config = with_guest(base(64 * MIB), pattern, 20 * MIB);
        config.guest.write_size = 64 << 10;
        let sim = completes_equal(config);
        let s = sim.summary();
        assert!(s.guest_bytes_written > 0, "{pattern:?}");
        assert!(s.bytes_recopied > 0 || pattern == Pattern::Sequential, "{pattern:?}: {s:?}");
    }
}

#[test]
fn every_sync_mode_completes_equal_with_holes() {
    for sync in [SyncMode::Full, SyncMode::Top, SyncMode::None] {
        for declare in [true, false] {
            let mut config = with_guest(modes(base(16 * MIB), sync, CopyMode::Background), Pattern::Uniform, 5 * MIB);
            config.layout.data_fraction = 0.5;
            config.layout.declare = declare;
            let sim = completes_equal(config);
            let copied = sim.summary().bytes_copied;
            if sync == SyncMode::None {
                assert!(copied < 16 * MIB, "none copies only guest writes: {copied}");
            }
        }
    }
}

#[test]
fn write_blocking_converges_where_background_does_not() {
    // The guest writes 64 KiB blocks at 400 MiB/s; the target takes 200 MiB/s.
    let heavy = |copy| {
        let mut config = with_guest(modes(base(64 * MIB), SyncMode::Full, copy), Pattern::Uniform, 400 * MIB);
        config.guest.write_size = 64 << 10;
        config.guest.write_align = 64 << 10;
        config.limits.max_duration_ns = 10 * SEC;
        Simulation::new(config).expect("valid config")
    };
    let mut background = heavy(CopyMode::Background);
    assert_eq!(background.run_until(Goal::Ready), RunOutcome::TimeLimit);
    assert!(background.job().bitmap().count() > 0);

    let mut blocking = heavy(CopyMode::WriteBlocking);
    assert_eq!(blocking.run_until(Goal::Ready), RunOutcome::Reached);
    blocking.command(Command::Complete).expect("complete is allowed in ready");
    assert_eq!(blocking.run_until(Goal::Concluded), RunOutcome::Reached);
    assert_eq!(blocking.summary().equal_at_end, Some(true));
    assert_clean(&blocking);
}

#[test]
fn switching_to_write_blocking_while_running_converges() {
    let mut config = with_guest(base(64 * MIB), Pattern::Uniform, 400 * MIB);
    config.guest.write_size = 64 << 10;
    config.guest.write_align = 64 << 10;
    config.commands.push(ScriptedCommand { at_ns: SEC, command: Command::SetCopyMode(CopyMode::WriteBlocking) });
    config.limits.max_duration_ns = 20 * SEC;
    let mut sim = Simulation::new(config).expect("valid config");
    assert_eq!(sim.run_until(Goal::Ready), RunOutcome::Reached);
    assert!(sim.summary().ready_at_ns.expect("ready") > SEC);
}

/// A guest at twice the copy rate: background copying never gets ready; with the job's
/// `auto_converge` it switches itself to write-blocking (an event, no command) and does.
#[test]
fn auto_converge_switches_to_write_blocking_when_the_guest_outpaces_the_copy() {
    let heavy = |auto| {
        let mut config = with_guest(base(64 * MIB), Pattern::Uniform, 400 * MIB);
        config.guest.write_size = 64 << 10;
        config.guest.write_align = 64 << 10;
        config.job.not_converging_window_ns = 2 * SEC;
        config.job.auto_converge = auto;
        config.limits.max_duration_ns = 20 * SEC;
        Simulation::new(config).expect("valid config")
    };
    let mut stuck = heavy(false);
    assert_eq!(stuck.run_until(Goal::Ready), RunOutcome::NotConverging);
    assert!(event_types(&stuck).contains(&"BLOCK_JOB_NOT_CONVERGING"));
    assert!(!event_types(&stuck).contains(&"BLOCK_JOB_AUTO_CONVERGE"));
    let mut helped = heavy(true);
    assert_eq!(helped.run_until(Goal::Ready), RunOutcome::Reached);
    let switches: Vec<_> = helped
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            SimEventKind::Job(ev @ Event::AutoConverge { .. }) => Some((e.time_ns, ev.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(switches.len(), 1, "one switch: {switches:?}");
    let (at_ns, Event::AutoConverge { dirty_bytes_per_sec, copy_bytes_per_sec, .. }) = switches[0].clone() else {
        unreachable!()
    };
    assert!(at_ns >= 2 * SEC, "not before a whole window: {at_ns}");
    assert!(dirty_bytes_per_sec * 10 >= copy_bytes_per_sec * 9 || event_types(&helped).contains(&"BLOCK_JOB_NOT_CONVERGING"));
    assert!(helped.summary().ready_at_ns.expect("ready") > at_ns);
    assert_eq!(helped.job().config().copy_mode, CopyMode::WriteBlocking);
    assert!(!helped.events().iter().any(|e| matches!(e.kind, SimEventKind::Command(_))), "the job switched itself");
    assert_clean(&helped);
}

#[test]
fn pause_stops_progress_until_resume() {
    let mut config = base(64 * MIB);
    config.sample_interval_ns = 10 * MS;
    config.commands.push(ScriptedCommand { at_ns: 100 * MS, command: Command::Pause });
    config.commands.push(ScriptedCommand { at_ns: 500 * MS, command: Command::Resume });
    let mut sim = Simulation::new(config).expect("valid config");
    assert_eq!(sim.run_until(Goal::Ready), RunOutcome::Reached);
    let ready = sim.summary().ready_at_ns.expect("ready");
    // 320 ms of copying, plus the pause minus the 16 MiB (80 ms) in flight that finish.
    assert!((620 * MS..700 * MS).contains(&ready), "the pause delays ready by about 320 ms: {ready}");
    let paused: Vec<_> = sim.samples().iter().filter(|s| (250 * MS..500 * MS).contains(&s.time_ns)).collect();
    assert!(!paused.is_empty());
    assert!(paused.iter().all(|s| s.status == JobStatus::Paused && s.current == paused[0].current));
}

#[test]
fn speed_limit_and_set_speed_limit_the_copy_rate() {
    // 10 MiB/s: a quota of exactly one 1 MiB copy per 100 ms slice.
    let mut config = base(16 * MIB);
    config.job.speed_bytes_per_sec = 10 * MIB;
    let mut sim = Simulation::new(config).expect("valid config");
    assert_eq!(sim.run_until(Goal::Ready), RunOutcome::Reached);
    let ready = sim.summary().ready_at_ns.expect("ready");
    assert!((1500 * MS..1700 * MS).contains(&ready), "16 MiB at 10 MiB/s is about 1.6 s: {ready}");

    // 8 MiB/s: 1 MiB copies against a 0.8 MiB quota stretch each slice to 125 ms, so the
    // limit holds even when copies do not divide the quota.
    let mut config = base(16 * MIB);
    config.job.speed_bytes_per_sec = 8 * MIB;
    let mut sim = Simulation::new(config).expect("valid config");
    assert_eq!(sim.run_until(Goal::Ready), RunOutcome::Reached);
    let ready = sim.summary().ready_at_ns.expect("ready");
    assert!((1850 * MS..2100 * MS).contains(&ready), "16 MiB at 8 MiB/s is about 2 s: {ready}");

    // Raising the limit at 1 s: 10 MiB copied by then, the other 6 MiB at once.
    let mut config = base(16 * MIB);
    config.job.speed_bytes_per_sec = 10 * MIB;
    config.commands.push(ScriptedCommand { at_ns: SEC, command: Command::SetSpeed(64 * MIB) });
    let mut sim = Simulation::new(config).expect("valid config");
    assert_eq!(sim.run_until(Goal::Ready), RunOutcome::Reached);
    let ready = sim.summary().ready_at_ns.expect("ready");
    assert!((1000 * MS..1200 * MS).contains(&ready), "about 1.05 s: {ready}");
}

#[test]
fn cancel_before_ready_is_cancelled_and_ready_becomes_unreachable() {
    let mut config = base(64 * MIB);
    config.commands.push(ScriptedCommand { at_ns: 50 * MS, command: Command::Cancel { force: false } });
    let mut sim = Simulation::new(config).expect("valid config");
    assert_eq!(sim.run_until(Goal::Ready), RunOutcome::Unreachable);
    assert_eq!(sim.summary().ending, Some("cancelled"));
    assert!(!sim.summary().pivoted);
    assert_clean(&sim);
}

#[test]
fn soft_cancel_in_ready_completes_without_pivot_and_equal() {
    let mut config = with_guest(base(16 * MIB), Pattern::Uniform, 10 * MIB);
    config.guest.write_size = 64 << 10;
    config.commands.push(ScriptedCommand { at_ns: SEC, command: Command::Cancel { force: false } });
    let mut sim = Simulation::new(config).expect("valid config");
    assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
    let s = sim.summary();
    assert_eq!((s.ending, s.pivoted, s.equal_at_end), (Some("completed"), false, Some(true)));
    assert_clean(&sim);
}

#[test]
fn force_cancel_in_ready_is_cancelled() {
    let mut config = with_guest(base(16 * MIB), Pattern::Uniform, 10 * MIB);
    config.guest.write_size = 64 << 10;
    config.commands.push(ScriptedCommand { at_ns: SEC, command: Command::Cancel { force: true } });
    let mut sim = Simulation::new(config).expect("valid config");
    assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
    assert!(sim.summary().ready_at_ns.expect("ready") < SEC);
    assert_eq!(sim.summary().ending, Some("cancelled"));
    assert_clean(&sim);
}

#[test]
fn refused_commands_are_recorded_and_change_nothing() {
    let mut config = base(64 * MIB);
    config.commands.push(ScriptedCommand { at_ns: 10 * MS, command: Command::Complete });
    config.commands.push(ScriptedCommand { at_ns: 20 * MS, command: Command::Resume });
    let mut sim = Simulation::new(config).expect("valid config");
    assert_eq!(sim.run_until(Goal::Ready), RunOutcome::Reached);
    let refused = sim.events().iter().filter(|e| matches!(e.kind, SimEventKind::CommandRefused(..))).count();
    assert_eq!(refused, 2);
    assert_eq!(sim.job().status(), JobStatus::Ready);
}

#[test]
fn a_run_that_cannot_reach_its_goal_reports_instead_of_hanging() {
    // Step budget: a livelock.
    let mut sim = Simulation::new(base(64 * MIB)).expect("valid config");
    assert_eq!(sim.run_until_within(Goal::Ready, 10, u64::MAX), RunOutcome::Livelock);
    assert_eq!(sim.run_until_within(Goal::Ready, u64::MAX, u64::MAX), RunOutcome::Reached);
    // Nothing pending and not concluded: stalled.
    assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Stalled);
    // A time goal is always reached; the clock lands on it.
    assert_eq!(sim.run_until(Goal::Time(5 * SEC)), RunOutcome::Reached);
    assert_eq!(sim.now_ns(), 5 * SEC);
}

#[test]
fn chunk_states_show_dirty_in_flight_and_guest_writes() {
    let mut config = with_guest(base(64 * MIB), Pattern::HOT_SPOT_90_10, 50 * MIB);
    config.recent_write_window_ns = 50 * MS;
    let mut sim = Simulation::new(config).expect("valid config");
    assert_eq!(sim.run_until(Goal::Time(100 * MS)), RunOutcome::Reached);
    let mut states = Vec::new();
    sim.chunk_states(&mut states);
    assert_eq!(states.len() as u64, sim.chunks());
    let count = |s: ChunkState| states.iter().filter(|&&b| b == s as u8).count();
    assert!(count(ChunkState::Dirty) > 0);
    assert!(count(ChunkState::Clean) > 0);
    assert!(count(ChunkState::GuestWritten) > 0);
    assert!(count(ChunkState::Reading) + count(ChunkState::Writing) > 0);
}

#[test]
fn samples_come_at_the_configured_interval() {
    let mut config = base(64 * MIB);
    config.sample_interval_ns = 50 * MS;
    let mut sim = Simulation::new(config).expect("valid config");
    assert_eq!(sim.run_until(Goal::Time(SEC)), RunOutcome::Reached);
    let times: Vec<u64> = sim.samples().iter().map(|s| s.time_ns).collect();
    assert_eq!(times, (0..=20).map(|i| i * 50 * MS).collect::<Vec<_>>());
    let first = sim.samples()[0];
    // At time 0 the first reads are already out: their chunks are clean but in flight.
    assert_eq!((first.current, first.total), (0, 64 * MIB));
    assert!(first.dirty_bytes <= 64 * MIB - first.dirty_bytes.min(16 * MIB));
    assert!(sim.samples().last().expect("samples").current == 64 * MIB);
}

#[test]
fn unaligned_length_and_small_granularity_complete_equal() {
    let mut config = with_guest(base(5 * MIB + 1234), Pattern::Uniform, 4 * MIB);
    config.job.granularity = 4096;
    config.job.max_io = 64 << 10;
    config.guest.write_align = 1;
    config.guest.write_size = 3000;
    config.guest.stop_ns = Some(SEC);
    for copy in [CopyMode::Background, CopyMode::WriteBlocking] {
        completes_equal(modes(config.clone(), SyncMode::Full, copy));
    }
}

#[test]
fn zero_length_disk_is_ready_at_once() {
    let sim = completes_equal(base(0));
    assert_eq!(sim.summary().ready_at_ns, Some(0));
    assert_eq!(sim.chunks(), 0);
}

#[test]
fn every_read_capture_completes_equal() {
    for capture in [ReadCapture::Issue, ReadCapture::Completion, ReadCapture::Either] {
        let mut config = with_guest(base(16 * MIB), Pattern::HOT_SPOT_90_10, 20 * MIB);
        config.read_capture = capture;
        config.source.jitter_ns = MS;
        config.guest.stop_ns = Some(SEC);
        for copy in [CopyMode::Background, CopyMode::WriteBlocking] {
            completes_equal(modes(config.clone(), SyncMode::Full, copy));
        }
    }
}

#[test]
fn reordered_completions_still_complete_equal() {
    let mut config = with_guest(base(16 * MIB), Pattern::Uniform, 20 * MIB);
    config.target.jitter_ns = 5 * MS;
    config.source.jitter_ns = 2 * MS;
    config.guest.stop_ns = Some(SEC);
    for copy in [CopyMode::Background, CopyMode::WriteBlocking] {
        completes_equal(modes(config.clone(), SyncMode::Full, copy));
    }
}

#[test]
fn no_guest_write_reaches_the_source_while_quiesced_and_all_go_to_the_target_after_pivot() {
    use blockmirror_core::job::ActionKind;
    use blockmirror_core::sim::TraceEntry;
    for copy in [CopyMode::Background, CopyMode::WriteBlocking] {
        // 100 writes/s against a 20 ms target latency: held intervals (final flush, pivot)
        // see arrivals, while quiet spells still let the job reach ready.
        let mut config = with_guest(modes(base(16 * MIB), SyncMode::Full, copy), Pattern::Uniform, 400 << 10);
        config.target.latency_ns = 20 * MS;
        config.record_trace = true;
        config.complete_on_ready = true;
        let mut sim = Simulation::new(config).expect("valid config");
        assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
        assert_eq!(sim.run_until(Goal::Time(2 * SEC)), RunOutcome::Reached);
        // Held intervals: from each quiesce's completion to the next unquiesce (or forever,
        // once pivoted: the guest then writes the target, which is never reported).
        let mut quiesce_ops = Vec::new();
        let mut held: Vec<(u64, u64)> = Vec::new();
        for t in sim.trace() {
            match *t {
                TraceEntry::Action { kind: ActionKind::Quiesce, op, .. } => quiesce_ops.push(op),
                TraceEntry::Completion { op, time_ns, .. } if quiesce_ops.contains(&op) => held.push((time_ns, u64::MAX)),
                TraceEntry::Action { kind: ActionKind::Unquiesce, time_ns, .. } => {
                    if let Some(last) = held.last_mut() {
                        last.1 = time_ns;
                    }
                }
                _ => {}
            }
        }
        assert!(!held.is_empty(), "complete quiesces the guest");
        let total_held: u64 = held.iter().map(|&(from, until)| until.min(2 * SEC) - from).sum();
        assert!(total_held > 20 * MS, "{copy:?}: held for {total_held} ns");
        let reported: Vec<u64> = sim
            .trace()
            .iter()
            .filter_map(|t| match *t {
                TraceEntry::GuestWrite { time_ns, .. } => Some(time_ns),
                _ => None,
            })
            .collect();
        for &t in &reported {
            assert!(!held.iter().any(|&(from, until)| from < t && t < until), "{copy:?}: a source write at {t} while held");
        }
        let s = sim.summary();
        assert!(s.pivoted && s.equal_at_end == Some(true));
        assert!(s.guest_writes as usize > reported.len(), "the guest went on writing, to the target");
        assert!(!sim.source_equals_target(), "the source no longer follows the guest");
        assert_clean(&sim);
    }
}

/// A disk with more chunks than the simulator holds (1 TiB at 512 B: 2^31 chunks, 32 GiB
/// of version words) is refused with a typed error naming the limit, before anything is
/// allocated; it used to abort the process ("memory allocation ... failed").
#[test]
fn a_disk_too_large_to_simulate_is_a_typed_error() {
    let mut job = MirrorConfig::new(1 << 40);
    job.granularity = 512;
    let config = SimConfig::new(job);
    let expected = SimConfigError::TooManyChunks { length: 1 << 40, granularity: 512, chunks: 1 << 31 };
    assert_eq!(config.validate(), Err(expected.clone()));
    match Simulation::new(config) {
        Err(SimError::Config(e)) => {
            assert_eq!(e, expected);
            assert!(e.to_string().contains(&MAX_CHUNKS.to_string()), "{e}");
        }
        other => panic!("{:?}", other.map(|_| "a simulation")),
    }
    // The limit itself is accepted by the check.
    let mut job = MirrorConfig::new(MAX_CHUNKS * 65536);
    job.granularity = 65536;
    assert_eq!(SimConfig::new(job).validate(), Ok(()));
}

/// A background mirror that cannot converge (guest 400 MiB/s, target 200 MiB/s) used to run
/// to the step or time bound (50 M steps, about 30 s of CPU). A run towards ready now ends
/// at the job's `BLOCK_JOB_NOT_CONVERGING` with its own outcome, soon after the window;
/// `Goal::NotConverging` runs to that event; and with anything scripted that could still
/// help (here: a guest that stops), the run goes on to ready.
#[test]
fn a_run_towards_ready_ends_at_not_converging() {
    let heavy = || {
        let mut config = with_guest(base(64 * MIB), Pattern::Uniform, 400 * MIB);
        config.guest.write_size = 64 << 10;
        config.guest.write_align = 64 << 10;
        config.job.not_converging_window_ns = 2 * SEC;
        config
    };
    let default_limits = RunLimits::default();
    assert!(default_limits.stop_at_not_converging);
    assert!(default_limits.max_steps <= 10_000_000, "a bound that costs seconds");

    let mut stuck = Simulation::new(heavy()).expect("valid");
    assert_eq!(stuck.run_until(Goal::Ready), RunOutcome::NotConverging);
    let s = stuck.summary();
    let at = s.not_converging_at_ns.expect("the event was recorded");
    assert_eq!(s.time_ns, at, "the run ends at the event");
    assert!(at < 10 * SEC && s.steps < 1_000_000, "{at} ns, {} steps", s.steps);
    assert_eq!((s.ready_at_ns, s.converged), (None, false));
    assert_eq!(stuck.run_until(Goal::Ready), RunOutcome::NotConverging, "asked again: same answer");

    let mut to_event = Simulation::new(heavy()).expect("valid");
    assert_eq!(to_event.run_until(Goal::NotConverging), RunOutcome::Reached);
    assert_eq!(to_event.now_ns(), at, "the same instant, by determinism");

    let mut config = heavy();
    config.limits.stop_at_not_converging = false;
    config.limits.max_duration_ns = 5 * SEC;
    let mut bounded = Simulation::new(config).expect("valid");
    assert_eq!(bounded.run_until(Goal::Ready), RunOutcome::TimeLimit);

    let mut config = heavy();
    config.guest.stop_ns = Some(10 * SEC);
    assert!(!config.stops_at_not_converging());
    let mut calms_down = Simulation::new(config).expect("valid");
    assert_eq!(calms_down.run_until(Goal::Ready), RunOutcome::Reached);
    assert!(calms_down.summary().not_converging_at_ns.is_some(), "it did not converge for a while");
}
