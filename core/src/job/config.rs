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

names!(
    SyncMode,
    "sync mode",
    ConfigError,
    Full = "full",
    Top = "top",
    None = "none"
);
names!(
    CopyMode,
    "copy mode",
    ConfigError,
    Background = "background",
    WriteBlocking = "write-blocking"
);
names!(
    ErrorPolicy,
    "error policy",
    ConfigError,
    Report = "report",
    Ignore = "ignore",
    Stop = "stop",
    Enospc = "enospc"
);
names!(
    RangeState,
    "range state",
    ConfigError,
    Allocated = "allocated",
    Unallocated = "unallocated",
    Zero = "zero"
);

/// Invalid configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The granularity is not a power of two in [512 B, 64 MiB].
    #[error("granularity {0} must be a power of two between 512 and 67108864")]
    Granularity(u64),
    /// `max_io` is zero, not a multiple of the granularity, or above [`MAX_MAX_IO`].
    #[error("max_io {max_io} must be a non-zero multiple of the granularity {granularity}, at most 67108864")]
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
    /// `auto_converge` with `not_converging_window_ns` 0: nothing would ever trigger it.
    #[error("auto_converge needs a non-zero not_converging_window_ns")]
    AutoConvergeWithoutWindow,
    /// An unknown name for a mode or policy.
    #[error("unknown {what} {name:?}")]
    UnknownName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
    },
}

/// Default bytes per chunk (64 KiB).
pub const DEFAULT_GRANULARITY: u64 = 64 << 10;
/// Smallest granularity (512 B).
pub const MIN_GRANULARITY: u64 = 512;
/// Largest granularity (64 MiB).
pub const MAX_GRANULARITY: u64 = 64 << 20;
/// Default bytes of copy buffers in flight (16 MiB).
pub const DEFAULT_BUF_SIZE: u64 = 16 << 20;
/// Default largest single copy (4 MiB, four in flight with the default `buf_size`). A
/// contiguous dirty run is copied in steps this long: a disk that splits requests at its
/// segment limit gets each copy as one or two requests instead of four or more, and each
/// copy costs one completion, wake-up and job step. Drivers are expected to find a long
/// copy's zero parts and write them as zeroes, as shorter copies would have.
pub const DEFAULT_MAX_IO: u64 = 4 << 20;
/// Largest `max_io` accepted (64 MiB, the largest granularity): it bounds the size of one
/// copy buffer.
pub const MAX_MAX_IO: u64 = 64 << 20;
/// Longest copy in write-blocking mode (1 MiB, or `max_io` when smaller): a guest write
/// that overlaps a copy in flight waits for it, so copies there stay short whatever
/// `max_io` the bulk phase uses.
pub const WRITE_BLOCKING_MAX_COPY: u64 = 1 << 20;
/// Longest copy once the job has been ready (1 MiB, or less when `largest_copy` is): the
/// copies then follow the guest's own writes, which land beside and inside them, so long
/// copies only slow those writes (measured on real files: 4 MiB copies in a ready mirror
/// cost a writing guest up to a quarter of its writes per second) while the backlog is
/// small and gains nothing from them.
pub const READY_MAX_COPY: u64 = 1 << 20;
// Two default copies fit the default buffer budget (one's read overlaps another's write).
const _: () = assert!(DEFAULT_MAX_IO <= DEFAULT_BUF_SIZE / 2);
/// Default most background copies in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// Default window for `BLOCK_JOB_NOT_CONVERGING` (10 s).
pub const DEFAULT_NOT_CONVERGING_WINDOW_NS: u64 = 10_000_000_000;

