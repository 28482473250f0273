//! `ServerSession`: the server side of one NBD connection, sans-io.
//!
//! The session speaks fixed newstyle negotiation and the transmission phase. It hands
//! the driver only requests that are valid for the chosen export: out-of-range, misaligned,
//! read-only, unsupported or badly flagged requests are answered here with the protocol's
//! error and never become a [`Request`].
//!
//! Methods: inputs [`ServerSession::handle_input`] (bytes from the socket) and
//! [`ServerSession::handle_reply`] (the driver's answer to a request); outputs
//! [`ServerSession::poll_output`] (bytes to send, in order) and
//! [`ServerSession::poll_event`]; getters [`ServerSession::wants_input`],
//! [`ServerSession::is_closed`], [`ServerSession::export`].
//!
//! Driver loop:
//! 1. Send every `poll_output` chunk, in order.
//! 2. Handle every `poll_event`: run each request (in any order, several at once) and
//!    feed its answer to `handle_reply`. On `Closed`, send the remaining output, then
//!    close the socket.
//! 3. If `wants_input`, read from the socket into `handle_input`; otherwise wait for a
//!    request to finish (this is the back-pressure). Go to 1.
//!
//! Memory: bytes kept between calls are bounded by the limits: unparsed input by one
//! request header plus `max_payload` (a driver that keeps feeding input while
//! `wants_input` is false has the session closed with [`CloseReason::InputOverrun`]);
//! requests in flight by `max_in_flight`, and their payloads plus unsent output by
//! `max_buffered_bytes` (plus at most one message past it).
//!
//! Submodules, one job each:
//! - `options`: option haggling, from the first option to the chosen export.
//! - `transmission`: checking each request against the export before it becomes an event.
//! - `reply`: the driver's answers checked against their request and encoded.

mod options;
mod reply;
mod transmission;

use std::collections::{HashMap, VecDeque};

use super::command::Request;
use super::export::ExportInfo;
use super::wire::*;

/// The metadata context id the server gives `base:allocation`.
const BASE_ALLOCATION_ID: u32 = 1;
/// A structured read's data is sent in `NBD_REPLY_TYPE_OFFSET_DATA` chunks of at most this
/// many bytes, so no single output buffer is much larger than that.
pub const READ_CHUNK_BYTES: usize = 1 << 20;
/// The most extents one `NBD_REPLY_TYPE_BLOCK_STATUS` chunk carries (more are dropped:
/// the client asks again from where the answer ended).
pub const MAX_EXTENTS_PER_REPLY: usize = 1 << 20;

/// What the session accepts before refusing or disconnecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// The largest read or write payload; a longer write disconnects, a longer read fails.
    pub max_payload: u32,
    /// The largest option data; longer gets `NBD_REP_ERR_TOO_BIG` and a disconnect.
    pub max_option_length: u32,
    /// Options per handshake; one more gets `NBD_REP_ERR_POLICY` and a disconnect.
    pub max_options: u32,
    /// Requests handed out and not yet replied to before `wants_input` turns false.
    pub max_in_flight: usize,
    /// Bytes of in-flight payloads (write data held, read data to come) plus unsent
    /// output before `wants_input` turns false.
    pub max_buffered_bytes: usize,
}

impl Default for ServerLimits {
    /// 32 MiB payloads (the protocol's interoperable maximum), 16 KiB options, 64 options,
    /// 64 requests in flight and 64 MiB buffered.
    fn default() -> Self {
        Self {
            max_payload: 32 << 20,
            max_option_length: 16 << 10,
            max_options: 64,
            max_in_flight: 64,
            max_buffered_bytes: 64 << 20,
        }
    }
}

