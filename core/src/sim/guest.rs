//! The guest's write stream: where each write goes and when the next one arrives.

use super::config::{GuestConfig, Pattern};
use super::rng::Rng;

/// Generates guest write ranges and arrival times from the guest configuration.
#[derive(Debug, Clone)]
pub struct Workload {
    config: GuestConfig,
    disk_length: u64,
    /// Bytes per write after clipping to the disk.
    write_size: u64,
    /// Nanoseconds between arrivals at the nominal rate.
    interval_ns: u64,
    /// Next offset of the sequential pattern.
    cursor: u64,
    rng: Rng,
}

impl Workload {
    /// The stream for `config` on a disk of `disk_length` bytes.
    pub fn new(config: &GuestConfig, disk_length: u64, rng: Rng) -> Self {
        let write_size = config.write_size.min(disk_length);
        let interval_ns = match config.write_rate_bytes_per_sec {
            0 => u64::MAX,
            rate => {
                let ns = (u128::from(write_size) * 1_000_000_000).div_ceil(u128::from(rate));
                u64::try_from(ns).unwrap_or(u64::MAX).max(1)
            }
        };
        Self { config: config.clone(), disk_length, write_size, interval_ns, cursor: 0, rng }
    }

    /// Whether the guest writes at all.
    pub fn active(&self) -> bool {
        self.config.write_rate_bytes_per_sec > 0 && self.write_size > 0
    }

    /// Nanoseconds until the next arrival: exponentially distributed around the mean
    /// interval (a Poisson process), or exactly the mean if arrivals are regular.
    pub fn next_gap_ns(&mut self) -> u64 {
        if self.config.regular_arrivals || self.interval_ns >= u64::MAX / 64 {
            self.interval_ns
        } else {
            (self.interval_ns as f64 * self.rng.exponential()) as u64
        }
    }

    /// Whether the guest still writes at `now_ns`.
    pub fn writing_at(&self, now_ns: u64) -> bool {
        self.active() && self.config.stop_ns.is_none_or(|stop| now_ns < stop)
    }

    /// The range of the next write, as (offset, length).
    pub fn next_range(&mut self) -> (u64, u64) {
        let size = self.write_size;
        let align = self.config.write_align.max(1);
        // Aligned slots where a whole write fits; at least slot 0 (size <= disk length).
        let slots = (self.disk_length - size) / align + 1;
        let slot = match self.config.pattern {
            Pattern::Uniform => self.rng.below(slots),
            Pattern::HotSpot { hot_fraction, hot_share } => {
                let hot_slots = ((slots as f64 * hot_fraction) as u64).clamp(1, slots);
                if self.rng.chance(hot_share) {
                    self.rng.below(hot_slots)
                } else {
                    self.rng.below(slots)
                }
            }
            Pattern::Sequential => {
                let offset = self.cursor;
                self.cursor = if offset + 2 * size <= self.disk_length { offset + size } else { 0 };
                return (offset, size);
            }
        };
        (slot * align, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pattern: Pattern) -> GuestConfig {
        GuestConfig { pattern, write_rate_bytes_per_sec: 4096 * 1000, ..GuestConfig::default() }
    }

    #[test]
    fn writes_stay_inside_the_disk_and_aligned() {
        for pattern in [Pattern::Uniform, Pattern::HOT_SPOT_90_10, Pattern::Sequential] {
            let mut w = Workload::new(&config(pattern), 1 << 20, Rng::new(1));
            let mean = (0..1000).map(|_| w.next_gap_ns()).sum::<u64>() / 1000;
            assert!((900_000..1_100_000).contains(&mean), "mean gap {mean}");
            for _ in 0..1000 {
                let (offset, length) = w.next_range();
                assert_eq!(length, 4096);
                assert_eq!(offset % 4096, 0);
                assert!(offset + length <= 1 << 20, "{pattern:?}");
            }
        }
    }

    #[test]
    fn hot_spot_concentrates_writes() {
        let mut w = Workload::new(&config(Pattern::HOT_SPOT_90_10), 1 << 30, Rng::new(2));
        let hot = (0..10_000).filter(|_| w.next_range().0 < (1 << 30) / 10).count();
        assert!((9_000..9_300).contains(&hot), "{hot} of 10000 in the hot tenth");
    }

    #[test]
    fn sequential_wraps_and_small_disks_clip_the_size() {
        let mut w = Workload::new(&config(Pattern::Sequential), 10_000, Rng::new(3));
        let offsets: Vec<_> = (0..4).map(|_| w.next_range().0).collect();
        assert_eq!(offsets, [0, 4096, 0, 4096]);
        let mut tiny = Workload::new(&config(Pattern::Uniform), 100, Rng::new(3));
        assert_eq!(tiny.next_range(), (0, 100));
    }
}
