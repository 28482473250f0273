//! Searching: the next dirty or clean granule, dirty areas and runs.
//!
//! Both searches walk a hierarchy: up from the start word until a summary shows a match to
//! the right, then down along the lowest matching bits. That is O(levels) word reads; the
//! start word itself is checked first, inline, since most searches end there.
//! Dirty granules use the "non-zero" summaries; clean granules use the "all ones" summaries
//! with every word inverted, so `next_zero` is as fast on a nearly full bitmap as
//! `next_dirty` is on a nearly empty one.

use std::ops::Range;

use super::levels::Levels;
use super::words::{mask_from, WORD_BITS};
use super::{BitmapError, HBitmap};

/// The first granule at or after `from` whose bottom bit is set (`CLEAN = false`) or clear
/// (`CLEAN = true`). `summaries[k]` is the level above `summaries[k - 1]` (above `bottom`
/// for `k = 0`); its bit `j` says word `j` of the level below has a match, once inverted
/// when `CLEAN`. `None` when there is no match below `granules`.
#[inline(always)]
fn find_next<const CLEAN: bool>(
    bottom: &[u64],
    summaries: &[Vec<u64>],
    granules: u64,
    from: u64,
) -> Option<u64> {
    if from >= granules {
        return None;
    }
    let word_index = from / WORD_BITS;
    if !CLEAN {
        if let Some(level1) = summaries.first() {
            // On a sparse bitmap the start word is most likely empty, and its summary bit
            // (in a small, cache-resident level) says so without reading it.
            let summary = level1[(word_index / WORD_BITS) as usize];
            if summary >> (word_index % WORD_BITS) & 1 == 0 {
                return find_in_words_from::<CLEAN>(bottom, summaries, granules, word_index + 1);
            }
        }
    }
    let bits = load::<CLEAN>(bottom[word_index as usize]) & mask_from(from % WORD_BITS);
    if bits != 0 {
        return below(
            word_index * WORD_BITS + u64::from(bits.trailing_zeros()),
            granules,
        );
    }
    find_in_words_from::<CLEAN>(bottom, summaries, granules, word_index + 1)
}

/// The word as seen by the search: inverted when looking for clean granules.
#[inline(always)]
fn load<const CLEAN: bool>(word: u64) -> u64 {
    if CLEAN {
        !word
    } else {
        word
    }
}

#[inline(always)]
fn below(granule: u64, granules: u64) -> Option<u64> {
    (granule < granules).then_some(granule)
}

/// Like [`find_next`], starting at the first granule of bottom word `next_word`, which the
/// caller found no match before.
#[inline]
pub(crate) fn find_in_words_from<const CLEAN: bool>(
    bottom: &[u64],
    summaries: &[Vec<u64>],
    granules: u64,
    next_word: u64,
) -> Option<u64> {
    climb_and_descend::<CLEAN>(bottom, summaries, granules, 1, next_word)
}

/// Searches from bit `index` of summary level `level` (1 = the level above the bottom):
/// climbs until a summary word shows a match at or after the position, then descends
/// along the lowest matching bits. O(levels) word reads.
#[inline]
fn climb_and_descend<const CLEAN: bool>(
    bottom: &[u64],
    summaries: &[Vec<u64>],
    granules: u64,
    mut level: usize,
    mut index: u64,
) -> Option<u64> {
    loop {
        // No level above the top: nothing matches further right.
        let words = summaries.get(level - 1)?;
        let word_index = index / WORD_BITS;
        // Past the last word: nothing further right at this level.
        let bits = load::<CLEAN>(*words.get(word_index as usize)?) & mask_from(index % WORD_BITS);
        if bits != 0 {
            let found = word_index * WORD_BITS + u64::from(bits.trailing_zeros());
            return descend::<CLEAN>(bottom, summaries, granules, level, found);
        }
        level += 1;
        index = word_index + 1;
    }
}

/// From a matching bit `index` of summary level `level`, follows the lowest matching bits
/// down to a granule. A matching summary bit may point past the words below only through
/// inverted padding (when `CLEAN`), which means nothing real lies further right.
#[inline(always)]
fn descend<const CLEAN: bool>(
    bottom: &[u64],
    summaries: &[Vec<u64>],
    granules: u64,
    mut level: usize,
    mut index: u64,
) -> Option<u64> {
    while level > 1 {
        let bits = load::<CLEAN>(*summaries[level - 2].get(index as usize)?);
        debug_assert!(bits != 0, "a summary bit promises a matching word below");
        index = index * WORD_BITS + u64::from(bits.trailing_zeros());
        level -= 1;
    }
    let bits = load::<CLEAN>(*bottom.get(index as usize)?);
    debug_assert!(bits != 0, "a summary bit promises a matching word below");
    below(
        index * WORD_BITS + u64::from(bits.trailing_zeros()),
        granules,
    )
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
