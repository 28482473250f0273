//! The events a mirror has not yet handed to its consumer: a bounded queue that counts
//! repeated errors instead of storing them one by one.
//!
//! Under `ignore` a failing target (a full disk) fails every retry with the same error, as
//! fast as the job retries. Stored one by one, that grows without bound in memory and on
//! every consumer's screen. So:
//!
//! - A *run* is a sequence of `BLOCK_JOB_ERROR` events with the same operation, action and
//!   error (offsets may differ: the chunks fail alike), with no other event in between.
//!   A repeat is added to the run's newest record while that record waits in the queue
//!   (`count` says how many events it stands for; offset and length are its first one's).
//! - The first event of a run is delivered at once (a consumer watching for errors sees it
//!   without delay); a later record of the same run (one started after the consumer took
//!   the previous one) is held back for [`REPEAT_HOLD_NS`] while it gathers repeats, unless
//!   another event follows it or the job has finished. So a run costs at most one record per
//!   hold interval, however fast the consumer takes them.
//! - The queue keeps at most the first and the last [`KEEP_EACH_END`] records; beyond that
//!   the oldest error or not-converging record of the middle is dropped and counted in
//!   [`EventLog::dropped`]. Lifecycle events (status changes, ready, completed, cancelled)
//!   are never dropped: the job emits those only a bounded number of times per verb.
//!
//! Invariant: the sum of `count` over every record delivered or waiting, plus `dropped`,
//! equals the number of events recorded.

use std::collections::VecDeque;

use blockmirror_core::job::{ErrorAction, Event, IoErrorKind, Operation};

/// How long a continuation record of an error run is held back to gather repeats.
pub const REPEAT_HOLD_NS: u64 = 1_000_000_000;

/// Undelivered records kept at each end of the queue before the middle is thinned.
pub const KEEP_EACH_END: usize = 512;

/// One event (or a run of identical errors) with the time it was seen.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Nanoseconds since the mirror was created, of the first event this record stands for.
    pub time_ns: u64,
    /// The job's event (for a run: its first event).
    pub event: Event,
    /// How many identical consecutive events this record stands for (at least 1).
    pub count: u64,
    /// This record continues a run whose earlier record was already delivered.
    continues: bool,
}

/// What makes two error events "identical" for coalescing.
type ErrorKey = (Operation, ErrorAction, IoErrorKind);

fn error_key(event: &Event) -> Option<ErrorKey> {
    match event {
        Event::Error { operation, action, error, .. } => Some((*operation, *action, *error)),
        _ => None,
    }
}

fn droppable(event: &Event) -> bool {
    matches!(event, Event::Error { .. } | Event::NotConverging { .. })
}

/// The queue of undelivered events (see the module doc).
#[derive(Debug, Default)]
pub struct EventLog {
    queue: VecDeque<EventRecord>,
    /// The key of the error run the newest recorded event belongs to.
    run: Option<ErrorKey>,
    dropped: u64,
}

impl EventLog {
    /// Records one event seen at `time_ns`.
    pub fn push(&mut self, time_ns: u64, event: Event) {
        let key = error_key(&event);
        let continues = key.is_some() && key == self.run;
        self.run = key;
        if continues {
            if let Some(back) = self.queue.back_mut() {
                if error_key(&back.event) == key {
                    back.count += 1;
                    return;
                }
            }
        }
        self.queue.push_back(EventRecord { time_ns, event, count: 1, continues });
        self.thin();
    }

    /// Drops the oldest droppable record after the first `KEEP_EACH_END` while the queue
    /// holds more than twice that many.
    fn thin(&mut self) {
        while self.queue.len() > 2 * KEEP_EACH_END {
            let middle = KEEP_EACH_END..self.queue.len() - KEEP_EACH_END;
            let Some(i) = middle.into_iter().find(|&i| droppable(&self.queue[i].event)) else { return };
            let removed = self.queue.remove(i).expect("the index lies inside the queue");
            self.dropped += removed.count;
        }
    }

