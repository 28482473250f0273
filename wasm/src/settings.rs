//! What the page may choose, checked before any simulation is built: bad input from the
//! page is a [`DemoError`], never a panic.

use blockmirror_core::fault::{FaultOp, FaultRule, Side};
use blockmirror_core::job::{ConfigError, CopyMode, ErrorPolicy, IoErrorKind, JobError, MirrorConfig};
use blockmirror_core::sim::{Pattern, SimConfig, SimConfigError, SimError};

/// The most chunks a demo may have: the page draws up to 1 Mi chunks (a 64 GiB disk at
/// 64 KiB), and each chunk costs the simulator a few dozen bytes.
pub const MAX_CHUNKS: u64 = 1 << 20;

/// Bytes per guest write in the demo. Larger than a typical 4 KiB write so that the high
/// write rates of the busy-disk scenarios stay cheap to simulate frame by frame.
pub const GUEST_WRITE_BYTES: u64 = 32 << 10;

/// Dirty bytes must shrink within this window, or the job reports NOT_CONVERGING. Shorter
/// than the library's default so that the busy-disk scenario shows it within seconds.
pub const NOT_CONVERGING_WINDOW_NS: u64 = 3_000_000_000;

/// Bad input from the page.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// A disk of zero bytes, or one that is not a whole number of bytes.
    #[error("disk size {0} must be a whole number of bytes above 0")]
    DiskSize(f64),
    /// Too many chunks to draw.
    #[error("{chunks} chunks is too many for the page (at most {max}); choose a larger granularity")]
    TooManyChunks {
        /// Chunks the choice would give.
        chunks: u64,
        /// The limit.
        max: u64,
    },
    /// A rate that is negative or not a number.
    #[error("{what} {value} must be a number of bytes per second, 0 or more")]
    Rate {
        /// Which rate.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// An unknown name for a fault kind or side.
    #[error("unknown {what} {name:?}")]
    UnknownName {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// The job refused a configuration value or a verb (the job is unchanged).
    #[error(transparent)]
    Job(#[from] JobError),
    /// The simulator refused a configuration value.
    #[error(transparent)]
    Sim(#[from] SimError),
}

impl From<ConfigError> for DemoError {
    fn from(e: ConfigError) -> Self {
        DemoError::Job(JobError::Config(e))
    }
}

impl From<SimConfigError> for DemoError {
    fn from(e: SimConfigError) -> Self {
        DemoError::Sim(SimError::Config(e))
    }
}

/// A byte count or rate from JavaScript (a double) as a `u64`.
pub fn bytes_from_js(what: &'static str, value: f64) -> Result<u64, DemoError> {
    if !(value.is_finite() && value >= 0.0 && value <= u64::MAX as f64) {
        return Err(DemoError::Rate { what, value });
    }
    Ok(value.round() as u64)
}

/// How one side's I/O fails, as the page offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultChoice {
    /// Never.
    None,
    /// Now and then, with an I/O error (EIO).
    Sometimes,
    /// Every write, with "no space left on device" (ENOSPC): a full target.
    Full,
}

/// Probability that an I/O fails when faults are "sometimes".
pub const SOMETIMES_FAULT_RATE: f64 = 0.02;

impl FaultChoice {
    /// Parses the page's names: `none`, `io` (sometimes) and `full`.
    pub fn from_name(name: &str) -> Result<Self, DemoError> {
        match name {
            "none" => Ok(FaultChoice::None),
            "io" => Ok(FaultChoice::Sometimes),
            "full" => Ok(FaultChoice::Full),
            _ => Err(DemoError::UnknownName { what: "fault", name: name.to_owned() }),
        }
    }

    /// (probability of failing, how it fails).
    pub fn rate_and_error(self) -> (f64, IoErrorKind) {
        match self {
            FaultChoice::None => (0.0, IoErrorKind::Io),
            FaultChoice::Sometimes => (SOMETIMES_FAULT_RATE, IoErrorKind::Io),
            FaultChoice::Full => (1.0, IoErrorKind::NoSpace),
        }
    }
}

/// What a new demo is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoSettings {
    /// Disk length in bytes.
    pub disk_bytes: u64,
    /// Chunk size in bytes (a power of two, 512 B to 64 MiB).
    pub granularity: u64,
    /// How guest writes reach the target.
    pub copy_mode: CopyMode,
    /// Policy for failed source reads.
    pub on_source_error: ErrorPolicy,
    /// Policy for failed target writes.
    pub on_target_error: ErrorPolicy,
    /// Seed of every random choice in the simulation.
    pub seed: u64,
    /// The target write (counting from 1) that fails once with an I/O error, a one-off
    /// fault next to the lasting ones the page switches on and off; 0: none.
    pub target_error_once_at_write: u64,
}

impl DemoSettings {
    /// Checks the page's choices (names as the page sends them).
    pub fn parse(
        disk_bytes: f64,
        granularity: f64,
        copy_mode: &str,
        on_source_error: &str,
        on_target_error: &str,
        seed: u32,
    ) -> Result<Self, DemoError> {
        if !(disk_bytes.is_finite() && disk_bytes >= 1.0 && disk_bytes.fract() == 0.0 && disk_bytes <= u64::MAX as f64) {
            return Err(DemoError::DiskSize(disk_bytes));
        }
        let granularity = bytes_from_js("granularity", granularity)?;
        Ok(Self {
            disk_bytes: disk_bytes as u64,
            granularity,
            copy_mode: copy_mode.parse()?,
            on_source_error: on_source_error.parse()?,
            on_target_error: on_target_error.parse()?,
            seed: u64::from(seed),
            target_error_once_at_write: 0,
        })
    }

    /// The simulator configuration: the job as chosen, a guest that starts idle, and a
    /// target whose bandwidth the page sets.
    pub fn sim_config(&self) -> Result<SimConfig, DemoError> {
        let mut job = MirrorConfig::new(self.disk_bytes);
        job.granularity = self.granularity;
        job.copy_mode = self.copy_mode;
        job.on_source_error = self.on_source_error;
        job.on_target_error = self.on_target_error;
        job.not_converging_window_ns = NOT_CONVERGING_WINDOW_NS;
        // Large chunks get one-chunk copies; then the core's rules (the chunk count must be
        // bounded before the simulator allocates its disks, and counting chunks needs a
        // valid granularity).
        job.max_io = job.max_io.max(self.granularity);
        job.buf_size = job.buf_size.max(self.granularity);
        job.validate()?;
        let chunks = self.disk_bytes.div_ceil(self.granularity);
        if chunks > MAX_CHUNKS {
            return Err(DemoError::TooManyChunks { chunks, max: MAX_CHUNKS });
        }
        let mut config = SimConfig::new(job);
        config.seed = self.seed;
        config.guest.write_size = GUEST_WRITE_BYTES;
        config.guest.write_align = 4096;
        config.guest.pattern = Pattern::Uniform;
        // The page plots its own samples, once per frame.
        config.sample_interval_ns = 0;
        if self.target_error_once_at_write > 0 {
            let once = FaultRule::new(Side::Target, FaultOp::Write, self.target_error_once_at_write, 1, IoErrorKind::Io)
                .expect("nth is at least 1");
            config.faults.scripted.push(once);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(disk: f64, gran: f64) -> Result<DemoSettings, DemoError> {
        DemoSettings::parse(disk, gran, "background", "report", "enospc", 7)
    }

    #[test]
    fn names_are_the_shared_ones() {
        let s = DemoSettings::parse(1e9, 65536.0, "write-blocking", "ignore", "stop", 1).unwrap();
        assert_eq!(s.copy_mode, CopyMode::WriteBlocking);
        assert_eq!(s.on_source_error, ErrorPolicy::Ignore);
        assert_eq!(s.on_target_error, ErrorPolicy::Stop);
        let err = DemoSettings::parse(1e9, 65536.0, "blocking", "report", "report", 1).unwrap_err();
        assert_eq!(err.to_string(), "unknown copy mode \"blocking\"");
        assert!(matches!(DemoSettings::parse(1e9, 65536.0, "background", "retry", "report", 1), Err(DemoError::Job(_))));
    }

    #[test]
    fn disk_sizes_must_be_whole_positive_numbers() {
        for bad in [0.0, -1.0, 1.5, f64::NAN, f64::INFINITY] {
            assert!(matches!(parse(bad, 65536.0), Err(DemoError::DiskSize(_))), "{bad}");
        }
        assert_eq!(parse(512.0, 65536.0).unwrap().disk_bytes, 512);
    }

    #[test]
    fn granularity_and_chunk_count_are_checked() {
        assert!(matches!(parse(1e9, 1000.0).unwrap().sim_config(), Err(DemoError::Job(JobError::Config(_)))));
        assert!(matches!(parse(1e9, 256.0).unwrap().sim_config(), Err(DemoError::Job(JobError::Config(_)))));
        let too_big = parse((64u64 << 30) as f64 * 2.0, 65536.0).unwrap().sim_config();
        assert_eq!(too_big, Err(DemoError::TooManyChunks { chunks: 2 << 20, max: MAX_CHUNKS }));
        let one_mi = parse((64u64 << 30) as f64, 65536.0).unwrap().sim_config().unwrap();
        assert_eq!(one_mi.job.length.div_ceil(one_mi.job.granularity), MAX_CHUNKS);
    }

    #[test]
    fn a_large_granularity_raises_max_io_and_buffers() {
        let config = parse(1e9, (4u64 << 20) as f64).unwrap().sim_config().unwrap();
        assert_eq!(config.job.max_io, 4 << 20);
        assert!(config.job.buf_size >= 4 << 20);
    }

    #[test]
    fn rates_from_js_must_be_non_negative_numbers() {
        assert_eq!(bytes_from_js("rate", 1.4), Ok(1));
        assert!(bytes_from_js("rate", -1.0).is_err());
        assert!(bytes_from_js("rate", f64::NAN).is_err());
        assert!(bytes_from_js("rate", f64::INFINITY).is_err());
    }

    #[test]
    fn fault_choices() {
        assert_eq!(FaultChoice::from_name("full").unwrap().rate_and_error(), (1.0, IoErrorKind::NoSpace));
        assert_eq!(FaultChoice::from_name("none").unwrap().rate_and_error().0, 0.0);
        assert!(FaultChoice::from_name("sometimes").is_err());
    }
}
