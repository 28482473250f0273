//! In-memory source and target disks: every byte's content is named by a *version*.
//!
//! A version names the bytes one write put down at absolute disk positions: version 0 is
//! zeroes, the initial contents of chunk `i` have their own version, and every guest write
//! gets a fresh version. So two byte ranges hold equal data exactly when they carry the
//! same versions at the same positions, whatever path the data took (copied by the job,
//! mirrored by a write-blocking guest write, re-written twice...). The model is exact for
//! writes of any alignment and any order; only version numbers are stored, never bytes.
//!
//! Storage: one `u64` per chunk while a chunk is *uniform* (one version throughout: the
//! common case, so a 1 TiB disk at 64 KiB chunks is 16 M words per side). A chunk that a
//! partial write splits keeps a short sorted list of `(start, version)` extents in a side
//! table, in canonical form (adjacent extents differ), and goes back to one word when a
//! write makes it uniform again. A running count of mismatched chunks makes
//! `source_equals_target` O(1).

use std::collections::BTreeMap;

pub use crate::fault::Side;

/// Marks a chunk whose extents live in the side table (versions never reach it).
const SPLIT: u64 = u64::MAX;

/// The contents of one chunk: one version throughout, or extents `(start within the chunk,
/// version)`, sorted, the first starting at 0, adjacent versions different, at least two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkContent {
    /// One version over the whole chunk.
    Uniform(u64),
    /// Several extents (canonical: never fewer than two, adjacent versions differ).
    Split(Vec<(u64, u64)>),
}

impl ChunkContent {
    /// A chunk holding one version throughout.
    pub fn uniform(version: u64) -> Self {
        ChunkContent::Uniform(version)
    }

    /// Whether the whole chunk reads as zeroes.
    pub fn is_zero(&self) -> bool {
        *self == ChunkContent::Uniform(0)
    }

    fn from_extents(extents: Vec<(u64, u64)>) -> Self {
        match extents[..] {
            [(_, v)] => ChunkContent::Uniform(v),
            _ => ChunkContent::Split(extents),
        }
    }

    fn extents(&self) -> &[(u64, u64)] {
        match self {
            ChunkContent::Uniform(_) => &[],
            ChunkContent::Split(e) => e,
        }
    }

    /// The version at chunk-relative position `at`.
    fn version_at(&self, at: u64) -> u64 {
        match self {
            ChunkContent::Uniform(v) => *v,
            ChunkContent::Split(e) => e[e.partition_point(|&(s, _)| s <= at) - 1].1,
        }
    }

    /// `self` (a chunk of `len` bytes) with `[from, to)` replaced by the same range of `src`
    /// (chunk-relative, `from < to <= len`).
    fn overlay(&self, from: u64, to: u64, len: u64, src: &ChunkContent) -> ChunkContent {
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(self.extents().len() + src.extents().len() + 3);
        let mut push = |start: u64, version: u64| {
            if out.last().is_none_or(|&(_, v)| v != version) {
                out.push((start, version));
            }
        };
        match self {
            ChunkContent::Uniform(v) if from > 0 => push(0, *v),
            _ => {}
        }
        for &(start, version) in self.extents().iter().filter(|&&(s, _)| s < from) {
            push(start, version);
        }
        push(from, src.version_at(from));
        for &(start, version) in src.extents().iter().filter(|&&(s, _)| s > from && s < to) {
            push(start, version);
        }
        if to < len {
            push(to, self.version_at(to));
        }
        for &(start, version) in self.extents().iter().filter(|&&(s, _)| s > to) {
            push(start, version);
        }
        ChunkContent::from_extents(out)
    }
}

/// One disk: a word per chunk, and the extents of split chunks.
#[derive(Debug, Clone)]
struct Disk {
    words: Vec<u64>,
    split: BTreeMap<u64, ChunkContent>,
}

impl Disk {
    fn content(&self, chunk: u64) -> ChunkContent {
        match self.words[chunk as usize] {
            SPLIT => self.split[&chunk].clone(),
            v => ChunkContent::Uniform(v),
        }
    }

