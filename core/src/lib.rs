//! blockmirror-core: live block-device mirroring as a sans-io library.
//!
//! This crate does **no I/O**, reads **no clock**, starts **no threads** and draws **no
//! randomness** of its own. It is driven: time and I/O results are inputs, actions and
//! events are outputs, so the same inputs give the same outputs on native and wasm32.
//!
//! - [`bitmap`]: the hierarchical dirty bitmap ([`bitmap::HBitmap`]).
//! - [`job`]: the mirror job state machine ([`job::MirrorJob`]).
//! - [`sim`]: a deterministic simulator that drives a job against in-memory disks.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bitmap;
pub mod fault;
pub mod job;
mod names;
pub mod sim;

/// The crate version, shared by the Python and wasm faces.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
