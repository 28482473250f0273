//! The QMP commands blockmirror knows, as one table, and their typed arguments.
//!
//! `COMMANDS` names every command with the function that reads its `arguments` object.
//! Each reader visits the parameters in QEMU's schema order and, like QEMU's input visitor,
//! reports the first problem it meets: a required parameter missing ("Parameter 'sync' is
//! missing"), a value of the wrong JSON type ("Invalid parameter type for 'speed', expected:
//! integer"), a word outside an enum ("Parameter 'sync' does not accept value 'bogus'"); then
//! a parameter the command does not have ("Parameter 'x' is unexpected"); then the few
//! value rules QEMU checks before touching any device (a negative `speed`, a sync mode
//! QEMU has but mirror does not support).
//!
//! Rules that belong to the job's configuration are not checked here: a `granularity`
//! that is not a power of two in range is refused by `MirrorConfig::validate` when the
//! driver builds the job, and [`config_error`](super::verbs::config_error) words that
//! refusal as QEMU does. Enum words come from the core's name tables (`SyncMode`,
//! `CopyMode`, `ErrorPolicy`); only [`NewImageMode`], which the core has no notion of, is
//! named here.

use std::str::FromStr;

use blockmirror_core::job::{CopyMode, ErrorPolicy, SyncMode};
use serde_json::{Map, Value};

use super::error::QmpError;

/// How `drive-mirror` treats its target file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum NewImageMode {
    /// `existing`: mirror into the file that is there.
    Existing,
    /// `absolute-paths` (QEMU's default): create the target.
    #[default]
    AbsolutePaths,
}

impl NewImageMode {
    /// Every mode, in QEMU's order.
    pub const ALL: [NewImageMode; 2] = [NewImageMode::Existing, NewImageMode::AbsolutePaths];

    /// QEMU's word.
    pub const fn as_str(self) -> &'static str {
        match self {
            NewImageMode::Existing => "existing",
            NewImageMode::AbsolutePaths => "absolute-paths",
        }
    }
}

impl FromStr for NewImageMode {
    type Err = ();
    fn from_str(word: &str) -> Result<Self, ()> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str() == word)
            .ok_or(())
    }
}

/// The arguments of `drive-mirror`, with QEMU's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveMirrorArgs {
    /// `job-id`; QEMU defaults it to the device's name.
    pub job_id: Option<String>,
    /// `device`: the source.
    pub device: String,
    /// `target`: the target file.
    pub target: String,
    /// `format` of the target.
    pub format: Option<String>,
    /// `sync` (required).
    pub sync: SyncMode,
    /// `mode`, default `absolute-paths`.
    pub mode: NewImageMode,
    /// `speed` in bytes/s, default 0 (unlimited); never negative.
    pub speed: u64,
    /// `granularity` in bytes; `None` when absent or 0 (the job's default). Not checked
    /// here: the job's configuration owns that rule.
    pub granularity: Option<u64>,
    /// `buf-size` in bytes; `None` when absent or 0 (the job's default); never negative.
    pub buf_size: Option<u64>,
    /// `on-source-error`, default `report`.
    pub on_source_error: ErrorPolicy,
    /// `on-target-error`, default `report`.
    pub on_target_error: ErrorPolicy,
    /// `copy-mode`, default `background`.
    pub copy_mode: CopyMode,
    /// `unmap`, default true.
    pub unmap: bool,
    /// `auto-finalize`, default true.
    pub auto_finalize: bool,
    /// `auto-dismiss`, default true.
    pub auto_dismiss: bool,
    /// `resume` (blockmirror's own; default false): copy only what the served disk's bitmap
    /// file marks, left by a job that did not finish.
    pub resume: bool,
    /// `bitmap-min-generation` (blockmirror's own; default 0, any): with `resume`, refuse
    /// a bitmap file whose newest generation is below this (a stale copy of the file; the
    /// generation is read with `x-blockmirror-query-bitmap`).
    pub bitmap_min_generation: u64,
}

