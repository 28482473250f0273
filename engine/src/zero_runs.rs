//! Zeroes inside one copy: which parts of a copy's range read as zero, so that a long copy
//! over data and zeroes writes only the data and makes the rest zero on the target (a
//! punched hole or a zero range), as copies the size of those parts would have done.
//!
//! A copy is looked at in *pieces*: ranges that start at multiples of the piece size
//! counted from the start of the disk (the first and last piece of a copy may be shorter).
//! The piece size is the job's granularity, but at least [`MIN_PIECE_BYTES`]: finer pieces
//! would split a copy into more system calls than its zeroes save, and a copy of
//! `MIN_PIECE_BYTES` or less is looked at as a whole, as before copies grew.
//!
//! Invariant: the runs of a [`ZeroRuns`] are sorted, disjoint, not adjacent (touching runs
//! are merged), non-empty and inside the copy; an empty `ZeroRuns` means "all data".

use std::ops::Range;

use crate::buffers::is_all_zero;

/// The smallest piece a copy is split into for its zeroes.
pub const MIN_PIECE_BYTES: usize = 256 << 10;

/// The piece size for a job of this granularity.
pub fn piece_bytes(granularity: u64) -> usize {
    usize::try_from(granularity).unwrap_or(usize::MAX).max(MIN_PIECE_BYTES)
}

/// The pieces of the copy at disk offset `offset` of `length` bytes, as ranges of the
/// copy's buffer (relative to `offset`), in order.
pub fn pieces(offset: u64, length: usize, piece: usize) -> impl Iterator<Item = Range<usize>> {
    let piece = piece.max(1) as u64;
    let end = offset + length as u64;
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let next = ((at / piece) + 1).saturating_mul(piece).min(end);
        let range = (at - offset) as usize..(next - offset) as usize;
        at = next;
        Some(range)
    })
}

/// The parts of one copy that read as zero (see the module's invariant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZeroRuns(Vec<Range<usize>>);

impl ZeroRuns {
    /// No zeroes: the whole copy is data.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// Adds a zero piece; pieces come in increasing order (the module's invariant holds).
    pub fn push(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            Some(last) => {
                debug_assert!(last.end < range.start, "zero pieces come in increasing order");
                self.0.push(range);
            }
            None => self.0.push(range),
        }
    }

    /// Whether the whole copy of `length` bytes is zero.
    pub fn covers(&self, length: usize) -> bool {
        matches!(self.0.as_slice(), [only] if only.start == 0 && only.end >= length)
    }

    /// Whether there are no zeroes in the copy.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes that read as zero.
    pub fn zero_bytes(&self) -> u64 {
        self.0.iter().map(|r| r.len() as u64).sum()
    }

    /// The copy of `length` bytes in order as (range of the buffer, is zero) segments.
    pub fn segments(&self, length: usize) -> Vec<(Range<usize>, bool)> {
        let mut out = Vec::with_capacity(self.0.len() * 2 + 1);
        let mut at = 0;
        for run in &self.0 {
            let (start, end) = (run.start.min(length), run.end.min(length));
            if at < start {
                out.push((at..start, false));
            }
            if start < end {
                out.push((start..end, true));
            }
            at = end.max(at);
        }
        if at < length {
            out.push((at..length, false));
        }
        out
    }
}

/// The zero pieces of a copy whose buffer holds all of its range.
pub fn find_in(bytes: &[u8], offset: u64, piece: usize) -> ZeroRuns {
    let mut runs = ZeroRuns::none();
    for range in pieces(offset, bytes.len(), piece) {
        if is_all_zero(&bytes[range.clone()]) {
            runs.push(range);
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: usize = 1 << 10;

    #[test]
    fn pieces_follow_disk_offsets_not_the_copy_start() {
        let got: Vec<_> = pieces(100 * K as u64, 600 * K, 256 * K).collect();
        assert_eq!(got, vec![0..156 * K, 156 * K..412 * K, 412 * K..600 * K]);
        assert_eq!(pieces(0, 0, 256 * K).count(), 0);
        assert_eq!(pieces(0, 5, 256 * K).collect::<Vec<_>>(), vec![0..5]);
    }

    #[test]
    fn mixed_copies_give_merged_runs_and_segments() {
        let piece = 256 * K;
        let mut data = vec![0u8; 4 * piece];
        data[piece + 7] = 1; // piece 1 holds data
        let runs = find_in(&data, 0, piece);
        assert_eq!(runs, ZeroRuns(vec![0..piece, 2 * piece..4 * piece]));
        assert_eq!(runs.zero_bytes(), 3 * piece as u64);
        assert!(!runs.covers(data.len()));
        assert_eq!(
            runs.segments(data.len()),
            vec![(0..piece, true), (piece..2 * piece, false), (2 * piece..4 * piece, true)]
        );
        let all_zero = find_in(&vec![0u8; 3 * piece], 0, piece);
        assert!(all_zero.covers(3 * piece));
        assert!(find_in(&vec![9u8; 3 * piece], 0, piece).is_empty());
        assert_eq!(ZeroRuns::none().segments(10), vec![(0..10, false)]);
    }

    #[test]
    fn the_piece_is_the_granularity_but_never_below_the_minimum() {
        assert_eq!(piece_bytes(4096), MIN_PIECE_BYTES);
        assert_eq!(piece_bytes(1 << 20), 1 << 20);
        assert_eq!(piece_bytes(u64::MAX), usize::MAX);
    }
}
