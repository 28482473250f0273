//! Walking the dirty granules in ascending order.
//!
//! Two forms:
//! - [`DirtyIter`] borrows the bitmap, so nothing can change under it. It keeps the rest of
//!   the current bottom word and costs about one `trailing_zeros` per dirty granule on dense
//!   bitmaps, O(levels) to skip a clean stretch.
//! - [`DirtyCursor`] is only a position. Each [`DirtyCursor::next`] call searches the bitmap
//!   as it is *now*, so the bitmap may change between calls (a mirror job keeps one for its
//!   whole life; the Python and JS faces use it). Under concurrent changes:
//!   - a granule reset before the call is never returned;
//!   - a granule set at or ahead of the position is returned when the cursor gets there;
//!   - a granule set behind the position is not returned until the cursor is moved back
//!     with [`DirtyCursor::seek`] (a mirror wraps to 0 when the cursor runs dry);
//!   - each call returns a granule strictly after the previous one, so a walk ends after at
//!     most one pass.

use std::iter::FusedIterator;

use super::search::find_in_words_from;
use super::words::{mask_from, WORD_BITS};
use super::HBitmap;

/// Iterator over the first item of each dirty granule, ascending (see [`HBitmap::iter_dirty`]).
///
/// It keeps two words of state: the not yet returned bits of the current bottom word, and
/// the not yet visited bits of its level-1 summary word (which bottom words of the current
/// block of 64 are non-zero). Moving to the next non-zero word of the block is then one
/// `trailing_zeros` and one load whose address does not depend on the previous load.
#[derive(Debug, Clone)]
pub struct DirtyIter<'a> {
    /// The bottom level, borrowed once so the loop reads words directly.
    bottom: &'a [u64],
    /// The dirty summaries above it (empty when the bottom is a single word).
    summaries: &'a [Vec<u64>],
    granules: u64,
    granularity: u32,
    /// Index of the bottom word that `pending` came from.
    word_index: u64,
    /// Dirty bits of that word not yet returned.
    pending: u64,
    /// Non-zero bottom words after `word_index` in its block of 64 (level-1 bits).
    pending_words: u64,
}

impl<'a> DirtyIter<'a> {
    pub(crate) fn new(bitmap: &'a HBitmap, start: u64) -> Self {
        let bottom = bitmap.levels.bottom();
        let mut iter = Self {
            bottom,
            summaries: &bitmap.levels.dirty[1..],
            granules: bitmap.levels.granules,
            granularity: bitmap.granularity,
            word_index: bottom.len() as u64 - 1,
            pending: 0,
            pending_words: 0,
        };
        if start < bitmap.size {
            iter.load_from(start >> bitmap.granularity);
        }
        iter
    }

    /// Loads the bottom word holding `granule` without the bits before it, and the level-1
    /// bits of the words after it in its block.
    #[inline]
    fn load_from(&mut self, granule: u64) {
        let word_index = granule / WORD_BITS;
        self.word_index = word_index;
        self.pending = self.bottom[word_index as usize] & mask_from(granule % WORD_BITS);
        self.pending_words = match self.summaries.first() {
            Some(level1) => {
                level1[(word_index / WORD_BITS) as usize] & (mask_from(word_index % WORD_BITS) << 1)
            }
            None => 0,
        };
    }

    /// Moves to the next non-zero bottom word; `false` when there is none.
    #[inline]
    fn refill(&mut self) -> bool {
        if self.pending_words != 0 {
            let block_start = self.word_index / WORD_BITS * WORD_BITS;
            self.word_index = block_start + u64::from(self.pending_words.trailing_zeros());
            self.pending_words &= self.pending_words - 1;
            // Non-zero: its level-1 bit is set, and the borrow keeps the bitmap unchanged.
            self.pending = self.bottom[self.word_index as usize];
            return true;
        }
        let next_block = (self.word_index / WORD_BITS + 1) * WORD_BITS;
        match find_in_words_from::<false>(self.bottom, self.summaries, self.granules, next_block) {
            Some(granule) => {
                self.load_from(granule);
                true
            }
            None => false,
        }
    }
}

impl Iterator for DirtyIter<'_> {
    type Item = u64;

    #[inline]
    fn next(&mut self) -> Option<u64> {
        if self.pending == 0 && !self.refill() {
            return None;
        }
        let granule = self.word_index * WORD_BITS + u64::from(self.pending.trailing_zeros());
        self.pending &= self.pending - 1;
        Some(granule << self.granularity)
    }
}

impl FusedIterator for DirtyIter<'_> {}

/// A position in a bitmap's granules that finds the next dirty granule on demand, without
/// borrowing the bitmap between calls. See the module doc for what it promises while the
/// bitmap changes.
///
/// ```
/// use blockmirror_core::bitmap::{DirtyCursor, HBitmap};
/// let mut bitmap = HBitmap::new(1 << 20, 12).unwrap();
/// bitmap.set(8192, 1).unwrap();
/// let mut cursor = DirtyCursor::new(&bitmap, 0);
/// assert_eq!(cursor.next(&bitmap), Some(8192));
/// bitmap.set(4096, 1).unwrap(); // behind the cursor: not seen
/// bitmap.set(1 << 19, 1).unwrap(); // ahead: seen
/// assert_eq!(cursor.next(&bitmap), Some(1 << 19));
/// assert_eq!(cursor.next(&bitmap), None);
/// cursor.seek(&bitmap, 0);
/// assert_eq!(cursor.next(&bitmap), Some(4096));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirtyCursor {
    /// The next granule to look at. Granules, not items: `(granule + 1) << granularity` may
    /// not fit in a `u64` for the last granule.
    next_granule: u64,
}

impl DirtyCursor {
    /// A cursor at the granule holding item `start` of `bitmap`.
    pub fn new(bitmap: &HBitmap, start: u64) -> Self {
        Self {
            next_granule: granule_of(bitmap, start),
        }
    }

    /// Moves the cursor to the granule holding item `start`.
    pub fn seek(&mut self, bitmap: &HBitmap, start: u64) {
        self.next_granule = granule_of(bitmap, start);
    }

    /// The first item of the granule the next search starts from.
    pub fn position(&self, bitmap: &HBitmap) -> u64 {
        // The product overflows only for positions at or past the end.
        self.next_granule
            .checked_mul(1u64 << bitmap.granularity)
            .map_or(bitmap.size, |item| item.min(bitmap.size))
    }

    /// The first item of the next dirty granule at or after the position, which then moves
    /// just past that granule. `None` (position unchanged) when nothing ahead is dirty now.
    /// Cost: O(levels).
    #[allow(clippy::should_implement_trait)] // it needs the bitmap as an argument
    pub fn next(&mut self, bitmap: &HBitmap) -> Option<u64> {
        let granule = bitmap.levels.next_set(self.next_granule)?;
        self.next_granule = granule + 1;
        Some(granule << bitmap.granularity)
    }
}

/// The granule holding `item`, or the granule count when `item` lies past the end.
fn granule_of(bitmap: &HBitmap, item: u64) -> u64 {
    if item >= bitmap.size {
        bitmap.granules()
    } else {
        item >> bitmap.granularity
    }
}