/// A valid command for the driver to run. The `device` of `block-job-*` and the `id` of
/// `job-*` both name a job.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `drive-mirror`: start a mirror job.
    DriveMirror(DriveMirrorArgs),
    /// `query-block-jobs`: answer with a list of `BlockJobInfo` objects.
    QueryBlockJobs,
    /// `query-jobs`: answer with a list of `JobInfo` objects.
    QueryJobs,
    /// `block-job-complete`.
    BlockJobComplete {
        /// The job.
        device: String,
    },
    /// `block-job-cancel`.
    BlockJobCancel {
        /// The job.
        device: String,
        /// Cancel at once, even when ready (default false).
        force: bool,
    },
    /// `block-job-pause`.
    BlockJobPause {
        /// The job.
        device: String,
    },
    /// `block-job-resume`.
    BlockJobResume {
        /// The job.
        device: String,
    },
    /// `block-job-set-speed`.
    BlockJobSetSpeed {
        /// The job.
        device: String,
        /// Bytes/s, 0 for unlimited; never negative.
        speed: u64,
    },
    /// `block-job-change` with `type: mirror`.
    BlockJobChange {
        /// The job.
        id: String,
        /// The new copy mode.
        copy_mode: CopyMode,
    },
    /// `job-dismiss` (and `block-job-dismiss`).
    JobDismiss {
        /// The job.
        id: String,
    },
    /// `job-pause`.
    JobPause {
        /// The job.
        id: String,
    },
    /// `job-resume`.
    JobResume {
        /// The job.
        id: String,
    },
    /// `job-cancel` (always a forced cancel, as in QEMU).
    JobCancel {
        /// The job.
        id: String,
    },
    /// `job-complete`.
    JobComplete {
        /// The job.
        id: String,
    },
    /// `x-blockmirror-verify` (blockmirror's own): compare the running job's source and
    /// target while clients write, in segments of `granularity` bytes (default 1 MiB), and
    /// with `repair` have the job copy what differs again.
    Verify {
        /// The job.
        id: String,
        /// Segment size in bytes; checked by the verify.
        granularity: Option<u64>,
        /// Have the job copy the differing segments again (default false).
        repair: bool,
    },
    /// `x-blockmirror-query-bitmap` (blockmirror's own): the served disk's bitmap file,
    /// its newest generation and whether it holds what an unfinished job left to copy.
    QueryBitmap,
    /// `quit`: answer, then close (see `QmpSession::wants_quit`).
    Quit,
}

/// What the session does with a known command name.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Handler {
    /// The session answers by itself (negotiation, introspection).
    Session(SessionCommand),
    /// Read the arguments into a [`Command`] for the driver.
    Driver(fn(&mut ArgReader<'_>) -> Result<Command, QmpError>),
}

/// Commands the session answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionCommand {
    /// `qmp_capabilities`.
    Capabilities,
    /// `query-version`.
    QueryVersion,
    /// `query-commands`.
    QueryCommands,
}

