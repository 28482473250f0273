//! Initial disk contents and the declarations that describe them to the job.
//!
//! Chunk versions (see `disk`): data chunk `i` of the source holds version `i + 1`; a hole
//! holds 0 (zeroes). Per sync mode:
//! - `full`: holes read zero and the target starts zeroed, so holes are declared `zero`.
//! - `top`: the source's top layer allocates the data chunks; the rest comes from a backing
//!   image the target shares, so those chunks already match and are declared `unallocated`.
//! - `none`: the target starts as a copy of the source (only new guest writes are copied).

use super::config::SimConfig;
use super::engine::SimError;
use super::rng::Rng;
use crate::job::{RangeState, SyncMode};

/// A vector of `n` items `f(0), f(1), ...`, or [`SimError::OutOfMemory`] if it cannot be
/// allocated: a disk too large for this machine is an error, never an abort.
pub(super) fn try_filled<T>(n: usize, f: impl FnMut(usize) -> T) -> Result<Vec<T>, SimError> {
    let mut items = Vec::new();
    items.try_reserve_exact(n).map_err(|_| SimError::OutOfMemory {
        bytes: (n as u64).saturating_mul(std::mem::size_of::<T>() as u64),
    })?;
    items.extend((0..n).map(f));
    Ok(items)
}

/// The disks' starting versions and what to declare.
pub(super) struct InitialContents {
    pub source: Vec<u64>,
    pub target: Vec<u64>,
    pub fresh_from: u64,
    pub declarations: Vec<(u64, u64, RangeState)>,
}

/// The initial contents for `config` (whose chunk count `validate` bounded).
pub(super) fn build(config: &SimConfig, mut rng: Rng) -> Result<InitialContents, SimError> {
    let length = config.job.length;
    let granularity = config.job.granularity;
    let chunks = length.div_ceil(granularity);
    let extent = config.layout.extent_chunks;
    let fraction = config.layout.data_fraction;
    let all_data = fraction >= 1.0;
    let too_many = |count: u64| SimError::OutOfMemory { bytes: count.saturating_mul(8) };
    let n = usize::try_from(chunks).map_err(|_| too_many(chunks))?;
    // Whether each extent holds data; an extent map stays small even for 1 TiB disks.
    let extents = chunks.div_ceil(extent) as usize; // at most `n`
    let extent_has_data: Vec<bool> = try_filled(extents, |_| all_data || rng.chance(fraction))?;
    let has_data = |chunk: u64| extent_has_data[(chunk / extent) as usize];
    let (source, target): (Vec<u64>, Vec<u64>) = match config.job.sync {
        SyncMode::Top => {
            // Backing version of chunk i is i + 1; top-layer data is chunks + 1 + i.
            let source = try_filled(n, |c| {
                let c = c as u64;
                if has_data(c) { chunks + 1 + c } else { c + 1 }
            })?;
            (source, try_filled(n, |c| c as u64 + 1)?)
        }
        SyncMode::None => {
            let source = try_filled(n, |c| if has_data(c as u64) { c as u64 + 1 } else { 0 })?;
            let target = try_filled(n, |c| source[c])?;
            (source, target)
        }
        _ => (try_filled(n, |c| if has_data(c as u64) { c as u64 + 1 } else { 0 })?, try_filled(n, |_| 0)?),
    };
    let state = match config.job.sync {
        SyncMode::Top => RangeState::Unallocated,
        _ => RangeState::Zero,
    };
    let mut declarations = Vec::new();
    if !all_data {
        let mut first_extent = 0usize;
        while first_extent < extent_has_data.len() {
            let run = extent_has_data[first_extent..].iter().take_while(|&&d| d == extent_has_data[first_extent]).count();
            if !extent_has_data[first_extent] {
                let offset = first_extent as u64 * extent * granularity;
                let end = ((first_extent + run) as u64 * extent * granularity).min(length);
                declarations.push((offset, end - offset, state));
            }
            first_extent += run;
        }
    }
    Ok(InitialContents { source, target, fresh_from: 2 * chunks + 2, declarations })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_that_cannot_be_made_is_an_error() {
        assert_eq!(try_filled(3, |i| i as u64 * 2), Ok(vec![0, 2, 4]));
        // More bytes than an address space holds: refused by the allocator, not an abort.
        match try_filled(usize::MAX / 2, |_| 0u64) {
            Err(SimError::OutOfMemory { bytes }) => assert!(bytes >= u64::MAX / 8),
            other => panic!("{:?}", other.map(|v| v.len())),
        }
    }
}
