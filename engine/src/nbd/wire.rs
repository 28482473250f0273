//! The NBD protocol's numbers and the byte layout of every message, both directions.
//!
//! Everything on the wire is big-endian. Encoders return whole messages as `Vec<u8>`;
//! decoders take exactly the fixed-size part of a message (a header) and return `None` when
//! the magic number is wrong, so a caller can never misread a stream it has lost track of.

/// `NBDMAGIC`: the first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle greeting's second magic, and the magic of every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The magic of every option reply (fixed newstyle).
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// `NBD_REQUEST_MAGIC`.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// `NBD_SIMPLE_REPLY_MAGIC`.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// `NBD_STRUCTURED_REPLY_MAGIC`.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag `NBD_FLAG_FIXED_NEWSTYLE`.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag `NBD_FLAG_NO_ZEROES`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag `NBD_FLAG_C_FIXED_NEWSTYLE`.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag `NBD_FLAG_C_NO_ZEROES`.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flag `NBD_FLAG_HAS_FLAGS` (always set).
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag `NBD_FLAG_READ_ONLY`.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag `NBD_FLAG_SEND_FLUSH`.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag `NBD_FLAG_SEND_FUA`.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag `NBD_FLAG_ROTATIONAL`.
pub const FLAG_ROTATIONAL: u16 = 1 << 4;
/// Transmission flag `NBD_FLAG_SEND_TRIM`.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag `NBD_FLAG_SEND_WRITE_ZEROES` (also allows `NBD_CMD_FLAG_NO_HOLE`).
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag `NBD_FLAG_SEND_DF` (never advertised here: reads may be split).
pub const FLAG_SEND_DF: u16 = 1 << 7;
/// Transmission flag `NBD_FLAG_CAN_MULTI_CONN`.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// Transmission flag `NBD_FLAG_SEND_CACHE` (never advertised here).
pub const FLAG_SEND_CACHE: u16 = 1 << 10;
/// Transmission flag `NBD_FLAG_SEND_FAST_ZERO`.
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

/// Command flag `NBD_CMD_FLAG_FUA`.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag `NBD_CMD_FLAG_NO_HOLE` (write zeroes).
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag `NBD_CMD_FLAG_DF` (read).
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag `NBD_CMD_FLAG_REQ_ONE` (block status).
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Command flag `NBD_CMD_FLAG_FAST_ZERO` (write zeroes).
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// Structured reply flag `NBD_REPLY_FLAG_DONE`: the last chunk of a reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;

/// `NBD_REPLY_TYPE_NONE`.
pub const REPLY_TYPE_NONE: u16 = 0;
/// `NBD_REPLY_TYPE_OFFSET_DATA`.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// `NBD_REPLY_TYPE_OFFSET_HOLE`.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// `NBD_REPLY_TYPE_BLOCK_STATUS`.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Bit 15 marks every error chunk type.
pub const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;
/// `NBD_REPLY_TYPE_ERROR`.
pub const REPLY_TYPE_ERROR: u16 = REPLY_TYPE_ERROR_BIT + 1;
/// `NBD_REPLY_TYPE_ERROR_OFFSET`.
pub const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_ERROR_BIT + 2;

/// `NBD_INFO_EXPORT`.
pub const INFO_EXPORT: u16 = 0;
/// `NBD_INFO_NAME`.
pub const INFO_NAME: u16 = 1;
/// `NBD_INFO_DESCRIPTION`.
pub const INFO_DESCRIPTION: u16 = 2;
/// `NBD_INFO_BLOCK_SIZE`.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// The one metadata context this implementation knows.
pub const BASE_ALLOCATION: &str = "base:allocation";

/// Bytes in the newstyle greeting: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub const GREETING_LEN: usize = 18;
/// Bytes in an option request header: magic, option, length.
pub const OPTION_HEADER_LEN: usize = 16;
/// Bytes in an option reply header: magic, option, reply type, length.
pub const OPTION_REPLY_HEADER_LEN: usize = 20;
/// Bytes in a request header.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Bytes in a simple reply header.
pub const SIMPLE_REPLY_HEADER_LEN: usize = 16;
/// Bytes in a structured reply chunk header.
pub const CHUNK_HEADER_LEN: usize = 20;
/// Reserved zero bytes after the `NBD_OPT_EXPORT_NAME` answer, unless `NO_ZEROES` was agreed.
pub const EXPORT_NAME_ZEROES: usize = 124;
/// The longest string (name, description, message) the protocol allows.
pub const MAX_STRING_LEN: usize = 4096;

