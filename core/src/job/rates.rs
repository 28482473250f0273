//! Rate estimates (beyond QEMU): guest dirtying rate, copy rate, ETA to ready, and the
//! not-converging detector. All in virtual time supplied by the driver.

use super::time::Nanos;

/// Width of one rate bucket.
const BUCKET_NS: u64 = 100_000_000;
/// Buckets in the sliding window (2 s in all).
const BUCKETS: usize = 20;

/// Bytes per second over a sliding window of virtual time, in fixed buckets: O(1) per
/// sample, no allocation.
#[derive(Debug, Clone)]
pub(super) struct RateWindow {
    /// `(absolute bucket index, bytes)`; a slot is stale when its index left the window.
    slots: [(u64, u64); BUCKETS],
    started_ns: Option<u64>,
}

impl RateWindow {
    pub(super) fn new() -> Self {
        Self {
            slots: [(u64::MAX, 0); BUCKETS],
            started_ns: None,
        }
    }

    /// Starts measuring at `now` (rates before the start are meaningless).
    pub(super) fn start(&mut self, now: Nanos) {
        self.started_ns.get_or_insert(now.0);
    }

    pub(super) fn add(&mut self, now: Nanos, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let index = now.0 / BUCKET_NS;
        let slot = &mut self.slots[(index % BUCKETS as u64) as usize];
        if slot.0 != index {
            *slot = (index, 0);
        }
        slot.1 = slot.1.saturating_add(bytes);
    }

    /// Bytes per second over the last window (or since the start, if that is shorter).
    pub(super) fn per_sec(&self, now: Nanos) -> u64 {
        let Some(started_ns) = self.started_ns else {
            return 0;
        };
        let newest = now.0 / BUCKET_NS;
        let oldest = newest.saturating_sub(BUCKETS as u64 - 1);
        let bytes: u128 = self
            .slots
            .iter()
            .filter(|(index, _)| *index != u64::MAX && (oldest..=newest).contains(index))
            .map(|(_, bytes)| *bytes as u128)
            .sum();
        let window_ns = (now.0 - oldest * BUCKET_NS)
            .min(now.0.saturating_sub(started_ns))
            .max(BUCKET_NS);
        u64::try_from(bytes * 1_000_000_000 / window_ns as u128).unwrap_or(u64::MAX)
    }
}

/// Watches whether the dirty bytes shrink: fires once per episode when they have not gone
/// below their lowest value for a whole window; re-arms when they shrink below it again.
#[derive(Debug, Clone)]
pub(super) struct ConvergenceWatch {
    low_water_bytes: u64,
    low_water_at_ns: u64,
    fired: bool,
}

impl ConvergenceWatch {
    pub(super) fn new() -> Self {
        Self {
            low_water_bytes: u64::MAX,
            low_water_at_ns: 0,
            fired: false,
        }
    }

    /// Records the dirty bytes at `now`. `watching` is false when convergence is not the
    /// job's business at the moment (not started, paused, write-blocking, ending): the
    /// measurement restarts. Returns true when a not-converging episode begins.
    pub(super) fn observe(
        &mut self,
        now: Nanos,
        dirty_bytes: u64,
        watching: bool,
        window_ns: u64,
    ) -> bool {
        if !watching || dirty_bytes == 0 || dirty_bytes < self.low_water_bytes {
            if dirty_bytes < self.low_water_bytes || dirty_bytes == 0 {
                self.fired = false;
            }
            self.low_water_bytes = if watching { dirty_bytes } else { u64::MAX };
            self.low_water_at_ns = now.0;
            return false;
        }
        if !self.fired && now.0.saturating_sub(self.low_water_at_ns) >= window_ns {
            self.fired = true;
            return true;
        }
        false
    }
}

/// Auto-converge's rate rule: fires once the guest has newly dirtied at least 90 % of what
/// the job copied, continuously for a whole window. Unlike [`ConvergenceWatch`], a noisy
/// equilibrium (dirty bytes wobbling to new lows) does not postpone it.
#[derive(Debug, Clone)]
pub(super) struct RaceWatch {
    /// Since when the guest has been dirtying about as fast as the job copies.
    behind_since_ns: Option<u64>,
}

impl RaceWatch {
    pub(super) fn new() -> Self {
        Self {
            behind_since_ns: None,
        }
    }

    /// Records the rates at `now`; `watching` false restarts the measurement. Returns true
    /// when the guest has been at least 90 % as fast as the copy for `window_ns`.
    pub(super) fn observe(
        &mut self,
        now: Nanos,
        dirty_bytes_per_sec: u64,
        copy_bytes_per_sec: u64,
        watching: bool,
        window_ns: u64,
    ) -> bool {
        let behind = copy_bytes_per_sec > 0
            && u128::from(dirty_bytes_per_sec) * 10 >= u128::from(copy_bytes_per_sec) * 9;
        if !watching || !behind {
            self.behind_since_ns = None;
            return false;
        }
        let since = *self.behind_since_ns.get_or_insert(now.0);
        now.0.saturating_sub(since) >= window_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_is_measured() {
        let mut window = RateWindow::new();
        window.start(Nanos(0));
        for step in 0..50u64 {
            window.add(Nanos(step * 100_000_000), 1_000_000);
        }
        // 1 MB every 100 ms = 10 MB/s.
        let rate = window.per_sec(Nanos(4_950_000_000));
        assert!((9_000_000..=11_000_000).contains(&rate), "{rate}");
        // Two quiet seconds later the window is empty.
        assert_eq!(window.per_sec(Nanos(8_000_000_000)), 0);
    }

    #[test]
    fn not_converging_fires_once_per_episode() {
        let mut watch = ConvergenceWatch::new();
        let window = 1_000;
        assert!(!watch.observe(Nanos(0), 100, true, window));
        assert!(!watch.observe(Nanos(500), 120, true, window));
        assert!(watch.observe(Nanos(1_000), 110, true, window));
        assert!(!watch.observe(Nanos(5_000), 110, true, window));
        // Shrinking re-arms; a new flat window fires again.
        assert!(!watch.observe(Nanos(6_000), 90, true, window));
        assert!(watch.observe(Nanos(7_000), 95, true, window));
        // Not watching restarts the measurement.
        assert!(!watch.observe(Nanos(8_000), 95, false, window));
        assert!(!watch.observe(Nanos(8_500), 95, true, window));
        assert!(!watch.observe(Nanos(9_000), 95, true, window));
    }

    #[test]
    fn the_race_is_lost_after_a_whole_window_at_90_percent() {
        let mut watch = RaceWatch::new();
        let window = 1_000;
        assert!(!watch.observe(Nanos(0), 90, 100, true, window));
        assert!(!watch.observe(Nanos(999), 95, 100, true, window));
        assert!(watch.observe(Nanos(1_000), 90, 100, true, window));
        // Falling below 90 % (or not watching, or no copying at all) restarts the window.
        assert!(!watch.observe(Nanos(1_100), 89, 100, true, window));
        assert!(!watch.observe(Nanos(1_200), 100, 100, true, window));
        assert!(!watch.observe(Nanos(2_100), 100, 100, false, window));
        assert!(!watch.observe(Nanos(2_200), 100, 0, true, window));
        assert!(!watch.observe(Nanos(3_000), 100, 100, true, window));
        assert!(watch.observe(Nanos(4_000), 100, 100, true, window));
    }
}
