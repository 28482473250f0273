//! One QMP client connection as a state machine: bytes in, reply and event lines out, typed
//! commands out for the driver to run.
//!
//! # Methods
//!
//! - Inputs: [`handle_input`](QmpSession::handle_input) (bytes the client sent),
//!   [`handle_result`](QmpSession::handle_result) (the driver's answer to the command it
//!   polled), [`send_event`](QmpSession::send_event) (an event for the client).
//! - Outputs: [`poll_output`](QmpSession::poll_output) (one message line, ending `\r\n`),
//!   [`poll_command`](QmpSession::poll_command) (the next command for the driver).
//! - Getters: [`wants_quit`](QmpSession::wants_quit), [`is_negotiated`](QmpSession::is_negotiated),
//!   [`events_dropped`](QmpSession::events_dropped).
//!
//! # The driver rule
//!
//! Requests are answered strictly in the order they arrived, as QEMU answers one client.
//! The session hands out **one command at a time**: after `poll_command` returns a command,
//! it returns `None` (and later requests wait, unanswered) until the driver calls
//! `handle_result` for it. So the driver loop is: feed input, drain `poll_output`; while
//! `poll_command` gives a command, run it, `handle_result`, drain `poll_output` again.
//! Requests the session answers itself (negotiation, introspection, every malformed or
//! unknown request) never reach the driver, but still wait their turn behind a command.
//!
//! # What the session answers itself
//!
//! - The greeting, queued by [`new`](QmpSession::new).
//! - Before `qmp_capabilities`, every other command: `CommandNotFound`, "Expecting
//!   capabilities negotiation with 'qmp_capabilities'". After it, a second one:
//!   `CommandNotFound`, "Capabilities negotiation is already complete, command ignored".
//! - Requests that are not a JSON object, lack `execute`, carry members other than
//!   `execute`, `arguments` and `id`, or whose members have the wrong type: `GenericError`
//!   with QEMU's "QMP input …" words. The request's `id`, when it has one, is echoed in
//!   every reply to it.
//! - Unknown commands: `CommandNotFound`, "The command X has not been found".
//! - `query-version` (the greeting's version) and `query-commands`.
//! - Argument errors of every known command (see `commands`).
//!
//! # Bounds
//!
//! Events are dropped before negotiation (QEMU sends events only in command mode), after
//! `quit`, and while [`MAX_QUEUED_OUTPUT`] messages wait unread (counted in
//! [`events_dropped`](QmpSession::events_dropped)). While output waits unread or a command
//! is outstanding, requests stay unparsed in the input buffer; once that backlog reaches
//! [`MAX_BACKLOG_BYTES`], further input is dropped up to the next newline and the client is
//! told so with one `GenericError` in its turn.

use std::collections::VecDeque;

use serde_json::{json, Map, Value};

use super::commands::{self, ArgReader, Command, Handler, SessionCommand};
use super::error::QmpError;
use super::events::QmpEvent;
use super::framing::{JsonFramer, MAX_MESSAGE_BYTES};

/// Messages that may wait unread before events are dropped and requests wait unparsed.
pub const MAX_QUEUED_OUTPUT: usize = 1024;

/// Unparsed input kept while requests wait for their turn.
pub const MAX_BACKLOG_BYTES: usize = MAX_MESSAGE_BYTES;

/// What the greeting (and `query-version`) tells the client about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Major version number.
    pub major: u64,
    /// Minor version number.
    pub minor: u64,
    /// Micro version number.
    pub micro: u64,
    /// Free-form package string (QEMU puts its distribution build there).
    pub package: String,
}

impl Greeting {
    /// blockmirror's own version, with `package` naming blockmirror.
    pub fn blockmirror() -> Self {
        let mut numbers = blockmirror_core::VERSION
            .split('.')
            .map(|n| n.parse().unwrap_or(0));
        let mut next = || numbers.next().unwrap_or(0);
        let (major, minor, micro) = (next(), next(), next());
        Self {
            major,
            minor,
            micro,
            package: format!("blockmirror {}", blockmirror_core::VERSION),
        }
    }

    /// The `VersionInfo` object: `{"qemu": {"major", "minor", "micro"}, "package"}`.
    pub fn version_info(&self) -> Value {
        json!({
            "qemu": {"major": self.major, "minor": self.minor, "micro": self.micro},
            "package": self.package,
        })
    }
}

/// A command for the driver, with the request's `id` (echoed by the session in the reply).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCommand {
    /// The request's `id`, if it had one.
    pub id: Option<Value>,
    /// The command with its typed arguments.
    pub command: Command,
}

