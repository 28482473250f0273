//! A deterministic simulator that drives a [`MirrorJob`](crate::job::MirrorJob).
//!
//! Like the job, it does no I/O, reads no clock, starts no threads and takes no OS
//! randomness: the same [`SimConfig`] (including its seed) gives the same run, step for
//! step, on native and wasm32.
//!
//! The model:
//! - **Time** is virtual: the clock jumps to the earliest pending event (a guest write
//!   arriving or reaching its disk, a job I/O completing, the job's timeout, a scripted
//!   command). Ties run in the order they were queued.
//! - **Disks** name every byte's content by the write that put it there (a *version*):
//!   one word per chunk while a chunk is uniform, a short extent list once a partial write
//!   splits it. Equality is exact for writes of any alignment and order, and a 1 TiB disk
//!   at 64 KiB chunks fits in 256 MiB.
//! - **Devices**: each side is a FIFO server with a bandwidth, a latency and an optional
//!   jitter that reorders completions. Job reads and guest writes share the source. A read
//!   returns, per chunk, the source as of its issue or its completion ([`ReadCapture`]).
//! - **The guest** writes at a rate, in writes of a size, with a pattern (uniform, hot spot,
//!   sequential) and a bounded queue depth; a write reaches the source, then is reported with
//!   `handle_guest_write`; a write-blocking `guest_write` op delays its acknowledgement. The
//!   guest is held while quiesced, and writes the target after the pivot.
//! - **Faults**: scripted ("the n-th target I/O fails with nospace") and random per side,
//!   optionally within a time window. **Commands** at scripted times.
//! - **Checks**: the simulator reports [`Violation`]s (a write without a read, two target
//!   writes on one chunk at once, a completion the job refuses, ...) and records whether the
//!   target equalled the source when a `BLOCK_JOB_COMPLETED` without error was emitted.
//!
//! ```
//! use blockmirror_core::job::MirrorConfig;
//! use blockmirror_core::sim::{Goal, RunOutcome, SimConfig, Simulation};
//!
//! let mut config = SimConfig::new(MirrorConfig::new(64 << 20));
//! config.complete_on_ready = true;
//! let mut sim = Simulation::new(config).unwrap();
//! assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
//! let summary = sim.summary();
//! assert_eq!(summary.ending, Some("completed"));
//! assert_eq!(summary.equal_at_end, Some(true));
//! ```

mod config;
mod device;
mod disk;
mod engine;
mod guest;
mod io;
mod knobs;
mod layout;
mod queue;
mod record;
mod rng;
mod views;

pub use config::{
    Command, FaultConfig, GuestConfig, LayoutConfig, Pattern, ReadCapture, RunLimits, ScriptedCommand, SimConfig,
    SimConfigError, MAX_CHUNKS,
};
pub use device::DeviceConfig;
pub use disk::Side;
pub use engine::{SimError, Simulation};
pub use record::{ChunkState, Goal, RunOutcome, Sample, SimEvent, SimEventKind, SimSummary, TraceEntry, Violation};
pub use rng::Rng;