/// An error value carried by a reply (the protocol's restricted errno set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum NbdError {
    /// `NBD_EPERM` (1): operation not permitted (a write to a read-only export).
    #[error("operation not permitted (NBD_EPERM)")]
    Perm,
    /// `NBD_EIO` (5): input/output error.
    #[error("input/output error (NBD_EIO)")]
    Io,
    /// `NBD_ENOMEM` (12): cannot allocate memory.
    #[error("cannot allocate memory (NBD_ENOMEM)")]
    NoMem,
    /// `NBD_EINVAL` (22): invalid argument; also what an unknown value reads as.
    #[error("invalid argument (NBD_EINVAL)")]
    Invalid,
    /// `NBD_ENOSPC` (28): no space left (a write past the end).
    #[error("no space left on device (NBD_ENOSPC)")]
    NoSpace,
    /// `NBD_EOVERFLOW` (75): value too large.
    #[error("value too large (NBD_EOVERFLOW)")]
    Overflow,
    /// `NBD_ENOTSUP` (95): not supported (a fast zero that would not be fast).
    #[error("operation not supported (NBD_ENOTSUP)")]
    NotSupported,
    /// `NBD_ESHUTDOWN` (108): the server is shutting down.
    #[error("server is shutting down (NBD_ESHUTDOWN)")]
    Shutdown,
}

impl NbdError {
    /// The error for a wire value. Unknown values (and 0, which is no error and must be
    /// checked by the caller first) read as [`NbdError::Invalid`], as the protocol asks.
    pub fn from_wire(value: u32) -> Self {
        match value {
            1 => Self::Perm,
            5 => Self::Io,
            12 => Self::NoMem,
            28 => Self::NoSpace,
            75 => Self::Overflow,
            95 => Self::NotSupported,
            108 => Self::Shutdown,
            _ => Self::Invalid,
        }
    }

    /// The wire value (never 0).
    pub fn to_wire(self) -> u32 {
        match self {
            Self::Perm => 1,
            Self::Io => 5,
            Self::NoMem => 12,
            Self::Invalid => 22,
            Self::NoSpace => 28,
            Self::Overflow => 75,
            Self::NotSupported => 95,
            Self::Shutdown => 108,
        }
    }
}

/// Option codes of the handshake (`NBD_OPT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptionCode {
    /// `NBD_OPT_EXPORT_NAME` (1).
    ExportName,
    /// `NBD_OPT_ABORT` (2).
    Abort,
    /// `NBD_OPT_LIST` (3).
    List,
    /// `NBD_OPT_STARTTLS` (5).
    StartTls,
    /// `NBD_OPT_INFO` (6).
    Info,
    /// `NBD_OPT_GO` (7).
    Go,
    /// `NBD_OPT_STRUCTURED_REPLY` (8).
    StructuredReply,
    /// `NBD_OPT_LIST_META_CONTEXT` (9).
    ListMetaContext,
    /// `NBD_OPT_SET_META_CONTEXT` (10).
    SetMetaContext,
    /// Any other value.
    Other(u32),
}

