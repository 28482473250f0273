//! Step cost of the mirror job core: a full mirror of a 1 TiB disk at 64 KiB chunks
//! (16 M chunks, 1 M copies of 1 MiB) with an instant driver that completes every action at
//! once, then `complete()` to the end. Reports actions + completions per second and the
//! total time, against a baseline measured in the same run: the least work any mirror
//! must do on this bitmap (find each dirty run of up to 1 MiB and clear it).
//!
//! Run: `cargo bench -p blockmirror-core --bench job_step` (optionally `-- <TiB>`).

use blockmirror_core::bitmap::HBitmap;
use blockmirror_core::job::*;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const CHUNK: u64 = 64 << 10;

/// Nanoseconds this thread has run on a CPU (Linux `schedstat`), so figures stay meaningful
/// when other processes share the cores; `None` elsewhere.
fn cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Runs `f`, returning its result with the wall time and the on-CPU time it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Option<Duration>) {
    let cpu_before = cpu_ns();
    let started = Instant::now();
    let value = f();
    let wall = started.elapsed();
    let cpu = cpu_before
        .zip(cpu_ns())
        .map(|(a, b)| Duration::from_nanos(b - a));
    (value, wall, cpu)
}
const MAX_IO: u64 = 1 << 20;

/// The baseline: mark everything dirty, then walk and clear runs of up to `MAX_IO`.
/// Returns the number of runs.
fn bitmap_sweep(length: u64) -> u64 {
    let mut bitmap = HBitmap::new(length, CHUNK.trailing_zeros()).expect("bitmap");
    bitmap.set(0, length).expect("set");
    let mut position = 0;
    let mut runs = 0u64;
    while let Some(run) = bitmap.next_dirty_area(position, length, MAX_IO) {
        bitmap
            .reset(run.start, run.end - run.start)
            .expect("aligned run");
        position = run.end;
        runs += 1;
    }
    assert!(bitmap.is_empty());
    runs
}

/// The job, driven to `concluded` by a driver that completes each action immediately.
/// Returns the number of actions plus completions.
fn full_mirror(length: u64) -> u64 {
    let mut job = MirrorJob::new(MirrorConfig::new(length)).expect("config");
    job.start(Nanos(0)).expect("start");
    let mut pending: VecDeque<Action> = VecDeque::new();
    let mut steps = 0u64;
    loop {
        while let Some(action) = job.poll_action() {
            pending.push_back(action);
            steps += 1;
        }
        while let Some(event) = job.poll_event() {
            if let Event::Ready { .. } = event {
                job.complete().expect("complete in ready");
                while let Some(action) = job.poll_action() {
                    pending.push_back(action);
                    steps += 1;
                }
            }
        }
        let Some(action) = pending.pop_front() else {
            break;
        };
        job.handle_completion(action.op, OpResult::Ok)
            .expect("completion");
        steps += 1;
    }
    assert_eq!(job.status(), JobStatus::Concluded);
    assert_eq!(job.progress().current, length);
    steps
}

fn seconds(duration: Option<Duration>) -> String {
    duration.map_or("n/a".into(), |d| format!("{:.3} s", d.as_secs_f64()))
}

fn main() {
    let tib: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1);
    let length = tib << 40;
    println!(
        "disk {tib} TiB, chunk 64 KiB ({} M chunks), max_io 1 MiB, instant driver",
        (length / CHUNK) >> 20
    );
    let (mut best_sweep, mut best_job) = (Duration::MAX, Duration::MAX);
    let (mut best_sweep_cpu, mut best_job_cpu) = (None::<Duration>, None::<Duration>);
    let mut steps = 0;
    for round in 1..=5 {
        let (runs, sweep, sweep_cpu) = timed(|| bitmap_sweep(length));
        let (job_steps, job, job_cpu) = timed(|| full_mirror(length));
        println!(
            "round {round}: baseline sweep {:.3} s wall / {} cpu ({runs} runs); \
             job full mirror {:.3} s wall / {} cpu ({job_steps} actions+completions)",
            sweep.as_secs_f64(),
            seconds(sweep_cpu),
            job.as_secs_f64(),
            seconds(job_cpu),
        );
        best_sweep = best_sweep.min(sweep);
        best_job = best_job.min(job);
        best_sweep_cpu = best_sweep_cpu.min(sweep_cpu).or(sweep_cpu);
        best_job_cpu = best_job_cpu.min(job_cpu).or(job_cpu);
        steps = job_steps;
    }
    println!(
        "best wall: job {:.3} s = {:.1} M actions+completions/s; baseline {:.3} s; job/baseline {:.1}x",
        best_job.as_secs_f64(),
        steps as f64 / best_job.as_secs_f64() / 1e6,
        best_sweep.as_secs_f64(),
        best_job.as_secs_f64() / best_sweep.as_secs_f64()
    );
    if let (Some(job), Some(sweep)) = (best_job_cpu, best_sweep_cpu) {
        println!(
            "best cpu:  job {:.3} s = {:.1} M actions+completions/s; baseline {:.3} s; job/baseline {:.1}x",
            job.as_secs_f64(),
            steps as f64 / job.as_secs_f64() / 1e6,
            sweep.as_secs_f64(),
            job.as_secs_f64() / sweep.as_secs_f64()
        );
    }
}
