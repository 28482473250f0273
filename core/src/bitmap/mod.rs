//! The dirty bitmap.
//!
//! PLACEHOLDER (flat, one level): this file fixes the public API that the job and the
//! faces program against. It is being replaced by the hierarchical implementation.

use std::ops::Range;

/// Errors from bitmap operations: bad arguments from the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BitmapError {
    /// The granularity must be below 64.
    #[error("granularity {0} is out of range (must be below 64)")]
    Granularity(u32),
    /// The bitmap would need more granules than supported.
    #[error("size {size} at granularity {granularity} needs more than 2^{max_log} granules")]
    TooLarge {
        /// Requested size in items.
        size: u64,
        /// Requested granularity.
        granularity: u32,
        /// log2 of the largest supported granule count.
        max_log: u32,
    },
    /// A range does not lie within `[0, size)`.
    #[error("range {start}+{count} lies outside the bitmap of size {size}")]
    OutOfRange {
        /// First item of the range.
        start: u64,
        /// Items in the range.
        count: u64,
        /// Bitmap size in items.
        size: u64,
    },
    /// `reset` needs a granule-aligned start and count (or a count that runs to the end).
    #[error("reset of {start}+{count} is not aligned to the granule size {granule}")]
    Unaligned {
        /// First item of the range.
        start: u64,
        /// Items in the range.
        count: u64,
        /// Items per granule.
        granule: u64,
    },
    /// Serialized data has the wrong length for the range.
    #[error("serialized data is {got} bytes, expected {expected}")]
    SerializedLength {
        /// Bytes given.
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// Two bitmaps must have the same size to be merged.
    #[error("cannot merge a bitmap of size {other} into one of size {size}")]
    SizeMismatch {
        /// Size of the receiving bitmap.
        size: u64,
        /// Size of the other bitmap.
        other: u64,
    },
    /// The granularity is too large for serialization (must be below 58).
    #[error("granularity {0} is too large to serialize (must be below 58)")]
    NotSerializable(u32),
}

/// log2 of the largest number of granules a bitmap may hold.
pub const MAX_LOG_GRANULES: u32 = 41;

/// A dirty bitmap over `size` items, one bit per `2^granularity` items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HBitmap {
    size: u64,
    granularity: u32,
    granules: u64,
    count: u64,
    words: Vec<u64>,
}

impl HBitmap {
    /// A clean bitmap of `size` items with one bit per `2^granularity` items.
    pub fn new(size: u64, granularity: u32) -> Result<Self, BitmapError> {
        if granularity >= 64 {
            return Err(BitmapError::Granularity(granularity));
        }
        let granules = granules_for(size, granularity);
        if granules > 1u64 << MAX_LOG_GRANULES {
            return Err(BitmapError::TooLarge { size, granularity, max_log: MAX_LOG_GRANULES });
        }
        Ok(Self { size, granularity, granules, count: 0, words: vec![0; granules.div_ceil(64) as usize] })
    }
    /// Size in items.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// log2 of the items per granule.
    pub fn granularity(&self) -> u32 {
        self.granularity
    }
    fn check(&self, start: u64, count: u64) -> Result<(), BitmapError> {
        match start.checked_add(count) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(BitmapError::OutOfRange { start, count, size: self.size }),
        }
    }
    fn bit(&self, g: u64) -> bool {
        self.words[(g / 64) as usize] >> (g % 64) & 1 == 1
    }
    fn put(&mut self, g: u64, v: bool) {
        let was = self.bit(g);
        let w = &mut self.words[(g / 64) as usize];
        if v {
            *w |= 1 << (g % 64);
        } else {
            *w &= !(1 << (g % 64));
        }
        match (was, v) {
            (false, true) => self.count += 1,
            (true, false) => self.count -= 1,
            _ => {}
        }
    }
    /// Mark `[start, start+count)` dirty, rounded outward to whole granules.
    pub fn set(&mut self, start: u64, count: u64) -> Result<(), BitmapError> {
        self.check(start, count)?;
        if count == 0 {
            return Ok(());
        }
        for g in start >> self.granularity..=(start + count - 1) >> self.granularity {
            self.put(g, true);
        }
        Ok(())
    }
    /// Mark `[start, start+count)` clean; needs granule alignment (or a run to the end).
    pub fn reset(&mut self, start: u64, count: u64) -> Result<(), BitmapError> {
        self.check(start, count)?;
        let granule = 1u64 << self.granularity;
        if start % granule != 0 || (count % granule != 0 && start + count != self.size) {
            return Err(BitmapError::Unaligned { start, count, granule });
        }
        if count == 0 {
            return Ok(());
        }
        for g in start >> self.granularity..=(start + count - 1) >> self.granularity {
            self.put(g, false);
        }
        Ok(())
    }
    /// Mark everything clean.
    pub fn reset_all(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
        self.count = 0;
    }
    /// Whether the granule holding `item` is dirty (items past the end read clean).
    pub fn get(&self, item: u64) -> bool {
        item < self.size && self.bit(item >> self.granularity)
    }
    /// Items covered by dirty granules (dirty granules << granularity).
    pub fn count(&self) -> u64 {
        self.count << self.granularity
    }
    /// Whether no granule is dirty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    fn find(&self, start: u64, count: u64, dirty: bool) -> Option<u64> {
        if start >= self.size || count == 0 {
            return None;
        }
        let end = start.saturating_add(count).min(self.size);
        let mut g = start >> self.granularity;
        let last = (end - 1) >> self.granularity;
        while g <= last {
            if self.bit(g) == dirty {
                return Some((g << self.granularity).max(start));
            }
            g += 1;
        }
        None
    }
    /// First dirty item in `[start, start+count)` (`start` itself if its granule is dirty).
    pub fn next_dirty(&self, start: u64, count: u64) -> Option<u64> {
        self.find(start, count, true)
    }
    /// First clean item in `[start, start+count)` (`start` itself if its granule is clean).
    pub fn next_zero(&self, start: u64, count: u64) -> Option<u64> {
        self.find(start, count, false)
    }
    /// The first run of dirty items in `[start, end)`, at most `max_count` long.
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
    /// Whether `start` is dirty, and how many items from `start` (at most `count`) share that state.
    pub fn status(&self, start: u64, count: u64) -> Result<(bool, u64), BitmapError> {
        self.check(start, count)?;
        if count == 0 {
            return Err(BitmapError::OutOfRange { start, count, size: self.size });
        }
        let dirty = self.get(start);
        let other = if dirty { self.next_zero(start, count) } else { self.next_dirty(start, count) };
        Ok((dirty, other.map_or(count, |o| o - start)))
    }
}

fn granules_for(size: u64, granularity: u32) -> u64 {
    if size == 0 {
        0
    } else {
        ((size - 1) >> granularity) + 1
    }
}
