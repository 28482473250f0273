//! The hierarchical dirty bitmap, [`HBitmap`].
//!
//! # Theory of operation
//!
//! The bitmap covers `size` items (bytes, for a disk). Items are grouped in *granules* of
//! `2^granularity` items and the bitmap stores one bit per granule: a granule is *dirty*
//! (set) or *clean*. Every range operation first maps items to granules —
//! `first = start >> granularity`, `last = (start + count - 1) >> granularity` — so `set`
//! rounds outward, and a search or an iteration reports the first item of a granule (or
//! `start` itself when `start` lies inside a matching granule).
//!
//! **Levels.** The granule bits live in `u64` words, the *bottom level*. Above it sit two
//! hierarchies of summary levels, each with one bit per word of the level below, until a
//! level fits in one word (so `ceil(log64(granules))` levels: 4 for 2^24 granules, 7 for
//! 2^41):
//!
//! - the *dirty* summaries: bit `j` of level `k + 1` is set **iff** word `j` of level `k`
//!   is non-zero. They let a search for a dirty granule skip 64, 4096, 262144... clean
//!   granules with one word read per level.
//! - the *full* summaries: bit `j` is set **iff** word `j` of the level below is all ones.
//!   They do the same for clean granules, so `next_zero` on a nearly full bitmap is as
//!   fast as `next_dirty` on a nearly empty one (QEMU's `next_zero` scans linearly).
//!
//! Those two "iff"s are the whole invariant; bits past the last granule (padding) are
//! always clear. The number of dirty granules is kept beside the levels and updated with a
//! popcount of exactly the bits that changed, so `count` is O(1). Memory: `n / 8` bytes
//! for the bottom level plus about 3 % for the summaries.
//!
//! Setting one granule, the guest-write hot path, touches the bottom word and the level-1
//! word (OR-ed unconditionally: cheaper than a hard-to-predict branch) and goes further up
//! only when a level-1 word was empty or a bottom word became full. Ranges of up to four
//! words go word by word through the same path; longer ones fill whole words in bulk.
//!
//! **Costs** (n granules, m granules in the range, L levels, W = 64):
//!
//! | operation | cost |
//! |---|---|
//! | `new`, `reset_all` | O(n / W) |
//! | `get`, `count`, `is_empty` | O(1) |
//! | `set` / `reset` of one granule | O(1), plus O(L) when a word becomes empty, non-empty or full |
//! | `set` / `reset` of m granules | O(m / W + L) |
//! | `next_dirty`, `next_zero`, `status`, cursor step | O(L) |
//! | [`DirtyIter`] | amortised O(1) per dirty granule: it caches its path through the levels, so each summary word is read once per walk |
//! | `serialize` / `deserialize_*` of a chunk of m granules | O(m / W + L) |
//! | `deserialize_finish`, `merge` (same granularity), `truncate` | O(n / W) |
//! | `merge` (different granularities) | O(dirty runs of the input × (L + run / W)) |
//!
//! **Granularity, worked.** 16 items at granularity 1 are 8 granules of 2 items. `set(0, 9)`
//! touches items 0..=8, i.e. granules 0..=4 (granule 4 holds items 8 and 9), so item 9 reads
//! dirty too, the count is 5 granules = 10 items, and the iteration yields the first item
//! of each dirty granule:
//!
//! ```
//! use blockmirror_core::bitmap::HBitmap;
//!
//! let mut bitmap = HBitmap::new(16, 1).unwrap();
//! bitmap.set(0, 9).unwrap();
//! assert!(bitmap.get(9) && !bitmap.get(10));
//! assert_eq!(bitmap.count(), 10);
//! assert_eq!(bitmap.iter_dirty(0).collect::<Vec<_>>(), [0, 2, 4, 6, 8]);
//! // Searches return `start` itself when it lies in a matching granule.
//! assert_eq!(bitmap.next_dirty(3, u64::MAX), Some(3));
//! assert_eq!(bitmap.next_zero(3, u64::MAX), Some(10));
//! assert_eq!(bitmap.next_dirty_area(5, 16, 100), Some(5..10));
//! // reset needs whole granules: item 2 alone is half a granule.
//! assert!(bitmap.reset(2, 1).is_err());
//! bitmap.reset(2, 2).unwrap();
//! assert_eq!(bitmap.iter_dirty(0).collect::<Vec<_>>(), [0, 4, 6, 8]);
//! ```
//!
//! Iteration comes as a borrowing [`DirtyIter`] and as a position-only [`DirtyCursor`]
//! whose behaviour under concurrent `set`/`reset` is documented in the [`iter`] module.
//! Serialization is a little-endian stream of 64-bit words of granule bits, in chunks
//! aligned to `64 << granularity` items (module [`serialize`]).

