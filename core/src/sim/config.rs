//! What a simulation runs: the job's configuration plus the world around it.

use super::device::DeviceConfig;
use crate::fault::FaultRule;
use crate::job::{ConfigError, CopyMode, IoErrorKind, MirrorConfig};
use crate::names::names;
use std::fmt;
use std::str::FromStr;

/// Where the guest writes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Pattern {
    /// Uniformly random aligned offsets over the whole disk.
    #[default]
    Uniform,
    /// A share `hot_share` of the writes go to the first `hot_fraction` of the disk, the rest
    /// uniformly anywhere (e.g. 0.9 of writes to 0.1 of the disk).
    HotSpot {
        /// Fraction of the disk (from offset 0) that is hot, in (0, 1].
        hot_fraction: f64,
        /// Fraction of the writes that go to the hot region, in [0, 1].
        hot_share: f64,
    },
    /// Consecutive writes from offset 0, wrapping at the end of the disk.
    Sequential,
}

impl Pattern {
    /// The shared name: `uniform`, `hotspot` or `sequential`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Pattern::Uniform => "uniform",
            Pattern::HotSpot { .. } => "hotspot",
            Pattern::Sequential => "sequential",
        }
    }

    /// The usual hot spot: 90 % of writes to 10 % of the disk.
    pub const HOT_SPOT_90_10: Pattern = Pattern::HotSpot { hot_fraction: 0.1, hot_share: 0.9 };
}

impl FromStr for Pattern {
    type Err = SimConfigError;
    fn from_str(s: &str) -> Result<Self, SimConfigError> {
        match s {
            "uniform" => Ok(Pattern::Uniform),
            "hotspot" | "hot-spot" | "hot_spot" => Ok(Pattern::HOT_SPOT_90_10),
            "sequential" => Ok(Pattern::Sequential),
            _ => Err(SimConfigError::UnknownName { what: "pattern", name: s.to_owned() }),
        }
    }
}

/// The guest: a writer with a rate, a write size and a bounded queue depth.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestConfig {
    /// Where it writes.
    pub pattern: Pattern,
    /// Bytes per second it tries to write; 0 means the guest never writes.
    pub write_rate_bytes_per_sec: u64,
    /// Bytes per write (clipped to the disk length).
    pub write_size: u64,
    /// Write offsets are multiples of this (1 allows any offset).
    pub write_align: u64,
    /// Writes the guest keeps outstanding at most; arrivals wait for a free slot. A
    /// write-blocking mirror therefore slows the guest down to the target's pace.
    pub queue_depth: u32,
    /// The guest's first write happens at this time.
    pub start_ns: u64,
    /// The guest stops writing at this time (None: never).
    pub stop_ns: Option<u64>,
    /// Arrivals exactly one mean interval apart. Off by default: the guest is then a Poisson
    /// process (exponential gaps with the same mean), which neither falls into lock-step
    /// with the copy pipeline nor forbids the quiet spells a background mirror needs.
    pub regular_arrivals: bool,
}

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            pattern: Pattern::Uniform,
            write_rate_bytes_per_sec: 0,
            write_size: 4096,
            write_align: 4096,
            queue_depth: 32,
            start_ns: 0,
            stop_ns: None,
            regular_arrivals: false,
        }
    }
}

/// Fault injection.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultConfig {
    /// Scripted faults: the job's I/O on each side, counted in issue order (reads on the
    /// source; writes, zero-writes, discards, guest writes and flushes on the target).
    pub scripted: Vec<FaultRule>,
    /// Probability that a job read of the source fails (within the window).
    pub source_rate: f64,
    /// Probability that a job I/O on the target fails (within the window).
    pub target_rate: f64,
    /// How random faults fail.
    pub random_error: Option<IoErrorKind>,
    /// How random faults on the target fail, when that differs (None: as `random_error`).
    pub target_random_error: Option<IoErrorKind>,
    /// Random faults happen only for I/O issued in `[from, until)` (None: always).
    pub window_ns: Option<(u64, u64)>,
}

/// A command given to the job at a scripted time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `pause()`.
    Pause,
    /// `resume()`.
    Resume,
    /// `set_speed(bytes_per_sec)`.
    SetSpeed(u64),
    /// `set_copy_mode(mode)`.
    SetCopyMode(CopyMode),
    /// `complete()`.
    Complete,
    /// `cancel(force)`.
    Cancel {
        /// Whether the cancel is forced.
        force: bool,
    },
    /// `dismiss()`.
    Dismiss,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Pause => f.write_str("pause"),
            Command::Resume => f.write_str("resume"),
            Command::SetSpeed(bps) => write!(f, "set_speed({bps})"),
            Command::SetCopyMode(m) => write!(f, "set_copy_mode({m})"),
            Command::Complete => f.write_str("complete"),
            Command::Cancel { force: false } => f.write_str("cancel"),
            Command::Cancel { force: true } => f.write_str("cancel(force)"),
            Command::Dismiss => f.write_str("dismiss"),
        }
    }
}

