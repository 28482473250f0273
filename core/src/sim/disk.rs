//! In-memory source and target disks, as one content *version* per chunk.
//!
//! A chunk's content is a `u64` version: 0 means all zeroes, every other value names one
//! distinct content. Each write produces a fresh version, so two chunks hold equal bytes
//! exactly when their versions are equal (a 1 TiB disk at 64 KiB chunks is 16 M words per
//! side). Partial-chunk writes follow one exact rule:
//!
//! - A write that covers a whole chunk sets its version (fresh, copied, or 0 for zeroes).
//! - A write that covers only part of a chunk is described by the transition it made on
//!   the disk it was first applied to, `prev -> new`. Applying it to a chunk whose version
//!   is `prev` gives `new` (the same bytes land on the same bytes); applying it to any
//!   other version gives a fresh *garbage* version that equals nothing on the source.
//!
//! The rule is conservative: it never calls two different contents equal, and it calls two
//! equal contents different only when partial writes are replayed out of order, which the
//! one-owner-per-chunk rule forbids anyway.
//!
//! A running count of mismatched chunks makes `source_equals_target` O(1).

/// Which disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The disk the guest writes until the pivot; the job reads it.
    Source,
    /// The mirror; the job writes it.
    Target,
}

impl Side {
    /// `"source"` or `"target"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

/// What a partial write did to one chunk of the disk it was first applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkChange {
    /// Chunk index.
    pub chunk: u64,
    /// Version before the write.
    pub prev: u64,
    /// Version after the write.
    pub new: u64,
    /// Whether the write covered the whole chunk (then `new` applies whatever was there).
    pub whole: bool,
}

/// The two disks.
#[derive(Debug, Clone)]
pub struct Disks {
    length: u64,
    granularity: u64,
    source: Vec<u64>,
    target: Vec<u64>,
    next_version: u64,
    mismatched_chunks: u64,
}

