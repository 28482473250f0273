//! blockmirror-engine: real I/O for blockmirror. It mirrors a raw image file or block device
//! onto another while the source stays in use, driving blockmirror-core's sans-io
//! `MirrorJob` with real reads and writes on a small thread pool (and io_uring for O_DIRECT
//! copies). It knows nothing of Python; the Python package wraps [`FileMirror`].
//!
//! ```
//! use blockmirror_engine::{FileMirror, MirrorSetup, WaitOutcome};
//! # let dir = std::env::temp_dir().join(format!("bm-engine-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let (source, target) = (dir.join("src.img"), dir.join("dst.img"));
//! # std::fs::write(&source, vec![7u8; 1 << 20]).unwrap();
//!
//! let mirror = FileMirror::start(&source, &target, MirrorSetup::default())?;
//! // Guest writes may go through `mirror.guest_write` meanwhile; once the target has caught
//! // up (READY), `complete` ends the job with both sides equal.
//! if mirror.wait_ready(None) == WaitOutcome::Reached {
//!     mirror.verb(|job| job.complete())?;
//! }
//! mirror.wait_end(None);
//! assert_eq!(mirror.snapshot().failure, None);
//! # drop(mirror);
//! # assert_eq!(std::fs::read(&source).unwrap(), std::fs::read(&target).unwrap());
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `examples/mirror.rs` is the same as a program; `docs/file-backend.md` describes the
//! backend's choices (O_DIRECT, holes, offload, faults).
//!
//! Modules:
//! - [`files`]: opening both sides (sizes, block devices, sparse creation, O_DIRECT).
//! - [`identity`]: which storage an open handle reaches (the same-file check).
//! - [`extents`]: the source's holes (SEEK_DATA/SEEK_HOLE), declared to the job up front.
//! - [`image`]: qcow2 images and backing chains (through imago), and what each sync mode
//!   asks of the target's backing file.
//! - [`buffers`]: 4096-aligned copy buffers that free themselves, and their pool.
//! - [`zero_runs`]: the parts of one copy that read as zero (written as zero, not as data).
//! - [`io_ops`]: pread/pwrite, zero ranges (punch hole / zero range / plain zeroes), fdatasync,
//!   and the mapping of OS errors to the job's error kinds.
//! - [`locks`]: QEMU-compatible image locks (OFD byte-range locks), so QEMU and the mirror
//!   refuse each other's conflicting use of an image.
//! - [`faults`]: deterministic fault injection for tests.
//! - [`events`]: the bounded queue of undelivered events (repeated errors counted).
//! - [`stats`]: byte and operation counters, and why a mirror failed.
//! - [`target`]: what the mirror writes to: a local file or device, or an NBD export.
//! - [`engine`]: [`FileMirror`], the running mirror, and its threads' rule.
//! - [`nbd`]: the NBD protocol in sans-io form (server and client sessions, URIs).
//! - [`net`]: sockets: the stream type, and the blocking NBD client over it.
//! - [`qmp`]: QEMU's monitor protocol (QMP) in sans-io form, for QEMU's management tools.
//! - [`serve`]: a live disk exported over NBD, its mirror jobs driven over QMP.
//!
//! Inside (not public): `shared` (the job behind a lock: state, gate, dispatch), `task`
//! (the task protocol between the shared state and the I/O threads), `workers` (the I/O
//! thread pool), `uring` (io_uring submission of O_DIRECT copies, falling back to the
//! workers) and `driver` (the thread that gives the job its clock).

#![warn(missing_docs)]

pub mod buffers;
mod driver;
pub mod engine;
pub mod events;
pub mod extents;
pub mod faults;
pub mod files;
pub mod identity;
pub mod image;
pub mod io_ops;
pub mod locks;
pub mod nbd;
pub mod net;
pub mod persist;
pub mod qmp;
pub mod serve;
mod shared;
pub mod stats;
pub mod target;
pub mod verify;
pub mod verify_online;
mod task;
mod uring;
mod workers;
pub mod zero_runs;

pub use target::MirrorTarget;
pub use engine::{FileMirror, GuestIoError, MirrorSetup, Snapshot, StartError, VerbError, WaitOutcome};
pub use events::EventRecord;
