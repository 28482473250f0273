//! SKELETON of the mirror job's public surface. Bodies are being written.
#![allow(unused_variables, missing_docs)]

use super::*;
use crate::bitmap::HBitmap;

/// A point in time in nanoseconds, supplied by the driver (no clock in the core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub u64);

/// Progress in bytes: `total = current + remaining` (dirty bytes plus bytes in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Bytes copied (or zeroed) so far.
    pub current: u64,
    /// `current` plus what remains.
    pub total: u64,
}

/// Rate estimates over a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    /// Bytes per second the guest newly dirties.
    pub dirty_bytes_per_sec: u64,
    /// Bytes per second the job copies.
    pub copy_bytes_per_sec: u64,
    /// Estimated nanoseconds until ready, when it can be estimated.
    pub eta_ready_ns: Option<u64>,
}

/// What the driver does with a guest write it reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestWrite {
    /// Acknowledge the guest now.
    Acknowledge,
    /// Keep the guest's data: a `guest_write` action with this op id will follow; acknowledge
    /// the guest once that action completes.
    Mirror(OpId),
}

/// What an in-flight operation is doing (for visualisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpViewKind {
    Reading,
    Writing,
    GuestWriting,
    WaitingGuestWrite,
}

/// A read-only view of one operation that owns chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpView {
    pub op: OpId,
    pub kind: OpViewKind,
    pub offset: u64,
    pub length: u64,
}

/// The mirror job.
#[derive(Debug)]
pub struct MirrorJob {
    config: MirrorConfig,
    bitmap: HBitmap,
}

impl MirrorJob {
    pub fn new(config: MirrorConfig) -> Result<Self, JobError> {
        todo!()
    }
    pub fn config(&self) -> &MirrorConfig {
        &self.config
    }
    pub fn status(&self) -> JobStatus {
        todo!()
    }
    pub fn progress(&self) -> Progress {
        todo!()
    }
    pub fn rates(&self) -> Rates {
        todo!()
    }
    pub fn bitmap(&self) -> &HBitmap {
        &self.bitmap
    }
    pub fn ops(&self) -> impl Iterator<Item = OpView> + '_ {
        std::iter::empty()
    }
    pub fn error(&self) -> Option<IoErrorKind> {
        todo!()
    }
    pub fn declare(&mut self, offset: u64, length: u64, state: RangeState) -> Result<(), JobError> {
        todo!()
    }
    pub fn handle_guest_write(&mut self, offset: u64, length: u64) -> Result<GuestWrite, JobError> {
        todo!()
    }
    pub fn handle_completion(&mut self, op: OpId, result: OpResult) -> Result<(), JobError> {
        todo!()
    }
    pub fn handle_timeout(&mut self, now: Nanos) {
        todo!()
    }
    pub fn start(&mut self, now: Nanos) -> Result<(), JobError> {
        todo!()
    }
    pub fn pause(&mut self) -> Result<(), JobError> {
        todo!()
    }
    pub fn resume(&mut self) -> Result<(), JobError> {
        todo!()
    }
    pub fn set_speed(&mut self, bytes_per_sec: u64) -> Result<(), JobError> {
        todo!()
    }
    pub fn set_copy_mode(&mut self, mode: CopyMode) -> Result<(), JobError> {
        todo!()
    }
    pub fn complete(&mut self) -> Result<(), JobError> {
        todo!()
    }
    pub fn cancel(&mut self, force: bool) -> Result<(), JobError> {
        todo!()
    }
    pub fn dismiss(&mut self) -> Result<(), JobError> {
        todo!()
    }
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        todo!()
    }
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        todo!()
    }
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Nanos> {
        todo!()
    }
}
