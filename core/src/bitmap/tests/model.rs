//! The reference model: one `bool` per granule, every query a plain scan.

use std::ops::Range;

/// A bitmap as a `Vec<bool>` of granules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Model {
    pub(crate) size: u64,
    pub(crate) granularity: u32,
    pub(crate) bits: Vec<bool>,
}

/// Why the model refused an operation (the bitmap must refuse it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused;

impl Model {
    pub(crate) fn new(size: u64, granularity: u32) -> Self {
        let granules = if size == 0 {
            0
        } else {
            ((size - 1) >> granularity) + 1
        };
        Self {
            size,
            granularity,
            bits: vec![false; granules as usize],
        }
    }

    pub(crate) fn granules(&self) -> u64 {
        self.bits.len() as u64
    }

    /// First item of granule `index`, or the size for indices at or past the end.
    pub(crate) fn item_of(&self, index: u64) -> u64 {
        if index >= self.granules() {
            self.size
        } else {
            index << self.granularity
        }
    }

    fn in_range(&self, start: u64, count: u64) -> bool {
        u128::from(start) + u128::from(count) <= u128::from(self.size)
    }

    fn fill(&mut self, start: u64, count: u64, value: bool) {
        if count == 0 {
            return;
        }
        let first = (start >> self.granularity) as usize;
        let last = ((start + count - 1) >> self.granularity) as usize;
        self.bits[first..=last]
            .iter_mut()
            .for_each(|bit| *bit = value);
    }

    pub(crate) fn set(&mut self, start: u64, count: u64) -> Result<(), Refused> {
        if !self.in_range(start, count) {
            return Err(Refused);
        }
        self.fill(start, count, true);
        Ok(())
    }

    pub(crate) fn reset(&mut self, start: u64, count: u64) -> Result<(), Refused> {
        let granule = 1u128 << self.granularity;
        let to_end = u128::from(start) + u128::from(count) == u128::from(self.size);
        let aligned =
            u128::from(start) % granule == 0 && (u128::from(count) % granule == 0 || to_end);
        if !self.in_range(start, count) || !aligned {
            return Err(Refused);
        }
        self.fill(start, count, false);
        Ok(())
    }

    pub(crate) fn get(&self, item: u64) -> bool {
        item < self.size && self.bits[(item >> self.granularity) as usize]
    }

    pub(crate) fn count(&self) -> u64 {
        let granules = self.bits.iter().filter(|&&bit| bit).count() as u128;
        u64::try_from(granules << self.granularity).unwrap_or(u64::MAX)
    }

    /// First items of the dirty granules from the granule holding `start` on.
    pub(crate) fn dirty_items_from(&self, start: u64) -> Vec<u64> {
        if start >= self.size {
            return Vec::new();
        }
        let first = (start >> self.granularity) as usize;
        (first..self.bits.len())
            .filter(|&i| self.bits[i])
            .map(|i| self.item_of(i as u64))
            .collect()
    }

    fn find(&self, start: u64, count: u64, value: bool) -> Option<u64> {
        if start >= self.size || count == 0 {
            return None;
        }
        let end = start.saturating_add(count).min(self.size);
        let first = start >> self.granularity;
        let found = (first..self.granules()).find(|&i| self.bits[i as usize] == value)?;
        let item = self.item_of(found).max(start);
        (item < end).then_some(item)
    }

    pub(crate) fn next_dirty(&self, start: u64, count: u64) -> Option<u64> {
        self.find(start, count, true)
    }

    pub(crate) fn next_zero(&self, start: u64, count: u64) -> Option<u64> {
        self.find(start, count, false)
    }

    pub(crate) fn next_dirty_area(
        &self,
        start: u64,
        end: u64,
        max_count: u64,
    ) -> Option<Range<u64>> {
        let end = end.min(self.size);
        if start >= end || max_count == 0 {
            return None;
        }
        let first = self.next_dirty(start, end - start)?;
        let limit = end.min(first.saturating_add(max_count));
        let mut index = first >> self.granularity;
        while index < self.granules() && self.bits[index as usize] && self.item_of(index) < limit {
            index += 1;
        }
        Some(first..self.item_of(index).min(limit).max(first))
    }

    pub(crate) fn status(&self, start: u64, count: u64) -> Result<(bool, u64), Refused> {
        if count == 0 || !self.in_range(start, count) {
            return Err(Refused);
        }
        let dirty = self.get(start);
        let mut index = start >> self.granularity;
        while index < self.granules() && self.bits[index as usize] == dirty {
            index += 1;
        }
        let run_end = self.item_of(index).min(start + count);
        Ok((dirty, run_end - start))
    }

    pub(crate) fn truncate(&mut self, new_size: u64) {
        let granules = if new_size == 0 {
            0
        } else {
            ((new_size - 1) >> self.granularity) + 1
        };
        self.bits.resize(granules as usize, false);
        self.size = new_size;
    }

    /// Dirties every granule of `self` that overlaps a dirty granule of `other`.
    pub(crate) fn merge(&mut self, other: &Model) {
        for (index, _) in other.bits.iter().enumerate().filter(|(_, &bit)| bit) {
            let first_item = other.item_of(index as u64);
            let end_item = other.item_of(index as u64 + 1);
            self.fill(first_item, end_item - first_item, true);
        }
    }
}
