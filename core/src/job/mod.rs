//! The mirror job: a sans-io state machine that copies a source disk to a target while a
//! guest keeps writing the source. `docs/mirror-job.md` records the choices it makes.
//!
//! [`MirrorJob`] does no I/O, reads no clock and starts no threads. Its driver performs
//! the I/O it asks for and tells it the time, so the same inputs give the same outputs on
//! every platform. Data never enters the core: an [`Action`] names an op id and a byte
//! range, and the driver owns the bytes (it keeps a read's buffer until the op's write).
//!
//! # Four kinds of methods
//!
//! - **Getters**: [`status`](MirrorJob::status), [`progress`](MirrorJob::progress),
//!   [`rates`](MirrorJob::rates), [`bitmap`](MirrorJob::bitmap), [`ops`](MirrorJob::ops),
//!   [`dirty_bytes`](MirrorJob::dirty_bytes), [`is_guest_held`](MirrorJob::is_guest_held),
//!   [`error`](MirrorJob::error), [`config`](MirrorJob::config) and a few more.
//! - **Inputs from the world**: [`handle_guest_write`](MirrorJob::handle_guest_write)
//!   (after the guest's write reached the source), [`handle_completion`](MirrorJob::handle_completion),
//!   [`handle_timeout`](MirrorJob::handle_timeout), [`declare`](MirrorJob::declare).
//! - **Commands from the user** (the verbs, checked against [`VERB_TABLE`]):
//!   [`start`](MirrorJob::start), [`pause`](MirrorJob::pause), [`resume`](MirrorJob::resume),
//!   [`set_speed`](MirrorJob::set_speed), [`set_copy_mode`](MirrorJob::set_copy_mode),
//!   [`complete`](MirrorJob::complete), [`cancel`](MirrorJob::cancel), [`dismiss`](MirrorJob::dismiss).
//! - **Outputs** (`#[must_use]`): [`poll_action`](MirrorJob::poll_action),
//!   [`poll_event`](MirrorJob::poll_event), [`poll_timeout`](MirrorJob::poll_timeout).
//!
//! # The driver rule
//!
//! After every input or command, drain `poll_action` and `poll_event` before the next
//! input, and complete every action polled exactly once (in any order). Bad input (an
//! unknown op, a result that does not fit, a range past the end, a verb the status
//! forbids) returns a [`JobError`] and changes nothing; it never panics.
//!
//! # The driver loop
//!
//! 1. Make the job with [`MirrorJob::new`], optionally [`declare`](MirrorJob::declare)
//!    zero or unallocated ranges, and call [`start`](MirrorJob::start) with the time.
//! 2. Drain [`poll_action`](MirrorJob::poll_action) and start each action: `read` (keep
//!    the bytes for the op), `write` / `write_zeroes` / `discard` (to the target, same
//!    range), `guest_write` (the guest's data to the target), `flush`, `quiesce`
//!    (hold new guest writes), `unquiesce`, `pivot` (switch the guest to the target and
//!    let its writes flow there).
//! 3. Drain [`poll_event`](MirrorJob::poll_event): on `Ready`, call
//!    [`complete`](MirrorJob::complete) (or keep mirroring); `Completed` or `Cancelled`
//!    means the job has concluded.
//! 4. Wait for the next thing to happen: an I/O completes → [`handle_completion`](MirrorJob::handle_completion)
//!    (`OkZeroes` when a read returned only zeroes); the guest wrote the source →
//!    [`handle_guest_write`](MirrorJob::handle_guest_write) (on `GuestWrite::Mirror(op)`
//!    acknowledge the guest only after that op's `guest_write` completes); the time passes
//!    [`poll_timeout`](MirrorJob::poll_timeout) → [`handle_timeout`](MirrorJob::handle_timeout).
//!    Call `handle_timeout` whenever your clock advanced; early calls are harmless.
//! 5. Go to 2 until the status is `concluded`; then [`dismiss`](MirrorJob::dismiss).
//!
//! The phases, statuses and verbs are drawn in `docs/phase-diagram.md`, generated from
//! [`TRANSITIONS`] and [`VERB_TABLE`]; `docs/mirror-job.md` records the choices made where
//! the project's behaviour contract leaves room.
//!
//! # Example: mirror an in-memory disk and complete
//!
//! ```
//! use blockmirror_core::job::*;
//! use std::collections::HashMap;
//!
//! let length = 1 << 20;
//! let mut source: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
//! source[4096..8192].fill(0); // a zero range: it becomes a zero-write
//! let mut target = vec![0xAAu8; length];
//! let mut config = MirrorConfig::new(length as u64);
//! config.granularity = 4096;
//! config.max_io = 64 << 10;
//! let mut job = MirrorJob::new(config)?;
//! job.start(Nanos(0))?;
//!
//! let mut buffers: HashMap<OpId, Vec<u8>> = HashMap::new();
//! let mut pivoted = false;
//! while job.status() != JobStatus::Concluded {
//!     // Step 2: perform each action at once and report it (a real driver overlaps them).
//!     while let Some(a) = job.poll_action() {
//!         let range = a.offset as usize..(a.offset + a.length) as usize;
//!         let result = match a.kind {
//!             ActionKind::Read => {
//!                 let data = source[range].to_vec();
//!                 let zero = data.iter().all(|&b| b == 0);
//!                 buffers.insert(a.op, data);
//!                 if zero { OpResult::OkZeroes } else { OpResult::Ok }
//!             }
//!             ActionKind::Write => {
//!                 target[range].copy_from_slice(&buffers.remove(&a.op).unwrap());
//!                 OpResult::Ok
//!             }
//!             ActionKind::WriteZeroes | ActionKind::Discard => {
//!                 buffers.remove(&a.op);
//!                 target[range].fill(0);
//!                 OpResult::Ok
//!             }
//!             ActionKind::Pivot => { pivoted = true; OpResult::Ok }
//!             _ => OpResult::Ok, // flush, quiesce, unquiesce: nothing to do in memory
//!         };
//!         job.handle_completion(a.op, result)?;
//!     }
//!     // Step 3.
//!     while let Some(event) = job.poll_event() {
//!         if let Event::Ready { .. } = event {
//!             // The guest writes once more; the job copies it before the switch.
//!             source[100..200].fill(7);
//!             assert_eq!(job.handle_guest_write(100, 100)?, GuestWrite::Acknowledge);
//!             job.complete()?;
//!         }
//!     }
//! }
//! assert!(pivoted);
//! assert_eq!(source, target);
//! assert_eq!(job.progress().current, job.progress().total);
//! job.dismiss()?;
//! assert_eq!(job.status(), JobStatus::Null);
//! # Ok::<(), JobError>(())
//! ```

