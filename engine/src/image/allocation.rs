//! Which ranges of an image a sync mode needs, from imago's mappings.
//!
//! - [`zero_in_chain`]: ranges that read as zero through the whole chain (unallocated in
//!   every layer, or zero clusters): `full` need not copy them onto a target that reads
//!   zero.
//! - [`below_top`]: ranges the top layer does not hold itself (their data, if any, comes
//!   from a backing file): `top` does not copy them. Zero clusters of the top layer are
//!   its own (they hide the backing file's data) and are copied as zeroes.
//!
//! Both return ascending, disjoint, merged ranges. The walk asks imago for one mapping at
//! a time; its cost grows with the number of mapped extents, not with the disk's length.

use std::io;
use std::ops::Range;

use imago::{Mapping, ShallowMapping};

use super::Chain;

/// Appends `range` to `ranges`, merging it with the last one when they touch.
fn push_merged(ranges: &mut Vec<Range<u64>>, range: Range<u64>) {
    if range.is_empty() {
        return;
    }
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

/// The ranges of `[0, size)` that read as zero through the whole chain.
pub fn zero_in_chain(chain: &Chain) -> io::Result<Vec<Range<u64>>> {
    let size = chain.size();
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < size {
        let (mapping, length) = chain.access().get_mapping(pos, size - pos)?;
        match mapping {
            // Nothing is stored past the end of the image: the rest reads as zero.
            Mapping::Eof { .. } => {
                push_merged(&mut ranges, pos..size);
                break;
            }
            Mapping::Zero { .. } => push_merged(&mut ranges, pos..pos + length),
            _ => {}
        }
        pos += length.max(1).min(size - pos);
    }
    Ok(ranges)
}

/// The ranges of `[0, size)` that the top layer does not hold itself.
pub fn below_top(chain: &Chain) -> io::Result<Vec<Range<u64>>> {
    let size = chain.size();
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < size {
        let (mapping, length) = chain.access().get_shallow_mapping(pos, size - pos)?;
        match mapping {
            ShallowMapping::Eof { .. } => {
                push_merged(&mut ranges, pos..size);
                break;
            }
            ShallowMapping::Indirect { .. }
            | ShallowMapping::Zero {
                explicit: false, ..
            } => push_merged(&mut ranges, pos..pos + length),
            _ => {}
        }
        pos += length.max(1).min(size - pos);
    }
    Ok(ranges)
}

/// Bytes inside `ranges` (a helper for reports and tests).
pub fn total(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}
