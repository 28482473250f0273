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

use std::collections::{HashMap, VecDeque};

use super::command::{Command, Extent, ReplyPayload, Request};
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

    /// The driver's answer to request `handle`. A read must answer with exactly its
    /// length of data, a block status with at least one extent (none of length 0), every
    /// other command with [`ReplyPayload::None`]; anything else is sent as `NBD_EIO`.
    /// A handle not in flight (already answered, never asked, or the session closed) is
    /// ignored.
    pub fn handle_reply(&mut self, handle: u64, reply: Result<ReplyPayload, NbdError>) {
        let Some(entry) = self.in_flight.remove(&handle) else {
            return;
        };
        self.in_flight_bytes -= entry.bytes;
        match (entry.expect, reply) {
            (_, Err(error)) => self.reply_error(handle, error),
            (Expect::Data { offset, length }, Ok(ReplyPayload::Data(data)))
                if data.len() == length as usize =>
            {
                self.reply_data(handle, offset, &data)
            }
            (Expect::Extents { length, req_one }, Ok(ReplyPayload::Extents(extents)))
                if !extents.is_empty() && extents.iter().all(|e| e.length > 0) =>
            {
                self.reply_extents(handle, length, req_one, &extents)
            }
            (Expect::Nothing, Ok(ReplyPayload::None)) => {
                self.push_output(encode_simple_reply(0, handle, &[]))
            }
            (_, Ok(_)) => self.reply_error(handle, NbdError::Io),
        }
        if self.phase == Phase::Disconnecting && self.in_flight.is_empty() {
            self.close(CloseReason::ClientDisconnected);
        } else if self.phase == Phase::Transmission && !self.input.is_empty() {
            // Requests held back by the limits may be parsed now that one finished.
            self.process();
        }
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

    fn handle_option(&mut self, option: u32, data: &[u8]) {
        let reply = |reply: OptionReply, data: &[u8]| encode_option_reply(option, reply, data);
        match OptionCode::from_wire(option) {
            OptionCode::ExportName => {
                let name = String::from_utf8_lossy(data).into_owned();
                let Some(export) = self.find_export(&name).cloned() else {
                    self.close(CloseReason::UnknownExport(name));
                    return;
                };
                let mut out = Vec::with_capacity(10 + EXPORT_NAME_ZEROES);
                out.extend_from_slice(&export.size.to_be_bytes());
                out.extend_from_slice(&export.transmission_flags().to_be_bytes());
                if !self.no_zeroes {
                    out.resize(out.len() + EXPORT_NAME_ZEROES, 0);
                }
                self.push_output(out);
                self.enter_transmission(export);
            }
            OptionCode::Abort => {
                self.push_output(reply(OptionReply::Ack, &[]));
                self.close(CloseReason::ClientAborted);
            }
            OptionCode::List => {
                if !data.is_empty() {
                    return self.push_output(reply(
                        OptionReply::ErrInvalid,
                        b"NBD_OPT_LIST takes no data",
                    ));
                }
                let names: Vec<String> = self.exports.iter().map(|e| e.name.clone()).collect();
                for name in names {
                    let mut entry = Vec::new();
                    put_string32(&mut entry, &name);
                    self.push_output(reply(OptionReply::Server, &entry));
                }
                self.push_output(reply(OptionReply::Ack, &[]));
            }
            code @ (OptionCode::Info | OptionCode::Go) => {
                self.handle_info_or_go(option, code == OptionCode::Go, data)
            }
            OptionCode::StructuredReply => {
                if !data.is_empty() || self.structured {
                    return self.push_output(reply(
                        OptionReply::ErrInvalid,
                        b"structured replies: no data, once",
                    ));
                }
                self.structured = true;
                self.push_output(reply(OptionReply::Ack, &[]));
            }
            code @ (OptionCode::ListMetaContext | OptionCode::SetMetaContext) => {
                self.handle_meta_context(option, code == OptionCode::SetMetaContext, data)
            }
            OptionCode::StartTls | OptionCode::Other(_) => {
                self.push_output(reply(OptionReply::ErrUnsup, &[]))
            }
        }
    }

    fn handle_info_or_go(&mut self, option: u32, go: bool, data: &[u8]) {
        let parsed = (|| {
            let mut c = Cursor::new(data);
            let name = c.string32()?;
            let count = c.u16()?;
            let mut requests = Vec::new();
            for _ in 0..count {
                requests.push(c.u16()?);
            }
            (c.remaining() == 0).then_some((name, requests))
        })();
        let Some((name, requests)) = parsed else {
            return self.push_output(encode_option_reply(
                option,
                OptionReply::ErrInvalid,
                b"malformed request",
            ));
        };
        let Some(export) = self.find_export(&name).cloned() else {
            return self.push_output(encode_option_reply(
                option,
                OptionReply::ErrUnknown,
                b"no such export",
            ));
        };
        let mut info = Vec::with_capacity(12);
        info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
        info.extend_from_slice(&export.size.to_be_bytes());
        info.extend_from_slice(&export.transmission_flags().to_be_bytes());
        self.push_output(encode_option_reply(option, OptionReply::Info, &info));
        if requests.contains(&INFO_NAME) {
            let mut info = INFO_NAME.to_be_bytes().to_vec();
            info.extend_from_slice(export.name.as_bytes());
            self.push_output(encode_option_reply(option, OptionReply::Info, &info));
        }
        if requests.contains(&INFO_DESCRIPTION) && !export.description.is_empty() {
            let mut info = INFO_DESCRIPTION.to_be_bytes().to_vec();
            let description =
                &export.description.as_bytes()[..export.description.len().min(MAX_STRING_LEN)];
            info.extend_from_slice(description);
            self.push_output(encode_option_reply(option, OptionReply::Info, &info));
        }
        let block = export.block_size;
        let mut info = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        info.extend_from_slice(&block.minimum.to_be_bytes());
        info.extend_from_slice(&block.preferred.to_be_bytes());
        info.extend_from_slice(&self.max_payload(&export).to_be_bytes());
        self.push_output(encode_option_reply(option, OptionReply::Info, &info));
        self.push_output(encode_option_reply(option, OptionReply::Ack, &[]));
        if go {
            self.enter_transmission(export);
        }
    }

    fn handle_meta_context(&mut self, option: u32, set: bool, data: &[u8]) {
        if set {
            // Every NBD_OPT_SET_META_CONTEXT replaces the selection, even when it fails.
            self.meta_context_export = None;
        }
        if !self.structured {
            return self.push_output(encode_option_reply(
                option,
                OptionReply::ErrInvalid,
                b"structured replies first",
            ));
        }
        let parsed = (|| {
            let mut c = Cursor::new(data);
            let name = c.string32()?;
            let count = c.u32()?;
            let mut queries = Vec::new();
            for _ in 0..count {
                queries.push(c.string32()?);
            }
            (c.remaining() == 0).then_some((name, queries))
        })();
        let Some((name, queries)) = parsed else {
            return self.push_output(encode_option_reply(
                option,
                OptionReply::ErrInvalid,
                b"malformed request",
            ));
        };
        if self.find_export(&name).is_none() {
            return self.push_output(encode_option_reply(
                option,
                OptionReply::ErrUnknown,
                b"no such export",
            ));
        }
        let matches = if set {
            queries.iter().any(|q| q == BASE_ALLOCATION)
        } else {
            queries.is_empty() || queries.iter().any(|q| q == BASE_ALLOCATION || q == "base:")
        };
        if matches {
            let id = if set { BASE_ALLOCATION_ID } else { 0 };
            let mut context = id.to_be_bytes().to_vec();
            context.extend_from_slice(BASE_ALLOCATION.as_bytes());
            self.push_output(encode_option_reply(
                option,
                OptionReply::MetaContext,
                &context,
            ));
            if set {
                self.meta_context_export = Some(name);
            }
        }
        self.push_output(encode_option_reply(option, OptionReply::Ack, &[]));
    }

    fn find_export(&self, name: &str) -> Option<&ExportInfo> {
        self.exports.iter().find(|e| e.name == name)
    }

    /// The maximum payload advertised: the export's, but never more than the session
    /// accepts.
    fn max_payload(&self, export: &ExportInfo) -> u32 {
        export.block_size.maximum.min(self.limits.max_payload)
    }

    fn enter_transmission(&mut self, export: ExportInfo) {
        self.base_allocation =
            self.structured && self.meta_context_export.as_deref() == Some(export.name.as_str());
        self.events.push_back(ServerEvent::ExportChosen {
            name: export.name.clone(),
        });
        self.export = Some(export);
        self.phase = Phase::Transmission;
    }

    /// Checks a request against the export; valid requests become events, invalid ones are
    /// answered with the error the protocol names.
    fn handle_request(&mut self, header: RequestHeader, data: Vec<u8>) {
        let handle = header.handle;
        if header.command == CommandType::Disc {
            self.phase = Phase::Disconnecting;
            if self.in_flight.is_empty() {
                self.close(CloseReason::ClientDisconnected);
            }
            return;
        }
        if self.in_flight.contains_key(&handle) {
            self.close(CloseReason::DuplicateHandle(handle));
            return;
        }
        match self.check_request(&header, data) {
            Ok((command, expect)) => {
                let bytes = match &command {
                    Command::Write { data, .. } => data.len(),
                    Command::Read { length, .. } => *length as usize,
                    _ => 0,
                };
                self.in_flight.insert(handle, InFlight { expect, bytes });
                self.in_flight_bytes += bytes;
                self.events
                    .push_back(ServerEvent::Request(Request { handle, command }));
            }
            Err(error) => self.reply_error(handle, error),
        }
    }

    fn check_request(
        &self,
        header: &RequestHeader,
        data: Vec<u8>,
    ) -> Result<(Command, Expect), NbdError> {
        let export = self
            .export
            .as_ref()
            .expect("requests are parsed only in transmission, after an export was chosen");
        let RequestHeader {
            flags,
            command,
            offset,
            length,
            ..
        } = *header;
        let fua_flag = if export.can_fua { CMD_FLAG_FUA } else { 0 };
        let (allowed, supported) = match command {
            CommandType::Read => (fua_flag, true),
            CommandType::Write => (fua_flag, true),
            CommandType::Flush => (fua_flag, export.can_flush),
            CommandType::Trim => (fua_flag, export.can_trim),
            CommandType::WriteZeroes => {
                let fast = if export.can_fast_zero {
                    CMD_FLAG_FAST_ZERO
                } else {
                    0
                };
                (fua_flag | CMD_FLAG_NO_HOLE | fast, export.can_write_zeroes)
            }
            CommandType::BlockStatus => (fua_flag | CMD_FLAG_REQ_ONE, self.base_allocation),
            CommandType::Disc | CommandType::Cache | CommandType::Other(_) => {
                return Err(NbdError::Invalid)
            }
        };
        if !supported || flags & !allowed != 0 {
            return Err(NbdError::Invalid);
        }
        let writes = matches!(
            command,
            CommandType::Write | CommandType::Trim | CommandType::WriteZeroes
        );
        if writes && export.read_only {
            return Err(NbdError::Perm);
        }
        if command != CommandType::Flush {
            if length == 0 {
                return Err(NbdError::Invalid);
            }
            if command == CommandType::Read && length > self.max_payload(export) {
                return Err(if self.structured {
                    NbdError::Overflow
                } else {
                    NbdError::Invalid
                });
            }
            let minimum = u64::from(export.block_size.minimum.max(1));
            if offset % minimum != 0 || u64::from(length) % minimum != 0 {
                return Err(NbdError::Invalid);
            }
            if offset
                .checked_add(u64::from(length))
                .is_none_or(|end| end > export.size)
            {
                let past_end_writes =
                    matches!(command, CommandType::Write | CommandType::WriteZeroes);
                return Err(if past_end_writes {
                    NbdError::NoSpace
                } else {
                    NbdError::Invalid
                });
            }
        }
        let fua = flags & CMD_FLAG_FUA != 0;
        Ok(match command {
            CommandType::Read => (
                Command::Read { offset, length },
                Expect::Data { offset, length },
            ),
            CommandType::Write => (Command::Write { offset, data, fua }, Expect::Nothing),
            CommandType::Flush => (Command::Flush, Expect::Nothing),
            CommandType::Trim => (
                Command::Trim {
                    offset,
                    length,
                    fua,
                },
                Expect::Nothing,
            ),
            CommandType::WriteZeroes => (
                Command::WriteZeroes {
                    offset,
                    length,
                    fua,
                    no_hole: flags & CMD_FLAG_NO_HOLE != 0,
                    fast_zero: flags & CMD_FLAG_FAST_ZERO != 0,
                },
                Expect::Nothing,
            ),
            CommandType::BlockStatus => {
                let req_one = flags & CMD_FLAG_REQ_ONE != 0;
                (
                    Command::BlockStatus {
                        offset,
                        length,
                        req_one,
                    },
                    Expect::Extents { length, req_one },
                )
            }
            CommandType::Disc | CommandType::Cache | CommandType::Other(_) => {
                unreachable!("refused by the flag check above")
            }
        })
    }

    fn reply_error(&mut self, handle: u64, error: NbdError) {
        // With structured replies a read must be answered in chunks; errors of other
        // commands go in chunks too, which carry a message.
        let bytes = if self.structured {
            encode_error_chunk(handle, error, &error.to_string())
        } else {
            encode_simple_reply(error.to_wire(), handle, &[])
        };
        self.push_output(bytes);
    }

    fn reply_data(&mut self, handle: u64, offset: u64, data: &[u8]) {
        if !self.structured {
            return self.push_output(encode_simple_reply(0, handle, data));
        }
        let chunks = data.len().div_ceil(READ_CHUNK_BYTES);
        for (i, piece) in data.chunks(READ_CHUNK_BYTES).enumerate() {
            let flags = if i + 1 == chunks { REPLY_FLAG_DONE } else { 0 };
            let piece_offset = offset + (i * READ_CHUNK_BYTES) as u64;
            self.push_output(encode_chunk(
                flags,
                REPLY_TYPE_OFFSET_DATA,
                handle,
                &[&piece_offset.to_be_bytes(), piece],
            ));
        }
    }

    /// One `NBD_REPLY_TYPE_BLOCK_STATUS` chunk. With `req_one`, the first extent clipped to
    /// the request; otherwise extents up to the first that reaches the request's end (the
    /// protocol allows only the last to go past it), at most `MAX_EXTENTS_PER_REPLY`.
    fn reply_extents(&mut self, handle: u64, length: u32, req_one: bool, extents: &[Extent]) {
        let mut kept = Vec::new();
        let mut covered = 0u64;
        for extent in extents.iter().take(MAX_EXTENTS_PER_REPLY) {
            let mut extent = *extent;
            if req_one {
                extent.length = extent.length.min(length);
            }
            kept.push(extent);
            covered += u64::from(extent.length);
            if req_one || covered >= u64::from(length) {
                break;
            }
        }
        let mut payload = Vec::with_capacity(4 + 8 * kept.len());
        payload.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
        for extent in kept {
            payload.extend_from_slice(&extent.length.to_be_bytes());
            payload.extend_from_slice(&extent.flags.to_be_bytes());
        }
        self.push_output(encode_chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            handle,
            &[&payload],
        ));
    }
}
