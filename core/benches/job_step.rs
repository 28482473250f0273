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
const MAX_IO: u64 = 1 << 20;

/// The baseline: mark everything dirty, then walk and clear runs of up to `MAX_IO`.
fn bitmap_sweep(length: u64) -> (Duration, u64) {
    let started = Instant::now();
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
    (started.elapsed(), runs)
}

/// The job, driven to `concluded` by a driver that completes each action immediately.
fn full_mirror(length: u64) -> (Duration, u64) {
    let started = Instant::now();
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
    (started.elapsed(), steps)
}

fn main() {
    let tib: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1);
    let length = tib << 40;
    println!(
        "disk {tib} TiB, chunk 64 KiB ({} M chunks), max_io 1 MiB, instant driver",
        length / CHUNK >> 20
    );
    let mut best_sweep = Duration::MAX;
    let mut best_job = Duration::MAX;
    let mut steps = 0;
    for round in 1..=3 {
        let (sweep, runs) = bitmap_sweep(length);
        let (job, job_steps) = full_mirror(length);
        println!(
            "round {round}: baseline bitmap sweep {:.3} s ({runs} runs); job full mirror {:.3} s ({job_steps} actions+completions)",
            sweep.as_secs_f64(),
            job.as_secs_f64()
        );
        best_sweep = best_sweep.min(sweep);
        best_job = best_job.min(job);
        steps = job_steps;
    }
    println!(
        "best: job {:.3} s = {:.1} M actions+completions/s; baseline sweep {:.3} s; job/baseline = {:.1}x",
        best_job.as_secs_f64(),
        steps as f64 / best_job.as_secs_f64() / 1e6,
        best_sweep.as_secs_f64(),
        best_job.as_secs_f64() / best_sweep.as_secs_f64()
    );
}