/// The command handed to the driver and not yet answered.
#[derive(Debug)]
struct Outstanding {
    pending: PendingCommand,
    polled: bool,
}

/// One QMP connection (see the module doc).
#[derive(Debug)]
pub struct QmpSession {
    greeting: Greeting,
    framer: JsonFramer,
    negotiated: bool,
    outstanding: Option<Outstanding>,
    output: VecDeque<Vec<u8>>,
    /// Input was dropped because the backlog was full; tell the client in its turn.
    input_dropped: bool,
    quit: bool,
    events_dropped: u64,
}

impl QmpSession {
    /// A session whose greeting is already queued for output.
    pub fn new(greeting: Greeting) -> Self {
        let mut session = Self {
            greeting,
            framer: JsonFramer::new(),
            negotiated: false,
            outstanding: None,
            output: VecDeque::new(),
            input_dropped: false,
            quit: false,
            events_dropped: 0,
        };
        let hello =
            json!({"QMP": {"version": session.greeting.version_info(), "capabilities": []}});
        session.queue(&hello);
        session
    }

    /// Bytes from the client, in any split. Ignored after `quit` was answered.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(MAX_MESSAGE_BYTES) {
            if self.quit {
                return;
            }
            // Unblocked, the framer bounds one unfinished request itself; blocked, the
            // buffer is a backlog of requests waiting for their turn.
            if self.is_blocked() && self.framer.buffered() >= MAX_BACKLOG_BYTES {
                if !self.input_dropped {
                    self.input_dropped = true;
                    self.framer.skip_to_next_line();
                }
                continue;
            }
            self.framer.push(chunk);
            self.pump();
        }
    }

    /// The next message for the client: one JSON line ending `\r\n`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Vec<u8>> {
        let line = self.output.pop_front();
        if line.is_some() {
            self.pump();
        }
        line
    }

    /// The next command for the driver, once; `None` until it is answered (see the module doc).
    #[must_use]
    pub fn poll_command(&mut self) -> Option<PendingCommand> {
        match &mut self.outstanding {
            Some(outstanding) if !outstanding.polled => {
                outstanding.polled = true;
                Some(outstanding.pending.clone())
            }
            _ => None,
        }
    }

    /// The driver's answer to the command it polled: the reply value (`{}` for commands
    /// that return nothing) or an error. The reply echoes the request's `id` (the one in
    /// [`PendingCommand::id`]; `id` here is ignored if it differs). Ignored when no polled
    /// command waits for an answer. An `Ok` answer to `quit` ends the session.
    pub fn handle_result(&mut self, id: Option<Value>, result: Result<Value, QmpError>) {
        let _ = id;
        let Some(outstanding) = self.outstanding.take_if(|o| o.polled) else {
            return;
        };
        let quitting = outstanding.pending.command == Command::Quit && result.is_ok();
        self.reply(outstanding.pending.id, result);
        if quitting {
            self.quit = true;
        }
        self.pump();
    }

    /// Queues an event for the client; dropped before negotiation, after `quit` and while
    /// the output is full.
    pub fn send_event(&mut self, event: QmpEvent) {
        if !self.negotiated || self.quit {
            return;
        }
        if self.output.len() >= MAX_QUEUED_OUTPUT {
            self.events_dropped += 1;
            return;
        }
        self.queue(&event.to_json());
    }

    /// `quit` was answered: send the remaining output, then close the connection.
    pub fn wants_quit(&self) -> bool {
        self.quit
    }

    /// `qmp_capabilities` succeeded: the session is in command mode.
    pub fn is_negotiated(&self) -> bool {
        self.negotiated
    }

    /// Events dropped because output waited unread.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Requests must wait: a command is outstanding or the output is full.
    fn is_blocked(&self) -> bool {
        self.outstanding.is_some() || self.output.len() >= MAX_QUEUED_OUTPUT
    }

    /// Answers buffered requests in order until one needs the driver, output is full, or
    /// no complete request is left.
    fn pump(&mut self) {
        while !self.is_blocked() && !self.quit {
            match self.framer.next_value() {
                Some(Ok(request)) => self.handle_request(request),
                Some(Err(error)) => self.reply(None, Err(QmpError::generic(error.to_string()))),
                None => {
                    if self.input_dropped {
                        self.input_dropped = false;
                        let error = QmpError::generic(
                            "Input dropped: too many requests were waiting for answers",
                        );
                        self.reply(None, Err(error));
                    }
                    return;
                }
            }
        }
    }

    fn handle_request(&mut self, request: Value) {
        let Value::Object(request) = request else {
            return self.reply(
                None,
                Err(QmpError::generic("QMP input must be a JSON object")),
            );
        };
        let id = request.get("id").cloned();
        match self.dispatch(&request, id.clone()) {
            Ok(Some(value)) => self.reply(id, Ok(value)),
            Ok(None) => {}
            Err(error) => self.reply(id, Err(error)),
        }
    }

    /// The reply value, `None` when the command went to the driver, or the error.
    fn dispatch(
        &mut self,
        request: &Map<String, Value>,
        id: Option<Value>,
    ) -> Result<Option<Value>, QmpError> {
        let (name, arguments) = check_request(request)?;
        let empty = Map::new();
        let arguments = arguments.unwrap_or(&empty);
        if !self.negotiated {
            if name != "qmp_capabilities" {
                return Err(QmpError::command_not_found(
                    "Expecting capabilities negotiation with 'qmp_capabilities'",
                ));
            }
            negotiate(arguments)?;
            self.negotiated = true;
            return Ok(Some(json!({})));
        }
        let Some(handler) = commands::handler(name) else {
            return Err(QmpError::command_not_found(format!(
                "The command {name} has not been found"
            )));
        };
        match handler {
            Handler::Session(SessionCommand::Capabilities) => Err(QmpError::command_not_found(
                "Capabilities negotiation is already complete, command ignored",
            )),
            Handler::Session(SessionCommand::QueryVersion) => {
                ArgReader::new(arguments).finish()?;
                Ok(Some(self.greeting.version_info()))
            }
            Handler::Session(SessionCommand::QueryCommands) => {
                ArgReader::new(arguments).finish()?;
                Ok(Some(Value::Array(
                    commands::command_names()
                        .map(|name| json!({"name": name}))
                        .collect(),
                )))
            }
            Handler::Driver(read) => {
                let command = read(&mut ArgReader::new(arguments))?;
                self.outstanding = Some(Outstanding {
                    pending: PendingCommand { id, command },
                    polled: false,
                });
                Ok(None)
            }
        }
    }

    fn reply(&mut self, id: Option<Value>, result: Result<Value, QmpError>) {
        let mut message = match result {
            Ok(value) => json!({"return": value}),
            Err(error) => json!({"error": error.to_json()}),
        };
        if let Some(id) = id {
            message["id"] = id;
        }
        self.queue(&message);
    }

    fn queue(&mut self, message: &Value) {
        let mut line = serde_json::to_vec(message).expect("a serde_json::Value always serializes");
        line.extend_from_slice(b"\r\n");
        self.output.push_back(line);
    }
}