mod error;
pub mod iter;
mod levels;
mod ops;
mod resize;
mod search;
pub mod serialize;
mod words;

#[cfg(test)]
mod tests;

pub use error::BitmapError;
pub use iter::{DirtyCursor, DirtyIter};

use levels::{AllocError, Levels};

/// log2 of the largest number of granules a bitmap may hold.
pub const MAX_LOG_GRANULES: u32 = 41;

/// A dirty bitmap over `size` items, one bit per `2^granularity` items. See the
/// [module documentation](self) for how it works and what each operation costs.
///
/// `Debug` prints a summary (shape, count, the first dirty items), not the words: a 1 TiB
/// bitmap at 64 KiB is 2 MiB of them.
#[derive(Clone, PartialEq, Eq)]
pub struct HBitmap {
    /// Size in items, as given.
    size: u64,
    /// log2 of the items per granule, below 64.
    granularity: u32,
    /// The bottom level, its summaries and the dirty granule count.
    levels: Levels,
}

impl AllocError {
    /// The public error: `unaddressable` (built by the caller, who knows the shape) or
    /// [`BitmapError::OutOfMemory`].
    fn into_bitmap_error(self, unaddressable: BitmapError) -> BitmapError {
        match self {
            AllocError::Unaddressable => unaddressable,
            AllocError::OutOfMemory { bytes } => BitmapError::OutOfMemory { bytes },
        }
    }
}

impl std::fmt::Debug for HBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first_dirty: Vec<u64> = self.iter_dirty(0).take(8).collect();
        f.debug_struct("HBitmap")
            .field("size", &self.size)
            .field("granularity", &self.granularity)
            .field("granules", &self.levels.granules)
            .field("dirty_granules", &self.levels.set_granules)
            .field("first_dirty_items", &first_dirty)
            .field("levels", &self.levels.dirty.len())
            .finish()
    }
}

/// Granules needed for `size` items at `granularity`: `ceil(size / 2^granularity)`.
fn granules_for(size: u64, granularity: u32) -> u64 {
    if size == 0 {
        0
    } else {
        ((size - 1) >> granularity) + 1
    }
}

impl HBitmap {
    /// A clean bitmap of `size` items with one bit per `2^granularity` items. Errors:
    /// granularity 64 or more, more than `2^MAX_LOG_GRANULES` granules, or (on 32-bit
    /// targets) more words than memory can address.
    pub fn new(size: u64, granularity: u32) -> Result<Self, BitmapError> {
        if granularity >= 64 {
            return Err(BitmapError::Granularity(granularity));
        }
        let levels = Self::levels_for(size, granularity)?;
        Ok(Self {
            size,
            granularity,
            levels,
        })
    }

    /// Checks the granule count of `size` items and makes clean levels for it.
    fn levels_for(size: u64, granularity: u32) -> Result<Levels, BitmapError> {
        let too_large = BitmapError::TooLarge {
            size,
            granularity,
            max_log: MAX_LOG_GRANULES,
        };
        let granules = granules_for(size, granularity);
        if granules > 1u64 << MAX_LOG_GRANULES {
            return Err(too_large);
        }
        Levels::new(granules).map_err(|e| e.into_bitmap_error(too_large))
    }

    /// Size in items.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// log2 of the items per granule.
    pub fn granularity(&self) -> u32 {
        self.granularity
    }

    /// Number of granules: `ceil(size / 2^granularity)`.
    pub fn granules(&self) -> u64 {
        self.levels.granules
    }

    /// Number of dirty granules. O(1).
    pub fn dirty_granules(&self) -> u64 {
        self.levels.set_granules
    }

    /// Iterator over the first item of each dirty granule, ascending, starting with the
    /// granule that holds `start` (so the first value may be below an unaligned `start`).
    /// Empty when `start` is past the end.
    pub fn iter_dirty(&self, start: u64) -> DirtyIter<'_> {
        DirtyIter::new(self, start)
    }

    /// A [`DirtyCursor`] at the granule holding `start`.
    pub fn cursor(&self, start: u64) -> DirtyCursor {
        DirtyCursor::new(self, start)
    }
}
