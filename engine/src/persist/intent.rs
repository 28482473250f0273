//! [`WriteIntent`]: the in-memory side of the bitmap file: which chunks are marked, which
//! of those the file already holds, and the batched writes that make marks durable.
//!
//! Three bitmaps, one bit per chunk:
//! - `marked`: what the next write of the file will hold.
//! - `durable`: what the file holds for certain now: the last completed write, minus what
//!   was cleared since (a write in progress may be removing it). A mark finds its chunks
//!   in both `marked` and `durable` and returns at once: the activity window's fast path.
//! - `recent`: chunks marked during each of the last [`ACTIVITY_ROUNDS`] cleaning
//!   intervals, newest last; a round clears none of them (the activity window). Why
//!   several intervals: a guest writing at random over a large disk leaves many chunks
//!   untouched for one interval and touches them again soon after; clearing them after a
//!   single quiet interval made most of its writes wait for a synced write of the file.
//!   A resume copies the window's chunks again, which the guest was writing anyway.
//!
//! Batching (group commit): a mark that needs a write waits for a write that *starts*
//! after its bits were set. Whoever finds no write running becomes the writer: it takes a
//! copy of `marked`, writes and syncs it without the lock, and wakes every waiter its copy
//! covers; so one sync covers every write that was waiting when it started. A mark whose
//! chunks the write in progress already holds (another guest write into the same chunks
//! just set them) waits for that write only, not for the next: sequential guest writes
//! into a cleared chunk cost one sync, not two.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use blockmirror_core::bitmap::HBitmap;

use super::{BitmapFile, PersistError};

/// Cleaning intervals a marked chunk must go untouched before a round may clear it.
pub const ACTIVITY_ROUNDS: usize = 4;

/// The runs of dirty items of `bitmap`, ascending.
pub(super) fn dirty_runs(bitmap: &HBitmap) -> impl Iterator<Item = Range<u64>> + '_ {
    let mut position = 0;
    std::iter::from_fn(move || {
        let run = bitmap.next_dirty_area(position, bitmap.size(), u64::MAX)?;
        position = run.end;
        Some(run)
    })
}

/// Counters of the bitmap file's use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntentStats {
    /// Guest writes whose chunks were all marked durably already (no wait).
    pub marks_free: u64,
    /// Guest writes that waited for a write of the file.
    pub marks_waited: u64,
    /// Writes (each synced) of the file.
    pub file_writes: u64,
    /// Chunks cleared by cleaning rounds.
    pub chunks_cleared: u64,
}

struct IntentState {
    marked: HBitmap,
    durable: HBitmap,
    recent: VecDeque<HBitmap>,
    /// The chunks the cleaning round in progress may clear (marks remove theirs).
    round: Option<HBitmap>,
    /// Guest writes between their mark and their landing, by ticket.
    active: HashMap<u64, Range<u64>>,
    next_ticket: u64,
    /// Writes of the file whose copy of `marked` was taken / that completed.
    writes_started: u64,
    writes_done: u64,
    /// The newest write attempt that failed, and why.
    failed: Option<(u64, String)>,
    writer_active: bool,
    /// The copy of `marked` the write in progress is making durable.
    writing: Option<Arc<HBitmap>>,
    stats: IntentStats,
}

/// Marks, batching and clearing for one mirror's bitmap file.
pub struct WriteIntent {
    length: u64,
    granularity: u64,
    state: Mutex<IntentState>,
    written: Condvar,
    /// `None` once the file was removed (the mirror completed): marks then do nothing.
    file: Mutex<Option<BitmapFile>>,
}

/// A guest write between its mark and its landing: its chunks are not cleared while this
/// lives. Dropping it reports the landing.
pub struct IntentTicket {
    intent: Arc<WriteIntent>,
    id: u64,
}

impl Drop for IntentTicket {
    fn drop(&mut self) {
        self.intent.lock().active.remove(&self.id);
    }
}

