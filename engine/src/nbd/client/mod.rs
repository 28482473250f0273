//! `ClientSession`: the client side of one NBD connection, sans-io.
//!
//! Handshake (fixed newstyle only): client flags, then `NBD_OPT_STRUCTURED_REPLY` and
//! `NBD_OPT_SET_META_CONTEXT` for `base:allocation` when asked for, then `NBD_OPT_GO` with
//! an `NBD_INFO_BLOCK_SIZE` request, falling back to `NBD_OPT_EXPORT_NAME` when the server
//! does not know `NBD_OPT_GO`. Then requests ([`ClientSession::send`]) and their replies,
//! simple or structured, assembled per cookie.
//!
//! Methods: inputs [`ClientSession::handle_input`]; commands [`ClientSession::send`],
//! [`ClientSession::send_write_header`] (a write whose payload stays with the driver) and
//! [`ClientSession::disconnect`]; outputs [`ClientSession::poll_output`] and
//! [`ClientSession::poll_event`]; getters [`ClientSession::export`],
//! [`ClientSession::is_ready`], [`ClientSession::in_flight`].
//!
//! Driver loop: send every `poll_output` chunk (and, in its place in that order, each
//! header `send_write_header` returned followed by its payload), handle every
//! `poll_event`, read from the socket into `handle_input`, repeat. After `Failed`, close the socket: nothing more
//! happens.
//!
//! Memory: the session waits only for messages whose length it has bounded beforehand:
//! option replies by [`MAX_OPTION_REPLY_LEN`], read data by the length it asked for,
//! block status by [`MAX_EXTENTS_PER_CHUNK`] extents, error chunks by the protocol's
//! string limit. A server that announces more fails the session before anything is
//! buffered or allocated.
//!
//! Submodules, one job each:
//! - `requests`: checking a command against the export and queueing its request.
//! - `handshake`: option negotiation, from the first option to the export's details.
//! - `replies`: simple replies and structured-reply chunks, assembled per cookie.

mod handshake;
mod replies;
mod requests;

use std::collections::{HashMap, VecDeque};

use super::command::{Extent, ReplyPayload};
use super::export::ExportInfo;
use super::wire::*;

/// The longest option reply data accepted (names and messages are at most 4 KiB).
pub const MAX_OPTION_REPLY_LEN: u32 = 16 << 10;
/// The most extents accepted in one `NBD_REPLY_TYPE_BLOCK_STATUS` chunk.
pub const MAX_EXTENTS_PER_CHUNK: u32 = 1 << 20;
/// The largest read or write this client sends, whatever larger maximum a server offers:
/// a read's buffer is allocated whole.
pub const MAX_CLIENT_PAYLOAD: u32 = 32 << 20;

/// What to negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// Ask for `NBD_OPT_STRUCTURED_REPLY` (needed for block status).
    pub structured_replies: bool,
    /// Ask for the `base:allocation` metadata context (needs structured replies).
    pub base_allocation: bool,
}

impl Default for ClientOptions {
    /// Both.
    fn default() -> Self {
        Self {
            structured_replies: true,
            base_allocation: true,
        }
    }
}

