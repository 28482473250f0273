//! Bit-range primitives over slices of `u64` words (bit `b` of the slice is bit `b % 64` of
//! word `b / 64`, least significant first).

/// Bits per word: every level uses `u64` words, on every platform.
pub(crate) const WORD_BITS: u64 = 64;

/// log2 of [`WORD_BITS`]: each level up divides indices by `1 << WORD_SHIFT`.
pub(crate) const WORD_SHIFT: u32 = 6;

/// Bits `from..64` set (`from < 64`).
#[inline]
pub(crate) fn mask_from(from: u64) -> u64 {
    u64::MAX << from
}

/// Bits `0..=to` set (`to < 64`).
#[inline]
pub(crate) fn mask_through(to: u64) -> u64 {
    u64::MAX >> (WORD_BITS - 1 - to)
}

/// What [`or_bits`] changed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OrOutcome {
    /// Bits that were clear and are now set.
    pub(crate) newly_set: u64,
    /// Whether some touched word was zero before (its summary bit must now be set).
    pub(crate) filled_zero_word: bool,
}

/// Set bits of `words`, and whether one of them is zero. One pass that the compiler can
/// vectorise (no early exit).
#[inline]
fn ones_and_any_zero(words: &[u64]) -> (u64, bool) {
    words.iter().fold((0, false), |(ones, any_zero), &word| {
        (ones + u64::from(word.count_ones()), any_zero | (word == 0))
    })
}

/// Sets bits `first..=last` of `words`.
#[inline]
pub(crate) fn or_bits(words: &mut [u64], first: u64, last: u64) -> OrOutcome {
    let mut outcome = OrOutcome {
        newly_set: 0,
        filled_zero_word: false,
    };
    let mut apply = |word: &mut u64, mask: u64| {
        let old = *word;
        outcome.filled_zero_word |= old == 0;
        outcome.newly_set += u64::from((mask & !old).count_ones());
        *word = old | mask;
    };
    let (word_first, word_last) = ((first / WORD_BITS) as usize, (last / WORD_BITS) as usize);
    let (bit_first, bit_last) = (first % WORD_BITS, last % WORD_BITS);
    if word_first == word_last {
        apply(
            &mut words[word_first],
            mask_from(bit_first) & mask_through(bit_last),
        );
        return outcome;
    }
    apply(&mut words[word_first], mask_from(bit_first));
    apply(&mut words[word_last], mask_through(bit_last));
    let interior = &mut words[word_first + 1..word_last];
    let (ones, any_zero) = ones_and_any_zero(interior);
    outcome.newly_set += interior.len() as u64 * WORD_BITS - ones;
    outcome.filled_zero_word |= any_zero;
    interior.fill(u64::MAX);
    outcome
}

/// Clears bits `first..=last` of `words`; returns how many were set.
#[inline]
pub(crate) fn clear_bits(words: &mut [u64], first: u64, last: u64) -> u64 {
    let mut cleared = 0;
    let mut apply = |word: &mut u64, mask: u64| {
        cleared += u64::from((*word & mask).count_ones());
        *word &= !mask;
    };
    let (word_first, word_last) = ((first / WORD_BITS) as usize, (last / WORD_BITS) as usize);
    let (bit_first, bit_last) = (first % WORD_BITS, last % WORD_BITS);
    if word_first == word_last {
        apply(
            &mut words[word_first],
            mask_from(bit_first) & mask_through(bit_last),
        );
        return cleared;
    }
    apply(&mut words[word_first], mask_from(bit_first));
    apply(&mut words[word_last], mask_through(bit_last));
    let interior = &mut words[word_first + 1..word_last];
    cleared += ones_and_any_zero(interior).0;
    interior.fill(0);
    cleared
}
