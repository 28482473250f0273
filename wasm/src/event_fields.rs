//! Simulation events as flat `(name, value)` fields, the shape the page's event log reads.
//! Job events take their names and values from the core's `Event::fields` (`type`,
//! `status`, `operation`, `action`, `offset`, `length`, `error`, ...), as Python does.

use blockmirror_core::job::{Event, FieldValue};
use blockmirror_core::sim::{SimEvent, SimEventKind};

/// One field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// Text.
    Text(String),
    /// A number (bytes, rates, times). Exact for integers below 2^53.
    Number(f64),
    /// A flag.
    Flag(bool),
    /// Nothing to say (`null`).
    Null,
}

fn text(value: impl Into<String>) -> Field {
    Field::Text(value.into())
}

fn number(value: u64) -> Field {
    Field::Number(value as f64)
}

/// The fields of one event, `type` first. Job events use their QMP names; commands given
/// to the job are `COMMAND` (accepted) and `COMMAND_REFUSED` (with the job's reason).
pub fn event_fields(event: &SimEvent) -> Vec<(&'static str, Field)> {
    match &event.kind {
        SimEventKind::Job(e) => job_event_fields(e),
        SimEventKind::Command(command) => {
            vec![("type", text("COMMAND")), ("command", text(command.to_string()))]
        }
        SimEventKind::CommandRefused(command, error) => vec![
            ("type", text("COMMAND_REFUSED")),
            ("command", text(command.to_string())),
            ("error", text(error.to_string())),
        ],
        other => vec![("type", text("SIMULATOR")), ("detail", text(format!("{other:?}")))],
    }
}

/// A job event: `type`, then the core's [`Event::fields`], so the page shows the names and
/// values Python does (`error` is the shared name, e.g. `nospace`; the page words it with
/// `error_message`).
fn job_event_fields(e: &Event) -> Vec<(&'static str, Field)> {
    let mut fields = vec![("type", text(e.type_name()))];
    fields.extend(e.fields().into_iter().map(|(name, value)| (name, field(value))));
    fields
}

/// One core field value as the page's value.
pub fn field(value: FieldValue) -> Field {
    match value {
        FieldValue::U64(n) => number(n),
        FieldValue::Bool(b) => Field::Flag(b),
        FieldValue::Str(s) => text(s),
        _ => Field::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockmirror_core::job::{ErrorAction, IoErrorKind, JobError, JobStatus, Operation, Verb};
    use blockmirror_core::sim::Command;

    fn at(kind: SimEventKind) -> SimEvent {
        SimEvent { time_ns: 5, kind }
    }

    #[test]
    fn an_error_event_carries_the_contract_fields() {
        let e = at(SimEventKind::Job(Event::Error {
            operation: Operation::Write,
            action: ErrorAction::Stop,
            offset: 65536,
            length: 4096,
            error: IoErrorKind::NoSpace,
        }));
        assert_eq!(
            event_fields(&e),
            vec![
                ("type", text("BLOCK_JOB_ERROR")),
                ("operation", text("write")),
                ("action", text("stop")),
                ("offset", Field::Number(65536.0)),
                ("length", Field::Number(4096.0)),
                ("error", text("nospace")),
            ]
        );
    }

    #[test]
    fn status_and_completion() {
        let s = at(SimEventKind::Job(Event::StatusChange { status: JobStatus::Ready }));
        assert_eq!(event_fields(&s), vec![("type", text("JOB_STATUS_CHANGE")), ("status", text("ready"))]);
        let c = at(SimEventKind::Job(Event::Completed { current: 10, total: 10, error: None, pivoted: true }));
        let fields = event_fields(&c);
        assert_eq!(fields[0], ("type", text("BLOCK_JOB_COMPLETED")));
        assert!(fields.contains(&("pivoted", Field::Flag(true))));
        assert!(fields.contains(&("error", Field::Null)), "a completion without error says so");
    }

    #[test]
    fn commands_and_refusals() {
        let ok = at(SimEventKind::Command(Command::Cancel { force: true }));
        assert_eq!(event_fields(&ok), vec![("type", text("COMMAND")), ("command", text("cancel(force)"))]);
        let refused = at(SimEventKind::CommandRefused(
            Command::Complete,
            JobError::VerbNotAllowed { verb: Verb::Complete, status: JobStatus::Running },
        ));
        assert_eq!(
            event_fields(&refused),
            vec![
                ("type", text("COMMAND_REFUSED")),
                ("command", text("complete")),
                ("error", text("cannot complete a job in status running")),
            ]
        );
    }
}
