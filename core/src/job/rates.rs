//! Rate estimates (beyond QEMU): guest dirtying rate, copy rate, ETA to ready, and the
//! not-converging detector. All in virtual time supplied by the driver.
//!
//! The detector has two rules, and one `BLOCK_JOB_NOT_CONVERGING` per episode of either:
//! - the stall ([`StallWatch`]): dirty bytes did not reach a new low for a whole window;
//! - the forecast ([`DrainForecast`], while running): over the last window the guest newly
//!   dirtied at least half as many bytes as the job copied, and at the pace measured over
//!   that window the remaining bytes would need more than [`NOT_CONVERGING_ETA_WINDOWS`]
//!   windows to clear. The stall alone misses a backlog that shrinks too slowly to finish in
//!   any useful time, and a noisy equilibrium that keeps touching new lows.

use super::time::Nanos;

/// Width of one rate bucket.
const BUCKET_NS: u64 = 100_000_000;
/// Buckets in the sliding window (2 s in all).
const BUCKETS: usize = 20;

/// The forecast rule's bound, in not-converging windows: the job is not converging when, at
/// the pace measured over the last window, its remaining bytes need longer than this many
/// windows to clear (with the default 10 s window: 10 s). One window is the bound because
/// the window already says how long the job may go without visible progress; a shorter
/// bound would flag the last seconds of a healthy copy, a longer one would miss a noisy
/// equilibrium, whose backlog is small and whose measured net drain is noise of the order
/// of that backlog per window (its forecast comes out at one to a few windows).
pub const NOT_CONVERGING_ETA_WINDOWS: u64 = 1;

/// Bytes per second over a sliding window of virtual time, in fixed buckets: O(1) per
/// sample, no allocation. Also counts the bytes of all time, for longer windows.
#[derive(Debug, Clone)]
pub(super) struct RateWindow {
    /// `(absolute bucket index, bytes)`; a slot is stale when its index left the window.
    slots: [(u64, u64); BUCKETS],
    started_ns: Option<u64>,
    /// Every byte added so far (saturating).
    total_bytes: u64,
}

impl RateWindow {
    pub(super) fn new() -> Self {
        Self {
            slots: [(u64::MAX, 0); BUCKETS],
            started_ns: None,
            total_bytes: 0,
        }
    }

    /// Every byte added so far.
    pub(super) fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Starts measuring at `now` (rates before the start are meaningless).
    pub(super) fn start(&mut self, now: Nanos) {
        self.started_ns.get_or_insert(now.0);
    }

    pub(super) fn add(&mut self, now: Nanos, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.total_bytes = self.total_bytes.saturating_add(bytes);
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

/// The job's backlog at one instant, as the not-converging detector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backlog {
    /// Dirty bytes in the bitmap.
    pub(super) dirty_bytes: u64,
    /// Dirty bytes plus bytes in flight: what stands between the job and ready.
    pub(super) remaining_bytes: u64,
    /// Bytes copied (or actively mirrored) since the start.
    pub(super) copied_bytes: u64,
    /// Bytes the guest newly dirtied since the start.
    pub(super) dirtied_bytes: u64,
}

/// Why a not-converging episode began, with the rates that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotConvergingRule {
    /// Dirty bytes reached no new low for a whole window.
    Stalled,
    /// The forecast: the remaining bytes would not clear in a useful time.
    TooSlow {
        /// Newly dirtied bytes per second over the last window.
        dirty_bytes_per_sec: u64,
        /// Copied bytes per second over the last window.
        copy_bytes_per_sec: u64,
    },
}

/// The not-converging detector: a [`StallWatch`] and a [`DrainForecast`], reporting one
/// episode while either rule holds (a rule that begins while the other's episode lasts
/// says nothing new).
#[derive(Debug, Clone)]
pub(super) struct ConvergenceWatch {
    stall: StallWatch,
    forecast: DrainForecast,
}

impl ConvergenceWatch {
    pub(super) fn new() -> Self {
        Self {
            stall: StallWatch::new(),
            forecast: DrainForecast::new(),
        }
    }

    /// Whether a not-converging episode of either rule is under way: from the step that
    /// emits `BLOCK_JOB_NOT_CONVERGING` until both rules have ended theirs (or the watch
    /// stopped).
    pub(super) fn in_episode(&self) -> bool {
        self.stall.in_episode() || self.forecast.in_episode()
    }

