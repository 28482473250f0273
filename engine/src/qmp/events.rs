//! QMP events from the job's events, and the job entries of `query-block-jobs` and
//! `query-jobs`.
//!
//! A mirror job is named by its job id; QEMU's block-job events call that `device`. Progress
//! is `offset` (bytes done) of `len` (the total, which may grow). Events blockmirror has and
//! QEMU does not (`BLOCK_JOB_NOT_CONVERGING`, `BLOCK_JOB_AUTO_CONVERGE`) keep the core's
//! names and fields, plus `device`; QMP clients pass unknown events through.

use std::time::{SystemTime, UNIX_EPOCH};

use blockmirror_core::job::{Event, FieldValue, JobStatus, Progress};
use serde_json::{json, Map, Value};

/// QEMU's job type word for a mirror.
pub const JOB_TYPE: &str = "mirror";

/// One QMP event, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// The event name (`BLOCK_JOB_READY`).
    pub name: String,
    /// The `data` object.
    pub data: Value,
    /// Wall-clock time it happened: seconds and microseconds since the Unix epoch.
    pub time: (u64, u32),
}

impl QmpEvent {
    /// An event named `name` with `data`, happening at `wall_time`.
    pub fn new(name: impl Into<String>, data: Value, wall_time: SystemTime) -> Self {
        Self {
            name: name.into(),
            data,
            time: timestamp(wall_time),
        }
    }

    /// The message: `{"timestamp": {"seconds", "microseconds"}, "event", "data"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "timestamp": {"seconds": self.time.0, "microseconds": self.time.1},
            "event": self.name,
            "data": self.data,
        })
    }
}

/// Seconds and microseconds since the Unix epoch (0 for a time before it).
pub fn timestamp(wall_time: SystemTime) -> (u64, u32) {
    let since = wall_time.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_secs(), since.subsec_micros())
}

/// The QMP events for one job event of job `job_id`, whose speed limit is `speed` bytes/s.
/// One job event gives one QMP event today; the list leaves room for QEMU's pairs
/// (a `BLOCK_JOB_PENDING` beside a status change) without changing callers.
pub fn job_events(job_id: &str, event: &Event, speed: u64, wall_time: SystemTime) -> Vec<QmpEvent> {
    let name = event.type_name();
    let data = match *event {
        Event::StatusChange { status } => json!({"id": job_id, "status": status.as_str()}),
        Event::Ready { current, total } | Event::Cancelled { current, total } => {
            progress_data(job_id, current, total, speed)
        }
        Event::Completed {
            current,
            total,
            error,
            ..
        } => {
            let mut data = progress_data(job_id, current, total, speed);
            if let Some(error) = error {
                data["error"] = Value::String(error.message());
            }
            data
        }
        Event::Error {
            operation, action, ..
        } => {
            json!({"device": job_id, "operation": operation.as_str(), "action": action.as_str()})
        }
        _ => {
            let mut data = Map::new();
            data.insert("device".into(), Value::String(job_id.into()));
            for (field, value) in event.fields() {
                data.insert(field.into(), field_value(value));
            }
            Value::Object(data)
        }
    };
    vec![QmpEvent::new(name, data, wall_time)]
}

fn progress_data(job_id: &str, current: u64, total: u64, speed: u64) -> Value {
    json!({"type": JOB_TYPE, "device": job_id, "len": total, "offset": current, "speed": speed})
}

fn field_value(value: FieldValue) -> Value {
    match value {
        FieldValue::U64(n) => Value::from(n),
        FieldValue::Bool(b) => Value::Bool(b),
        FieldValue::Str(s) => Value::String(s.into_owned()),
        // A future kind of field shows as null rather than breaking the event.
        _ => Value::Null,
    }
}

/// What `query-block-jobs` and `query-jobs` show of one job; the driver fills it from the
/// job and its own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    /// The job id.
    pub id: String,
    /// The job's status.
    pub status: JobStatus,
    /// Bytes done of the total.
    pub progress: Progress,
    /// Speed limit, bytes/s (0 = unlimited).
    pub speed: u64,
    /// A pause is requested or in effect.
    pub paused: bool,
    /// Operations are in flight (QEMU: the job is not known to be quiescent).
    pub busy: bool,
    /// An I/O error stopped the job (`io-status` `failed`, else `ok`).
    pub io_status_failed: bool,
    /// The job has been ready (status `ready` or `standby`).
    pub ready: bool,
    /// Why the job failed, in words, once it has.
    pub error: Option<String>,
    /// Copy mode is `write-blocking` and the target is in sync.
    pub actively_synced: bool,
    /// `auto-finalize` as the job was started with.
    pub auto_finalize: bool,
    /// `auto-dismiss` as the job was started with.
    pub auto_dismiss: bool,
}

/// One `BlockJobInfo` of `query-block-jobs`.
pub fn block_job_info(view: &JobView) -> Value {
    let mut info = json!({
        "type": JOB_TYPE,
        "device": view.id,
        "len": view.progress.total,
        "offset": view.progress.current,
        "busy": view.busy,
        "paused": view.paused,
        "speed": view.speed,
        "io-status": if view.io_status_failed { "failed" } else { "ok" },
        "ready": view.ready,
        "status": view.status.as_str(),
        "auto-finalize": view.auto_finalize,
        "auto-dismiss": view.auto_dismiss,
        "actively-synced": view.actively_synced,
    });
    if let Some(error) = &view.error {
        info["error"] = Value::String(error.clone());
    }
    info
}