impl OptionCode {
    /// The code for a wire value.
    pub fn from_wire(value: u32) -> Self {
        match value {
            1 => Self::ExportName,
            2 => Self::Abort,
            3 => Self::List,
            5 => Self::StartTls,
            6 => Self::Info,
            7 => Self::Go,
            8 => Self::StructuredReply,
            9 => Self::ListMetaContext,
            10 => Self::SetMetaContext,
            other => Self::Other(other),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> u32 {
        match self {
            Self::ExportName => 1,
            Self::Abort => 2,
            Self::List => 3,
            Self::StartTls => 5,
            Self::Info => 6,
            Self::Go => 7,
            Self::StructuredReply => 8,
            Self::ListMetaContext => 9,
            Self::SetMetaContext => 10,
            Self::Other(other) => other,
        }
    }
}

/// Option reply types (`NBD_REP_*`); errors have bit 31 set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptionReply {
    /// `NBD_REP_ACK`.
    Ack,
    /// `NBD_REP_SERVER`: one export of a list.
    Server,
    /// `NBD_REP_INFO`: one piece of information about an export.
    Info,
    /// `NBD_REP_META_CONTEXT`: one metadata context.
    MetaContext,
    /// `NBD_REP_ERR_UNSUP`: the option is unknown to the server.
    ErrUnsup,
    /// `NBD_REP_ERR_POLICY`: forbidden by the server's policy.
    ErrPolicy,
    /// `NBD_REP_ERR_INVALID`: syntactically or semantically invalid.
    ErrInvalid,
    /// `NBD_REP_ERR_PLATFORM`: not supported on this platform.
    ErrPlatform,
    /// `NBD_REP_ERR_TLS_REQD`: TLS is required first.
    ErrTlsReqd,
    /// `NBD_REP_ERR_UNKNOWN`: no such export.
    ErrUnknown,
    /// `NBD_REP_ERR_SHUTDOWN`: the server is shutting down.
    ErrShutdown,
    /// `NBD_REP_ERR_BLOCK_SIZE_REQD`: the client must ask for block sizes.
    ErrBlockSizeReqd,
    /// `NBD_REP_ERR_TOO_BIG`: the request or reply is too large.
    ErrTooBig,
    /// Any other value.
    Other(u32),
}

const REP_ERR: u32 = 1 << 31;

impl OptionReply {
    /// The reply type for a wire value.
    pub fn from_wire(value: u32) -> Self {
        match value {
            1 => Self::Ack,
            2 => Self::Server,
            3 => Self::Info,
            4 => Self::MetaContext,
            v if v == REP_ERR + 1 => Self::ErrUnsup,
            v if v == REP_ERR + 2 => Self::ErrPolicy,
            v if v == REP_ERR + 3 => Self::ErrInvalid,
            v if v == REP_ERR + 4 => Self::ErrPlatform,
            v if v == REP_ERR + 5 => Self::ErrTlsReqd,
            v if v == REP_ERR + 6 => Self::ErrUnknown,
            v if v == REP_ERR + 7 => Self::ErrShutdown,
            v if v == REP_ERR + 8 => Self::ErrBlockSizeReqd,
            v if v == REP_ERR + 9 => Self::ErrTooBig,
            other => Self::Other(other),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> u32 {
        match self {
            Self::Ack => 1,
            Self::Server => 2,
            Self::Info => 3,
            Self::MetaContext => 4,
            Self::ErrUnsup => REP_ERR + 1,
            Self::ErrPolicy => REP_ERR + 2,
            Self::ErrInvalid => REP_ERR + 3,
            Self::ErrPlatform => REP_ERR + 4,
            Self::ErrTlsReqd => REP_ERR + 5,
            Self::ErrUnknown => REP_ERR + 6,
            Self::ErrShutdown => REP_ERR + 7,
            Self::ErrBlockSizeReqd => REP_ERR + 8,
            Self::ErrTooBig => REP_ERR + 9,
            Self::Other(other) => other,
        }
    }

    /// Whether this is an error reply (bit 31), which ends the option.
    pub fn is_error(self) -> bool {
        self.to_wire() & REP_ERR != 0
    }
}

/// Request types (`NBD_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    /// `NBD_CMD_READ` (0).
    Read,
    /// `NBD_CMD_WRITE` (1).
    Write,
    /// `NBD_CMD_DISC` (2).
    Disc,
    /// `NBD_CMD_FLUSH` (3).
    Flush,
    /// `NBD_CMD_TRIM` (4).
    Trim,
    /// `NBD_CMD_CACHE` (5), not implemented here.
    Cache,
    /// `NBD_CMD_WRITE_ZEROES` (6).
    WriteZeroes,
    /// `NBD_CMD_BLOCK_STATUS` (7).
    BlockStatus,
    /// Any other value.
    Other(u16),
}

impl CommandType {
    /// The type for a wire value.
    pub fn from_wire(value: u16) -> Self {
        match value {
            0 => Self::Read,
            1 => Self::Write,
            2 => Self::Disc,
            3 => Self::Flush,
            4 => Self::Trim,
            5 => Self::Cache,
            6 => Self::WriteZeroes,
            7 => Self::BlockStatus,
            other => Self::Other(other),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> u16 {
        match self {
            Self::Read => 0,
            Self::Write => 1,
            Self::Disc => 2,
            Self::Flush => 3,
            Self::Trim => 4,
            Self::Cache => 5,
            Self::WriteZeroes => 6,
            Self::BlockStatus => 7,
            Self::Other(other) => other,
        }
    }
}

/// The newstyle greeting, sent by the server first.
pub fn encode_greeting(handshake_flags: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(GREETING_LEN);
    out.extend_from_slice(&NBDMAGIC.to_be_bytes());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&handshake_flags.to_be_bytes());
    out
}

/// The handshake flags of a greeting, or `None` for wrong magic numbers.
pub fn decode_greeting(bytes: &[u8; GREETING_LEN]) -> Option<u16> {
    let mut c = Cursor::new(bytes);
    (c.u64()? == NBDMAGIC && c.u64()? == IHAVEOPT).then_some(())?;
    c.u16()
}

/// An option request: header and data.
pub fn encode_option(option: OptionCode, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OPTION_HEADER_LEN + data.len());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&option.to_wire().to_be_bytes());
    out.extend_from_slice(&len32(data.len()).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// The option code and data length of an option header, or `None` for a wrong magic.
pub fn decode_option_header(bytes: &[u8; OPTION_HEADER_LEN]) -> Option<(u32, u32)> {
    let mut c = Cursor::new(bytes);
    (c.u64()? == IHAVEOPT).then_some(())?;
    Some((c.u32()?, c.u32()?))
}

/// An option reply: header and data.
pub fn encode_option_reply(option: u32, reply: OptionReply, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OPTION_REPLY_HEADER_LEN + data.len());
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_wire().to_be_bytes());
    out.extend_from_slice(&len32(data.len()).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// An option reply header: (option, reply type, data length), or `None` for a wrong magic.
pub fn decode_option_reply_header(
    bytes: &[u8; OPTION_REPLY_HEADER_LEN],
) -> Option<(u32, OptionReply, u32)> {
    let mut c = Cursor::new(bytes);
    (c.u64()? == OPTION_REPLY_MAGIC).then_some(())?;
    Some((c.u32()?, OptionReply::from_wire(c.u32()?), c.u32()?))
}

/// A request header as sent on the wire (the write payload follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Command flags (`NBD_CMD_FLAG_*`).
    pub flags: u16,
    /// The command.
    pub command: CommandType,
    /// The client's cookie, echoed in the reply.
    pub handle: u64,
    /// First byte.
    pub offset: u64,
    /// Bytes (the payload's length for a write).
    pub length: u32,
}

impl RequestHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut out = [0u8; REQUEST_HEADER_LEN];
        out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.to_be_bytes());
        out[6..8].copy_from_slice(&self.command.to_wire().to_be_bytes());
        out[8..16].copy_from_slice(&self.handle.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..28].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    /// The header in `bytes`, or `None` for a wrong magic.
    pub fn decode(bytes: &[u8; REQUEST_HEADER_LEN]) -> Option<Self> {
        let mut c = Cursor::new(bytes);
        (c.u32()? == REQUEST_MAGIC).then_some(())?;
        Some(Self {
            flags: c.u16()?,
            command: CommandType::from_wire(c.u16()?),
            handle: c.u64()?,
            offset: c.u64()?,
            length: c.u32()?,
        })
    }
}

