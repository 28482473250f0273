//! Job configuration: sync mode, copy mode, error policies and the knobs.

use crate::names::names;

/// Which parts of the source the job copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SyncMode {
    /// Everything the source holds (minus ranges declared zero when the target reads zero).
    #[default]
    Full,
    /// Only what the source's top layer allocates (ranges not declared unallocated).
    Top,
    /// Only what the guest writes after the start.
    None,
}

/// How guest writes reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CopyMode {
    /// Guest writes only dirty the bitmap.
    #[default]
    Background,
    /// Guest writes to clean chunks are also written to the target before the guest is acknowledged.
    WriteBlocking,
}

/// What to do when an operation on one side fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// The job fails.
    #[default]
    Report,
    /// Emit an error event, leave the chunk dirty, retry later.
    Ignore,
    /// Emit an error event and pause until `resume`.
    Stop,
    /// `Stop` for "no space", `Report` for anything else.
    Enospc,
}

/// What the driver knows about a range of the source (see `MirrorJob::declare`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RangeState {
    /// Allocated in the source's top layer (the default for undeclared ranges).
    Allocated,
    /// Not allocated in the top layer: `top` skips it.
    Unallocated,
    /// Reads as zero and the target reads zero there too: `full` skips it.
    Zero,
}

names!(SyncMode, "sync mode", ConfigError, Full = "full", Top = "top", None = "none");
names!(CopyMode, "copy mode", ConfigError, Background = "background", WriteBlocking = "write-blocking");
names!(ErrorPolicy, "error policy", ConfigError, Report = "report", Ignore = "ignore", Stop = "stop", Enospc = "enospc");
names!(RangeState, "range state", ConfigError, Allocated = "allocated", Unallocated = "unallocated", Zero = "zero");

/// Invalid configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The granularity is not a power of two in [512 B, 64 MiB].
    #[error("granularity {0} must be a power of two between 512 and 67108864")]
    Granularity(u64),
    /// `max_io` is zero or not a multiple of the granularity.
    #[error("max_io {max_io} must be a non-zero multiple of the granularity {granularity}")]
    MaxIo {
        /// The value given.
        max_io: u64,
        /// The granularity.
        granularity: u64,
    },
    /// `buf_size` is zero.
    #[error("buf_size must be at least one chunk")]
    BufSize,
    /// `max_in_flight` is zero.
    #[error("max_in_flight must be at least 1")]
    MaxInFlight,
    /// The disk is too large for the bitmap at this granularity.
    #[error("length {length} is too large for granularity {granularity}")]
    TooLarge {
        /// The disk length.
        length: u64,
        /// The granularity.
        granularity: u64,
    },
    /// An unknown name for a mode or policy.
    #[error("unknown {what} {name:?}")]
    UnknownName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
    },
}

/// Everything that shapes a mirror job. Build with [`MirrorConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Disk length in bytes (0 allowed: the job goes straight to ready).
    pub length: u64,
    /// Bytes per chunk: a power of two in [512 B, 64 MiB]. Default 64 KiB.
    pub granularity: u64,
    /// Bytes of copy buffers in flight; rounded up to a multiple of the granularity. Default 16 MiB.
    pub buf_size: u64,
    /// Largest single copy in bytes, a multiple of the granularity. Default 1 MiB.
    pub max_io: u64,
    /// Most background copies in flight at once. Default 16.
    pub max_in_flight: usize,
    /// Speed limit in bytes per second; 0 means unlimited.
    pub speed_bytes_per_sec: u64,
    /// Which parts to copy.
    pub sync: SyncMode,
    /// How guest writes reach the target.
    pub copy_mode: CopyMode,
    /// Policy for failed source reads.
    pub on_source_error: ErrorPolicy,
    /// Policy for failed target writes and flushes.
    pub on_target_error: ErrorPolicy,
    /// Whether a discard on the target makes it read zeroes (then zero reads become discards).
    pub discard_reads_zero: bool,
    /// Window over which dirty bytes must shrink before `BLOCK_JOB_NOT_CONVERGING` fires (ns);
    /// 0 turns the event off. Default 10 s.
    pub not_converging_window_ns: u64,
}

impl MirrorConfig {
    /// The defaults for a disk of `length` bytes.
    pub fn new(length: u64) -> Self {
        Self {
            length,
            granularity: 64 << 10,
            buf_size: 16 << 20,
            max_io: 1 << 20,
            max_in_flight: 16,
            speed_bytes_per_sec: 0,
            sync: SyncMode::Full,
            copy_mode: CopyMode::Background,
            on_source_error: ErrorPolicy::Report,
            on_target_error: ErrorPolicy::Report,
            discard_reads_zero: false,
            not_converging_window_ns: 10_000_000_000,
        }
    }
}