/// A command and when to give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptedCommand {
    /// Virtual time of the command.
    pub at_ns: u64,
    /// The command.
    pub command: Command,
}

/// What the source holds at the start, and what the simulator declares to the job.
#[derive(Debug, Clone, PartialEq)]
pub struct LayoutConfig {
    /// Fraction of the disk holding data, in [0, 1]. The rest is a hole (sync `full`: reads
    /// zero, and the target starts zeroed) or unallocated in the top layer (sync `top`: the
    /// target shares the backing image, so those chunks already match).
    pub data_fraction: f64,
    /// Holes and unallocated areas come in extents of this many chunks.
    pub extent_chunks: u64,
    /// Whether to `declare` the layout to the job before the start (otherwise the job
    /// discovers holes by reading zeroes).
    pub declare: bool,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        Self { data_fraction: 1.0, extent_chunks: 16, declare: true }
    }
}

/// When a job read takes its snapshot of the source. A read races with guest writes that
/// complete while it is in flight; a real device may return the old or the new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReadCapture {
    /// The source as it was when the read was issued.
    Issue,
    /// The source as it is when the read completes.
    Completion,
    /// Per chunk, either of the two, drawn from the seed: the most adversarial choice, so
    /// the default.
    #[default]
    Either,
}

/// The most chunks a simulated disk may have. The disks keep two version words per chunk
/// (source and target), so this caps them at 4 GiB (a 1 TiB disk at 4 KiB chunks, or
/// 16 TiB at 64 KiB); a larger disk is refused up front rather than failing to allocate
/// half-way. Below the cap, allocation is still fallible ([`SimError::OutOfMemory`](super::SimError::OutOfMemory)).
pub const MAX_CHUNKS: u64 = 1 << 28;

/// Bounds that turn a run that never reaches its goal into an outcome instead of a hang.
///
/// The defaults cost seconds of CPU, not minutes: 10 M steps (a few seconds) and an hour
/// of virtual time, and a run towards ready or concluded ends at the job's first
/// `BLOCK_JOB_NOT_CONVERGING` when nothing in the configuration could change that later
/// (see [`SimConfig::stops_at_not_converging`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Most events one `run_until` call processes.
    pub max_steps: u64,
    /// Most virtual nanoseconds one `run_until` call advances.
    pub max_duration_ns: u64,
    /// End a run towards [`Goal::Ready`](super::Goal::Ready) or
    /// [`Goal::Concluded`](super::Goal::Concluded) with
    /// [`RunOutcome::NotConverging`](super::RunOutcome::NotConverging) once the job has
    /// reported `BLOCK_JOB_NOT_CONVERGING`, unless the configuration could still change the
    /// rates (see [`SimConfig::stops_at_not_converging`]).
    pub stop_at_not_converging: bool,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self { max_steps: 10_000_000, max_duration_ns: 3_600_000_000_000, stop_at_not_converging: true }
    }
}

/// Everything a simulation needs. Build with [`SimConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The job under test.
    pub job: MirrorConfig,
    /// Seed of every random choice.
    pub seed: u64,
    /// The guest.
    pub guest: GuestConfig,
    /// Source timing (job reads and guest writes share it).
    pub source: DeviceConfig,
    /// Target timing.
    pub target: DeviceConfig,
    /// Fault injection.
    pub faults: FaultConfig,
    /// Commands at times.
    pub commands: Vec<ScriptedCommand>,
    /// Initial contents.
    pub layout: LayoutConfig,
    /// Call `complete()` as soon as the job is ready.
    pub complete_on_ready: bool,
    /// After a `stop` error pauses the job, call `resume()` this much later (None: never).
    pub resume_after_stop_ns: Option<u64>,
    /// Interval of the time-series samples (0: no samples).
    pub sample_interval_ns: u64,
    /// Most samples kept; sampling stops when full.
    pub max_samples: usize,
    /// A chunk counts as "recently written by the guest" for this long (for `chunk_states`).
    pub recent_write_window_ns: u64,
    /// Keep a full step trace (memory grows with the run); the digest is always kept.
    pub record_trace: bool,
    /// When job reads take their snapshot of the source.
    pub read_capture: ReadCapture,
    /// Default bounds for `run_until`.
    pub limits: RunLimits,
}

