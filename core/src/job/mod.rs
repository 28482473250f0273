//! The mirror job: a sans-io state machine.
//!
//! SKELETON: the types are the contract; the state machine in `mirror.rs` is being written.

mod action;
mod config;
mod error;
mod event;
mod mirror;
mod status;

pub use action::{Action, ActionKind, IoErrorKind, OpId, OpResult};
pub use config::{ConfigError, CopyMode, ErrorPolicy, MirrorConfig, RangeState, SyncMode};
pub use error::JobError;
pub use event::{ErrorAction, Event, Operation};
pub use mirror::{GuestWrite, MirrorJob, Nanos, OpView, OpViewKind, Progress, Rates};
pub use status::{JobStatus, Verb};