    fn set(&mut self, chunk: u64, content: ChunkContent) {
        let word = &mut self.words[chunk as usize];
        let was_split = *word == SPLIT;
        match content {
            ChunkContent::Uniform(v) => {
                *word = v;
                if was_split {
                    self.split.remove(&chunk);
                }
            }
            split => {
                *word = SPLIT;
                self.split.insert(chunk, split);
            }
        }
    }

    fn same(&self, other: &Disk, chunk: u64) -> bool {
        match (self.words[chunk as usize], other.words[chunk as usize]) {
            (SPLIT, SPLIT) => self.split[&chunk] == other.split[&chunk],
            (a, b) => a == b,
        }
    }
}

/// The two disks.
#[derive(Debug, Clone)]
pub struct Disks {
    length: u64,
    granularity: u64,
    source: Disk,
    target: Disk,
    next_version: u64,
    mismatched_chunks: u64,
}

impl Disks {
    /// Disks of `length` bytes in chunks of `granularity` bytes, from per-chunk versions.
    /// `fresh_from` is the first version the initial contents do not use.
    pub fn new(length: u64, granularity: u64, source: Vec<u64>, target: Vec<u64>, fresh_from: u64) -> Self {
        debug_assert_eq!(source.len(), target.len());
        let mismatched_chunks = source.iter().zip(&target).filter(|(s, t)| s != t).count() as u64;
        Self {
            length,
            granularity,
            source: Disk { words: source, split: BTreeMap::new() },
            target: Disk { words: target, split: BTreeMap::new() },
            next_version: fresh_from.max(1),
            mismatched_chunks,
        }
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u64 {
        self.source.words.len() as u64
    }

    /// Chunk indexes touched by `[offset, offset+length)` (empty for a zero length).
    pub fn chunk_range(&self, offset: u64, length: u64) -> std::ops::Range<u64> {
        if length == 0 {
            return 0..0;
        }
        offset / self.granularity..(offset + length - 1) / self.granularity + 1
    }

    /// The part of `[offset, offset+length)` inside chunk `chunk`, as absolute (start, end).
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

    fn disk(&self, side: Side) -> &Disk {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }

    /// The contents of chunk `chunk` on `side`.
    pub fn content(&self, side: Side, chunk: u64) -> ChunkContent {
        self.disk(side).content(chunk)
    }

    /// Overlay `[offset, offset+length)` ∩ chunk with the same range of `src`, keeping the
    /// mismatch count.
    fn overlay_chunk(&mut self, side: Side, chunk: u64, offset: u64, length: u64, src: &ChunkContent) {
        let (start, end) = self.clip(offset, length, chunk);
        if start >= end {
            return;
        }
        let base = chunk * self.granularity;
        let was_equal = self.source.same(&self.target, chunk);
        let disk = match side {
            Side::Source => &mut self.source,
            Side::Target => &mut self.target,
        };
        let chunk_len = (base + self.granularity).min(self.length) - base;
        let merged = if start == base && end - base == chunk_len {
            src.clone()
        } else {
            disk.content(chunk).overlay(start - base, end - base, chunk_len, src)
        };
        disk.set(chunk, merged);
        match (was_equal, self.source.same(&self.target, chunk)) {
            (true, false) => self.mismatched_chunks += 1,
            (false, true) => self.mismatched_chunks -= 1,
            _ => {}
        }
    }

    /// Put `version` on every byte of `[offset, offset+length)` of `side`.
    pub fn write_version(&mut self, side: Side, offset: u64, length: u64, version: u64) {
        let src = ChunkContent::uniform(version);
        for chunk in self.chunk_range(offset, length) {
            self.overlay_chunk(side, chunk, offset, length, &src);
        }
    }

    /// Write `content` (a whole chunk's contents, e.g. from a read) over the part of
    /// `[offset, offset+length)` inside `chunk`.
    pub fn write_content(&mut self, side: Side, chunk: u64, offset: u64, length: u64, content: &ChunkContent) {
        self.overlay_chunk(side, chunk, offset, length, content);
    }

    /// Whether every chunk of the source equals the target's. O(1).
    pub fn source_equals_target(&self) -> bool {
        self.mismatched_chunks == 0
    }

    /// The first chunk at or after `from` whose contents differ (O(chunks)).
    pub fn next_mismatch(&self, from: u64) -> Option<u64> {
        (from..self.chunks()).find(|&c| !self.source.same(&self.target, c))
    }

    /// Chunks whose contents differ.
    pub fn mismatched_chunks(&self) -> u64 {
        self.mismatched_chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 chunks of 16 bytes, the last one 8 bytes long.
    fn disks() -> Disks {
        Disks::new(56, 16, vec![1, 2, 3, 4], vec![1, 0, 3, 0], 5)
    }

    #[test]
    fn mismatch_count_follows_writes() {
        let mut d = disks();
        assert_eq!(d.mismatched_chunks(), 2);
        d.write_version(Side::Target, 16, 16, 2);
        d.write_version(Side::Target, 48, 8, 4);
        assert!(d.source_equals_target());
        d.write_version(Side::Source, 0, 1, 9);
        assert_eq!((d.mismatched_chunks(), d.next_mismatch(0)), (1, Some(0)));
    }

    #[test]
    fn partial_writes_in_any_order_are_exact() {
        // Two disjoint writes into one chunk, replayed in the other order: equal.
        let mut d = Disks::new(32, 16, vec![1, 2], vec![1, 2], 3);
        d.write_version(Side::Source, 0, 4, 7);
        d.write_version(Side::Source, 4, 4, 8);
        d.write_version(Side::Target, 4, 4, 8);
        assert!(!d.source_equals_target());
        d.write_version(Side::Target, 0, 4, 7);
        assert!(d.source_equals_target());
        // Replaying a write onto a chunk that already holds it changes nothing.
        d.write_version(Side::Target, 0, 4, 7);
        assert!(d.source_equals_target());
        // Overlapping writes out of order differ, until the later one lands again.
        d.write_version(Side::Source, 2, 4, 9);
        d.write_version(Side::Target, 2, 4, 9);
        d.write_version(Side::Target, 0, 4, 7);
        assert!(!d.source_equals_target());
        d.write_version(Side::Target, 2, 4, 9);
        assert!(d.source_equals_target());
    }

    #[test]
    fn whole_chunk_copies_and_canonical_form() {
        let mut d = disks();
        d.write_version(Side::Source, 20, 3, 11);
        let copied = d.content(Side::Source, 1);
        assert_eq!(copied, ChunkContent::Split(vec![(0, 2), (4, 11), (7, 2)]));
        d.write_content(Side::Target, 1, 16, 16, &copied);
        assert_eq!(d.mismatched_chunks(), 1, "only the short last chunk differs now");
        // Writing the middle back makes the chunk uniform again.
        d.write_version(Side::Source, 20, 3, 2);
        assert_eq!(d.content(Side::Source, 1), ChunkContent::uniform(2));
        assert_eq!(d.chunk_range(10, 20), 0..2);
        assert_eq!(d.clip(10, 20, 1), (16, 30));
        assert!(ChunkContent::uniform(0).is_zero());
    }

    #[test]
    fn overlay_edges() {
        use ChunkContent::Split;
        let c = Split(vec![(0, 1), (8, 2)]);
        let z = ChunkContent::uniform(0);
        assert_eq!(c.overlay(0, 8, 16, &z), Split(vec![(0, 0), (8, 2)]));
        assert_eq!(c.overlay(8, 16, 16, &z), Split(vec![(0, 1), (8, 0)]));
        assert_eq!(c.overlay(4, 12, 16, &z), Split(vec![(0, 1), (4, 0), (12, 2)]));
        assert_eq!(c.overlay(0, 16, 16, &z), z);
        assert_eq!(c.overlay(10, 12, 16, &ChunkContent::uniform(2)), c);
        assert_eq!(c.overlay(0, 8, 16, &ChunkContent::uniform(2)), ChunkContent::uniform(2));
        assert_eq!(z.overlay(4, 8, 16, &ChunkContent::uniform(3)), Split(vec![(0, 0), (4, 3), (8, 0)]));
        let src = Split(vec![(0, 5), (6, 6), (10, 7)]);
        assert_eq!(c.overlay(4, 12, 16, &src), Split(vec![(0, 1), (4, 5), (6, 6), (10, 7), (12, 2)]));
        assert_eq!(z.overlay(0, 8, 16, &src), Split(vec![(0, 5), (6, 6), (8, 0)]));
    }
}