/// Why a session closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent `NBD_CMD_DISC` (every in-flight reply was queued first).
    #[error("the client disconnected")]
    ClientDisconnected,
    /// The client sent `NBD_OPT_ABORT`.
    #[error("the client aborted the handshake")]
    ClientAborted,
    /// A message did not start with its magic number: the stream cannot be followed.
    #[error("bad magic number from the client")]
    BadMagic,
    /// The client flags had bits the server does not know.
    #[error("unknown client flags {0:#x}")]
    UnknownClientFlags(u32),
    /// `NBD_OPT_EXPORT_NAME` named no export (that option cannot be refused otherwise).
    #[error("no export named {0:?}")]
    UnknownExport(String),
    /// An option's data was longer than `max_option_length`.
    #[error("option of {length} bytes is longer than the limit")]
    OptionTooLong {
        /// The announced length.
        length: u32,
    },
    /// More than `max_options` options.
    #[error("too many options")]
    TooManyOptions,
    /// A write's payload was longer than `max_payload`.
    #[error("write payload of {length} bytes is longer than the limit")]
    PayloadTooLarge {
        /// The announced length.
        length: u32,
    },
    /// A request reused the cookie of one still in flight.
    #[error("cookie {0:#x} is already in flight")]
    DuplicateHandle(u64),
    /// The driver kept feeding input while `wants_input` was false.
    #[error("input kept arriving past the buffer limit")]
    InputOverrun,
}

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The handshake ended: transmission on this export begins (emitted exactly once).
    ExportChosen {
        /// The export's name.
        name: String,
    },
    /// A valid request to run; answer it with `handle_reply`.
    Request(Request),
    /// The session ended (emitted exactly once); send the remaining output, then close.
    Closed(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ClientFlags,
    Options,
    Transmission,
    /// `NBD_CMD_DISC` received; waiting for in-flight replies.
    Disconnecting,
    Closed,
}

/// What a reply to an in-flight request must look like.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Data { offset: u64, length: u32 },
    Extents { length: u32, req_one: bool },
    Nothing,
}

#[derive(Debug)]
struct InFlight {
    expect: Expect,
    /// Counted in `in_flight_bytes`.
    bytes: usize,
}

/// The server side of one connection. See the module doc for the driver loop.
#[derive(Debug)]
pub struct ServerSession {
    exports: Vec<ExportInfo>,
    limits: ServerLimits,
    phase: Phase,
    /// Bytes received and not yet parsed.
    input: Vec<u8>,
    output: VecDeque<Vec<u8>>,
    output_bytes: usize,
    events: VecDeque<ServerEvent>,
    no_zeroes: bool,
    options_seen: u32,
    structured: bool,
    /// The export `base:allocation` was selected for by the last `NBD_OPT_SET_META_CONTEXT`.
    meta_context_export: Option<String>,
    export: Option<ExportInfo>,
    base_allocation: bool,
    in_flight: HashMap<u64, InFlight>,
    in_flight_bytes: usize,
}

