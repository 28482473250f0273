//! QEMU's monitor protocol (QMP), so that management code written for QEMU (the
//! `qemu.qmp` Python package, `qmp-shell`) can drive blockmirror's mirror jobs unchanged.
//!
//! Sans-io, like the job itself: no sockets, no threads, no clock. Bytes from the client go
//! in, reply and event lines come out, and each valid request comes out as a typed
//! [`Command`] for the driver to run against its jobs; the driver hands back the result
//! (or a [`QmpError`]) and the session writes the reply. The driver owns the socket.
//!
//! ```
//! use blockmirror_engine::qmp::{Command, Greeting, QmpSession};
//! use serde_json::json;
//!
//! let mut session = QmpSession::new(Greeting::blockmirror());
//! let greeting = session.poll_output().unwrap();
//! assert!(greeting.starts_with(b"{\"QMP\""));
//! session.handle_input(b"{\"execute\": \"qmp_capabilities\"}\r\n{\"execute\": \"query-jobs\", \"id\": 1}\r\n");
//! assert_eq!(session.poll_output().unwrap(), b"{\"return\":{}}\r\n");
//! let pending = session.poll_command().unwrap();
//! assert_eq!(pending.command, Command::QueryJobs);
//! session.handle_result(pending.id, Ok(json!([])));
//! assert_eq!(session.poll_output().unwrap(), b"{\"id\":1,\"return\":[]}\r\n");
//! ```
//!
//! Modules:
//! - [`framing`]: the byte stream split into JSON values, bounded.
//! - [`session`]: [`QmpSession`], one connection: negotiation, dispatch, reply order.
//! - [`commands`]: the table of commands and their typed arguments.
//! - [`error`]: [`QmpError`] and QEMU's error classes.
//! - [`events`]: QMP events from job events, and the `query-block-jobs` / `query-jobs` entries.
//! - [`verbs`]: QEMU's words for the job's refusals and for names that find nothing.

pub mod commands;
pub mod error;
pub mod events;
pub mod framing;
pub mod session;
pub mod verbs;

#[cfg(test)]
mod qemu_reference;

pub use commands::{Command, DriveMirrorArgs, NewImageMode};
pub use error::{ErrorClass, QmpError};
pub use events::{block_job_info, job_events, job_info, JobView, QmpEvent};
pub use session::{Greeting, PendingCommand, QmpSession};