mod action;
mod config;
mod copy;
mod ending;
mod error;
mod event;
mod guest;
mod mirror;
mod ops;
mod policy;
mod ratelimit;
mod rates;
mod status;
mod sync;
mod time;
mod touches;
mod verbs;
mod views;

pub use action::{Action, ActionKind, IoErrorKind, OpId, OpResult};
pub use config::{
    ConfigError, CopyMode, ErrorPolicy, MirrorConfig, RangeState, SyncMode, DEFAULT_BUF_SIZE,
    DEFAULT_GRANULARITY, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_IO, DEFAULT_NOT_CONVERGING_WINDOW_NS,
    MAX_GRANULARITY, MIN_GRANULARITY,
};
pub use error::JobError;
pub use event::{AutoConvergeTrigger, ErrorAction, Event, EventType, FieldValue, Operation};
pub use guest::{GuestWrite, GuestWriteStart};
pub use mirror::MirrorJob;
pub use time::Nanos;
pub use policy::{RETRY_BACKOFF_FIRST_NS, RETRY_BACKOFF_MAX_NS};
pub use ratelimit::SLICE_NS;
pub use rates::NOT_CONVERGING_ETA_WINDOWS;
pub use status::{render_phase_diagram, JobStatus, Verb, TRANSITIONS, VERB_TABLE};
pub use views::{OpView, OpViewKind, Progress, Rates};