/// Everything that shapes a mirror job. Build with [`MirrorConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Disk length in bytes (0 allowed: the job goes straight to ready).
    pub length: u64,
    /// Bytes per chunk: a power of two in [512 B, 64 MiB]. Default 64 KiB.
    pub granularity: u64,
    /// Bytes of copy buffers in flight; rounded up to a multiple of the granularity. Default 16 MiB.
    pub buf_size: u64,
    /// Largest single copy in bytes, a multiple of the granularity, at most [`MAX_MAX_IO`].
    /// Default 1 MiB. A copy is also at most half of `buf_size` (see
    /// [`largest_copy`](Self::largest_copy)), so a larger `max_io` needs no larger `buf_size`
    /// to work: raise `buf_size` to at least twice `max_io` for copies of the full `max_io`.
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
    /// Auto-converge: in background mode, the job switches itself to write-blocking when
    /// background copying loses the race against the guest, and says so with
    /// [`Event::AutoConverge`](super::Event::AutoConverge). Two triggers, both over
    /// `not_converging_window_ns` (which must not be 0): its own
    /// [`Event::NotConverging`](super::Event::NotConverging), or, while `running`, the guest
    /// dirtying at least 90 % of the copy rate for a whole window (a noisy equilibrium keeps
    /// postponing the former). Default false.
    pub auto_converge: bool,
}

impl MirrorConfig {
    /// The defaults for a disk of `length` bytes.
    pub fn new(length: u64) -> Self {
        Self {
            length,
            granularity: DEFAULT_GRANULARITY,
            buf_size: DEFAULT_BUF_SIZE,
            max_io: DEFAULT_MAX_IO,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            speed_bytes_per_sec: 0,
            sync: SyncMode::Full,
            copy_mode: CopyMode::Background,
            on_source_error: ErrorPolicy::Report,
            on_target_error: ErrorPolicy::Report,
            discard_reads_zero: false,
            not_converging_window_ns: DEFAULT_NOT_CONVERGING_WINDOW_NS,
            auto_converge: false,
        }
    }

    /// The longest background copy the job issues now, in bytes (a multiple of the
    /// granularity, at least one chunk): `max_io`, but at most
    /// - half of `buf_size` (rounded down to whole chunks), so at least two copies fit the
    ///   buffer budget and one's read overlaps another's write (a `max_io` above it then
    ///   works without a larger `buf_size`, with shorter copies);
    /// - [`WRITE_BLOCKING_MAX_COPY`] in write-blocking mode, where guest writes wait for
    ///   the copies they overlap;
    /// - one slice's quota of the speed limit (`speed / 10`), so a limited copy proceeds in
    ///   steps of at most one slice instead of bursts of `max_io` and long pauses.
    ///
    /// Read from the current settings, so a speed or copy mode changed while the job runs
    /// applies to the next copy.
    pub fn largest_copy(&self) -> u64 {
        let granularity = self.granularity;
        let mut bytes = self.max_io.min(self.buf_size / 2);
        if self.copy_mode == CopyMode::WriteBlocking {
            bytes = bytes.min(WRITE_BLOCKING_MAX_COPY);
        }
        if self.speed_bytes_per_sec != 0 {
            bytes = bytes.min(self.speed_bytes_per_sec / 10);
        }
        (bytes / granularity * granularity).max(granularity)
    }

    /// [`largest_copy`](Self::largest_copy), capped at [`READY_MAX_COPY`] once the job
    /// has been ready (`ready_reached`).
    pub fn largest_copy_in_phase(&self, ready_reached: bool) -> u64 {
        let bytes = self.largest_copy();
        if ready_reached {
            bytes.min((READY_MAX_COPY / self.granularity * self.granularity).max(self.granularity))
        } else {
            bytes
        }
    }