impl ServerSession {
    /// A session offering `exports`; the greeting is queued at once.
    pub fn new(exports: Vec<ExportInfo>, limits: ServerLimits) -> Self {
        let mut session = Self {
            exports,
            limits,
            phase: Phase::ClientFlags,
            input: Vec::new(),
            output: VecDeque::new(),
            output_bytes: 0,
            events: VecDeque::new(),
            no_zeroes: false,
            options_seen: 0,
            structured: false,
            meta_context_export: None,
            export: None,
            base_allocation: false,
            in_flight: HashMap::new(),
            in_flight_bytes: 0,
        };
        session.push_output(encode_greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
        session
    }

    /// Bytes from the client: parsed as far as they go (and as far as the limits allow).
    pub fn handle_input(&mut self, bytes: &[u8]) {
        if matches!(self.phase, Phase::Closed | Phase::Disconnecting) {
            return;
        }
        self.input.extend_from_slice(bytes);
        self.process();
        let bound = REQUEST_HEADER_LEN + self.limits.max_payload as usize;
        if self.phase != Phase::Closed && self.input.len() > bound {
            self.close(CloseReason::InputOverrun);
        }
    }

    /// Whether the driver should read more input now: false while at the in-flight or
    /// buffered-bytes limit, after `NBD_CMD_DISC`, and once closed.
    #[must_use]
    pub fn wants_input(&self) -> bool {
        matches!(
            self.phase,
            Phase::ClientFlags | Phase::Options | Phase::Transmission
        ) && !self.at_limit()
    }

    /// The next bytes to send, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Vec<u8>> {
        let bytes = self.output.pop_front()?;
        self.output_bytes -= bytes.len();
        Some(bytes)
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Whether the session has ended (a `Closed` event was queued).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The export chosen by the handshake, once in transmission.
    pub fn export(&self) -> Option<&ExportInfo> {
        self.export.as_ref()
    }

    /// Requests handed out and not answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes held for the session: unparsed input, in-flight payloads and unsent output.
    pub fn buffered_bytes(&self) -> usize {
        self.input.len() + self.in_flight_bytes + self.output_bytes
    }

    fn at_limit(&self) -> bool {
        self.in_flight.len() >= self.limits.max_in_flight
            || self.in_flight_bytes + self.output_bytes >= self.limits.max_buffered_bytes
    }

    fn push_output(&mut self, bytes: Vec<u8>) {
        self.output_bytes += bytes.len();
        self.output.push_back(bytes);
    }

    fn close(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.input = Vec::new();
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.events.push_back(ServerEvent::Closed(reason));
    }

    /// Parses complete messages from `input`, then drops the consumed bytes once.
    fn process(&mut self) {
        let mut pos = 0;
        loop {
            let available = self.input.len().saturating_sub(pos); // `close` empties `input`
            match self.phase {
                Phase::ClientFlags => {
                    if available < 4 {
                        break;
                    }
                    let flags =
                        u32::from_be_bytes(self.input[pos..pos + 4].try_into().expect("4 bytes"));
                    pos += 4;
                    if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
                        self.close(CloseReason::UnknownClientFlags(flags));
                        break;
                    }
                    self.no_zeroes = flags & FLAG_C_NO_ZEROES != 0;
                    self.phase = Phase::Options;
                }
                Phase::Options => {
                    if available < OPTION_HEADER_LEN {
                        break;
                    }
                    let header = self.input[pos..pos + OPTION_HEADER_LEN]
                        .try_into()
                        .expect("16 bytes");
                    let Some((option, length)) = decode_option_header(header) else {
                        self.close(CloseReason::BadMagic);
                        break;
                    };
                    self.options_seen += 1;
                    if self.options_seen > self.limits.max_options {
                        self.push_output(encode_option_reply(
                            option,
                            OptionReply::ErrPolicy,
                            b"too many options",
                        ));
                        self.close(CloseReason::TooManyOptions);
                        break;
                    }
                    if length > self.limits.max_option_length {
                        self.push_output(encode_option_reply(
                            option,
                            OptionReply::ErrTooBig,
                            b"option too long",
                        ));
                        self.close(CloseReason::OptionTooLong { length });
                        break;
                    }
                    let end = OPTION_HEADER_LEN + length as usize;
                    if available < end {
                        self.options_seen -= 1; // counted again when it is complete
                        break;
                    }
                    let data = self.input[pos + OPTION_HEADER_LEN..pos + end].to_vec();
                    pos += end;
                    self.handle_option(option, &data);
                }
                Phase::Transmission => {
                    if self.at_limit() || available < REQUEST_HEADER_LEN {
                        break;
                    }
                    let bytes = self.input[pos..pos + REQUEST_HEADER_LEN]
                        .try_into()
                        .expect("28 bytes");
                    let Some(header) = RequestHeader::decode(bytes) else {
                        self.close(CloseReason::BadMagic);
                        break;
                    };
                    let payload = if header.command == CommandType::Write {
                        header.length
                    } else {
                        0
                    };
                    if payload > self.limits.max_payload {
                        self.close(CloseReason::PayloadTooLarge { length: payload });
                        break;
                    }
                    let end = REQUEST_HEADER_LEN + payload as usize;
                    if available < end {
                        break;
                    }
                    let data = self.input[pos + REQUEST_HEADER_LEN..pos + end].to_vec();
                    pos += end;
                    self.handle_request(header, data);
                }
                Phase::Disconnecting | Phase::Closed => {
                    pos = self.input.len();
                    break;
                }
            }
        }
        if self.phase == Phase::Closed {
            self.input = Vec::new();
        } else {
            self.input.drain(..pos);
        }
    }
}
