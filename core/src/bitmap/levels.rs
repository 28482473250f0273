//! The word storage: the bottom level of granule bits and its two summary hierarchies.
//!
//! Invariants (checked by [`Levels::check_invariants`] in tests):
//! - `dirty[0]` holds one bit per granule; bits at or past `granules` are zero.
//! - `dirty[k + 1]` bit `j` is set iff `dirty[k]` word `j` is non-zero.
//! - `full[0]` bit `j` is set iff `dirty[0]` word `j` is all ones; `full[k + 1]` bit `j` is
//!   set iff `full[k]` word `j` is all ones. So `full[k]` has as many words as `dirty[k + 1]`.
//! - Summary bits past the number of words of the level below are zero.
//! - The last level of each hierarchy has exactly one word; `full` has one level fewer
//!   than `dirty` (none at all when the bottom is a single word).
//! - `set_granules` is the number of set bits in `dirty[0]`.

use super::words::{clear_bits, mask_from, mask_through, or_bits, WORD_BITS};

/// The levels of one bitmap. All indices are granule or word indices as `u64`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Levels {
    /// `dirty[0]` is the bottom; each further level summarises "word is non-zero".
    pub(crate) dirty: Vec<Vec<u64>>,
    /// `full[k]` summarises "word of the level below is all ones" (below `full[0]`: `dirty[0]`).
    pub(crate) full: Vec<Vec<u64>>,
    /// Number of granules (valid bottom bits).
    pub(crate) granules: u64,
    /// Number of set bottom bits, kept exact by every mutation.
    pub(crate) set_granules: u64,
}

/// Why levels could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AllocError {
    /// A level has more words than `usize` can count (large sizes on 32-bit targets).
    Unaddressable,
    /// The allocator refused this many bytes for the bottom level.
    OutOfMemory {
        /// Bytes asked for.
        bytes: u64,
    },
}

/// Bottom levels smaller than this are allocated without a probe.
const PROBE_WORDS: usize = 1 << 17;

/// `vec![0; n]` aborts the process when the allocation fails. For big levels, reserve the
/// same size fallibly first (this only maps address space; the zeroed allocation that
/// follows is lazy too), so an impossible size is an error instead of an abort.
fn probe_allocation(words: usize) -> Result<(), AllocError> {
    if words >= PROBE_WORDS {
        let mut probe: Vec<u64> = Vec::new();
        probe
            .try_reserve_exact(words)
            .map_err(|_| AllocError::OutOfMemory {
                bytes: words as u64 * 8,
            })?;
    }
    Ok(())
}

/// Word counts of each dirty level for `granules` granules (bottom first, top has one word).
/// `None` when a level would not fit in `usize` (large sizes on 32-bit targets).
fn level_lengths(granules: u64) -> Option<Vec<usize>> {
    let mut lengths = Vec::with_capacity(8);
    let mut words = granules.div_ceil(WORD_BITS).max(1);
    loop {
        lengths.push(usize::try_from(words).ok()?);
        if words == 1 {
            return Some(lengths);
        }
        words = words.div_ceil(WORD_BITS);
    }
}

impl Levels {
    /// All-clean levels for `granules` granules.
    pub(crate) fn new(granules: u64) -> Result<Self, AllocError> {
        let lengths = level_lengths(granules).ok_or(AllocError::Unaddressable)?;
        probe_allocation(lengths[0])?;
        let dirty: Vec<Vec<u64>> = lengths.iter().map(|&n| vec![0; n]).collect();
        let full = lengths[1..].iter().map(|&n| vec![0; n]).collect();
        Ok(Self {
            dirty,
            full,
            granules,
            set_granules: 0,
        })
    }

    /// The bottom level: one bit per granule.
    #[inline]
    pub(crate) fn bottom(&self) -> &[u64] {
        &self.dirty[0]
    }

    /// Whether granule `g` (which must be below `granules`) is set.
    #[inline]
    pub(crate) fn test(&self, g: u64) -> bool {
        self.dirty[0][(g / WORD_BITS) as usize] >> (g % WORD_BITS) & 1 == 1
    }

    /// Sets one granule (`g < granules`): the hot path of guest writes. Like
    /// [`set_in_word`](Self::set_in_word) with one bit, but counting without a popcount
    /// (baseline x86-64 has no popcount instruction).
    #[inline]
    pub(crate) fn set_one(&mut self, g: u64) {
        let index = g / WORD_BITS;
        let bit = 1u64 << (g % WORD_BITS);
        let bottom = &mut self.dirty[0];
        let old = bottom[index as usize];
        if old & bit != 0 {
            return;
        }
        let new = old | bit;
        bottom[index as usize] = new;
        self.set_granules += 1;
        self.after_bits_set(index, new);
    }