/// Every command name blockmirror knows, with its handler (`query-commands` lists them in
/// this order).
pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    (
        "qmp_capabilities",
        Handler::Session(SessionCommand::Capabilities),
    ),
    (
        "query-version",
        Handler::Session(SessionCommand::QueryVersion),
    ),
    (
        "query-commands",
        Handler::Session(SessionCommand::QueryCommands),
    ),
    ("drive-mirror", Handler::Driver(drive_mirror)),
    (
        "query-block-jobs",
        Handler::Driver(|r| r.finish().map(|()| Command::QueryBlockJobs)),
    ),
    (
        "query-jobs",
        Handler::Driver(|r| r.finish().map(|()| Command::QueryJobs)),
    ),
    (
        "block-job-complete",
        Handler::Driver(|r| device_command(r, |device| Command::BlockJobComplete { device })),
    ),
    ("block-job-cancel", Handler::Driver(block_job_cancel)),
    (
        "block-job-pause",
        Handler::Driver(|r| device_command(r, |device| Command::BlockJobPause { device })),
    ),
    (
        "block-job-resume",
        Handler::Driver(|r| device_command(r, |device| Command::BlockJobResume { device })),
    ),
    ("block-job-set-speed", Handler::Driver(block_job_set_speed)),
    ("block-job-change", Handler::Driver(block_job_change)),
    (
        "block-job-dismiss",
        Handler::Driver(|r| id_command(r, |id| Command::JobDismiss { id })),
    ),
    (
        "job-dismiss",
        Handler::Driver(|r| id_command(r, |id| Command::JobDismiss { id })),
    ),
    (
        "job-pause",
        Handler::Driver(|r| id_command(r, |id| Command::JobPause { id })),
    ),
    (
        "job-resume",
        Handler::Driver(|r| id_command(r, |id| Command::JobResume { id })),
    ),
    (
        "job-cancel",
        Handler::Driver(|r| id_command(r, |id| Command::JobCancel { id })),
    ),
    (
        "job-complete",
        Handler::Driver(|r| id_command(r, |id| Command::JobComplete { id })),
    ),
    ("x-blockmirror-verify", Handler::Driver(verify)),
    (
        "x-blockmirror-query-bitmap",
        Handler::Driver(|r| r.finish().map(|()| Command::QueryBitmap)),
    ),
    (
        "quit",
        Handler::Driver(|r| r.finish().map(|()| Command::Quit)),
    ),
];

/// Every command name, in `COMMANDS` order.
pub fn command_names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|(name, _)| *name)
}

/// Parses a driver command `name` with its `arguments` (an absent object is empty).
/// `Ok(None)`: the name is not a driver command (unknown, or answered by the session).
pub fn parse_command(
    name: &str,
    arguments: &Map<String, Value>,
) -> Result<Option<Command>, QmpError> {
    match COMMANDS.iter().find(|(known, _)| *known == name) {
        Some((_, Handler::Driver(read))) => read(&mut ArgReader::new(arguments)).map(Some),
        _ => Ok(None),
    }
}

pub(crate) fn handler(name: &str) -> Option<Handler> {
    COMMANDS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, handler)| *handler)
}

/// Sync words QEMU has that a mirror refuses after parsing ("Sync mode 'x' not supported").
const QEMU_ONLY_SYNC: &[&str] = &["incremental", "bitmap"];
/// Error-policy words QEMU has that the job does not implement.
const QEMU_ONLY_POLICY: &[&str] = &["auto"];
/// QEMU's job types other than mirror (`block-job-change` names one in `type`).
const OTHER_JOB_TYPES: &[&str] = &[
    "commit",
    "stream",
    "backup",
    "create",
    "amend",
    "snapshot-load",
    "snapshot-save",
    "snapshot-delete",
];