/// Why the session failed or a request was refused before sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A message did not start with its magic number.
    #[error("bad magic number from the server")]
    BadMagic,
    /// The server does not speak fixed newstyle negotiation.
    #[error("the server does not support fixed newstyle negotiation")]
    NotFixedNewstyle,
    /// The server has no export by that name.
    #[error("the server has no export named {0:?}")]
    UnknownExport(String),
    /// The server refused a needed option.
    #[error("the server refused option {option} with reply {reply:#x}: {message}")]
    OptionRefused {
        /// The option code.
        option: u32,
        /// The error reply type.
        reply: u32,
        /// The server's message, if any.
        message: String,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ServerShutdown,
    /// The server broke the protocol (an impossible length, an unexpected reply...).
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    /// `send` before the handshake ended.
    #[error("the handshake has not finished")]
    NotReady,
    /// `send` after a failure or `disconnect`.
    #[error("the session is closed")]
    Closed,
    /// The range does not lie within the export.
    #[error("range {offset}+{length} lies outside the export of {size} bytes")]
    OutOfRange {
        /// First byte.
        offset: u64,
        /// Bytes.
        length: u64,
        /// The export's size.
        size: u64,
    },
    /// The range is not aligned to the export's minimum block size.
    #[error("range {offset}+{length} is not aligned to {minimum} bytes")]
    Misaligned {
        /// First byte.
        offset: u64,
        /// Bytes.
        length: u64,
        /// The minimum block size.
        minimum: u32,
    },
    /// A read or write longer than the maximum payload.
    #[error("{length} bytes are more than the maximum payload of {maximum}")]
    TooLong {
        /// Bytes asked for.
        length: u64,
        /// The maximum.
        maximum: u32,
    },
    /// A request of length 0 (the protocol leaves their meaning unspecified).
    #[error("a request of length 0")]
    ZeroLength,
    /// The export is read-only.
    #[error("the export is read-only")]
    ReadOnly,
    /// The server did not offer this command or flag.
    #[error("the server does not support {0}")]
    Unsupported(&'static str),
}

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The handshake ended; requests may be sent (emitted exactly once). The block size's
    /// maximum is capped at [`MAX_CLIENT_PAYLOAD`].
    Ready(ExportInfo),
    /// The answer to request `handle`.
    Reply {
        /// The handle `send` returned.
        handle: u64,
        /// The payload, or the server's error.
        result: Result<ReplyPayload, NbdError>,
    },
    /// The session failed (emitted exactly once); requests in flight get no reply.
    Failed(ClientError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    StructuredReply,
    SetMetaContext,
    Go,
    ExportName,
    Ready,
    /// `disconnect` was called: replies still in flight are delivered, nothing is sent.
    Disconnected,
    Failed,
}

#[derive(Debug)]
enum Pending {
    Read {
        offset: u64,
        length: u32,
        data: Vec<u8>,
        covered: u64,
    },
    BlockStatus {
        length: u32,
        req_one: bool,
        extents: Option<Vec<Extent>>,
    },
    Other,
}

#[derive(Debug)]
struct InFlight {
    pending: Pending,
    error: Option<NbdError>,
}

/// The client side of one connection. See the module doc.
#[derive(Debug)]
pub struct ClientSession {
    export_name: String,
    options: ClientOptions,
    phase: Phase,
    input: Vec<u8>,
    output: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
    no_zeroes: bool,
    structured: bool,
    context_id: Option<u32>,
    info: Option<ExportInfo>,
    next_handle: u64,
    in_flight: HashMap<u64, InFlight>,
}

impl ClientSession {
    /// A session that will open `export`; nothing is sent before the server's greeting.
    pub fn new(export: &str, options: ClientOptions) -> Self {
        Self {
            export_name: export.to_owned(),
            options,
            phase: Phase::Greeting,
            input: Vec::new(),
            output: VecDeque::new(),
            events: VecDeque::new(),
            no_zeroes: false,
            structured: false,
            context_id: None,
            info: None,
            next_handle: 1,
            in_flight: HashMap::new(),
        }
    }

    /// Bytes from the server: parsed as far as they go.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Failed {
            return;
        }
        self.input.extend_from_slice(bytes);
        let mut input = std::mem::take(&mut self.input);
        let mut pos = 0;
        while let Some(used) = self.step(&input[pos..]) {
            pos += used;
        }
        if self.phase != Phase::Failed {
            input.drain(..pos);
            self.input = input;
        }
    }

    /// The next bytes to send, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Vec<u8>> {
        self.output.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The export, once ready.
    pub fn export(&self) -> Option<&ExportInfo> {
        self.info
            .as_ref()
            .filter(|_| matches!(self.phase, Phase::Ready | Phase::Disconnected))
    }

    /// Whether requests may be sent.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Whether the session failed.
    pub fn is_failed(&self) -> bool {
        self.phase == Phase::Failed
    }

    /// Whether `NBD_CMD_BLOCK_STATUS` may be sent.
    pub fn can_block_status(&self) -> bool {
        self.structured && self.context_id.is_some()
    }

    /// Requests sent and not answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes received and not yet parsed.
    pub fn buffered_bytes(&self) -> usize {
        self.input.len()
    }

    fn fail(&mut self, error: ClientError) {
        if self.phase != Phase::Failed {
            self.phase = Phase::Failed;
            self.in_flight.clear();
            self.output.clear();
            self.events.push_back(ClientEvent::Failed(error));
        }
    }

    fn protocol(&mut self, what: impl Into<String>) {
        self.fail(ClientError::Protocol(what.into()));
    }

    /// Parses one message from the front of `input`: the bytes it used, or `None` when
    /// more are needed (or the session failed).
    fn step(&mut self, input: &[u8]) -> Option<usize> {
        match self.phase {
            Phase::Greeting => {
                let greeting: &[u8; GREETING_LEN] =
                    input.get(..GREETING_LEN)?.try_into().expect("18 bytes");
                let Some(flags) = decode_greeting(greeting) else {
                    self.fail(ClientError::BadMagic);
                    return None;
                };
                if flags & FLAG_FIXED_NEWSTYLE == 0 {
                    self.fail(ClientError::NotFixedNewstyle);
                    return None;
                }
                self.no_zeroes = flags & FLAG_NO_ZEROES != 0;
                let client_flags =
                    FLAG_C_FIXED_NEWSTYLE | if self.no_zeroes { FLAG_C_NO_ZEROES } else { 0 };
                self.output.push_back(client_flags.to_be_bytes().to_vec());
                if self.options.structured_replies {
                    self.output
                        .push_back(encode_option(OptionCode::StructuredReply, &[]));
                    self.phase = Phase::StructuredReply;
                } else {
                    self.send_go();
                }
                Some(GREETING_LEN)
            }
            Phase::StructuredReply | Phase::SetMetaContext | Phase::Go => {
                let header: &[u8; OPTION_REPLY_HEADER_LEN] = input
                    .get(..OPTION_REPLY_HEADER_LEN)?
                    .try_into()
                    .expect("20 bytes");
                let Some((option, reply, length)) = decode_option_reply_header(header) else {
                    self.fail(ClientError::BadMagic);
                    return None;
                };
                if length > MAX_OPTION_REPLY_LEN {
                    self.protocol(format!("option reply of {length} bytes"));
                    return None;
                }
                let end = OPTION_REPLY_HEADER_LEN + length as usize;
                let data = input.get(OPTION_REPLY_HEADER_LEN..end)?;
                self.option_reply(option, reply, data);
                Some(end)
            }
            Phase::ExportName => {
                let needed = 10
                    + if self.no_zeroes {
                        0
                    } else {
                        EXPORT_NAME_ZEROES
                    };
                let bytes = input.get(..needed)?;
                let mut c = Cursor::new(bytes);
                let size = c.u64().expect("10 bytes");
                let flags = c.u16().expect("10 bytes");
                self.become_ready(ExportInfo::from_flags(
                    self.export_name.clone(),
                    size,
                    flags,
                ));
                Some(needed)
            }
            Phase::Ready | Phase::Disconnected => self.transmission_reply(input),
            Phase::Failed => None,
        }
    }
}