impl SimConfig {
    /// Defaults around a job configuration: no guest writes, no faults, unlimited bandwidth
    /// with 100 µs latency on both sides, samples every 100 ms.
    pub fn new(job: MirrorConfig) -> Self {
        Self {
            job,
            seed: 0,
            guest: GuestConfig::default(),
            source: DeviceConfig::default(),
            target: DeviceConfig::default(),
            faults: FaultConfig::default(),
            commands: Vec::new(),
            layout: LayoutConfig::default(),
            complete_on_ready: false,
            resume_after_stop_ns: None,
            sample_interval_ns: 100_000_000,
            max_samples: 100_000,
            recent_write_window_ns: 200_000_000,
            record_trace: false,
            read_capture: ReadCapture::Either,
            limits: RunLimits::default(),
        }
    }

    /// Whether a run towards ready or concluded ends at the job's `BLOCK_JOB_NOT_CONVERGING`:
    /// [`RunLimits::stop_at_not_converging`], and nothing configured could make the job
    /// converge afterwards: no auto-converge ([`MirrorConfig::auto_converge`]), no scripted
    /// commands, no guest that stops, no fault window that ends, no automatic resume. (A
    /// steady workload that has stopped converging for a whole window will not converge.)
    pub fn stops_at_not_converging(&self) -> bool {
        self.limits.stop_at_not_converging
            && !self.job.auto_converge
            && self.commands.is_empty()
            && self.guest.stop_ns.is_none()
            && self.faults.window_ns.is_none()
            && self.resume_after_stop_ns.is_none()
    }

    /// Check the job's rules ([`MirrorConfig::validate`]) and the simulator's own fields.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        self.job.validate()?;
        let (length, granularity) = (self.job.length, self.job.granularity);
        let chunks = length.div_ceil(granularity);
        if chunks > MAX_CHUNKS {
            return Err(SimConfigError::TooManyChunks { length, granularity, chunks });
        }
        let g = &self.guest;
        if g.write_rate_bytes_per_sec > 0 {
            if g.write_size == 0 {
                return Err(SimConfigError::Invalid("write_size must be at least 1 byte"));
            }
            if g.write_align == 0 {
                return Err(SimConfigError::Invalid("write_align must be at least 1"));
            }
            if g.queue_depth == 0 {
                return Err(SimConfigError::Invalid("queue_depth must be at least 1"));
            }
        }
        if let Pattern::HotSpot { hot_fraction, hot_share } = g.pattern {
            if !(hot_fraction > 0.0 && hot_fraction <= 1.0) {
                return Err(SimConfigError::Fraction { what: "hot_fraction", value: hot_fraction });
            }
            if !(0.0..=1.0).contains(&hot_share) {
                return Err(SimConfigError::Fraction { what: "hot_share", value: hot_share });
            }
        }
        for (what, value) in [
            ("source_fault_rate", self.faults.source_rate),
            ("target_fault_rate", self.faults.target_rate),
            ("data_fraction", self.layout.data_fraction),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SimConfigError::Fraction { what, value });
            }
        }
        if let Some((from, until)) = self.faults.window_ns {
            if from > until {
                return Err(SimConfigError::Invalid("the fault window must not end before it starts"));
            }
        }
        if self.layout.extent_chunks == 0 {
            return Err(SimConfigError::Invalid("extent_chunks must be at least 1"));
        }
        if self.limits.max_steps == 0 {
            return Err(SimConfigError::Invalid("max_steps must be at least 1"));
        }
        Ok(())
    }
}

/// Invalid simulator configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimConfigError {
    /// The job's configuration breaks a rule of [`MirrorConfig::validate`].
    #[error(transparent)]
    Job(#[from] ConfigError),
    /// A fraction or probability outside [0, 1] (or (0, 1] for `hot_fraction`).
    #[error("{what} must be a fraction between 0 and 1, got {value}")]
    Fraction {
        /// Which field.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// An unknown name for a pattern, side, command or error kind.
    #[error("unknown {what} {name:?}")]
    UnknownName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// The disk has more chunks than the simulator holds ([`MAX_CHUNKS`]).
    #[error(
        "a simulated disk of {length} bytes at granularity {granularity} has {chunks} chunks; \
         the simulator holds at most {MAX_CHUNKS} (use a larger granularity)"
    )]
    TooManyChunks {
        /// The disk length in bytes.
        length: u64,
        /// The chunk size in bytes.
        granularity: u64,
        /// The chunk count that length and granularity give.
        chunks: u64,
    },
    /// Some other field is out of range; the message says which.
    #[error("{0}")]
    Invalid(&'static str),
}

names!(
    ReadCapture,
    "read capture",
    SimConfigError,
    Issue = "issue",
    Completion = "completion",
    Either = "either"
);