fn drive_mirror(r: &mut ArgReader<'_>) -> Result<Command, QmpError> {
    let job_id = r.string("job-id")?;
    let device = required("device", r.string("device")?)?;
    let target = required("target", r.string("target")?)?;
    let format = r.string("format")?;
    let sync = required(
        "sync",
        r.word("sync", |w| {
            SyncMode::from_name(w).is_some() || QEMU_ONLY_SYNC.contains(&w)
        })?,
    )?;
    let mode = r.word("mode", |w| w.parse::<NewImageMode>().is_ok())?;
    let speed = r.int64("speed")?;
    let granularity = r.uint32("granularity")?;
    let buf_size = r.int64("buf-size")?;
    let on_source_error = r.word("on-source-error", policy_word)?;
    let on_target_error = r.word("on-target-error", policy_word)?;
    let unmap = r.boolean("unmap")?;
    let copy_mode = r.word("copy-mode", |w| CopyMode::from_name(w).is_some())?;
    let auto_finalize = r.boolean("auto-finalize")?;
    let auto_dismiss = r.boolean("auto-dismiss")?;
    let resume = r.boolean("resume")?;
    let bitmap_min_generation = r.int64("bitmap-min-generation")?;
    r.finish()?;

    let sync = SyncMode::from_name(&sync)
        .ok_or_else(|| QmpError::generic(format!("Sync mode '{sync}' not supported")))?;
    let buf_size = match buf_size {
        Some(bytes) if bytes < 0 => return Err(QmpError::generic("Invalid parameter 'buf-size'")),
        bytes => bytes.filter(|&b| b > 0).map(|b| b as u64),
    };
    Ok(Command::DriveMirror(DriveMirrorArgs {
        job_id,
        device,
        target,
        format,
        sync,
        mode: mode.map_or(NewImageMode::default(), |w| {
            w.parse().expect("the reader accepted only modes")
        }),
        speed: non_negative_speed(speed)?,
        granularity: granularity.filter(|&g| g > 0),
        buf_size,
        on_source_error: policy("on-source-error", on_source_error)?,
        on_target_error: policy("on-target-error", on_target_error)?,
        copy_mode: copy_mode.map_or(CopyMode::default(), |w| {
            w.parse().expect("the reader accepted only copy modes")
        }),
        unmap: unmap.unwrap_or(true),
        auto_finalize: auto_finalize.unwrap_or(true),
        auto_dismiss: auto_dismiss.unwrap_or(true),
        resume: resume.unwrap_or(false),
        bitmap_min_generation: match bitmap_min_generation {
            Some(n) if n < 0 => return Err(QmpError::generic("Invalid parameter 'bitmap-min-generation'")),
            n => n.map_or(0, |n| n as u64),
        },
    }))
}

fn policy_word(word: &str) -> bool {
    ErrorPolicy::from_name(word).is_some() || QEMU_ONLY_POLICY.contains(&word)
}

fn policy(name: &str, word: Option<String>) -> Result<ErrorPolicy, QmpError> {
    match word {
        None => Ok(ErrorPolicy::default()),
        Some(word) => ErrorPolicy::from_name(&word).ok_or_else(|| {
            QmpError::generic(format!(
                "Parameter '{name}' value '{word}' is not supported by blockmirror"
            ))
        }),
    }
}

fn non_negative_speed(speed: Option<i64>) -> Result<u64, QmpError> {
    let speed = speed.unwrap_or(0);
    u64::try_from(speed)
        .map_err(|_| QmpError::generic("Parameter 'speed' expects a non-negative value"))
}

fn device_command(r: &mut ArgReader<'_>, make: fn(String) -> Command) -> Result<Command, QmpError> {
    let device = required("device", r.string("device")?)?;
    r.finish()?;
    Ok(make(device))
}

fn id_command(r: &mut ArgReader<'_>, make: fn(String) -> Command) -> Result<Command, QmpError> {
    let id = required("id", r.string("id")?)?;
    r.finish()?;
    Ok(make(id))
}

fn verify(r: &mut ArgReader<'_>) -> Result<Command, QmpError> {
    let id = required("id", r.string("id")?)?;
    let granularity = r.int64("granularity")?;
    let repair = r.boolean("repair")?.unwrap_or(false);
    r.finish()?;
    let granularity = match granularity {
        Some(bytes) if bytes <= 0 => return Err(QmpError::generic("Invalid parameter 'granularity'")),
        bytes => bytes.map(|b| b as u64),
    };
    Ok(Command::Verify { id, granularity, repair })
}

fn block_job_cancel(r: &mut ArgReader<'_>) -> Result<Command, QmpError> {
    let device = required("device", r.string("device")?)?;
    let force = r.boolean("force")?.unwrap_or(false);
    r.finish()?;
    Ok(Command::BlockJobCancel { device, force })
}

fn block_job_set_speed(r: &mut ArgReader<'_>) -> Result<Command, QmpError> {
    let device = required("device", r.string("device")?)?;
    let speed = required("speed", r.int64("speed")?)?;
    r.finish()?;
    Ok(Command::BlockJobSetSpeed {
        device,
        speed: non_negative_speed(Some(speed))?,
    })
}

