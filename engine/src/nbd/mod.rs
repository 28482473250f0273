//! The NBD (Network Block Device) protocol, both sides, sans-io.
//!
//! Nothing here opens a socket, reads a clock, starts a thread or draws a random number:
//! a session is a state machine fed with the bytes that arrived
//! (`handle_input`) and drained of the bytes to send (`poll_output`) and of what
//! happened (`poll_event`). The same inputs always give the same outputs, so both sides
//! can be pumped against each other in memory and fuzzed. The sockets live in
//! [`crate::net`].
//!
//! Only fixed newstyle negotiation and the baseline transmission phase are spoken (no
//! TLS, no extended headers); structured replies and the `base:allocation` metadata
//! context are negotiated when asked for.
//!
//! Submodules:
//! - [`wire`]: the protocol's numbers and every message's byte layout; [`NbdError`].
//! - [`export`]: [`ExportInfo`] and [`BlockSize`], and the transmission flags.
//! - [`command`]: [`Command`], [`Request`], [`ReplyPayload`], [`Extent`].
//! - [`server`]: [`ServerSession`], which checks every request before the driver sees it.
//! - [`client`]: [`ClientSession`], which assembles structured replies per cookie.
//! - [`uri`]: `nbd://` and `nbd+unix://` URIs ([`NbdUri`]).

pub mod client;
pub mod command;
pub mod export;
pub mod server;
pub mod uri;
pub mod wire;

#[cfg(test)]
mod round_trip_tests;

pub use client::{ClientError, ClientEvent, ClientOptions, ClientSession};
pub use command::{Command, Extent, ReplyPayload, Request};
pub use export::{BlockSize, ExportInfo};
pub use server::{CloseReason, ServerEvent, ServerLimits, ServerSession};
pub use uri::{NbdAddress, NbdUri, UriError};
pub use wire::NbdError;