    /// Records the backlog at `now`. `watching` is false when convergence is not the job's
    /// business (not started, paused, write-blocking, ending): both measurements restart.
    /// `forecasting` (only meaningful with `watching`) is false once the job has been ready:
    /// then it copies what the guest dirties, so the rates are equal by design and only the
    /// stall rule applies. Returns the rule when a not-converging episode begins.
    pub(super) fn observe(
        &mut self,
        now: Nanos,
        backlog: Backlog,
        watching: bool,
        forecasting: bool,
        window_ns: u64,
    ) -> Option<NotConvergingRule> {
        let was_stalled = self.stall.in_episode();
        let was_slow = self.forecast.in_episode();
        let stalled = self
            .stall
            .observe(now, backlog.dirty_bytes, watching, window_ns);
        let slow = self
            .forecast
            .observe(now, backlog, watching && forecasting, window_ns);
        if was_stalled || was_slow {
            return None;
        }
        match (stalled, slow) {
            (_, Some(rates)) => Some(rates),
            (true, None) => Some(NotConvergingRule::Stalled),
            (false, None) => None,
        }
    }
}

/// Watches whether the dirty bytes shrink: fires once per episode when they have not gone
/// below their lowest value for a whole window; re-arms when they shrink below it again.
#[derive(Debug, Clone)]
pub(super) struct StallWatch {
    low_water_bytes: u64,
    low_water_at_ns: u64,
    fired: bool,
}

impl StallWatch {
    pub(super) fn new() -> Self {
        Self {
            low_water_bytes: u64::MAX,
            low_water_at_ns: 0,
            fired: false,
        }
    }

    /// Whether a stall episode is under way.
    pub(super) fn in_episode(&self) -> bool {
        self.fired
    }

