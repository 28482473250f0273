//! Requests and replies as the two sides' drivers see them: decoded, checked, with the
//! data owned.

/// One request of the transmission phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's cookie; the reply names it.
    pub handle: u64,
    /// What to do.
    pub command: Command,
}

/// A command of the transmission phase (`NBD_CMD_DISC` is not one: it ends the session).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `NBD_CMD_READ`: `length` bytes at `offset`.
    Read {
        /// First byte.
        offset: u64,
        /// Bytes.
        length: u32,
    },
    /// `NBD_CMD_WRITE`: `data` at `offset`.
    Write {
        /// First byte.
        offset: u64,
        /// The bytes to write.
        data: Vec<u8>,
        /// `NBD_CMD_FLAG_FUA`: persist before replying.
        fua: bool,
    },
    /// `NBD_CMD_FLUSH`: persist every write already replied to.
    Flush,
    /// `NBD_CMD_TRIM`: the range is no longer needed (its contents become undefined).
    Trim {
        /// First byte.
        offset: u64,
        /// Bytes.
        length: u32,
        /// `NBD_CMD_FLAG_FUA`.
        fua: bool,
    },
    /// `NBD_CMD_WRITE_ZEROES`: the range reads as zeroes afterwards.
    WriteZeroes {
        /// First byte.
        offset: u64,
        /// Bytes.
        length: u32,
        /// `NBD_CMD_FLAG_FUA`.
        fua: bool,
        /// `NBD_CMD_FLAG_NO_HOLE`: keep the range allocated.
        no_hole: bool,
        /// `NBD_CMD_FLAG_FAST_ZERO`: fail with `NBD_ENOTSUP` unless faster than a write.
        fast_zero: bool,
    },
    /// `NBD_CMD_BLOCK_STATUS` for the `base:allocation` context.
    BlockStatus {
        /// First byte.
        offset: u64,
        /// Bytes of interest (a hint: the answer may cover less or, in its last extent, more).
        length: u32,
        /// `NBD_CMD_FLAG_REQ_ONE`: one extent, no longer than `length`.
        req_one: bool,
    },
}

impl Command {
    /// The command's range as (offset, length); `Flush` has none and reads as (0, 0).
    pub fn range(&self) -> (u64, u64) {
        match self {
            Command::Read { offset, length }
            | Command::Trim { offset, length, .. }
            | Command::WriteZeroes { offset, length, .. }
            | Command::BlockStatus { offset, length, .. } => (*offset, u64::from(*length)),
            Command::Write { offset, data, .. } => (*offset, data.len() as u64),
            Command::Flush => (0, 0),
        }
    }

    /// Whether the command changes the export.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Command::Write { .. } | Command::Trim { .. } | Command::WriteZeroes { .. }
        )
    }
}

/// One extent of a `base:allocation` block status answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Bytes (never 0).
    pub length: u32,
    /// `NBD_STATE_*` bits ([`Extent::HOLE`], [`Extent::ZERO`]); unknown bits are kept.
    pub flags: u32,
}

impl Extent {
    /// `NBD_STATE_HOLE`: not allocated.
    pub const HOLE: u32 = 1 << 0;
    /// `NBD_STATE_ZERO`: reads as zeroes.
    pub const ZERO: u32 = 1 << 1;
}

/// The successful answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyPayload {
    /// No data (write, flush, trim, write zeroes).
    None,
    /// A read's bytes, exactly as many as asked for.
    Data(Vec<u8>),
    /// A block status answer: consecutive extents from the request's offset.
    Extents(Vec<Extent>),
}