    /// The next deliverable record at `now_ns`. `Err(Some(ns))`: one is held back for `ns`
    /// more nanoseconds; `Err(None)`: none is waiting. `finished`: the job has ended, so
    /// nothing more can join a run and nothing is held back.
    pub fn pop(&mut self, now_ns: u64, finished: bool) -> Result<EventRecord, Option<u64>> {
        let front = self.queue.front().ok_or(None)?;
        // Only the newest record can still grow; one with a successor is complete.
        if front.continues && self.queue.len() == 1 && !finished {
            let age = now_ns.saturating_sub(front.time_ns);
            if age < REPEAT_HOLD_NS {
                return Err(Some(REPEAT_HOLD_NS - age));
            }
        }
        Ok(self.queue.pop_front().expect("front() was Some"))
    }

    /// Events dropped from the middle of a long undelivered queue.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Records waiting.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }

    /// Takes every waiting record, held or not.
    pub fn drain(&mut self) -> Vec<EventRecord> {
        self.queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockmirror_core::job::JobStatus;

    fn error(operation: Operation, offset: u64) -> Event {
        Event::Error { operation, action: ErrorAction::Ignore, offset, length: 4096, error: IoErrorKind::NoSpace }
    }

    fn total(records: &[EventRecord]) -> u64 {
        records.iter().map(|r| r.count).sum()
    }

    #[test]
    fn identical_errors_waiting_in_the_queue_become_one_record() {
        let mut log = EventLog::default();
        for i in 0..1000 {
            log.push(i, error(Operation::Write, i * 4096));
        }
        let records = log.drain();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].count, 1000);
        assert_eq!(records[0].time_ns, 0);
        assert!(matches!(records[0].event, Event::Error { offset: 0, .. }));
    }

    #[test]
    fn a_fast_consumer_gets_one_record_per_hold_interval() {
        let mut log = EventLog::default();
        let mut delivered = Vec::new();
        // 100 errors per second for 10 s, the consumer polling after each one.
        for i in 0..1000u64 {
            let now = i * 10_000_000;
            log.push(now, error(Operation::Write, 0));
            while let Ok(r) = log.pop(now, false) {
                delivered.push(r);
            }
        }
        delivered.extend(log.pop(u64::MAX, true));
        assert_eq!(total(&delivered), 1000);
        assert!(delivered.len() <= 12, "{} records", delivered.len());
        assert_eq!(delivered[0].count, 1, "the first error of a run is delivered at once");
    }

    #[test]
    fn a_held_record_is_released_by_a_successor_or_the_end() {
        let mut log = EventLog::default();
        log.push(0, error(Operation::Write, 0));
        assert_eq!(log.pop(0, false).unwrap().count, 1);
        log.push(1, error(Operation::Write, 0));
        log.push(2, error(Operation::Write, 0));
        assert_eq!(log.pop(3, false).unwrap_err(), Some(REPEAT_HOLD_NS - 2));
        assert_eq!(log.pop(3, true).unwrap().count, 2);
        log.push(4, error(Operation::Write, 0));
        log.push(5, Event::StatusChange { status: JobStatus::Concluded });
        assert_eq!(log.pop(5, false).unwrap().count, 1);
        assert!(matches!(log.pop(5, false).unwrap().event, Event::StatusChange { .. }));
        assert_eq!(log.pop(5, false).unwrap_err(), None);
    }

    #[test]
    fn different_errors_or_an_event_between_break_the_run() {
        let mut log = EventLog::default();
        log.push(0, error(Operation::Write, 0));
        log.push(1, error(Operation::Read, 0));
        log.push(2, error(Operation::Read, 0));
        log.push(3, Event::StatusChange { status: JobStatus::Running });
        log.push(4, error(Operation::Read, 0));
        let counts: Vec<u64> = log.drain().iter().map(|r| r.count).collect();
        assert_eq!(counts, [1, 2, 1, 1]);
    }

    #[test]
    fn the_queue_is_bounded_and_keeps_lifecycle_events() {
        let mut log = EventLog::default();
        log.push(0, Event::StatusChange { status: JobStatus::Running });
        // Alternating errors never coalesce.
        for i in 0..100_000u64 {
            let op = if i % 2 == 0 { Operation::Read } else { Operation::Write };
            log.push(i, error(op, i));
        }
        log.push(100_000, Event::StatusChange { status: JobStatus::Concluded });
        assert!(log.len() <= 2 * KEEP_EACH_END);
        let records = log.drain();
        assert_eq!(total(&records) + log.dropped(), 100_002);
        assert!(matches!(records.first().unwrap().event, Event::StatusChange { status: JobStatus::Running }));
        assert!(matches!(records.last().unwrap().event, Event::StatusChange { status: JobStatus::Concluded }));
    }
}