/// A simple reply: header, then the data (only for a successful read).
pub fn encode_simple_reply(error: u32, handle: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIMPLE_REPLY_HEADER_LEN + data.len());
    out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&handle.to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A structured reply chunk header as sent on the wire (the payload follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// `NBD_REPLY_FLAG_*`.
    pub flags: u16,
    /// `NBD_REPLY_TYPE_*`.
    pub reply_type: u16,
    /// The request's cookie.
    pub handle: u64,
    /// Payload bytes.
    pub length: u32,
}

impl ChunkHeader {
    /// The header fields after the magic (which the caller has already checked).
    pub fn decode_after_magic(bytes: &[u8; CHUNK_HEADER_LEN - 4]) -> Self {
        let field = |range: std::ops::Range<usize>| {
            bytes[range]
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        };
        Self {
            flags: field(0..2) as u16,
            reply_type: field(2..4) as u16,
            handle: field(4..12),
            length: field(12..16) as u32,
        }
    }
}

/// A structured reply chunk: header and payload.
pub fn encode_chunk(flags: u16, reply_type: u16, handle: u64, payload: &[&[u8]]) -> Vec<u8> {
    let length: usize = payload.iter().map(|part| part.len()).sum();
    let mut out = Vec::with_capacity(CHUNK_HEADER_LEN + length);
    out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&handle.to_be_bytes());
    out.extend_from_slice(&len32(length).to_be_bytes());
    for part in payload {
        out.extend_from_slice(part);
    }
    out
}

/// A structured `NBD_REPLY_TYPE_ERROR` chunk with `DONE` and a short human message.
pub fn encode_error_chunk(handle: u64, error: NbdError, message: &str) -> Vec<u8> {
    let message = &message.as_bytes()[..message.len().min(MAX_STRING_LEN)];
    let message_len = (message.len() as u16).to_be_bytes();
    encode_chunk(
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        handle,
        &[&error.to_wire().to_be_bytes(), &message_len, message],
    )
}

/// A length that must fit the protocol's 32-bit length fields. Every caller passes data it
/// has already bounded (by a maximum payload or [`MAX_STRING_LEN`]).
fn len32(len: usize) -> u32 {
    u32::try_from(len).expect("message data is bounded well below 4 GiB by its producer")
}

/// A u32-length-prefixed string, as options and replies carry names.
pub fn put_string32(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&len32(s.len()).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

mod cursor;
#[cfg(test)]
mod tests;

pub use cursor::Cursor;
