//! Combining and resizing: `merge` and `truncate`.

use super::{granules_for, BitmapError, HBitmap, MAX_LOG_GRANULES};

impl HBitmap {
    /// Marks dirty every item that is dirty in `other`, which must have the same size.
    /// Granularities may differ: a coarser `other` dirties every granule of `self` that
    /// overlaps one of its dirty granules; a finer one dirties the granules holding its
    /// dirty items. Same granularity: O(size / 64); otherwise O(dirty runs of `other`).
    pub fn merge(&mut self, other: &HBitmap) -> Result<(), BitmapError> {
        if other.size != self.size {
            return Err(BitmapError::SizeMismatch {
                size: self.size,
                other: other.size,
            });
        }
        if other.is_empty() {
            return Ok(());
        }
        if other.granularity == self.granularity {
            for (word, &theirs) in self.levels.dirty[0].iter_mut().zip(other.levels.bottom()) {
                *word |= theirs;
            }
            self.levels.rebuild_all();
            return Ok(());
        }
        let mut from = 0;
        while let Some(run) = other.next_dirty_area(from, self.size, u64::MAX) {
            self.set(run.start, run.end - run.start)
                .expect("a dirty run of a same-sized bitmap is in range");
            from = run.end;
        }
        Ok(())
    }

    /// Changes the size to `new_size` items. Growing adds clean items; shrinking drops the
    /// granules past the new end (a partially kept last granule keeps its bit) and the
    /// count follows exactly. O(size / 64) when the granule count changes, else O(1).
    /// Errors like [`new`](Self::new) when the new size needs too many granules.
    pub fn truncate(&mut self, new_size: u64) -> Result<(), BitmapError> {
        let granules = granules_for(new_size, self.granularity);
        if granules != self.levels.granules {
            let too_large = BitmapError::TooLarge {
                size: new_size,
                granularity: self.granularity,
                max_log: MAX_LOG_GRANULES,
            };
            if granules > 1u64 << MAX_LOG_GRANULES {
                return Err(too_large);
            }
            self.levels = self
                .levels
                .resized(granules)
                .map_err(|e| e.into_bitmap_error(too_large))?;
        }
        self.size = new_size;
        Ok(())
    }
}