    /// Sets the bits `mask` of bottom word `index`. Already set bits return at once;
    /// otherwise the level-1 summary bit is OR-ed in unconditionally (idempotent, and
    /// cheaper than a hard-to-predict test of the old word), and only a level-1 word that
    /// was zero, or a bottom word that became full, takes a slow path.
    #[inline]
    fn set_in_word(&mut self, index: u64, mask: u64) {
        let bottom = &mut self.dirty[0];
        let old = bottom[index as usize];
        let new = old | mask;
        if new == old {
            return;
        }
        bottom[index as usize] = new;
        self.set_granules += u64::from((new ^ old).count_ones());
        self.after_bits_set(index, new);
    }

    /// After bottom word `index` gained bits and now holds `new`: sets its level-1 summary
    /// bit (unconditionally: idempotent, and cheaper than a hard-to-predict test), climbs
    /// further only when that level-1 word was zero, and marks the "full" hierarchy when the
    /// word became full.
    #[inline]
    fn after_bits_set(&mut self, index: u64, new: u64) {
        if let Some(level1) = self.dirty.get_mut(1) {
            let above = (index / WORD_BITS) as usize;
            let old_above = level1[above];
            level1[above] = old_above | 1 << (index % WORD_BITS);
            if old_above == 0 {
                self.propagate_bit_nonzero(2, index / WORD_BITS);
            }
        }
        if new == u64::MAX {
            self.propagate_full(index, index);
        }
    }

    /// Clears the bits `mask` of bottom word `index`, propagating only when the word became
    /// empty or stopped being full.
    #[inline]
    fn reset_in_word(&mut self, index: u64, mask: u64) {
        let bottom = &mut self.dirty[0];
        let old = bottom[index as usize];
        let new = old & !mask;
        if new == old {
            return;
        }
        bottom[index as usize] = new;
        self.set_granules -= u64::from((new ^ old).count_ones());
        if new == 0 {
            self.propagate_bit_zero(index);
        }
        if old == u64::MAX {
            self.propagate_bit_not_full(index);
        }
    }

    /// Bottom word `index` became zero: clear its level-1 bit, and further up while the
    /// words there become zero.
    fn propagate_bit_zero(&mut self, mut index: u64) {
        for words in self.dirty[1..].iter_mut() {
            let word = &mut words[(index / WORD_BITS) as usize];
            *word &= !(1 << (index % WORD_BITS));
            if *word != 0 {
                return;
            }
            index /= WORD_BITS;
        }
    }

    /// Bottom word `index` stopped being full: clear its full bit, and further up while the
    /// words there stop being full.
    fn propagate_bit_not_full(&mut self, mut index: u64) {
        for words in self.full.iter_mut() {
            let word = &mut words[(index / WORD_BITS) as usize];
            let old = *word;
            *word = old & !(1 << (index % WORD_BITS));
            if old != u64::MAX {
                return;
            }
            index /= WORD_BITS;
        }
    }

    /// Word `index` of dirty level `level - 1` became non-zero: set its bit in `level` and
    /// further up while the words there were zero.
    #[cold]
    fn propagate_bit_nonzero(&mut self, level: usize, mut index: u64) {
        for words in self.dirty[level..].iter_mut() {
            let word = &mut words[(index / WORD_BITS) as usize];
            let old = *word;
            *word = old | 1 << (index % WORD_BITS);
            if old != 0 {
                return;
            }
            index /= WORD_BITS;
        }
    }

    /// Sets granules `first..=last` (both below `granules`). Short ranges go word by word
    /// through the single-word path; long ones through the bulk path.
    #[inline]
    pub(crate) fn set_range(&mut self, first: u64, last: u64) {
        let (word_first, word_last) = (first / WORD_BITS, last / WORD_BITS);
        if word_last - word_first < SHORT_RANGE_WORDS {
            for word in word_first..=word_last {
                self.set_in_word(word, word_mask(word, first, last));
            }
        } else {
            self.set_range_bulk(first, last);
        }
    }

    /// [`set_range`](Self::set_range) for long ranges: whole words in bulk, summaries by range.
    fn set_range_bulk(&mut self, first: u64, last: u64) {
        let outcome = or_bits(&mut self.dirty[0], first, last);
        if outcome.newly_set == 0 {
            return;
        }
        self.set_granules += outcome.newly_set;
        let (word_first, word_last) = (first / WORD_BITS, last / WORD_BITS);
        if outcome.filled_zero_word {
            self.propagate_nonzero(word_first, word_last);
        }
        // Interior words are now all ones; the end words may be.
        let bottom = &self.dirty[0];
        if let Some((lo, hi)) = trim_ends(bottom, word_first, word_last, |w| w == u64::MAX) {
            self.propagate_full(lo, hi);
        }
    }

