//! blockmirror-engine: real I/O for blockmirror. Mirrors a raw image file or block device
//! onto another, driving a `blockmirror_core::job::MirrorJob` with real I/O on a small
//! thread pool.
//!
//! - [`files`]: opening both sides (sizes, block devices, sparse creation, O_DIRECT).
//! - [`identity`]: which storage an open handle reaches (the same-file check).
//! - [`extents`]: the source's holes (SEEK_DATA/SEEK_HOLE), declared to the job up front.
//! - [`buffers`]: 4096-aligned copy buffers that free themselves, and their pool.
//! - [`io_ops`]: pread/pwrite, zero ranges (punch hole / zero range / plain zeroes), fdatasync,
//!   and the mapping of OS errors to the job's error kinds.
//! - [`faults`]: deterministic fault injection for tests.
//! - [`events`]: the bounded queue of undelivered events (repeated errors counted).
//! - [`shared`] and [`workers`]: the job behind a lock, and the I/O threads.
//! - [`uring`]: io_uring submission of O_DIRECT copies (falls back to the workers).
//! - [`engine`]: [`engine::FileMirror`], the running mirror (what the Python binding wraps).
//!
//! Nothing here knows Python; the binding releases the GIL around every call.

pub mod buffers;
pub mod engine;
pub mod events;
pub mod extents;
pub mod faults;
pub mod files;
pub mod identity;
pub mod io_ops;
pub mod shared;
pub mod uring;
pub mod workers;
