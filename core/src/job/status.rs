//! Job status and the verb table (QEMU's job model).

use super::config::ConfigError;
use crate::names::names;

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

names!(
    JobStatus,
    "job status",
    ConfigError,
    Created = "created",
    Running = "running",
    Paused = "paused",
    Ready = "ready",
    Standby = "standby",
    Waiting = "waiting",
    Pending = "pending",
    Aborting = "aborting",
    Concluded = "concluded",
    Null = "null",
);

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

names!(
    Verb,
    "verb",
    ConfigError,
    Start = "start",
    Pause = "pause",
    Resume = "resume",
    SetSpeed = "set_speed",
    Complete = "complete",
    Cancel = "cancel",
    Dismiss = "dismiss",
    Change = "change",
);

/// The allowed status changes, as data: `(from, to, what makes the job take it)`. The job asserts every change it makes
/// is in this table, and `docs/phase-diagram.md` is rendered from it (see
/// [`render_phase_diagram`]). Pause returns to the exact previous status (running⇄paused,
/// ready⇄standby); there is no ready → running edge, so `ready` is sticky.
pub const TRANSITIONS: &[(JobStatus, JobStatus, &str)] = &[
    (JobStatus::Created, JobStatus::Running, "start"),
    (JobStatus::Created, JobStatus::Aborting, "cancel"),
    (
        JobStatus::Created,
        JobStatus::Null,
        "(QEMU only) dropped unstarted",
    ),
    (
        JobStatus::Running,
        JobStatus::Paused,
        "pause or stop error, once job ops drained",
    ),
    (
        JobStatus::Running,
        JobStatus::Ready,
        "bitmap empty, nothing copying, flush ok: BLOCK_JOB_READY",
    ),
    (
        JobStatus::Running,
        JobStatus::Waiting,
        "(QEMU only) body finished early",
    ),
    (
        JobStatus::Running,
        JobStatus::Aborting,
        "cancel or report error, once drained",
    ),
    (JobStatus::Paused, JobStatus::Running, "resume, or cancel"),
    (
        JobStatus::Ready,
        JobStatus::Standby,
        "pause or stop error, once job ops drained",
    ),
    (
        JobStatus::Ready,
        JobStatus::Waiting,
        "switch done: pivot ok (complete) or unquiesce ok (cancel)",
    ),
    (
        JobStatus::Ready,
        JobStatus::Aborting,
        "force cancel or report error, once drained",
    ),
    (JobStatus::Standby, JobStatus::Ready, "resume, or cancel"),
    (
        JobStatus::Waiting,
        JobStatus::Pending,
        "no transaction to wait for",
    ),
    (
        JobStatus::Waiting,
        JobStatus::Aborting,
        "(QEMU only) transaction failed",
    ),
    (
        JobStatus::Pending,
        JobStatus::Aborting,
        "(QEMU only) finalize failed",
    ),
    (
        JobStatus::Pending,
        JobStatus::Concluded,
        "BLOCK_JOB_COMPLETED",
    ),
    (
        JobStatus::Aborting,
        JobStatus::Concluded,
        "BLOCK_JOB_CANCELLED or BLOCK_JOB_COMPLETED with error",
    ),
    (JobStatus::Concluded, JobStatus::Null, "dismiss"),
];

/// The statuses in which each verb is allowed, as data (QEMU's verb table). Some verbs
/// have extra checks on top: `pause` needs the job not already paused, `resume` needs it
/// paused, and `complete` needs no cancel requested.
pub const VERB_TABLE: &[(Verb, &[JobStatus])] = &[
    (Verb::Start, &[JobStatus::Created]),
    (
        Verb::Cancel,
        &[
            JobStatus::Created,
            JobStatus::Running,
            JobStatus::Paused,
            JobStatus::Ready,
            JobStatus::Standby,
            JobStatus::Waiting,
            JobStatus::Pending,
        ],
    ),
    (
        Verb::Pause,
        &[
            JobStatus::Created,
            JobStatus::Running,
            JobStatus::Paused,
            JobStatus::Ready,
            JobStatus::Standby,
        ],
    ),
    (
        Verb::Resume,
        &[
            JobStatus::Created,
            JobStatus::Running,
            JobStatus::Paused,
            JobStatus::Ready,
            JobStatus::Standby,
        ],
    ),
    (
        Verb::SetSpeed,
        &[
            JobStatus::Created,
            JobStatus::Running,
            JobStatus::Paused,
            JobStatus::Ready,
            JobStatus::Standby,
        ],
    ),
    (Verb::Complete, &[JobStatus::Ready, JobStatus::Standby]),
    (Verb::Dismiss, &[JobStatus::Concluded]),
    (
        Verb::Change,
        &[
            JobStatus::Created,
            JobStatus::Running,
            JobStatus::Paused,
            JobStatus::Ready,
            JobStatus::Standby,
        ],
    ),
];

impl JobStatus {
    /// Whether the job model allows a change from `self` to `to` (see [`TRANSITIONS`]).
    pub fn can_become(self, to: JobStatus) -> bool {
        TRANSITIONS
            .iter()
            .any(|(from, next, _)| *from == self && *next == to)
    }
}

impl Verb {
    /// Whether the verb table allows this verb in `status` (see [`VERB_TABLE`]).
    pub fn allowed_in(self, status: JobStatus) -> bool {
        VERB_TABLE
            .iter()
            .any(|(verb, statuses)| *verb == self && statuses.contains(&status))
    }
}

/// Renders the transition and verb tables as Markdown with a mermaid state diagram; the
/// committed `docs/phase-diagram.md` is this text (a test keeps them equal).
pub fn render_phase_diagram() -> String {
    let mut out = String::new();
    out.push_str("# Mirror job phase diagram\n\n");
    out.push_str("Generated from `TRANSITIONS` and `VERB_TABLE` in `core/src/job/status.rs` by\n");
    out.push_str("`render_phase_diagram()`; the test `phase_diagram_is_current` fails if this file drifts.\n");
    out.push_str("Regenerate with `BLOCKMIRROR_WRITE_DOCS=1 cargo test -p blockmirror-core --test phase_diagram`.\n\n");
    out.push_str("```mermaid\nstateDiagram-v2\n    [*] --> created\n");
    for (from, to, why) in TRANSITIONS {
        out.push_str(&format!("    {from} --> {to} : {why}\n"));
    }
    out.push_str("    null --> [*]\n```\n\n");
    out.push_str("## Verbs allowed per status\n\n| verb |");
    let shown: Vec<JobStatus> = JobStatus::ALL
        .into_iter()
        .filter(|s| *s != JobStatus::Null)
        .collect();
    for status in &shown {
        out.push_str(&format!(" {status} |"));
    }
    out.push_str("\n|---|");
    for _ in &shown {
        out.push_str("---|");
    }
    out.push('\n');
    for verb in Verb::ALL {
        out.push_str(&format!("| {verb} |"));
        for status in &shown {
            out.push_str(if verb.allowed_in(*status) {
                " Y |"
            } else {
                " – |"
            });
        }
        out.push('\n');
    }
    out.push_str("\nExtra checks on top of the table: `pause` needs the job not already paused,\n");
    out.push_str(
        "`resume` needs it paused, `complete` needs no cancel requested. A refused verb\n",
    );
    out.push_str("returns `JobError::VerbNotAllowed` and changes nothing.\n");
    out
}
