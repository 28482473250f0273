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

use std::collections::{HashMap, VecDeque};

use super::command::{Command, Extent, ReplyPayload};
use super::export::{BlockSize, ExportInfo};
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

/// A request as the checks before sending see it.
#[derive(Debug, Clone, Copy)]
struct Shape {
    offset: u64,
    length: u64,
    fua: bool,
    /// The command or flag the server must have offered, when it did not.
    needs: Option<&'static str>,
    writes: bool,
    /// A read or write: bounded by the maximum payload.
    payload: bool,
    /// `NBD_CMD_FLUSH`: no range.
    flush: bool,
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

    /// Queues a request and returns its handle. Refused (nothing sent) unless ready and
    /// unless the command fits the export: range, alignment, payload size, read-only, and
    /// the commands and flags the server offered. A write's header and payload are queued
    /// as one output chunk (a copy of the payload; [`send_write_header`] avoids it).
    ///
    /// [`send_write_header`]: Self::send_write_header
    pub fn send(&mut self, command: Command) -> Result<u64, ClientError> {
        let info = self.ready_info()?;
        Self::check(info, &self.shape(info, &command))?;
        let (offset, length) = command.range();
        let length32 = u32::try_from(length).expect("checked against the maximum payload");
        let (kind, flags, pending) = match &command {
            Command::Read { offset, length } => (
                CommandType::Read,
                0,
                Pending::Read {
                    offset: *offset,
                    length: *length,
                    data: Vec::new(),
                    covered: 0,
                },
            ),
            Command::Write { fua, .. } => (CommandType::Write, fua_flag(*fua), Pending::Other),
            Command::Flush => (CommandType::Flush, 0, Pending::Other),
            Command::Trim { fua, .. } => (CommandType::Trim, fua_flag(*fua), Pending::Other),
            Command::WriteZeroes {
                fua,
                no_hole,
                fast_zero,
                ..
            } => {
                let mut flags = fua_flag(*fua);
                if *no_hole {
                    flags |= CMD_FLAG_NO_HOLE;
                }
                if *fast_zero {
                    flags |= CMD_FLAG_FAST_ZERO;
                }
                (CommandType::WriteZeroes, flags, Pending::Other)
            }
            Command::BlockStatus {
                length, req_one, ..
            } => (
                CommandType::BlockStatus,
                if *req_one { CMD_FLAG_REQ_ONE } else { 0 },
                Pending::BlockStatus {
                    length: *length,
                    req_one: *req_one,
                    extents: None,
                },
            ),
        };
        let header = RequestHeader {
            flags,
            command: kind,
            handle: 0,
            offset,
            length: length32,
        };
        let (handle, header) = self.register(header, pending);
        let mut bytes = header.to_vec();
        if let Command::Write { data, .. } = command {
            bytes.extend_from_slice(&data);
        }
        self.output.push_back(bytes);
        Ok(handle)
    }

    /// Accounts an `NBD_CMD_WRITE` of `length` bytes at `offset` as in flight and returns
    /// its handle and its request header, leaving the payload with the caller: no copy of
    /// it is made. Refused (nothing accounted) under the same checks as [`send`].
    ///
    /// The driver must write the returned header, then exactly `length` payload bytes,
    /// right after every chunk already taken from [`poll_output`] and before any later
    /// one, with nothing in between: the header announces the payload, so a stream
    /// without it is out of step for good (a driver that cannot write the payload must
    /// close the connection).
    ///
    /// [`send`]: Self::send
    /// [`poll_output`]: Self::poll_output
    pub fn send_write_header(
        &mut self,
        offset: u64,
        length: usize,
        fua: bool,
    ) -> Result<(u64, [u8; REQUEST_HEADER_LEN]), ClientError> {
        let info = self.ready_info()?;
        let write = Shape {
            offset,
            length: length as u64,
            fua,
            needs: None,
            writes: true,
            payload: true,
            flush: false,
        };
        Self::check(info, &write)?;
        let header = RequestHeader {
            flags: fua_flag(fua),
            command: CommandType::Write,
            handle: 0,
            offset,
            length: u32::try_from(length).expect("checked against the maximum payload"),
        };
        Ok(self.register(header, Pending::Other))
    }

    /// The export when requests may be sent, else why not.
    fn ready_info(&self) -> Result<&ExportInfo, ClientError> {
        match self.phase {
            Phase::Ready => Ok(self
                .info
                .as_ref()
                .expect("ready implies the export is known")),
            Phase::Disconnected | Phase::Failed => Err(ClientError::Closed),
            _ => Err(ClientError::NotReady),
        }
    }