impl WriteIntent {
    /// Tracks `file`, which holds `bitmap` now (its last write, or what was just loaded).
    pub fn new(file: BitmapFile, bitmap: HBitmap, granularity: u64) -> Self {
        let empty = HBitmap::new(bitmap.size(), bitmap.granularity()).expect("same shape as an existing bitmap");
        Self {
            length: bitmap.size(),
            granularity,
            state: Mutex::new(IntentState {
                durable: bitmap.clone(),
                marked: bitmap,
                recent: std::iter::repeat_n(empty, ACTIVITY_ROUNDS).collect(),
                round: None,
                active: HashMap::new(),
                next_ticket: 0,
                writes_started: 0,
                writes_done: 0,
                failed: None,
                writer_active: false,
                writing: None,
                stats: IntentStats::default(),
            }),
            written: Condvar::new(),
            file: Mutex::new(Some(file)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, IntentState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `[offset, offset+length)` rounded out to whole chunks (clipped to the disk).
    fn chunks(&self, offset: u64, length: u64) -> Range<u64> {
        let g = self.granularity;
        let start = offset / g * g;
        let end = offset.saturating_add(length).div_ceil(g).saturating_mul(g).min(self.length);
        start..end
    }

    /// Marks the chunks of a guest write of `[offset, offset+length)` (inside the disk,
    /// non-empty) and returns once the file holds the mark: call before the write reaches
    /// the source, and keep the ticket until the job has heard of its landing.
    pub fn mark(self: &Arc<Self>, offset: u64, length: u64) -> Result<IntentTicket, PersistError> {
        let range = self.chunks(offset, length);
        let count = range.end - range.start;
        let mut st = self.lock();
        let id = st.next_ticket;
        st.next_ticket += 1;
        st.active.insert(id, range.clone());
        let ticket = IntentTicket { intent: Arc::clone(self), id };
        st.recent.back_mut().expect("ACTIVITY_ROUNDS > 0").set(range.start, count).expect("inside the disk");
        if let Some(round) = st.round.as_mut() {
            round.reset(range.start, count).expect("whole chunks");
        }
        let in_marked = st.marked.next_zero(range.start, count).is_none();
        if in_marked && st.durable.next_zero(range.start, count).is_none() {
            st.stats.marks_free += 1;
            return Ok(ticket);
        }
        st.stats.marks_waited += 1;
        let in_write = in_marked && st.writing.as_ref().is_some_and(|copy| copy.next_zero(range.start, count).is_none());
        let need = if in_write {
            // The write in progress holds these chunks, and nothing cleared them since
            // (they are still marked): once it completes they are durable.
            st.writes_started
        } else {
            st.marked.set(range.start, count).expect("inside the disk");
            st.writes_started + 1
        };
        drop(self.sync_through(st, need)?);
        Ok(ticket)
    }

    /// Waits until a write of the file numbered `need` or later completed, doing the write
    /// itself when none is running.
    fn sync_through<'a>(
        &'a self,
        mut st: MutexGuard<'a, IntentState>,
        need: u64,
    ) -> Result<MutexGuard<'a, IntentState>, PersistError> {
        loop {
            if st.writes_done >= need {
                return Ok(st);
            }
            if let Some((attempt, why)) = &st.failed {
                if *attempt >= need {
                    return Err(PersistError::Io {
                        what: "making a mark durable",
                        path: Default::default(),
                        source: std::io::Error::other(why.clone()),
                    });
                }
            }
            if st.writer_active {
                st = self.written.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st.writer_active = true;
            st.writes_started += 1;
            let number = st.writes_started;
            let snapshot = Arc::new(st.marked.clone());
            st.writing = Some(Arc::clone(&snapshot));
            drop(st);
            let result = match self.file.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
                Some(file) => file.write(&snapshot).map(drop),
                None => Ok(()), // removed: the mirror completed, nothing to protect
            };
            st = self.lock();
            st.writer_active = false;
            st.writing = None;
            match result {
                Ok(()) => {
                    st.writes_done = number;
                    st.stats.file_writes += 1;
                    // Bits cleared since the copy was taken are not durable-for-sure:
                    // the next write removes them.
                    let mut durable = Arc::unwrap_or_clone(snapshot);
                    let runs: Vec<Range<u64>> = dirty_runs(&durable).collect();
                    for run in runs {
                        clear_unmarked(&mut durable, &st.marked, run);
                    }
                    st.durable = durable;
                }
                Err(e) => st.failed = Some((number, e.to_string())),
            }
            self.written.notify_all();
        }
    }

    /// Starts a cleaning round: every marked chunk not in the activity window (not marked
    /// during the last [`ACTIVITY_ROUNDS`] intervals) and not under a guest write may be
    /// cleared, unless [`exclude`](Self::exclude) or a mark removes
    /// it before [`finish_round`](Self::finish_round). Returns false if a round runs.
    pub fn begin_round(&self) -> bool {
        let mut st = self.lock();
        if st.round.is_some() {
            return false;
        }
        let mut candidates = st.marked.clone();
        for interval in &st.recent {
            for run in dirty_runs(interval) {
                candidates.reset(run.start, run.end - run.start).expect("runs of whole chunks");
            }
        }
        for range in st.active.values() {
            candidates.reset(range.start, range.end - range.start).expect("whole chunks");
        }
        // The oldest interval leaves the window; its bitmap is reused for the next one.
        let mut oldest = st.recent.pop_front().expect("ACTIVITY_ROUNDS > 0");
        oldest.reset_all();
        st.recent.push_back(oldest);
        st.round = Some(candidates);
        true
    }

    /// Keeps `ranges` (byte ranges; rounded out to chunks) from being cleared this round.
    pub fn exclude(&self, ranges: impl IntoIterator<Item = Range<u64>>) {
        let mut st = self.lock();
        let st = &mut *st;
        if let Some(round) = st.round.as_mut() {
            for r in ranges {
                if r.end > r.start {
                    let c = self.chunks(r.start, r.end - r.start);
                    round.reset(c.start, c.end - c.start).expect("whole chunks");
                }
            }
        }
    }

    /// Whether the round in progress has nothing left it could clear (none runs: true).
    pub fn round_is_empty(&self) -> bool {
        self.lock().round.as_ref().is_none_or(|round| round.dirty_granules() == 0)
    }

    /// Drops the round without clearing anything.
    pub fn abandon_round(&self) {
        self.lock().round = None;
    }

    /// Clears what is left of the round's candidates (the target was flushed after they
    /// were observed clean) and writes the file if anything was cleared.
    pub fn finish_round(&self) -> Result<u64, PersistError> {
        let mut st = self.lock();
        let Some(round) = st.round.take() else { return Ok(0) };
        let cleared = round.dirty_granules();
        if cleared == 0 {
            return Ok(0);
        }
        for run in dirty_runs(&round) {
            let count = run.end - run.start;
            st.marked.reset(run.start, count).expect("whole chunks");
            st.durable.reset(run.start, count).expect("whole chunks");
        }
        st.stats.chunks_cleared += cleared;
        let need = st.writes_started + 1;
        drop(self.sync_through(st, need)?);
        Ok(cleared)
    }

    /// Removes the file: the mirror completed, the target is the disk now.
    pub fn remove_file(&self) -> Result<(), PersistError> {
        match self.file.lock().unwrap_or_else(PoisonError::into_inner).take() {
            Some(file) => file.remove(),
            None => Ok(()),
        }
    }

    /// The generation of the file's newest slot (`None` once the file was removed): a
    /// caller that remembers it can refuse a stale copy of the file later
    /// ([`BitmapSetup::min_generation`](super::BitmapSetup::min_generation)).
    pub fn generation(&self) -> Option<u64> {
        self.file.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(BitmapFile::generation)
    }

    /// Bytes per bit.
    pub fn granularity(&self) -> u64 {
        self.granularity
    }

    /// The marked chunks now (for tests and reports).
    pub fn marked(&self) -> HBitmap {
        self.lock().marked.clone()
    }

    /// The counters.
    pub fn stats(&self) -> IntentStats {
        self.lock().stats
    }
}

/// Clears in `durable` the chunks of `range` that `marked` does not hold.
fn clear_unmarked(durable: &mut HBitmap, marked: &HBitmap, range: Range<u64>) {
    let mut position = range.start;
    while let Some(zero) = marked.next_zero(position, range.end - position) {
        let stop = marked.next_dirty(zero, range.end - zero).unwrap_or(range.end);
        durable.reset(zero, stop - zero).expect("whole chunks");
        position = stop;
        if position >= range.end {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::persist::{BitmapIdentity, SideIdentity};

    const CHUNK: u64 = 1 << 20;

    /// Waits until `condition` holds of the intent's state (bounded: a hang is a failure).
    fn wait_for(intent: &WriteIntent, what: &str, condition: impl Fn(&IntentState) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !condition(&intent.lock()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Marks 4 KiB at `first`, and at `second` once the first mark's write of the file is
    /// in progress (held there until the second mark waits too).
    fn marks_during_a_write(intent: &Arc<WriteIntent>, first: u64, second: u64) {
        let waited = intent.stats().marks_waited;
        let file = intent.file.lock().unwrap();
        let mark = |offset: u64| {
            let intent = Arc::clone(intent);
            std::thread::spawn(move || drop(intent.mark(offset, 4096).unwrap()))
        };
        let first = mark(first);
        wait_for(intent, "the first mark's write to start", |st| st.writing.is_some());
        let second = mark(second);
        wait_for(intent, "the second mark to wait", |st| st.stats.marks_waited == waited + 2);
        drop(file);
        first.join().unwrap();
        second.join().unwrap();
    }

    #[test]
    fn a_mark_the_write_in_progress_holds_waits_for_that_write_only() {
        let dir = std::env::temp_dir().join(format!("bm-intent-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let identity = BitmapIdentity {
            length: 8 * CHUNK,
            granularity: CHUNK,
            source: SideIdentity::Inode { dev: 1, ino: 2 },
            target: SideIdentity::Inode { dev: 1, ino: 3 },
        };
        let mut all = identity.new_bitmap().unwrap();
        all.set(0, 8 * CHUNK).unwrap();
        let file = BitmapFile::create(&dir.join("t.bmbitmap"), identity, &all).unwrap();
        let intent = Arc::new(WriteIntent::new(file, all, CHUNK));
        // Nobody wrote: the first round clears every chunk.
        assert!(intent.begin_round());
        assert_eq!(intent.finish_round().unwrap(), 8);
        let writes = intent.stats().file_writes;
        marks_during_a_write(&intent, 3 * CHUNK, 3 * CHUNK + 4096);
        assert_eq!(intent.stats().file_writes, writes + 1, "one sync covers both marks");
        // A chunk the write in progress does not hold still needs a write of its own.
        marks_during_a_write(&intent, 5 * CHUNK, 6 * CHUNK);
        assert_eq!(intent.stats().file_writes, writes + 3);
        assert!(intent.marked().get(5 * CHUNK) && intent.marked().get(6 * CHUNK));
        let _ = std::fs::remove_dir_all(dir);
    }
}
