//! Initial disk contents and the declarations that describe them to the job.
//!
//! Chunk versions (see `disk`): data chunk `i` of the source holds version `i + 1`; a hole
//! holds 0 (zeroes). Per sync mode:
//! - `full`: holes read zero and the target starts zeroed, so holes are declared `zero`.
//! - `top`: the source's top layer allocates the data chunks; the rest comes from a backing
//!   image the target shares, so those chunks already match and are declared `unallocated`.
//! - `none`: the target starts as a copy of the source (only new guest writes are copied).

use super::config::SimConfig;
use super::rng::Rng;
use crate::job::{RangeState, SyncMode};

/// The disks' starting versions and what to declare.
pub(super) struct InitialContents {
    pub source: Vec<u64>,
    pub target: Vec<u64>,
    pub fresh_from: u64,
    pub declarations: Vec<(u64, u64, RangeState)>,
}

pub(super) fn build(config: &SimConfig, mut rng: Rng) -> InitialContents {
    let length = config.job.length;
    let granularity = config.job.granularity;
    let chunks = length.div_ceil(granularity);
    let extent = config.layout.extent_chunks;
    let fraction = config.layout.data_fraction;
    let all_data = fraction >= 1.0;
    // Whether each extent holds data; an extent map stays small even for 1 TiB disks.
    let extent_has_data: Vec<bool> =
        (0..chunks.div_ceil(extent)).map(|_| all_data || rng.chance(fraction)).collect();
    let has_data = |chunk: u64| extent_has_data[(chunk / extent) as usize];
    let n = chunks as usize;
    let (source, target): (Vec<u64>, Vec<u64>) = match config.job.sync {
        SyncMode::Top => {
            // Backing version of chunk i is i + 1; top-layer data is chunks + 1 + i.
            let source = (0..chunks).map(|c| if has_data(c) { chunks + 1 + c } else { c + 1 }).collect();
            (source, (1..=chunks).collect())
        }
        SyncMode::None => {
            let source: Vec<u64> = (0..chunks).map(|c| if has_data(c) { c + 1 } else { 0 }).collect();
            (source.clone(), source)
        }
        _ => ((0..chunks).map(|c| if has_data(c) { c + 1 } else { 0 }).collect(), vec![0; n]),
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
    InitialContents { source, target, fresh_from: 2 * chunks + 2, declarations }
}