/// One `JobInfo` of `query-jobs`.
pub fn job_info(view: &JobView) -> Value {
    let mut info = json!({
        "id": view.id,
        "type": JOB_TYPE,
        "status": view.status.as_str(),
        "current-progress": view.progress.current,
        "total-progress": view.progress.total,
    });
    if let Some(error) = &view.error {
        info["error"] = Value::String(error.clone());
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockmirror_core::job::{AutoConvergeTrigger, ErrorAction, IoErrorKind, Operation};
    use std::time::Duration;

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_796_164_349, 227_130_999)
    }

    fn one(event: Event) -> QmpEvent {
        let mut events = job_events("j", &event, 100, at());
        assert_eq!(events.len(), 1);
        events.pop().unwrap()
    }

    #[test]
    fn lifecycle_events_carry_qemus_fields() {
        let e = one(Event::StatusChange {
            status: JobStatus::Ready,
        });
        assert_eq!(
            (e.name.as_str(), e.data.clone()),
            ("JOB_STATUS_CHANGE", json!({"id": "j", "status": "ready"}))
        );
        let e = one(Event::Ready {
            current: 5,
            total: 5,
        });
        assert_eq!(e.name, "BLOCK_JOB_READY");
        assert_eq!(
            e.data,
            json!({"type": "mirror", "device": "j", "len": 5, "offset": 5, "speed": 100})
        );
        let e = one(Event::Cancelled {
            current: 1,
            total: 5,
        });
        assert_eq!(e.name, "BLOCK_JOB_CANCELLED");
        assert_eq!(
            e.data,
            json!({"type": "mirror", "device": "j", "len": 5, "offset": 1, "speed": 100})
        );
    }

    #[test]
    fn completed_has_error_only_on_failure() {
        let ok = one(Event::Completed {
            current: 5,
            total: 5,
            error: None,
            pivoted: true,
        });
        assert_eq!(
            ok.data,
            json!({"type": "mirror", "device": "j", "len": 5, "offset": 5, "speed": 100})
        );
        let failed = one(Event::Completed {
            current: 2,
            total: 5,
            error: Some(IoErrorKind::NoSpace),
            pivoted: false,
        });
        assert_eq!(failed.data["error"], "No space left on device");
    }

    #[test]
    fn error_event_names_side_and_action() {
        let e = one(Event::Error {
            operation: Operation::Write,
            action: ErrorAction::Stop,
            offset: 0,
            length: 4096,
            error: IoErrorKind::NoSpace,
        });
        assert_eq!(e.name, "BLOCK_JOB_ERROR");
        assert_eq!(
            e.data,
            json!({"device": "j", "operation": "write", "action": "stop"})
        );
    }

    #[test]
    fn blockmirror_events_keep_their_names_and_fields() {
        let e = one(Event::AutoConverge {
            trigger: AutoConvergeTrigger::DirtyRate,
            dirty_bytes: 1,
            dirty_bytes_per_sec: 2,
            copy_bytes_per_sec: 3,
        });
        assert_eq!(e.name, "BLOCK_JOB_AUTO_CONVERGE");
        assert_eq!(
            e.data,
            json!({"device": "j", "trigger": "dirty_rate", "dirty_bytes": 1, "dirty_bytes_per_sec": 2, "copy_bytes_per_sec": 3})
        );
        let e = one(Event::NotConverging {
            dirty_bytes: 1,
            dirty_bytes_per_sec: 2,
            copy_bytes_per_sec: 3,
        });
        assert_eq!(e.name, "BLOCK_JOB_NOT_CONVERGING");
    }

    #[test]
    fn event_message_has_timestamp_in_microseconds() {
        let e = one(Event::StatusChange {
            status: JobStatus::Running,
        });
        assert_eq!(
            e.to_json()["timestamp"],
            json!({"seconds": 1_796_164_349u64, "microseconds": 227_130})
        );
        assert_eq!(timestamp(UNIX_EPOCH - Duration::from_secs(1)), (0, 0));
    }

    fn view() -> JobView {
        JobView {
            id: "j".into(),
            status: JobStatus::Ready,
            progress: Progress {
                current: 10,
                total: 20,
            },
            speed: 0,
            paused: false,
            busy: false,
            io_status_failed: false,
            ready: true,
            error: None,
            actively_synced: false,
            auto_finalize: true,
            auto_dismiss: true,
        }
    }

    #[test]
    fn block_job_info_has_qemus_members() {
        let info = block_job_info(&view());
        let mut keys: Vec<_> = info.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        // The members QEMU 10.0 shows for a mirror job.
        let mut qemu = [
            "auto-finalize",
            "io-status",
            "device",
            "auto-dismiss",
            "busy",
            "len",
            "offset",
            "status",
            "paused",
            "speed",
            "ready",
            "type",
            "actively-synced",
        ];
        qemu.sort();
        assert_eq!(keys, qemu);
        assert_eq!(
            (info["len"].clone(), info["offset"].clone()),
            (json!(20), json!(10))
        );
        let failed = JobView {
            io_status_failed: true,
            error: Some("Input/output error".into()),
            ..view()
        };
        assert_eq!(block_job_info(&failed)["io-status"], "failed");
        assert_eq!(block_job_info(&failed)["error"], "Input/output error");
    }

    #[test]
    fn job_info_has_qemus_members() {
        assert_eq!(
            job_info(&view()),
            json!({"id": "j", "type": "mirror", "status": "ready", "current-progress": 10, "total-progress": 20})
        );
        let failed = JobView {
            error: Some("x".into()),
            ..view()
        };
        assert_eq!(job_info(&failed)["error"], "x");
    }
}
