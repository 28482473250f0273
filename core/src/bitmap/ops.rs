//! Marking and reading: `set`, `reset`, `get`, `count`.

use super::{BitmapError, HBitmap};

impl HBitmap {
    /// `Ok` when `[start, start + count)` lies within `[0, size)`.
    pub(crate) fn check_range(&self, start: u64, count: u64) -> Result<(), BitmapError> {
        match start.checked_add(count) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(BitmapError::OutOfRange {
                start,
                count,
                size: self.size,
            }),
        }
    }

    /// The granules `first..=last` covering a non-empty, in-range item range.
    #[inline]
    fn granule_span(&self, start: u64, count: u64) -> (u64, u64) {
        (
            start >> self.granularity,
            (start + count - 1) >> self.granularity,
        )
    }

    /// Marks `[start, start + count)` dirty, rounded outward to whole granules. `count == 0`
    /// does nothing. Errors when the range runs past the end.
    #[inline]
    pub fn set(&mut self, start: u64, count: u64) -> Result<(), BitmapError> {
        self.check_range(start, count)?;
        if count != 0 {
            let (first, last) = self.granule_span(start, count);
            if first == last {
                self.levels.set_one(first);
            } else {
                self.levels.set_range(first, last);
            }
        }
        Ok(())
    }

    /// Marks `[start, start + count)` clean. `start` must be a multiple of the granule size
    /// and so must `count`, unless the range runs exactly to the end (a partial last
    /// granule). Anything else is an error, not a rounding: clearing part of a granule
    /// would lose the dirtiness of its other items.
    pub fn reset(&mut self, start: u64, count: u64) -> Result<(), BitmapError> {
        self.check_range(start, count)?;
        let granule = 1u64 << self.granularity;
        let runs_to_end = start + count == self.size;
        if start % granule != 0 || (count % granule != 0 && !runs_to_end) {
            return Err(BitmapError::Unaligned {
                start,
                count,
                granule,
            });
        }
        if count != 0 {
            let (first, last) = self.granule_span(start, count);
            self.levels.reset_range(first, last);
        }
        Ok(())
    }

    /// Marks everything clean. O(size / 64).
    pub fn reset_all(&mut self) {
        self.levels.reset_all();
    }

    /// Whether the granule holding `item` is dirty; items past the end read clean.
    #[inline]
    pub fn get(&self, item: u64) -> bool {
        item < self.size && self.levels.test(item >> self.granularity)
    }

    /// Items covered by dirty granules: dirty granules `<< granularity`, so a dirty partial
    /// last granule counts whole and the count may exceed `size`. Saturates at `u64::MAX`
    /// (only reachable with sizes near `2^64`). O(1).
    #[inline]
    pub fn count(&self) -> u64 {
        self.levels
            .set_granules
            .saturating_mul(1 << self.granularity)
    }

    /// Whether no granule is dirty. O(1).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.levels.set_granules == 0
    }
}
