//! Simulator cost: a full mirror of a 1 TiB disk at 64 KiB chunks (16 M chunks, 1 M copies
//! of 1 MiB) with no guest writes, simulated from `start` through READY and `complete()` to
//! `concluded`, against a baseline measured in the same run: the same job driven by an
//! instant driver that completes each action as soon as it is polled (no disks, no clock,
//! no queue). The ratio is what the simulator's model (content versions, device queues,
//! event heap, checks) costs on top of the job itself.
//!
//! Run: `cargo bench -p blockmirror-core --bench sim_run` (optionally `-- <TiB>`).

use blockmirror_core::job::*;
use blockmirror_core::sim::{Goal, RunOutcome, SimConfig, Simulation};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The baseline: the job alone, every action completed at once.
fn instant_driver(length: u64) -> Duration {
    let started = Instant::now();
    let mut job = MirrorJob::new(MirrorConfig::new(length)).expect("config");
    job.start(Nanos(0)).expect("start");
    let mut pending: VecDeque<Action> = VecDeque::new();
    loop {
        while let Some(action) = job.poll_action() {
            pending.push_back(action);
        }
        while let Some(event) = job.poll_event() {
            if let Event::Ready { .. } = event {
                job.complete().expect("complete in ready");
            }
        }
        while let Some(action) = job.poll_action() {
            pending.push_back(action);
        }
        let Some(action) = pending.pop_front() else { break };
        job.handle_completion(action.op, OpResult::Ok).expect("completion");
    }
    assert_eq!(job.status(), JobStatus::Concluded);
    started.elapsed()
}

/// The simulator: set-up (disks, layout) and the run to `concluded`, timed apart.
fn simulation(length: u64) -> (Duration, Duration, u64) {
    let started = Instant::now();
    let mut config = SimConfig::new(MirrorConfig::new(length));
    config.complete_on_ready = true;
    config.sample_interval_ns = 0;
    let mut sim = Simulation::new(config).expect("config");
    let made = started.elapsed();
    assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
    let summary = sim.summary();
    assert_eq!((summary.equal_at_end, summary.bytes_copied), (Some(true), length));
    (made, started.elapsed(), summary.steps)
}

fn main() {
    let tib: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1);
    let length = tib << 40;
    println!("disk {tib} TiB, chunk 64 KiB ({} M chunks), max_io 1 MiB, no guest writes", length >> 16 >> 20);
    let (mut best_job, mut best_sim, mut best_setup, mut steps) = (Duration::MAX, Duration::MAX, Duration::MAX, 0);
    for round in 1..=3 {
        let job = instant_driver(length);
        let (setup, sim, sim_steps) = simulation(length);
        println!(
            "round {round}: baseline job with instant driver {:.3} s; simulation {:.3} s ({:.3} s set-up, {sim_steps} events)",
            job.as_secs_f64(),
            sim.as_secs_f64(),
            setup.as_secs_f64()
        );
        best_job = best_job.min(job);
        best_setup = best_setup.min(setup);
        if sim < best_sim {
            (best_sim, steps) = (sim, sim_steps);
        }
    }
    println!(
        "best: simulation {:.3} s ({:.3} s set-up, {:.2} M events/s); baseline job {:.3} s; simulation/baseline = {:.1}x",
        best_sim.as_secs_f64(),
        best_setup.as_secs_f64(),
        steps as f64 / best_sim.as_secs_f64() / 1e6,
        best_job.as_secs_f64(),
        best_sim.as_secs_f64() / best_job.as_secs_f64()
    );
}
