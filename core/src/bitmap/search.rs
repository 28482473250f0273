//! Searching: the next dirty or clean granule, dirty areas and runs.
//!
//! Both searches walk a hierarchy: up from the start word until a summary shows a match to
//! the right, then down along the lowest matching bits. That is O(levels) word reads.
//! Dirty granules use the "non-zero" summaries; clean granules use the "all ones" summaries
//! with every word inverted, so `next_zero` is as fast on a nearly full bitmap as
//! `next_dirty` is on a nearly empty one.

use std::ops::Range;

use super::levels::Levels;
use super::words::{mask_from, WORD_BITS};
use super::{BitmapError, HBitmap};

/// The first granule at or after `from` whose bottom bit is set (`CLEAN = false`) or clear
/// (`CLEAN = true`), using `summaries` (bit `j` of level `k + 1` says word `j` of level `k`
/// has a match once inverted when `CLEAN`). `None` when there is none below `granules`.
#[inline]
fn find_next<const CLEAN: bool>(
    bottom: &[u64],
    summaries: &[Vec<u64>],
    granules: u64,
    from: u64,
) -> Option<u64> {
    if from >= granules {
        return None;
    }
    let load = |word: u64| if CLEAN { !word } else { word };
    // Climb: `index` is a bit index in the level `level` (0 = bottom).
    let mut index = from;
    let mut level = 0;
    loop {
        let words = if level == 0 {
            bottom
        } else {
            &summaries[level - 1]
        };
        let word_index = index / WORD_BITS;
        // A summary bit may point past the words of its level only through inverted
        // padding; either way nothing lies further right.
        let word = *words.get(word_index as usize)?;
        let bits = load(word) & mask_from(index % WORD_BITS);
        if bits != 0 {
            index = word_index * WORD_BITS + u64::from(bits.trailing_zeros());
            break;
        }
        if level == summaries.len() {
            return None;
        }
        level += 1;
        index = word_index + 1;
    }
    // Descend along the lowest matching bit of each word.
    while level > 0 {
        let words = if level == 1 {
            bottom
        } else {
            &summaries[level - 2]
        };
        let bits = load(*words.get(index as usize)?);
        debug_assert!(bits != 0, "a summary bit promises a matching word below");
        index = index * WORD_BITS + u64::from(bits.trailing_zeros());
        level -= 1;
    }
    (index < granules).then_some(index)
}

impl Levels {
    /// The first set granule at or after `from`.
    #[inline]
    pub(crate) fn next_set(&self, from: u64) -> Option<u64> {
        find_next::<false>(&self.dirty[0], &self.dirty[1..], self.granules, from)
    }

    /// The first clear granule at or after `from`.
    #[inline]
    pub(crate) fn next_clear(&self, from: u64) -> Option<u64> {
        find_next::<true>(&self.dirty[0], &self.full, self.granules, from)
    }
}

impl HBitmap {
    /// The end of `[start, start + count)` clipped to the bitmap, or `None` when the range is
    /// empty or starts past the end.
    fn search_end(&self, start: u64, count: u64) -> Option<u64> {
        (start < self.size && count > 0).then(|| start.saturating_add(count).min(self.size))
    }

    /// The first dirty item in `[start, start + count)`: `start` itself when its granule is
    /// dirty, else the first item of the next dirty granule. `None` for `count == 0`, for
    /// `start` past the end, or when the range is clean. `count` is clipped to the end, so
    /// `u64::MAX` means "to the end". Cost: O(levels).
    pub fn next_dirty(&self, start: u64, count: u64) -> Option<u64> {
        let end = self.search_end(start, count)?;
        let granule = self.levels.next_set(start >> self.granularity)?;
        let item = (granule << self.granularity).max(start);
        (item < end).then_some(item)
    }

    /// The first clean item in `[start, start + count)`, with the rules of
    /// [`next_dirty`](Self::next_dirty). Cost: O(levels), thanks to the "full" summaries.
    pub fn next_zero(&self, start: u64, count: u64) -> Option<u64> {
        let end = self.search_end(start, count)?;
        let granule = self.levels.next_clear(start >> self.granularity)?;
        let item = (granule << self.granularity).max(start);
        (item < end).then_some(item)
    }

    /// The first run of dirty items in `[start, end)` (`end` clipped to the size), at most
    /// `max_count` items long: it starts at `next_dirty(start, ..)` and stops at the next
    /// clean item, at `end`, or after `max_count` items. `None` when there is none or
    /// `max_count == 0`.
    pub fn next_dirty_area(&self, start: u64, end: u64, max_count: u64) -> Option<Range<u64>> {
        let end = end.min(self.size);
        if start >= end || max_count == 0 {
            return None;
        }
        let first = self.next_dirty(start, end - start)?;
        let limit = end.min(first.saturating_add(max_count));
        let stop = self.next_zero(first, limit - first).unwrap_or(limit);
        Some(first..stop)
    }

    /// Whether `start` is dirty, and how many items from `start` on (at most `count`) share
    /// that state. Needs `count > 0` and `start + count <= size`.
    pub fn status(&self, start: u64, count: u64) -> Result<(bool, u64), BitmapError> {
        self.check_range(start, count)?;
        if count == 0 {
            return Err(BitmapError::OutOfRange {
                start,
                count,
                size: self.size,
            });
        }
        let dirty = self.get(start);
        let other = if dirty {
            self.next_zero(start, count)
        } else {
            self.next_dirty(start, count)
        };
        Ok((dirty, other.map_or(count, |item| item - start)))
    }
}