    /// Checks the knobs' rules: the granularity is a power of two in
    /// [[`MIN_GRANULARITY`], [`MAX_GRANULARITY`]]; `max_io` is a non-zero multiple of it, at
    /// most [`MAX_MAX_IO`];
    /// `buf_size` is at least 1 (it is rounded up to whole chunks, which must fit a `u64`);
    /// `max_in_flight` is at least 1; `auto_converge` needs a non-zero
    /// `not_converging_window_ns`. [`MirrorJob::new`](super::MirrorJob::new) checks the
    /// same (and that the bitmap for `length` can be made); drivers and faces call this to
    /// refuse a configuration before building anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let granularity = self.granularity;
        if !granularity.is_power_of_two()
            || !(MIN_GRANULARITY..=MAX_GRANULARITY).contains(&granularity)
        {
            return Err(ConfigError::Granularity(granularity));
        }
        if self.max_io == 0 || self.max_io % granularity != 0 || self.max_io > MAX_MAX_IO {
            return Err(ConfigError::MaxIo {
                max_io: self.max_io,
                granularity,
            });
        }
        if self.buf_size == 0
            || self
                .buf_size
                .div_ceil(granularity)
                .checked_mul(granularity)
                .is_none()
        {
            return Err(ConfigError::BufSize);
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::MaxInFlight);
        }
        if self.auto_converge && self.not_converging_window_ns == 0 {
            return Err(ConfigError::AutoConvergeWithoutWindow);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_holds_the_rules_new_applies() {
        assert_eq!(MirrorConfig::new(1 << 30).validate(), Ok(()));
        let with = |f: fn(&mut MirrorConfig)| {
            let mut c = MirrorConfig::new(1 << 30);
            f(&mut c);
            c.validate()
        };
        assert_eq!(
            with(|c| c.granularity = MIN_GRANULARITY / 2),
            Err(ConfigError::Granularity(256))
        );
        assert_eq!(
            with(|c| c.granularity = MAX_GRANULARITY * 2),
            Err(ConfigError::Granularity(128 << 20))
        );
        assert!(matches!(
            with(|c| c.max_io = 4096),
            Err(ConfigError::MaxIo { .. })
        ));
        assert!(matches!(
            with(|c| c.max_io = MAX_MAX_IO * 2),
            Err(ConfigError::MaxIo { .. })
        ));
        assert_eq!(with(|c| c.max_io = MAX_MAX_IO), Ok(()));
        assert_eq!(with(|c| c.buf_size = 0), Err(ConfigError::BufSize));
        assert_eq!(
            with(|c| c.buf_size = u64::MAX),
            Err(ConfigError::BufSize),
            "rounding up overflows"
        );
        assert_eq!(with(|c| c.max_in_flight = 0), Err(ConfigError::MaxInFlight));
        assert_eq!(
            with(|c| {
                c.auto_converge = true;
                c.not_converging_window_ns = 0;
            }),
            Err(ConfigError::AutoConvergeWithoutWindow)
        );
        assert_eq!(with(|c| c.auto_converge = true), Ok(()));
        let sim = crate::sim::SimConfig::new(MirrorConfig {
            granularity: 3,
            ..MirrorConfig::new(1 << 20)
        });
        assert_eq!(
            sim.validate(),
            Err(crate::sim::SimConfigError::Job(ConfigError::Granularity(3)))
        );
    }

    #[test]
    fn largest_copy_follows_the_budget_the_mode_and_the_speed() {
        let mut c = MirrorConfig::new(1 << 30);
        assert_eq!(c.largest_copy(), DEFAULT_MAX_IO, "the defaults copy whole max_io runs");
        assert_eq!(c.largest_copy_in_phase(false), DEFAULT_MAX_IO);
        assert_eq!(c.largest_copy_in_phase(true), READY_MAX_COPY, "shorter once ready");
        c.max_io = 32 << 20;
        assert_eq!(c.largest_copy(), DEFAULT_BUF_SIZE / 2, "half the buffer budget");
        c.buf_size = 100 << 10;
        assert_eq!(c.largest_copy(), 64 << 10, "rounded down to whole chunks");
        c.buf_size = 1;
        assert_eq!(c.largest_copy(), 64 << 10, "never below one chunk");
        c.buf_size = DEFAULT_BUF_SIZE;
        c.copy_mode = CopyMode::WriteBlocking;
        assert_eq!(c.largest_copy(), WRITE_BLOCKING_MAX_COPY);
        c.max_io = 256 << 10;
        assert_eq!(c.largest_copy(), 256 << 10, "max_io when it is smaller");
        c.copy_mode = CopyMode::Background;
        c.max_io = 4 << 20;
        c.speed_bytes_per_sec = 8 << 20;
        assert_eq!(c.largest_copy(), 768 << 10, "one slice's quota, in whole chunks");
        c.speed_bytes_per_sec = 1;
        assert_eq!(c.largest_copy(), 64 << 10);
    }
}