    /// Clears granules `first..=last` (both below `granules`), like [`set_range`](Self::set_range).
    #[inline]
    pub(crate) fn reset_range(&mut self, first: u64, last: u64) {
        let (word_first, word_last) = (first / WORD_BITS, last / WORD_BITS);
        if word_last - word_first < SHORT_RANGE_WORDS {
            for word in word_first..=word_last {
                self.reset_in_word(word, word_mask(word, first, last));
            }
        } else {
            self.reset_range_bulk(first, last);
        }
    }

    /// [`reset_range`](Self::reset_range) for long ranges.
    fn reset_range_bulk(&mut self, first: u64, last: u64) {
        let cleared = clear_bits(&mut self.dirty[0], first, last);
        if cleared == 0 {
            return;
        }
        self.set_granules -= cleared;
        let (word_first, word_last) = (first / WORD_BITS, last / WORD_BITS);
        // Interior words are now zero; the end words may still hold bits.
        if let Some((lo, hi)) = trim_ends(&self.dirty[0], word_first, word_last, |w| w == 0) {
            self.propagate_zero(lo, hi);
        }
        // Every word in the range lost a bit, so none is full any more.
        self.propagate_not_full(word_first, word_last);
    }

    /// Clears every granule.
    pub(crate) fn reset_all(&mut self) {
        for level in self.dirty.iter_mut().chain(self.full.iter_mut()) {
            level.fill(0);
        }
        self.set_granules = 0;
    }

    /// Words `lo..=hi` of `dirty[0]` became non-zero: set their summary bits upwards.
    fn propagate_nonzero(&mut self, mut lo: u64, mut hi: u64) {
        for level in self.dirty[1..].iter_mut() {
            let outcome = or_bits(level, lo, hi);
            if !outcome.filled_zero_word {
                return;
            }
            (lo, hi) = (lo / WORD_BITS, hi / WORD_BITS);
        }
    }

    /// Words `lo..=hi` of `dirty[0]` became all ones: set their full bits upwards.
    #[cold]
    fn propagate_full(&mut self, mut lo: u64, mut hi: u64) {
        for level in self.full.iter_mut() {
            if or_bits(level, lo, hi).newly_set == 0 {
                return;
            }
            let (word_lo, word_hi) = (lo / WORD_BITS, hi / WORD_BITS);
            match trim_ends(level, word_lo, word_hi, |w| w == u64::MAX) {
                Some(range) => (lo, hi) = range,
                None => return,
            }
        }
    }

    /// Words `lo..=hi` of `dirty[0]` became zero: clear their summary bits upwards.
    fn propagate_zero(&mut self, mut lo: u64, mut hi: u64) {
        for level in self.dirty[1..].iter_mut() {
            if clear_bits(level, lo, hi) == 0 {
                return;
            }
            let (word_lo, word_hi) = (lo / WORD_BITS, hi / WORD_BITS);
            match trim_ends(level, word_lo, word_hi, |w| w == 0) {
                Some(range) => (lo, hi) = range,
                None => return,
            }
        }
    }

    /// Words `lo..=hi` of `dirty[0]` are no longer all ones: clear their full bits upwards.
    fn propagate_not_full(&mut self, mut lo: u64, mut hi: u64) {
        for level in self.full.iter_mut() {
            if clear_bits(level, lo, hi) == 0 {
                return;
            }
            (lo, hi) = (lo / WORD_BITS, hi / WORD_BITS);
        }
    }

    /// Recomputes the summaries above bottom words `lo..=hi` after they were written
    /// directly (deserialization, merge). Cost: O(hi - lo + levels).
    pub(crate) fn rebuild_summaries(&mut self, lo: u64, hi: u64) {
        let (mut dirty_lo, mut dirty_hi) = (lo, hi);
        for k in 1..self.dirty.len() {
            let (below, above) = self.dirty.split_at_mut(k);
            summarise(&below[k - 1], &mut above[0], dirty_lo, dirty_hi, |w| w != 0);
            (dirty_lo, dirty_hi) = (dirty_lo / WORD_BITS, dirty_hi / WORD_BITS);
        }
        let (mut full_lo, mut full_hi) = (lo, hi);
        for k in 0..self.full.len() {
            let (below, above) = self.full.split_at_mut(k);
            let below: &[u64] = if k == 0 {
                &self.dirty[0]
            } else {
                &below[k - 1]
            };
            summarise(below, &mut above[0], full_lo, full_hi, |w| w == u64::MAX);
            (full_lo, full_hi) = (full_lo / WORD_BITS, full_hi / WORD_BITS);
        }
    }

    /// Rebuilds every summary and recounts the set granules from the bottom level.
    pub(crate) fn rebuild_all(&mut self) {
        let last_word = self.dirty[0].len() as u64 - 1;
        self.rebuild_summaries(0, last_word);
        self.set_granules = self.dirty[0]
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum();
    }