    /// Records the dirty bytes at `now`; `watching` false restarts the measurement and ends
    /// an episode. Returns true when a stall episode begins.
    pub(super) fn observe(
        &mut self,
        now: Nanos,
        dirty_bytes: u64,
        watching: bool,
        window_ns: u64,
    ) -> bool {
        if !watching || dirty_bytes == 0 || dirty_bytes < self.low_water_bytes {
            self.fired = false;
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

/// Snapshots per window in [`DrainForecast`]: the forecast is renewed every quarter window.
const FORECAST_STEPS: usize = 4;

/// Forecasts the time to ready over the last window (at least `window_ns` long, measured
/// from the totals, so exact whatever the window; renewed every quarter window, O(1) memory):
/// the copy rate `c` and newly-dirtied rate `d` over it give the time the remaining bytes
/// need, `remaining / (c - d)` (unbounded when `d >= c`). The window is *slow* when the
/// guest is the reason (`2d >= c`: it at least doubles the time the copy alone would need;
/// a large disk copied without a busy guest is never slow) and the forecast exceeds
/// [`NOT_CONVERGING_ETA_WINDOWS`] windows. An episode begins with a slow window and ends
/// with the first window that is not.
#[derive(Debug, Clone)]
pub(super) struct DrainForecast {
    /// `(ns, copied bytes, dirtied bytes)`, oldest first, at least a quarter window apart.
    snapshots: [(u64, u64, u64); FORECAST_STEPS + 1],
    /// Snapshots held (the first `len` of `snapshots`).
    len: usize,
    slow: bool,
}

impl DrainForecast {
    pub(super) fn new() -> Self {
        Self {
            snapshots: [(0, 0, 0); FORECAST_STEPS + 1],
            len: 0,
            slow: false,
        }
    }

    /// Whether a slow episode is under way.
    pub(super) fn in_episode(&self) -> bool {
        self.slow
    }

    /// Records the backlog at `now`; `watching` false restarts the measurement and ends an
    /// episode. Returns the window's rates when a slow episode begins.
    pub(super) fn observe(
        &mut self,
        now: Nanos,
        backlog: Backlog,
        watching: bool,
        window_ns: u64,
    ) -> Option<NotConvergingRule> {
        if !watching || window_ns == 0 {
            self.len = 0;
            self.slow = false;
            return None;
        }
        let step_ns = (window_ns / FORECAST_STEPS as u64).max(1);
        if self.len > 0 && now.0.saturating_sub(self.snapshots[self.len - 1].0) < step_ns {
            return None;
        }
        self.snapshots[self.len] = (now.0, backlog.copied_bytes, backlog.dirtied_bytes);
        self.len += 1;
        if self.len <= FORECAST_STEPS {
            return None; // less than a whole window measured
        }
        // FORECAST_STEPS steps of at least a quarter window each: a whole window.
        let (start_ns, copied_then, dirtied_then) = self.snapshots[0];
        self.snapshots.copy_within(1.., 0);
        self.len -= 1;
        let elapsed_ns = u128::from(now.0 - start_ns);
        let copied = u128::from(backlog.copied_bytes.saturating_sub(copied_then));
        let dirtied = u128::from(backlog.dirtied_bytes.saturating_sub(dirtied_then));
        let remaining = u128::from(backlog.remaining_bytes);
        let bound_ns = u128::from(window_ns) * u128::from(NOT_CONVERGING_ETA_WINDOWS);
        let guest_is_the_reason = dirtied > 0 && 2 * dirtied >= copied;
        // remaining / ((copied - dirtied) / elapsed) > bound, without dividing.
        let too_long = dirtied >= copied || remaining * elapsed_ns > bound_ns * (copied - dirtied);
        let slow = remaining > 0 && guest_is_the_reason && too_long;
        let began = slow && !self.slow;
        self.slow = slow;
        began.then(|| {
            let per_sec =
                |bytes: u128| u64::try_from(bytes * 1_000_000_000 / elapsed_ns).unwrap_or(u64::MAX);
            NotConvergingRule::TooSlow {
                dirty_bytes_per_sec: per_sec(dirtied),
                copy_bytes_per_sec: per_sec(copied),
            }
        })
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
    fn a_stall_fires_once_per_episode() {
        let mut watch = StallWatch::new();
        let window = 1_000;
        assert!(!watch.observe(Nanos(0), 100, true, window));
        assert!(!watch.observe(Nanos(500), 120, true, window));
        assert!(watch.observe(Nanos(1_000), 110, true, window));
        assert!(!watch.observe(Nanos(5_000), 110, true, window));
        // Shrinking re-arms; a new flat window fires again.
        assert!(!watch.observe(Nanos(6_000), 90, true, window));
        assert!(watch.observe(Nanos(7_000), 95, true, window));
        assert!(watch.in_episode());
        // Not watching restarts the measurement and ends the episode.
        assert!(!watch.observe(Nanos(8_000), 95, false, window));
        assert!(!watch.in_episode());
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

    const WINDOW: u64 = 1_000;

    fn backlog(remaining: u64, copied: u64, dirtied: u64) -> Backlog {
        Backlog {
            dirty_bytes: remaining,
            remaining_bytes: remaining,
            copied_bytes: copied,
            dirtied_bytes: dirtied,
        }
    }

    /// Feeds `forecast` a steady job every `step` ns from `from` to `to`: copying `copy` and
    /// newly dirtying `dirty` bytes per ns, with the remaining bytes following from them.
    /// Returns the instants a slow episode began.
    fn steady(
        forecast: &mut DrainForecast,
        (from, to, step): (u64, u64, u64),
        remaining_at_start: u64,
        (copy, dirty): (u64, u64),
    ) -> Vec<u64> {
        let mut began = Vec::new();
        let mut t = from;
        while t <= to {
            let elapsed = t - from;
            let remaining = (remaining_at_start + dirty * elapsed).saturating_sub(copy * elapsed);
            let seen = backlog(remaining, copy * t, dirty * t);
            if forecast.observe(Nanos(t), seen, true, WINDOW).is_some() {
                began.push(t);
            }
            t += step;
        }
        began
    }

    #[test]
    fn an_equilibrium_is_slow_after_one_window() {
        let mut forecast = DrainForecast::new();
        // The guest dirties exactly what the job copies: the backlog never clears.
        let began = steady(&mut forecast, (0, 10_000, 10), 500, (100, 100));
        assert_eq!(
            began,
            vec![WINDOW],
            "once per episode, after a whole window"
        );
        assert!(forecast.in_episode());
    }

    #[test]
    fn a_backlog_that_shrinks_too_slowly_is_slow() {
        let mut forecast = DrainForecast::new();
        // Net drain 5 bytes/ns against 100 copied: 1_000_000 bytes need 200 windows.
        let began = steady(&mut forecast, (0, 3_000, 10), 1_000_000, (100, 95));
        assert_eq!(began, vec![WINDOW]);
    }

    #[test]
    fn a_backlog_that_clears_within_the_bound_is_not_slow() {
        let mut forecast = DrainForecast::new();
        // Net drain 40 bytes/ns: 30_000 bytes need 750 ns, under one window.
        assert!(steady(&mut forecast, (0, 700, 10), 30_000, (100, 60)).is_empty());
        // The same backlog at 41 % of the copy rate: far beyond the bound, but the guest does
        // not even halve the copy; it is just a large copy.
        let mut forecast = DrainForecast::new();
        assert!(steady(&mut forecast, (0, 5_000, 10), 1 << 40, (100, 49)).is_empty());
    }

    #[test]
    fn without_a_guest_a_huge_copy_is_never_slow() {
        let mut forecast = DrainForecast::new();
        assert!(steady(&mut forecast, (0, 100_000, 10), u64::MAX / 2, (100, 0)).is_empty());
        // Nothing moving at all (the I/O is stuck) is not the guest's doing either.
        let mut forecast = DrainForecast::new();
        assert!(steady(&mut forecast, (0, 100_000, 10), 1 << 30, (0, 0)).is_empty());
    }

    #[test]
    fn a_fast_window_ends_the_episode_and_not_watching_restarts() {
        let mut forecast = DrainForecast::new();
        assert_eq!(
            steady(&mut forecast, (0, 2_000, 10), 500, (100, 100)),
            vec![WINDOW]
        );
        // The guest goes quiet: the next full window is fast and ends the episode...
        let (copied, dirtied) = (100 * 2_000, 100 * 2_000);
        let mut t = 2_000;
        while t <= 3_500 {
            let seen = backlog(1, copied + 100 * (t - 2_000), dirtied);
            assert!(forecast.observe(Nanos(t), seen, true, WINDOW).is_none());
            t += 10;
        }
        assert!(!forecast.in_episode());
        // ...and a new slow window begins a new one.
        let began = steady(&mut forecast, (3_510, 6_000, 10), 500, (100, 100));
        assert_eq!(began.len(), 1, "{began:?}");
        // Not watching ends the episode and discards the measurement: a whole window again.
        assert!(forecast
            .observe(Nanos(6_010), backlog(500, 0, 0), false, WINDOW)
            .is_none());
        assert!(!forecast.in_episode());
        let began = steady(&mut forecast, (7_000, 9_000, 10), 500, (100, 100));
        assert_eq!(began, vec![7_000 + WINDOW]);
    }

    #[test]
    fn the_forecast_reports_the_rates_of_its_window() {
        let mut forecast = DrainForecast::new();
        let mut rule = None;
        for t in (0..=WINDOW).step_by(250) {
            let seen = backlog(500, 3 * t, 2 * t);
            rule = forecast.observe(Nanos(t), seen, true, WINDOW).or(rule);
        }
        // 3 bytes/ns copied, 2 newly dirtied: 500 bytes need 500 ns... under the bound.
        assert_eq!(rule, None);
        let mut forecast = DrainForecast::new();
        for t in (0..=WINDOW).step_by(250) {
            let seen = backlog(5_000, 3 * t, 2 * t);
            rule = forecast.observe(Nanos(t), seen, true, WINDOW).or(rule);
        }
        assert_eq!(
            rule,
            Some(NotConvergingRule::TooSlow {
                dirty_bytes_per_sec: 2_000_000_000,
                copy_bytes_per_sec: 3_000_000_000,
            })
        );
    }

    #[test]
    fn one_episode_while_either_rule_holds() {
        let mut watch = ConvergenceWatch::new();
        let mut began = Vec::new();
        // A flat backlog in equilibrium: both rules hold, after one window each.
        for t in (0..=5_000).step_by(10) {
            if let Some(rule) =
                watch.observe(Nanos(t), backlog(500, 100 * t, 100 * t), true, true, WINDOW)
            {
                began.push((t, rule));
            }
        }
        assert_eq!(began.len(), 1, "{began:?}");
        // A noisy equilibrium touching new lows: the stall re-arms, the forecast holds; no
        // second event.
        for (i, t) in (5_010..=9_000).step_by(10).enumerate() {
            let low = 499 - (i as u64 / 50);
            let rule = watch.observe(Nanos(t), backlog(low, 100 * t, 100 * t), true, true, WINDOW);
            assert_eq!(rule, None, "at {t}");
        }
        // Without forecasting (the job was ready), only the stall rule speaks.
        let mut ready = ConvergenceWatch::new();
        let mut rules = Vec::new();
        for t in (0..=5_000).step_by(10) {
            let low = 1_000 - t / 10;
            rules.extend(ready.observe(
                Nanos(t),
                backlog(low, 100 * t, 100 * t),
                true,
                false,
                WINDOW,
            ));
        }
        assert!(rules.is_empty(), "{rules:?}");
    }

    proptest::proptest! {
        /// Whatever the copy pace, a guest that never dirties anything never makes the
        /// forecast slow, and the forecast never fires twice without a fast window between.
        #[test]
        fn the_forecast_needs_the_guest(
            copies in proptest::collection::vec(0u64..1_000_000, 1..200),
            dirties in proptest::collection::vec(0u64..1_000_000, 1..200),
            remaining in 0u64..u64::MAX / 4,
            step in 1u64..600,
        ) {
            let mut idle = DrainForecast::new();
            let mut busy = DrainForecast::new();
            let (mut copied, mut dirtied) = (0u64, 0u64);
            for (i, copy) in copies.iter().enumerate() {
                let t = i as u64 * step;
                copied += copy;
                dirtied += dirties[i % dirties.len()];
                proptest::prop_assert!(idle
                    .observe(Nanos(t), backlog(remaining, copied, 0), true, WINDOW)
                    .is_none());
                let was_slow = busy.in_episode();
                let began = busy
                    .observe(Nanos(t), backlog(remaining, copied, dirtied), true, WINDOW)
                    .is_some();
                proptest::prop_assert!(!(began && was_slow));
            }
        }
    }
}
