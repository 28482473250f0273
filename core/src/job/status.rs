//! Job status and the verb table (QEMU's job model).

use std::fmt;

/// Where a job is in its life. `Display` gives the shared lowercase names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobStatus {
    /// Made, not started.
    Created,
    /// Bulk copy (phase 1), or draining after a cancel before ready.
    Running,
    /// Paused before ready.
    Paused,
    /// In sync: phase 2.
    Ready,
    /// Paused while ready.
    Standby,
    /// The job body finished; waiting for its transaction (always immediate here).
    Waiting,
    /// Finished; about to conclude.
    Pending,
    /// Failing or cancelled: winding down.
    Aborting,
    /// Ended; the result is available until `dismiss`.
    Concluded,
    /// Dismissed: gone.
    Null,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 10] = [
        JobStatus::Created,
        JobStatus::Running,
        JobStatus::Paused,
        JobStatus::Ready,
        JobStatus::Standby,
        JobStatus::Waiting,
        JobStatus::Pending,
        JobStatus::Aborting,
        JobStatus::Concluded,
        JobStatus::Null,
    ];

    /// The shared lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Running => "running",
            JobStatus::Paused => "paused",
            JobStatus::Ready => "ready",
            JobStatus::Standby => "standby",
            JobStatus::Waiting => "waiting",
            JobStatus::Pending => "pending",
            JobStatus::Aborting => "aborting",
            JobStatus::Concluded => "concluded",
            JobStatus::Null => "null",
        }
    }

    /// Parse a shared lowercase name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command from the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verb {
    /// Start copying.
    Start,
    /// Pause (takes effect once in-flight operations finish).
    Pause,
    /// Resume after a pause or a `stop` error.
    Resume,
    /// Change the speed limit.
    SetSpeed,
    /// Switch over to the target (only when ready).
    Complete,
    /// Cancel (soft or forced).
    Cancel,
    /// Remove a concluded job.
    Dismiss,
    /// Change the copy mode while running (like QEMU's block-job-change).
    Change,
}

impl Verb {
    /// Every verb.
    pub const ALL: [Verb; 8] = [
        Verb::Start,
        Verb::Pause,
        Verb::Resume,
        Verb::SetSpeed,
        Verb::Complete,
        Verb::Cancel,
        Verb::Dismiss,
        Verb::Change,
    ];

    /// The shared lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::SetSpeed => "set_speed",
            Verb::Complete => "complete",
            Verb::Cancel => "cancel",
            Verb::Dismiss => "dismiss",
            Verb::Change => "change",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