/// A request's command name and its `arguments` object, if any.
type Request<'a> = (&'a str, Option<&'a Map<String, Value>>);

/// The command name and arguments of a request object, checked as QEMU checks them.
fn check_request(request: &Map<String, Value>) -> Result<Request<'_>, QmpError> {
    let mut name = None;
    let mut arguments = None;
    for (member, value) in request {
        match (member.as_str(), value) {
            ("execute", Value::String(command)) => name = Some(command.as_str()),
            ("execute", _) => {
                return Err(QmpError::generic(
                    "QMP input member 'execute' must be a string",
                ))
            }
            ("arguments", Value::Object(object)) => arguments = Some(object),
            ("arguments", _) => {
                return Err(QmpError::generic(
                    "QMP input member 'arguments' must be an object",
                ))
            }
            ("id", _) => {}
            (other, _) => {
                return Err(QmpError::generic(format!(
                    "QMP input member '{other}' is unexpected"
                )))
            }
        }
    }
    let name = name.ok_or_else(|| QmpError::generic("QMP input lacks member 'execute'"))?;
    Ok((name, arguments))
}

/// `qmp_capabilities`' arguments: `enable` may list QEMU's capability words; blockmirror
/// offers none (the greeting's list is empty), so naming one is refused.
fn negotiate(arguments: &Map<String, Value>) -> Result<(), QmpError> {
    let mut reader = ArgReader::new(arguments);
    match reader.value("enable") {
        None => {}
        Some(Value::Array(words)) => {
            // Every word is refused, so the first one decides the answer.
            if let Some(word) = words.first() {
                return Err(match word.as_str() {
                    Some("oob") => QmpError::generic("Capability 'oob' not available"),
                    Some(other) => QmpError::generic(format!(
                        "Parameter 'enable[0]' does not accept value '{other}'"
                    )),
                    None => QmpError::generic(
                        "Invalid parameter type for 'enable[0]', expected: string",
                    ),
                });
            }
        }
        Some(_) => {
            return Err(QmpError::generic(
                "Invalid parameter type for 'enable', expected: array",
            ))
        }
    }
    reader.finish()
}

#[cfg(test)]
mod tests;
