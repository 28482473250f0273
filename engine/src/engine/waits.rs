//! Waiting on a running mirror: for READY, for the end, for the next event. Every wait
//! wakes at least once a second, so a caller's own timeout handling stays simple.

use std::time::{Duration, Instant};

use crate::events::EventRecord;
use crate::shared::State;

use super::FileMirror;

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// What was waited for happened.
    Reached,
    /// The job ended first.
    Ended,
    /// The timeout passed.
    TimedOut,
}

impl FileMirror {
    /// Waits until the job is ready (or has ended, or `timeout` passed).
    pub fn wait_ready(&self, timeout: Option<Duration>) -> WaitOutcome {
        self.wait_for(timeout, |st| {
            if st.ready_seen {
                Some(WaitOutcome::Reached)
            } else if st.finished() {
                Some(WaitOutcome::Ended)
            } else {
                None
            }
        })
    }

    /// Waits until the job has ended and every I/O has finished.
    pub fn wait_end(&self, timeout: Option<Duration>) -> WaitOutcome {
        self.wait_for(timeout, |st| st.finished().then_some(WaitOutcome::Reached))
    }

    fn wait_for(&self, timeout: Option<Duration>, done: impl Fn(&State) -> Option<WaitOutcome>) -> WaitOutcome {
        let deadline = deadline_after(timeout);
        let mut st = self.shared.lock();
        loop {
            if let Some(outcome) = done(&st) {
                return outcome;
            }
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return WaitOutcome::TimedOut,
                },
                // Wake now and then anyway: a caller's own timeout handling stays simple.
                None => Duration::from_secs(1),
            };
            st = self.shared.wait_changed(st, wait);
        }
    }

    /// The next event, waiting up to `timeout`; `None` when none came, or when the job has
    /// ended and every event was taken. A record may stand for several identical errors
    /// (`EventRecord::count`; see `events` for when one is held back to gather them).
    pub fn next_event(&self, timeout: Option<Duration>) -> Option<EventRecord> {
        let deadline = deadline_after(timeout);
        let mut st = self.shared.lock();
        loop {
            let finished = st.finished();
            let held_ns = match st.events.pop(self.shared.now().0, finished) {
                Ok(record) => return Some(record),
                Err(held_ns) => held_ns,
            };
            if finished && held_ns.is_none() {
                return None;
            }
            let mut wait = match deadline {
                Some(d) => d.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?,
                None => Duration::from_secs(1),
            };
            if let Some(ns) = held_ns {
                wait = wait.min(Duration::from_nanos(ns));
            }
            st = self.shared.wait_changed(st, wait);
        }
    }

    /// Takes every event not yet taken (held ones too), for a consumer that outlives the
    /// mirror (the Python binding keeps them after `close`).
    pub fn take_events(&self) -> Vec<EventRecord> {
        self.shared.lock().events.drain()
    }
}

/// The instant `timeout` from now; `None` (wait without end) when there is no timeout or it
/// lies beyond what `Instant` can represent (such a wait never ends in practice either).
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}