    /// Gives a checked request the next handle and accounts it in flight, before any of
    /// its bytes can leave: a reply, however quick, always finds its request.
    fn register(
        &mut self,
        mut header: RequestHeader,
        pending: Pending,
    ) -> (u64, [u8; REQUEST_HEADER_LEN]) {
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        header.handle = handle;
        self.in_flight.insert(
            handle,
            InFlight {
                pending,
                error: None,
            },
        );
        (handle, header.encode())
    }

    /// Ends the session: `NBD_CMD_DISC` once ready (replies in flight still arrive);
    /// during the handshake, nothing more is sent. Later `send`s fail with `Closed`.
    pub fn disconnect(&mut self) {
        if self.phase == Phase::Ready {
            let header = RequestHeader {
                flags: 0,
                command: CommandType::Disc,
                handle: 0,
                offset: 0,
                length: 0,
            };
            self.output.push_back(header.encode().to_vec());
        }
        if self.phase != Phase::Failed {
            self.phase = Phase::Disconnected;
        }
    }

    /// What `check` needs to know of `command`.
    fn shape(&self, info: &ExportInfo, command: &Command) -> Shape {
        let (offset, length) = command.range();
        let (fua, needs) = match command {
            Command::Read { .. } => (false, None),
            Command::Write { fua, .. } => (*fua, None),
            Command::Flush => (false, (!info.can_flush).then_some("NBD_CMD_FLUSH")),
            Command::Trim { fua, .. } => (*fua, (!info.can_trim).then_some("NBD_CMD_TRIM")),
            Command::WriteZeroes { fua, fast_zero, .. } => (
                *fua,
                if !info.can_write_zeroes {
                    Some("NBD_CMD_WRITE_ZEROES")
                } else if *fast_zero && !info.can_fast_zero {
                    Some("NBD_CMD_FLAG_FAST_ZERO")
                } else {
                    None
                },
            ),
            Command::BlockStatus { .. } => (
                false,
                (!self.can_block_status()).then_some("NBD_CMD_BLOCK_STATUS"),
            ),
        };
        Shape {
            offset,
            length,
            fua,
            needs,
            writes: command.writes(),
            payload: matches!(command, Command::Read { .. } | Command::Write { .. }),
            flush: matches!(command, Command::Flush),
        }
    }

