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

use super::words::{mask_from, WORD_BITS, WORD_SHIFT};
use super::HBitmap;

/// Levels of the deepest hierarchy (2^41 granules need 7).
const MAX_LEVELS: usize = 8;

/// Iterator over the first item of each dirty granule, ascending (see [`HBitmap::iter_dirty`]).
///
/// It caches the path from the top to the current bottom word: for each level, the bits of
/// the word on that path that are still to be visited. Moving on is a `trailing_zeros` on
/// the lowest non-empty cached word and one load per level below it; summary words are
/// loaded only when the walk enters their block, so a sparse walk costs little more per
/// dirty granule than a dense one. The three lowest levels are plain fields (they stay in
/// registers in a loop); the rarely used upper ones sit in an array.
#[derive(Clone)]
pub struct DirtyIter<'a> {
    /// The dirty levels, bottom first.
    levels: &'a [Vec<u64>],
    /// `levels[0]` and `levels[1]` (empty if absent), kept at hand for the loop.
    bottom: &'a [u64],
    level1: &'a [u64],
    granularity: u32,
    /// Index of the current bottom word (the path's bottom end).
    word_index: u64,
    /// Dirty bits of the current bottom word not yet returned.
    pending: u64,
    /// Level-1 bits of the non-zero bottom words after the current one in its block.
    pending_words: u64,
    /// Level-2 bits of the non-empty level-1 words after the current one.
    pending_blocks: u64,
    /// `upper[k]` for `k >= 3`: the same for the level-k word on the path.
    upper: [u64; MAX_LEVELS],
}

impl<'a> DirtyIter<'a> {
    #[inline]
    pub(crate) fn new(bitmap: &'a HBitmap, start: u64) -> Self {
        let levels: &[Vec<u64>] = &bitmap.levels.dirty;
        assert!(
            levels.len() <= MAX_LEVELS,
            "at most 2^41 granules, so at most 7 levels"
        );
        let mut iter = Self {
            levels,
            bottom: &levels[0],
            level1: levels.get(1).map_or(&[], Vec::as_slice),
            granularity: bitmap.granularity,
            word_index: 0,
            pending: 0,
            pending_words: 0,
            pending_blocks: 0,
            upper: [0; MAX_LEVELS],
        };
        if start < bitmap.size {
            let granule = start >> bitmap.granularity;
            iter.word_index = granule / WORD_BITS;
            iter.pending = iter.bottom[iter.word_index as usize] & mask_from(granule % WORD_BITS);
            // `index`: the word index at level k - 1, i.e. a bit index at level k.
            let mut index = iter.word_index;
            for (k, words) in levels.iter().enumerate().skip(1) {
                let bit = index % WORD_BITS;
                index /= WORD_BITS;
                let rest = words[index as usize] & (mask_from(bit) << 1);
                match k {
                    1 => iter.pending_words = rest,
                    2 => iter.pending_blocks = rest,
                    _ => iter.upper[k] = rest,
                }
            }
        }
        iter
    }

    /// Moves the path to the next non-zero bottom word; `false` when there is none. The
    /// common cases (another word of the same level-1 block, or of the same level-2 block)
    /// are handled inline.
    #[inline]
    fn refill(&mut self) -> bool {
        if self.pending_words == 0 {
            if self.pending_blocks == 0 {
                // The cache goes by value: no pointer into `self` escapes, so the hot fields
                // can live in registers.
                let (found, upper) = climb(self.levels, self.word_index, self.upper);
                self.upper = upper;
                match found {
                    Some((block, pending_blocks)) => {
                        self.word_index = block * WORD_BITS;
                        self.pending_blocks = pending_blocks;
                    }
                    None => return false,
                }
            } else {
                let bits = self.pending_blocks;
                self.pending_blocks = bits & (bits - 1);
                let block = self.word_index >> (2 * WORD_SHIFT) << WORD_SHIFT
                    | u64::from(bits.trailing_zeros());
                self.word_index = block * WORD_BITS;
            }
            // Entering a level-1 word (index word_index / 64): non-zero, as its bit was set.
            let words = self.level1[(self.word_index / WORD_BITS) as usize];
            self.pending_words = words;
        }
        let bits = self.pending_words;
        self.pending_words = bits & (bits - 1);
        self.word_index =
            self.word_index / WORD_BITS * WORD_BITS + u64::from(bits.trailing_zeros());
        // Non-zero: its summary bit is set, and the borrow keeps the bitmap unchanged.
        self.pending = self.bottom[self.word_index as usize];
        true
    }
}

/// The position, not the levels it borrows.
impl std::fmt::Debug for DirtyIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirtyIter")
            .field("word_index", &self.word_index)
            .field("pending", &format_args!("{:#x}", self.pending))
            .finish_non_exhaustive()
    }
}

/// The path's level-2 block is exhausted: climbs to the lowest level `>= 3` with bits left
/// in `upper` and descends from there to level 2, caching the rest of each word. Returns
/// the index of the next non-empty level-1 word and the rest of its level-2 word (`None`
/// at the end), and the updated cache.
#[inline(never)]
fn climb(
    levels: &[Vec<u64>],
    word_index: u64,
    mut upper: [u64; MAX_LEVELS],
) -> (Option<(u64, u64)>, [u64; MAX_LEVELS]) {
    let Some(level) = (3..levels.len()).find(|&k| upper[k] != 0) else {
        return (None, upper);
    };
    let bits = upper[level];
    upper[level] = bits & (bits - 1);
    let path_word = word_index >> (WORD_SHIFT * level as u32);
    // A word index at level `level - 1`; then descend, caching the rest of each word.
    let mut index = path_word * WORD_BITS + u64::from(bits.trailing_zeros());
    for below in (3..level).rev() {
        let word = levels[below][index as usize];
        upper[below] = word & word.wrapping_sub(1);
        index = index * WORD_BITS + u64::from(word.trailing_zeros());
    }
    let word = levels[2][index as usize];
    let found = (
        index * WORD_BITS + u64::from(word.trailing_zeros()),
        word & word.wrapping_sub(1),
    );
    (Some(found), upper)
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
