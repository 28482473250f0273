//! The speed limit, modelled on QEMU's slice-based rate limiter (`include/qemu/ratelimit.h`,
//! which QEMU's block jobs use for their `speed`).
//!
//! Time is cut into 100 ms slices with a quota of `max(1, speed / 10)` bytes each. Bytes are
//! charged when a read is issued; a read may overshoot the quota (a burst of one run), and
//! the overshoot is paid for by stretching the slice to `start + (dispatched / quota) × 100 ms`.
//! Speed 0 means unlimited.

use super::time::Nanos;

/// Length of one rate-limit slice.
pub const SLICE_NS: u64 = 100_000_000;

/// Slice state of the speed limit.
#[derive(Debug, Clone)]
pub(super) struct RateLimiter {
    bytes_per_sec: u64,
    slice_start_ns: u64,
    slice_end_ns: u64,
    dispatched_bytes: u64,
}

impl RateLimiter {
    pub(super) fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec,
            slice_start_ns: 0,
            slice_end_ns: 0,
            dispatched_bytes: 0,
        }
    }

    /// Changes the speed; the current slice keeps its charges and is judged by the new quota.
    pub(super) fn set_speed(&mut self, bytes_per_sec: u64) {
        self.bytes_per_sec = bytes_per_sec;
    }

    fn quota_bytes(&self) -> u64 {
        (self.bytes_per_sec / (1_000_000_000 / SLICE_NS)).max(1)
    }

    /// `None` if a read may be issued at `now`, else the instant to call back.
    pub(super) fn blocked_until(&mut self, now: Nanos) -> Option<Nanos> {
        if self.bytes_per_sec == 0 || now.0 >= self.slice_end_ns {
            return None;
        }
        let quota = self.quota_bytes();
        if self.dispatched_bytes < quota {
            return None;
        }
        // (dispatched / quota) slices, fractions included, as QEMU computes it in floating
        // point: rounding down to whole slices would let a 1 MiB copy under a 0.8 MiB quota
        // go every 100 ms instead of every 125 ms (25 % over the limit).
        let stretch_ns = u128::from(self.dispatched_bytes) * u128::from(SLICE_NS) / u128::from(quota);
        self.slice_end_ns = self
            .slice_start_ns
            .saturating_add(u64::try_from(stretch_ns).unwrap_or(u64::MAX));
        if now.0 >= self.slice_end_ns {
            None
        } else {
            Some(Nanos(self.slice_end_ns))
        }
    }

    /// Charges `bytes` issued at `now`, opening a new slice if the last one has ended.
    pub(super) fn charge(&mut self, now: Nanos, bytes: u64) {
        if self.bytes_per_sec == 0 {
            return;
        }
        if now.0 >= self.slice_end_ns {
            self.slice_start_ns = now.0;
            self.slice_end_ns = now.0.saturating_add(SLICE_NS);
            self.dispatched_bytes = 0;
        }
        self.dispatched_bytes = self.dispatched_bytes.saturating_add(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_blocks() {
        let mut limiter = RateLimiter::new(0);
        limiter.charge(Nanos(0), u64::MAX);
        assert_eq!(limiter.blocked_until(Nanos(0)), None);
    }

    #[test]
    fn quota_per_slice_then_stretch() {
        // 10 MB/s: 1 MB per 100 ms slice.
        let mut limiter = RateLimiter::new(10_000_000);
        assert_eq!(limiter.blocked_until(Nanos(5)), None);
        limiter.charge(Nanos(5), 600_000);
        assert_eq!(limiter.blocked_until(Nanos(6)), None);
        limiter.charge(Nanos(6), 2_500_000);
        // 3.1 MB dispatched = 3.1 quotas: the slice stretches to 310 ms after its start.
        let end = 5 + 31 * SLICE_NS / 10;
        assert_eq!(limiter.blocked_until(Nanos(7)), Some(Nanos(end)));
        assert_eq!(limiter.blocked_until(Nanos(end - 1)), Some(Nanos(end)));
        assert_eq!(limiter.blocked_until(Nanos(end)), None);
        limiter.charge(Nanos(end), 1);
        assert_eq!(limiter.blocked_until(Nanos(end + 1)), None);
    }

    #[test]
    fn raising_the_speed_unblocks_at_once() {
        let mut limiter = RateLimiter::new(10);
        limiter.charge(Nanos(0), 1 << 20);
        assert!(limiter.blocked_until(Nanos(1)).is_some());
        limiter.set_speed(1 << 40);
        assert_eq!(limiter.blocked_until(Nanos(1)), None);
    }
}