    fn check(info: &ExportInfo, request: &Shape) -> Result<(), ClientError> {
        let &Shape {
            offset,
            length,
            fua,
            needs,
            writes,
            payload,
            flush,
        } = request;
        if let Some(what) = needs {
            return Err(ClientError::Unsupported(what));
        }
        if fua && !info.can_fua {
            return Err(ClientError::Unsupported("NBD_CMD_FLAG_FUA"));
        }
        if writes && info.read_only {
            return Err(ClientError::ReadOnly);
        }
        if flush {
            return Ok(());
        }
        if length == 0 {
            return Err(ClientError::ZeroLength);
        }
        let maximum = info.block_size.maximum;
        if payload && length > u64::from(maximum) {
            return Err(ClientError::TooLong { length, maximum });
        }
        if length > u64::from(u32::MAX) {
            return Err(ClientError::TooLong {
                length,
                maximum: u32::MAX,
            });
        }
        let minimum = info.block_size.minimum;
        if offset % u64::from(minimum) != 0 || length % u64::from(minimum) != 0 {
            return Err(ClientError::Misaligned {
                offset,
                length,
                minimum,
            });
        }
        if offset.checked_add(length).is_none_or(|end| end > info.size) {
            return Err(ClientError::OutOfRange {
                offset,
                length,
                size: info.size,
            });
        }
        Ok(())
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

    fn send_go(&mut self) {
        let mut data = Vec::new();
        put_string32(&mut data, &self.export_name);
        data.extend_from_slice(&2u16.to_be_bytes());
        data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        data.extend_from_slice(&INFO_DESCRIPTION.to_be_bytes());
        self.output.push_back(encode_option(OptionCode::Go, &data));
        self.info = None;
        self.phase = Phase::Go;
    }

    fn option_reply(&mut self, option: u32, reply: OptionReply, data: &[u8]) {
        let expected = match self.phase {
            Phase::StructuredReply => OptionCode::StructuredReply,
            Phase::SetMetaContext => OptionCode::SetMetaContext,
            _ => OptionCode::Go,
        };
        if option != expected.to_wire() {
            return self.protocol(format!(
                "reply to option {option} while waiting for {}",
                expected.to_wire()
            ));
        }
        if reply == OptionReply::ErrShutdown {
            return self.fail(ClientError::ServerShutdown);
        }
        match (self.phase, reply) {
            (Phase::StructuredReply, OptionReply::Ack) => {
                self.structured = true;
                self.after_structured();
            }
            (Phase::StructuredReply, r) if r.is_error() => self.after_structured(),
            (Phase::SetMetaContext, OptionReply::MetaContext) => {
                let mut c = Cursor::new(data);
                let Some(id) = c.u32() else {
                    return self.protocol("short NBD_REP_META_CONTEXT");
                };
                if c.rest() == BASE_ALLOCATION.as_bytes() {
                    self.context_id = Some(id);
                }
            }
            (Phase::SetMetaContext, OptionReply::Ack) => self.send_go(),
            (Phase::SetMetaContext, r) if r.is_error() => {
                self.context_id = None;
                self.send_go();
            }
            (Phase::Go, OptionReply::Info) => self.go_info(data),
            (Phase::Go, OptionReply::Ack) => match self.info.take() {
                Some(info) => self.become_ready(info),
                None => self.protocol("NBD_OPT_GO succeeded without NBD_INFO_EXPORT"),
            },
            (Phase::Go, OptionReply::ErrUnsup) => {
                self.output.push_back(encode_option(
                    OptionCode::ExportName,
                    self.export_name.as_bytes(),
                ));
                self.phase = Phase::ExportName;
            }
            (Phase::Go, OptionReply::ErrUnknown) => {
                self.fail(ClientError::UnknownExport(self.export_name.clone()))
            }
            (Phase::Go, r) if r.is_error() => self.fail(ClientError::OptionRefused {
                option,
                reply: r.to_wire(),
                message: String::from_utf8_lossy(&data[..data.len().min(MAX_STRING_LEN)])
                    .into_owned(),
            }),
            (_, r) => self.protocol(format!("unexpected option reply {:#x}", r.to_wire())),
        }
    }

    fn after_structured(&mut self) {
        if self.structured && self.options.base_allocation {
            let mut data = Vec::new();
            put_string32(&mut data, &self.export_name);
            data.extend_from_slice(&1u32.to_be_bytes());
            put_string32(&mut data, BASE_ALLOCATION);
            self.output
                .push_back(encode_option(OptionCode::SetMetaContext, &data));
            self.phase = Phase::SetMetaContext;
        } else {
            self.send_go();
        }
    }

    fn go_info(&mut self, data: &[u8]) {
        let mut c = Cursor::new(data);
        let Some(kind) = c.u16() else {
            return self.protocol("short NBD_REP_INFO");
        };
        match kind {
            INFO_EXPORT => {
                let (Some(size), Some(flags), 0) = (c.u64(), c.u16(), c.remaining()) else {
                    return self.protocol("NBD_INFO_EXPORT of the wrong length");
                };
                let mut info = ExportInfo::from_flags(self.export_name.clone(), size, flags);
                if let Some(old) = self.info.take() {
                    info.block_size = old.block_size;
                    info.description = old.description;
                }
                self.info = Some(info);
            }
            INFO_BLOCK_SIZE => {
                let (Some(minimum), Some(preferred), Some(maximum), 0) =
                    (c.u32(), c.u32(), c.u32(), c.remaining())
                else {
                    return self.protocol("NBD_INFO_BLOCK_SIZE of the wrong length");
                };
                // Only what this client relies on is checked: alignment is a power of two
                // the protocol allows, and a maximum payload holds at least one block.
                if !minimum.is_power_of_two() || minimum > 1 << 16 || maximum < minimum {
                    return self.protocol(format!(
                        "invalid block sizes {minimum}/{preferred}/{maximum}"
                    ));
                }
                let info = self
                    .info
                    .get_or_insert_with(|| ExportInfo::from_flags("", 0, 0));
                info.block_size = BlockSize {
                    minimum,
                    preferred: preferred.max(minimum),
                    maximum,
                };
            }
            INFO_DESCRIPTION => {
                let text = String::from_utf8_lossy(c.rest()).into_owned();
                self.info
                    .get_or_insert_with(|| ExportInfo::from_flags("", 0, 0))
                    .description = text;
            }
            _ => {} // NBD_INFO_NAME and unknown types are ignored, as the protocol asks.
        }
    }

    fn become_ready(&mut self, mut info: ExportInfo) {
        info.name = self.export_name.clone();
        let maximum = info.block_size.maximum.min(MAX_CLIENT_PAYLOAD);
        // Keep the cap a multiple of the alignment so split requests stay aligned.
        info.block_size.maximum = (maximum / info.block_size.minimum * info.block_size.minimum)
            .max(info.block_size.minimum);
        if !self.structured {
            self.context_id = None;
        }
        self.info = Some(info.clone());
        self.phase = Phase::Ready;
        self.events.push_back(ClientEvent::Ready(info));
    }

    fn transmission_reply(&mut self, input: &[u8]) -> Option<usize> {
        let magic = u32::from_be_bytes(input.get(..4)?.try_into().expect("4 bytes"));
        match magic {
            SIMPLE_REPLY_MAGIC => self.simple_reply(input),
            STRUCTURED_REPLY_MAGIC if self.structured => self.structured_chunk(input),
            STRUCTURED_REPLY_MAGIC => {
                self.protocol("structured reply that was not negotiated");
                None
            }
            _ => {
                self.fail(ClientError::BadMagic);
                None
            }
        }
    }

    fn simple_reply(&mut self, input: &[u8]) -> Option<usize> {
        let mut c = Cursor::new(input.get(..SIMPLE_REPLY_HEADER_LEN)?);
        c.u32();
        let error = c.u32().expect("16 bytes");
        let handle = c.u64().expect("16 bytes");
        let Some(entry) = self.in_flight.get(&handle) else {
            self.protocol(format!("reply for cookie {handle:#x} not in flight"));
            return None;
        };
        let result = match (&entry.pending, error) {
            (_, error) if error != 0 => Err(NbdError::from_wire(error)),
            (Pending::Read { .. }, _) if self.structured => {
                self.protocol("simple reply to a read with structured replies");
                return None;
            }
            (Pending::Read { length, .. }, _) => {
                let end = SIMPLE_REPLY_HEADER_LEN + *length as usize;
                let data = input.get(SIMPLE_REPLY_HEADER_LEN..end)?.to_vec();
                self.in_flight.remove(&handle);
                self.events.push_back(ClientEvent::Reply {
                    handle,
                    result: Ok(ReplyPayload::Data(data)),
                });
                return Some(end);
            }
            (Pending::BlockStatus { .. }, _) => {
                self.protocol("simple reply to a successful block status");
                return None;
            }
            (Pending::Other, _) => Ok(ReplyPayload::None),
        };
        self.in_flight.remove(&handle);
        self.events.push_back(ClientEvent::Reply { handle, result });
        Some(SIMPLE_REPLY_HEADER_LEN)
    }

    fn structured_chunk(&mut self, input: &[u8]) -> Option<usize> {
        let header = ChunkHeader::decode_after_magic(
            input
                .get(4..CHUNK_HEADER_LEN)?
                .try_into()
                .expect("16 bytes"),
        );
        let handle = header.handle;
        let Some(entry) = self.in_flight.get(&handle) else {
            self.protocol(format!("chunk for cookie {handle:#x} not in flight"));
            return None;
        };
        let bound = match (header.reply_type, &entry.pending) {
            (REPLY_TYPE_NONE, _) => 0,
            (REPLY_TYPE_OFFSET_DATA, Pending::Read { length, .. }) => 8 + u64::from(*length),
            (REPLY_TYPE_OFFSET_HOLE, Pending::Read { .. }) => 12,
            (REPLY_TYPE_BLOCK_STATUS, Pending::BlockStatus { req_one: true, .. }) => 12,
            (REPLY_TYPE_BLOCK_STATUS, Pending::BlockStatus { .. }) => {
                4 + 8 * u64::from(MAX_EXTENTS_PER_CHUNK)
            }
            (t, _) if t & REPLY_TYPE_ERROR_BIT != 0 => 6 + MAX_STRING_LEN as u64 + 64,
            (t, _) => {
                self.protocol(format!("unexpected chunk type {t}"));
                return None;
            }
        };
        if u64::from(header.length) > bound {
            self.protocol(format!(
                "chunk of type {} with {} bytes",
                header.reply_type, header.length
            ));
            return None;
        }
        let end = CHUNK_HEADER_LEN + header.length as usize;
        let payload = input.get(CHUNK_HEADER_LEN..end)?;
        if let Err(what) = self.apply_chunk(header, payload) {
            self.protocol(what);
            return None;
        }
        if header.flags & REPLY_FLAG_DONE != 0 {
            let entry = self.in_flight.remove(&handle).expect("looked up above");
            let result = match (entry.error, entry.pending) {
                (Some(error), _) => Err(error),
                (
                    None,
                    Pending::Read {
                        length,
                        data,
                        covered,
                        ..
                    },
                ) => {
                    if covered != u64::from(length) {
                        self.protocol(format!("read answered {covered} of {length} bytes"));
                        return None;
                    }
                    Ok(ReplyPayload::Data(if data.is_empty() {
                        vec![0; length as usize]
                    } else {
                        data
                    }))
                }
                (
                    None,
                    Pending::BlockStatus {
                        extents: Some(extents),
                        ..
                    },
                ) => Ok(ReplyPayload::Extents(extents)),
                (None, Pending::BlockStatus { extents: None, .. }) => {
                    self.protocol("block status answered without extents");
                    return None;
                }
                (None, Pending::Other) => Ok(ReplyPayload::None),
            };
            self.events.push_back(ClientEvent::Reply { handle, result });
        }
        Some(end)
    }

    /// Folds one chunk (its length already bounded) into its request's state.
    fn apply_chunk(&mut self, header: ChunkHeader, payload: &[u8]) -> Result<(), String> {
        let context_id = self.context_id;
        let entry = self
            .in_flight
            .get_mut(&header.handle)
            .expect("looked up by the caller");
        let mut c = Cursor::new(payload);
        match header.reply_type {
            REPLY_TYPE_NONE => {
                if header.flags & REPLY_FLAG_DONE == 0 {
                    return Err("NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE".into());
                }
            }
            REPLY_TYPE_OFFSET_DATA | REPLY_TYPE_OFFSET_HOLE => {
                let Pending::Read {
                    offset,
                    length,
                    data,
                    covered,
                } = &mut entry.pending
                else {
                    unreachable!("bounded above only for reads")
                };
                let at = c.u64().ok_or("short content chunk")?;
                let (count, bytes) = if header.reply_type == REPLY_TYPE_OFFSET_HOLE {
                    let size = c.u32().ok_or("short NBD_REPLY_TYPE_OFFSET_HOLE")?;
                    if c.remaining() != 0 {
                        return Err("NBD_REPLY_TYPE_OFFSET_HOLE of the wrong length".into());
                    }
                    (size as usize, None)
                } else {
                    let bytes = c.rest();
                    (bytes.len(), Some(bytes))
                };
                let start = at
                    .checked_sub(*offset)
                    .ok_or("content before the request")?;
                let stop = start
                    .checked_add(count as u64)
                    .ok_or("content past the request")?;
                if count == 0 || stop > u64::from(*length) {
                    return Err("content chunk outside the request".into());
                }
                *covered += count as u64;
                if *covered > u64::from(*length) {
                    return Err("content chunks overlap".into());
                }
                if let Some(bytes) = bytes {
                    if data.is_empty() {
                        *data = vec![0; *length as usize];
                    }
                    data[start as usize..stop as usize].copy_from_slice(bytes);
                }
            }
            REPLY_TYPE_BLOCK_STATUS => {
                let Pending::BlockStatus {
                    length,
                    req_one,
                    extents,
                } = &mut entry.pending
                else {
                    unreachable!("bounded above only for block status")
                };
                let id = c.u32().ok_or("short NBD_REPLY_TYPE_BLOCK_STATUS")?;
                if Some(id) != context_id || extents.is_some() {
                    return Err(format!("block status for context {id}, or twice"));
                }
                if c.remaining() == 0 || c.remaining() % 8 != 0 {
                    return Err("NBD_REPLY_TYPE_BLOCK_STATUS of the wrong length".into());
                }
                let mut list = Vec::with_capacity(c.remaining() / 8);
                while c.remaining() > 0 {
                    let extent = Extent {
                        length: c.u32().expect("multiple of 8"),
                        flags: c.u32().expect("multiple of 8"),
                    };
                    if extent.length == 0 || (*req_one && extent.length > *length) {
                        return Err("extent of length 0 or longer than asked".into());
                    }
                    list.push(extent);
                }
                *extents = Some(list);
            }
            _ => {
                // An error chunk, known or not: the reply fails with its error.
                let error = c.u32().ok_or("short error chunk")?;
                let message_len = c.u16().ok_or("short error chunk")?;
                if usize::from(message_len) > c.remaining() {
                    return Err("error message longer than its chunk".into());
                }
                entry.error.get_or_insert(NbdError::from_wire(error));
            }
        }
        Ok(())
    }
}

fn fua_flag(fua: bool) -> u16 {
    if fua {
        CMD_FLAG_FUA
    } else {
        0
    }
}
