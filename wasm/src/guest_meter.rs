//! What mirroring costs the guest: the write throughput it achieves and the mean latency of
//! its writes, over a sliding window of virtual time.
//!
//! The page samples the simulation once per frame: the guest's cumulative bytes and writes,
//! and the simulator's time integral of its writes in flight. Throughput is bytes over the
//! window's span; latency follows from Little's law (the integral's growth ÷ the writes
//! completed), which needs no per-write timestamps and no sampling of the queue, so it is
//! as good at 200x (a few samples per window) as at 1x.

use std::collections::VecDeque;

/// The window the figures are taken over (as long as the job's own rate windows).
pub const GUEST_WINDOW_NS: u64 = 2_000_000_000;

/// At most this many samples are kept (a frame each: 2 s at 1x and 60 frames/s is 120),
/// so a very fast page cannot grow the window without bound.
const MAX_SAMPLES: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    time_ns: u64,
    bytes: u64,
    writes: u64,
    /// Writes in flight integrated over time, write-ns.
    in_flight_ns: u128,
}

/// The guest's figures at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GuestCost {
    /// Bytes per second the guest's writes achieved over the window.
    pub bytes_per_sec: f64,
    /// Mean time from a write taking its queue slot to its acknowledgement, in ns; None
    /// when no write completed in the window (an idle guest has no latency to show).
    pub latency_ns: Option<f64>,
}

/// Samples over the last [`GUEST_WINDOW_NS`] of virtual time.
#[derive(Debug, Clone, Default)]
pub struct GuestMeter {
    samples: VecDeque<Sample>,
}

impl GuestMeter {
    /// Records the guest's counters at `time_ns`: bytes and writes so far, and the time
    /// integral of its writes in flight. A sample no later than the last is ignored (the
    /// clock did not move).
    pub fn sample(&mut self, time_ns: u64, bytes: u64, writes: u64, in_flight_ns: u128) {
        if self.samples.back().is_some_and(|last| time_ns <= last.time_ns) {
            return;
        }
        self.samples.push_back(Sample { time_ns, bytes, writes, in_flight_ns });
        // Keep one sample at or before the window's start, so the span covers the window.
        while self.samples.len() > 2 && self.samples[1].time_ns + GUEST_WINDOW_NS <= time_ns {
            self.samples.pop_front();
        }
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// The figures over the window; zero throughput and no latency before two samples.
    pub fn cost(&self) -> GuestCost {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return GuestCost::default();
        };
        let span_ns = last.time_ns.saturating_sub(first.time_ns);
        if span_ns == 0 {
            return GuestCost::default();
        }
        let bytes_per_sec = last.bytes.saturating_sub(first.bytes) as f64 / (span_ns as f64 / 1e9);
        let writes = last.writes.saturating_sub(first.writes);
        let waited_ns = last.in_flight_ns.saturating_sub(first.in_flight_ns) as f64;
        let latency_ns = (writes > 0).then(|| waited_ns / writes as f64);
        GuestCost { bytes_per_sec, latency_ns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_and_latency_follow_littles_law() {
        let mut m = GuestMeter::default();
        // 1000 writes of 4 KiB per second, 4 always in flight: each takes 4 ms.
        for k in 0..=200u64 {
            m.sample(k * 10_000_000, k * 10 * 4096, k * 10, u128::from(k) * 10_000_000 * 4);
        }
        let c = m.cost();
        assert!((c.bytes_per_sec - 4096.0 * 1000.0).abs() < 1.0, "{c:?}");
        let latency = c.latency_ns.unwrap();
        assert!((latency - 4e6).abs() < 1.0, "{latency}");
    }

    #[test]
    fn the_window_forgets_old_samples() {
        let mut m = GuestMeter::default();
        m.sample(0, 0, 0, 0);
        m.sample(1_000_000_000, 1 << 30, 1000, 32_000_000_000); // a burst long ago
        for k in 0..=300u64 {
            m.sample(10_000_000_000 + k * 10_000_000, 1 << 30, 1000, 32_000_000_000); // then idle
        }
        let c = m.cost();
        assert_eq!(c.bytes_per_sec, 0.0);
        assert_eq!(c.latency_ns, None, "no write completed in the window");
    }

    #[test]
    fn a_clock_that_stands_still_adds_nothing() {
        let mut m = GuestMeter::default();
        assert_eq!(m.cost(), GuestCost::default());
        m.sample(5, 10, 1, 1);
        m.sample(5, 99, 9, 9);
        assert_eq!(m.cost(), GuestCost::default());
        for k in 0..10_000u64 {
            m.sample(6 + k, 10, 1, 1);
        }
        assert!(m.samples.len() <= MAX_SAMPLES);
    }
}