fn block_job_change(r: &mut ArgReader<'_>) -> Result<Command, QmpError> {
    let id = required("id", r.string("id")?)?;
    let job_type = required(
        "type",
        r.word("type", |w| w == "mirror" || OTHER_JOB_TYPES.contains(&w))?,
    )?;
    if job_type != "mirror" {
        // Other job types have no changeable options: any further member is unexpected.
        r.finish()?;
        return Err(QmpError::generic("Job type does not match specified type"));
    }
    let copy_mode = required(
        "copy-mode",
        r.word("copy-mode", |w| CopyMode::from_name(w).is_some())?,
    )?;
    r.finish()?;
    let copy_mode = copy_mode
        .parse()
        .expect("the reader accepted only copy modes");
    Ok(Command::BlockJobChange { id, copy_mode })
}

fn required<T>(name: &str, value: Option<T>) -> Result<T, QmpError> {
    value.ok_or_else(|| QmpError::generic(format!("Parameter '{name}' is missing")))
}

/// Reads one `arguments` object parameter by parameter, remembering which it visited so
/// [`finish`](Self::finish) can name a member the command does not have.
#[derive(Debug)]
pub struct ArgReader<'a> {
    arguments: &'a Map<String, Value>,
    visited: Vec<&'static str>,
}

impl<'a> ArgReader<'a> {
    /// A reader over `arguments`.
    pub fn new(arguments: &'a Map<String, Value>) -> Self {
        Self {
            arguments,
            visited: Vec::new(),
        }
    }

    fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.visited.push(name);
        self.arguments.get(name)
    }

    /// A parameter of any JSON type, for the caller to check.
    pub fn value(&mut self, name: &'static str) -> Option<&'a Value> {
        self.get(name)
    }

    /// A string parameter.
    pub fn string(&mut self, name: &'static str) -> Result<Option<String>, QmpError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(wrong_type(name, "string")),
        }
    }

    /// An enum parameter: a string that `accepts` (else "does not accept value").
    pub fn word(
        &mut self,
        name: &'static str,
        accepts: impl Fn(&str) -> bool,
    ) -> Result<Option<String>, QmpError> {
        match self.string(name)? {
            Some(word) if !accepts(&word) => Err(QmpError::generic(format!(
                "Parameter '{name}' does not accept value '{word}'"
            ))),
            word => Ok(word),
        }
    }

    /// A signed 64-bit integer parameter (a fraction, or a number past `i64`, is the wrong type).
    pub fn int64(&mut self, name: &'static str) -> Result<Option<i64>, QmpError> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "integer")),
        }
    }

    /// An unsigned 32-bit integer parameter: an integer outside `u32` "expects uint32_t".
    pub fn uint32(&mut self, name: &'static str) -> Result<Option<u64>, QmpError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                match n.as_u64().filter(|&v| v <= u64::from(u32::MAX)) {
                    Some(v) => Ok(Some(v)),
                    None => Err(QmpError::generic(format!(
                        "Parameter '{name}' expects uint32_t"
                    ))),
                }
            }
            Some(_) => Err(wrong_type(name, "integer")),
        }
    }

    /// A boolean parameter.
    pub fn boolean(&mut self, name: &'static str) -> Result<Option<bool>, QmpError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong_type(name, "boolean")),
        }
    }

    /// Refuses the first member (in key order) that no getter visited.
    pub fn finish(&self) -> Result<(), QmpError> {
        match self
            .arguments
            .keys()
            .find(|key| !self.visited.contains(&key.as_str()))
        {
            Some(key) => Err(QmpError::generic(format!(
                "Parameter '{key}' is unexpected"
            ))),
            None => Ok(()),
        }
    }
}

fn wrong_type(name: &str, expected: &str) -> QmpError {
    QmpError::generic(format!(
        "Invalid parameter type for '{name}', expected: {expected}"
    ))
}

#[cfg(test)]
mod tests;