impl Disks {
    /// Disks of `length` bytes in chunks of `granularity` bytes, from per-chunk versions.
    /// `fresh_from` is the first version never used by the initial contents.
    pub fn new(length: u64, granularity: u64, source: Vec<u64>, target: Vec<u64>, fresh_from: u64) -> Self {
        debug_assert_eq!(source.len(), target.len());
        let mismatched_chunks = source.iter().zip(&target).filter(|(s, t)| s != t).count() as u64;
        Self { length, granularity, source, target, next_version: fresh_from.max(1), mismatched_chunks }
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u64 {
        self.source.len() as u64
    }

    /// Chunk indexes touched by `[offset, offset+length)` (empty for a zero length).
    pub fn chunk_range(&self, offset: u64, length: u64) -> std::ops::Range<u64> {
        if length == 0 {
            return 0..0;
        }
        offset / self.granularity..(offset + length - 1) / self.granularity + 1
    }

    /// Whether `[offset, offset+length)` covers the whole of chunk `chunk`.
    pub fn covers_chunk(&self, offset: u64, length: u64, chunk: u64) -> bool {
        let start = chunk * self.granularity;
        let end = (start + self.granularity).min(self.length);
        offset <= start && offset + length >= end
    }

    /// The part of `[offset, offset+length)` inside chunk `chunk`, as (start, end).
    pub fn clip(&self, offset: u64, length: u64, chunk: u64) -> (u64, u64) {
        let start = chunk * self.granularity;
        let end = (start + self.granularity).min(self.length);
        (offset.max(start), (offset + length).min(end))
    }

    /// A version never used before.
    pub fn fresh(&mut self) -> u64 {
        let v = self.next_version;
        self.next_version += 1;
        v
    }

    /// The version of chunk `chunk` on `side`.
    pub fn version(&self, side: Side, chunk: u64) -> u64 {
        match side {
            Side::Source => self.source[chunk as usize],
            Side::Target => self.target[chunk as usize],
        }
    }

    /// Set a chunk's version, keeping the mismatch count.
    pub fn set(&mut self, side: Side, chunk: u64, version: u64) {
        let i = chunk as usize;
        let was_equal = self.source[i] == self.target[i];
        match side {
            Side::Source => self.source[i] = version,
            Side::Target => self.target[i] = version,
        }
        let now_equal = self.source[i] == self.target[i];
        match (was_equal, now_equal) {
            (true, false) => self.mismatched_chunks += 1,
            (false, true) => self.mismatched_chunks -= 1,
            _ => {}
        }
    }

    /// A new guest write of `[offset, offset+length)` to `side`: every touched chunk gets a
    /// fresh version. Returns the transitions, for replay on the other disk.
    pub fn write_new_data(&mut self, side: Side, offset: u64, length: u64) -> Vec<ChunkChange> {
        let mut changes = Vec::with_capacity(self.chunk_range(offset, length).count());
        for chunk in self.chunk_range(offset, length) {
            let prev = self.version(side, chunk);
            let new = self.fresh();
            self.set(side, chunk, new);
            changes.push(ChunkChange { chunk, prev, new, whole: self.covers_chunk(offset, length, chunk) });
        }
        changes
    }

    /// Replay one recorded change on `side`, by the partial-write rule.
    pub fn replay(&mut self, side: Side, change: ChunkChange) {
        let version = if change.whole || self.version(side, change.chunk) == change.prev {
            change.new
        } else {
            self.fresh()
        };
        self.set(side, change.chunk, version);
    }

    /// Write `version` over `[offset, offset+length)` of chunk `chunk` on `side`: the whole
    /// chunk takes it; a partial cover keeps it only if the chunk already held it.
    pub fn write_version(&mut self, side: Side, chunk: u64, offset: u64, length: u64, version: u64) {
        if self.covers_chunk(offset, length, chunk) || self.version(side, chunk) == version {
            self.set(side, chunk, version);
        } else {
            let garbage = self.fresh();
            self.set(side, chunk, garbage);
        }
    }

    /// Make chunk `chunk` on `side` unknown (e.g. a write with no data to write).
    pub fn scramble(&mut self, side: Side, chunk: u64) {
        let garbage = self.fresh();
        self.set(side, chunk, garbage);
    }

    /// Whether every chunk of the source equals the target's. O(1).
    pub fn source_equals_target(&self) -> bool {
        self.mismatched_chunks == 0
    }

    /// Chunks whose contents differ.
    pub fn mismatched_chunks(&self) -> u64 {
        self.mismatched_chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disks() -> Disks {
        // 4 chunks of 16 bytes, the last one 8 bytes long.
        Disks::new(56, 16, vec![1, 2, 3, 4], vec![1, 0, 3, 0], 5)
    }

    #[test]
    fn mismatch_count_follows_writes() {
        let mut d = disks();
        assert_eq!(d.mismatched_chunks(), 2);
        d.set(Side::Target, 1, 2);
        d.set(Side::Target, 3, 4);
        assert!(d.source_equals_target());
        d.set(Side::Source, 0, 9);
        assert_eq!(d.mismatched_chunks(), 1);
    }

    #[test]
    fn partial_replay_in_order_matches_out_of_order_does_not() {
        let mut d = Disks::new(32, 16, vec![1, 2], vec![1, 2], 3);
        let first = d.write_new_data(Side::Source, 0, 4);
        let second = d.write_new_data(Side::Source, 4, 4);
        assert!(!first[0].whole);
        d.replay(Side::Target, first[0]);
        d.replay(Side::Target, second[0]);
        assert!(d.source_equals_target());

        let mut d = Disks::new(32, 16, vec![1, 2], vec![1, 2], 3);
        let first = d.write_new_data(Side::Source, 0, 4);
        let second = d.write_new_data(Side::Source, 4, 4);
        d.replay(Side::Target, second[0]);
        d.replay(Side::Target, first[0]);
        assert!(!d.source_equals_target(), "out-of-order partial writes never look equal");
    }

    #[test]
    fn whole_chunk_writes_apply_regardless_and_tail_chunk_is_short() {
        let mut d = disks();
        let changes = d.write_new_data(Side::Source, 48, 8);
        assert!(changes[0].whole, "8 bytes cover the short last chunk");
        d.set(Side::Target, 3, 77);
        d.replay(Side::Target, changes[0]);
        assert_eq!(d.version(Side::Target, 3), d.version(Side::Source, 3));
        assert_eq!(d.chunk_range(10, 20), 0..2);
        assert_eq!(d.clip(10, 20, 1), (16, 30));
    }
}