    /// Clears the padding bits of the last bottom word (granules at or past `granules`).
    /// Returns how many set bits were removed.
    pub(crate) fn clear_padding(&mut self) -> u64 {
        let last = self.dirty[0].len() - 1;
        let used = self.granules - last as u64 * WORD_BITS;
        // `used` is 0 only for an empty bitmap, whose single word is all padding.
        let padding = if used >= WORD_BITS {
            0
        } else {
            mask_from(used)
        };
        let removed = u64::from((self.dirty[0][last] & padding).count_ones());
        self.dirty[0][last] &= !padding;
        removed
    }

    /// The same granules resized to `granules`: dropped bits go, new bits are clean, every
    /// summary and the count are rebuilt. `None` if the new size cannot be addressed.
    pub(crate) fn resized(&self, granules: u64) -> Result<Self, AllocError> {
        let mut next = Self::new(granules)?;
        let keep = next.dirty[0].len().min(self.dirty[0].len());
        next.dirty[0][..keep].copy_from_slice(&self.dirty[0][..keep]);
        next.clear_padding();
        next.rebuild_all();
        Ok(next)
    }

    /// Checks every invariant listed in the module doc; the error says which one broke.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let bottom = &self.dirty[0];
        let counted: u64 = bottom.iter().map(|w| u64::from(w.count_ones())).sum();
        if counted != self.set_granules {
            return Err(format!(
                "count {} but {} bits set",
                self.set_granules, counted
            ));
        }
        let used = self.granules % WORD_BITS;
        let padding_word = bottom[bottom.len() - 1];
        if self.granules == 0 && padding_word != 0
            || used != 0 && padding_word & mask_from(used) != 0
        {
            return Err("padding bits set".into());
        }
        if self.dirty.last().map(Vec::len) != Some(1) || self.full.len() + 1 != self.dirty.len() {
            return Err("level shape".into());
        }
        for k in 1..self.dirty.len() {
            check_summary(&self.dirty[k - 1], &self.dirty[k], |w| w != 0)
                .map_err(|e| format!("dirty level {k}: {e}"))?;
        }
        for k in 0..self.full.len() {
            let below = if k == 0 { bottom } else { &self.full[k - 1] };
            check_summary(below, &self.full[k], |w| w == u64::MAX)
                .map_err(|e| format!("full level {k}: {e}"))?;
        }
        Ok(())
    }
}

/// Ranges spanning at most this many bottom words are applied word by word.
const SHORT_RANGE_WORDS: u64 = 4;

/// The bits of bottom word `word` that lie in granules `first..=last`.
#[inline]
fn word_mask(word: u64, first: u64, last: u64) -> u64 {
    let low = if word == first / WORD_BITS {
        first % WORD_BITS
    } else {
        0
    };
    let high = if word == last / WORD_BITS {
        last % WORD_BITS
    } else {
        WORD_BITS - 1
    };
    mask_from(low) & mask_through(high)
}

/// Narrows the word range `lo..=hi` to the words matching `pred`, assuming every interior
/// word matches and only the two end words may not. `None` when nothing matches.
#[inline]
fn trim_ends(words: &[u64], lo: u64, hi: u64, pred: impl Fn(u64) -> bool) -> Option<(u64, u64)> {
    let lo_ok = pred(words[lo as usize]);
    if lo == hi {
        return lo_ok.then_some((lo, hi));
    }
    let lo = if lo_ok { lo } else { lo + 1 };
    let hi = if pred(words[hi as usize]) { hi } else { hi - 1 };
    (lo <= hi).then_some((lo, hi))
}

/// Recomputes the words of `above` that summarise words `lo..=hi` of `below`.
fn summarise(below: &[u64], above: &mut [u64], lo: u64, hi: u64, pred: impl Fn(u64) -> bool) {
    for index in lo / WORD_BITS..=hi / WORD_BITS {
        let start = (index * WORD_BITS) as usize;
        let end = (start + WORD_BITS as usize).min(below.len());
        let word = below[start..end]
            .iter()
            .enumerate()
            .fold(0u64, |acc, (bit, &w)| acc | u64::from(pred(w)) << bit);
        above[index as usize] = word;
    }
}

#[cfg(test)]
fn check_summary(below: &[u64], above: &[u64], pred: impl Fn(u64) -> bool) -> Result<(), String> {
    if above.len() as u64 != (below.len() as u64).div_ceil(WORD_BITS) {
        return Err(format!("{} words above {} words", above.len(), below.len()));
    }
    for (bit, &word) in below.iter().enumerate() {
        let summary = above[bit / 64] >> (bit % 64) & 1 == 1;
        if summary != pred(word) {
            return Err(format!("bit {bit} is {summary} for word {word:#x}"));
        }
    }
    let tail = below.len() % 64;
    if tail != 0 && above[above.len() - 1] & mask_from(tail as u64) != 0 {
        return Err("summary padding set".into());
    }
    Ok(())
}
