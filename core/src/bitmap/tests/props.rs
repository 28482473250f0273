//! Random operation sequences against the model, checked after every step.

use proptest::collection::vec;
use proptest::prelude::*;

use super::check::{check, item_in, Probe};
use super::model::Model;
use crate::bitmap::{BitmapError, HBitmap};

/// One step of a random sequence. Fields are raw numbers mapped into the current size.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// `set` of a range; `count_raw` picks a tiny, few-granule, random or to-the-end count.
    Set { start: u64, count_raw: u64 },
    /// `set` that runs past the end (must be refused, nothing changes).
    SetPastEnd { start: u64 },
    /// `reset` of a granule-aligned range (or an arbitrary one when `unaligned`).
    Reset {
        start: u64,
        count_raw: u64,
        unaligned: bool,
    },
    /// `reset_all`.
    ResetAll,
    /// `truncate` to a larger or smaller size.
    Truncate { raw: u64, grow: bool },
    /// `merge` of a bitmap whose granularity differs by `granularity_delta` (clamped to
    /// 0..=63), with these `set`s (size off by one when `mismatch`: must be refused).
    Merge {
        granularity_delta: i32,
        sets: Vec<(u64, u64)>,
        mismatch: bool,
    },
    /// Serialize in chunks of `1 + chunk_words % 4` words, check the pieces against the
    /// whole, deserialize into a fresh bitmap and compare.
    RoundTrip { chunk_words: u64 },
    /// Overwrite one chunk with zeroes (kind 0), ones (1) or pseudo-random data (2).
    Deserialize {
        chunk: u64,
        kind: u8,
        seed: u64,
        finish: bool,
    },
    /// Walk a cursor from `start`, applying a set (`true`) or reset of one granule before
    /// each step.
    CursorWalk { start: u64, edits: Vec<(bool, u64)> },
}

/// A count for `Op::Set` within `rest` items.
fn pick_count(raw: u64, rest: u64, granularity: u32) -> u64 {
    let value = raw / 4;
    let count = match raw % 4 {
        0 => value % 3,
        1 => (value % 5).saturating_mul(1 << granularity),
        2 => item_in(rest, value),
        _ => rest,
    };
    count.min(rest)
}

/// A granule-aligned range `[start, start + count)` for `reset`, ending at most at the end.
fn aligned_range(model: &Model, start_raw: u64, count_raw: u64) -> (u64, u64) {
    let granules = model.granules();
    let first = start_raw % (granules + 1);
    let span = count_raw % (granules - first + 1).min(70_000);
    let start = model.item_of(first);
    (start, model.item_of(first + span) - start)
}

/// xorshift64: pseudo-random words for deserialization, reproducible from the seed.
fn words_from(seed: u64, n: usize) -> Vec<u64> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        })
        .collect()
}

/// Applies `op` to both, asserting they agree on success or refusal.
pub(crate) fn apply(op: &Op, bitmap: &mut HBitmap, model: &mut Model) {
    let size = model.size;
    let g = model.granularity;
    match op {
        Op::Set { start, count_raw } => {
            let start = item_in(size, *start);
            let count = pick_count(*count_raw, size - start, g);
            assert_eq!(
                bitmap.set(start, count).is_ok(),
                model.set(start, count).is_ok(),
                "set({start}, {count})"
            );
        }
        Op::SetPastEnd { start } => {
            let start = item_in(size, *start);
            let count = size - start + 1;
            assert!(model.set(start, count).is_err());
            assert!(matches!(
                bitmap.set(start, count),
                Err(BitmapError::OutOfRange { .. })
            ));
        }
        Op::Reset {
            start,
            count_raw,
            unaligned,
        } => {
            let (start, count) = if *unaligned {
                let start = item_in(size, *start);
                (start, item_in(size - start, *count_raw))
            } else {
                aligned_range(model, *start, *count_raw)
            };
            let expected = model.reset(start, count);
            assert_eq!(
                bitmap.reset(start, count).is_ok(),
                expected.is_ok(),
                "reset({start}, {count})"
            );
        }
        Op::ResetAll => {
            bitmap.reset_all();
            model.bits.fill(false);
        }
        Op::Truncate { raw, grow } => {
            let new_size = if *grow {
                let room = (size / 2)
                    .saturating_add(3u64.saturating_mul(1 << g))
                    .min(200_000u64 << g.min(20));
                size.saturating_add(raw % room.max(1))
            } else {
                item_in(size, *raw)
            };
            bitmap
                .truncate(new_size)
                .expect("sizes in the tests stay far below the limit");
            model.truncate(new_size);
        }
        Op::Merge {
            granularity_delta,
            sets,
            mismatch,
        } => {
            let granularity = &((g as i32 + granularity_delta).clamp(0, 63) as u32);
            let other_size = if *mismatch {
                size.wrapping_add(1)
            } else {
                size
            };
            let mut other = HBitmap::new(other_size, *granularity).expect("granularity below 64");
            let mut other_model = Model::new(other_size, *granularity);
            for &(start, count_raw) in sets {
                let start = item_in(other_size, start);
                let count = pick_count(count_raw, other_size - start, *granularity);
                other.set(start, count).expect("in range");
                other_model.set(start, count).expect("in range");
            }
            if *mismatch {
                assert!(matches!(
                    bitmap.merge(&other),
                    Err(BitmapError::SizeMismatch { .. })
                ));
            } else {
                bitmap.merge(&other).expect("same size");
                model.merge(&other_model);
            }
        }
        Op::RoundTrip { chunk_words } => round_trip(bitmap, 1 + chunk_words % 4),
        Op::Deserialize {
            chunk,
            kind,
            seed,
            finish,
        } => {
            let Ok(align) = bitmap.serialization_align() else {
                assert!(g >= 58);
                return;
            };
            if size == 0 {
                return;
            }
            let start = (chunk % size.div_ceil(align)) * align;
            let count = align.min(size - start);
            let words = words_from(*seed, 1);
            match kind % 3 {
                0 => bitmap
                    .deserialize_zeroes(start, count, *finish)
                    .expect("aligned chunk"),
                1 => bitmap
                    .deserialize_ones(start, count, *finish)
                    .expect("aligned chunk"),
                _ => {
                    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                    bitmap
                        .deserialize_part(start, count, &bytes, *finish)
                        .expect("aligned chunk");
                }
            }
            let first = (start >> g) as usize;
            let last = (((start + count - 1) >> g) as usize).min(model.bits.len() - 1);
            for (offset, bit) in model.bits[first..=last].iter_mut().enumerate() {
                *bit = match kind % 3 {
                    0 => false,
                    1 => true,
                    _ => words[offset / 64] >> (offset % 64) & 1 == 1,
                };
            }
        }
        Op::CursorWalk { start, edits } => cursor_walk(bitmap, model, item_in(size, *start), edits),
    }
}

/// Serializes in chunks of `chunk_words` words and checks them against the whole and a
/// rebuilt copy.
fn round_trip(bitmap: &HBitmap, chunk_words: u64) {
    let size = bitmap.size();
    let Ok(align) = bitmap.serialization_align() else {
        assert!(matches!(
            bitmap.serialize(0, size),
            Err(BitmapError::NotSerializable(_))
        ));
        return;
    };
    let whole = bitmap
        .serialize(0, size)
        .expect("the whole bitmap is one chunk");
    let chunk = align.saturating_mul(chunk_words);
    let mut pieces = Vec::new();
    let mut copy = HBitmap::new(size, bitmap.granularity()).expect("same shape");
    let mut start = 0;
    while start < size {
        let count = chunk.min(size - start);
        let bytes = bitmap.serialize(start, count).expect("aligned chunk");
        assert_eq!(
            bytes.len() as u64,
            bitmap
                .serialization_size(start, count)
                .expect("aligned chunk")
        );
        let mut buffer = vec![0u8; bytes.len()];
        bitmap
            .serialize_part(start, count, &mut buffer)
            .expect("right length");
        assert_eq!(buffer, bytes);
        copy.deserialize_part(start, count, &bytes, false)
            .expect("aligned chunk");
        pieces.extend_from_slice(&bytes);
        start += count;
    }
    assert_eq!(pieces, whole, "chunks concatenate to the whole");
    assert_eq!(&copy, bitmap, "deserialized copy, before finish");
    copy.deserialize_finish();
    assert_eq!(&copy, bitmap, "deserialized copy, after finish");
}

/// Walks a cursor while editing the bitmap; the model says what each step must return.
fn cursor_walk(bitmap: &mut HBitmap, model: &mut Model, start: u64, edits: &[(bool, u64)]) {
    let mut cursor = bitmap.cursor(start);
    let mut position = if start >= model.size {
        model.granules()
    } else {
        start >> model.granularity
    };
    let expect_next = |model: &Model, position: &mut u64| {
        let found = (*position..model.granules()).find(|&i| model.bits[i as usize])?;
        *position = found + 1;
        Some(model.item_of(found))
    };
    for &(set, raw) in edits {
        if model.granules() > 0 {
            let index = raw % model.granules();
            let (item, end) = (model.item_of(index), model.item_of(index + 1));
            if set {
                bitmap.set(item, 1).expect("in range");
                model.set(item, 1).expect("in range");
            } else {
                bitmap.reset(item, end - item).expect("a whole granule");
                model.reset(item, end - item).expect("a whole granule");
            }
        }
        assert_eq!(
            cursor.next(bitmap),
            expect_next(model, &mut position),
            "cursor step"
        );
    }
    let rest: Vec<u64> = std::iter::from_fn(|| cursor.next(bitmap)).collect();
    let expected: Vec<u64> = std::iter::from_fn(|| expect_next(model, &mut position)).collect();
    assert_eq!(rest, expected, "cursor drain");
}

/// Runs a whole sequence, checking after every step.
pub(crate) fn run(size: u64, granularity: u32, ops: &[Op], probes: &[Probe]) {
    let mut bitmap = HBitmap::new(size, granularity).expect("valid shape");
    let mut model = Model::new(size, granularity);
    check(&bitmap, &model, probes);
    for op in ops {
        apply(op, &mut bitmap, &mut model);
        check(&bitmap, &model, probes);
    }
}

/// Sizes whose granule counts sit around the level boundaries (64, 4096, 262144), with a
/// partial last granule now and then.
fn shape() -> impl Strategy<Value = (u64, u32)> {
    let granularity = prop_oneof![6 => 0u32..=8, 2 => 9u32..=24, 1 => 56u32..=63];
    let granules = prop_oneof![
        1 => Just(0u64),
        2 => 1u64..=3,
        4 => prop::sample::select(vec![63u64, 64, 65, 127, 128, 129, 4095, 4096, 4097, 8191, 8193]),
        1 => prop::sample::select(vec![262_143u64, 262_144, 262_145]),
        2 => 1u64..300,
    ];
    (granularity, granules, any::<u64>()).prop_map(|(g, granules, tail)| {
        let items = u128::from(granules) << g;
        let trimmed = if granules > 0 {
            items - u128::from(tail) % (1u128 << g)
        } else {
            0
        };
        (u64::try_from(trimmed).unwrap_or(u64::MAX), g)
    })
}

fn op() -> impl Strategy<Value = Op> {
    let any64 = any::<u64>;
    prop_oneof![
        8 => (any64(), any64()).prop_map(|(start, count_raw)| Op::Set { start, count_raw }),
        1 => any64().prop_map(|start| Op::SetPastEnd { start }),
        6 => (any64(), any64(), prop::bool::weighted(0.2))
            .prop_map(|(start, count_raw, unaligned)| Op::Reset { start, count_raw, unaligned }),
        1 => Just(Op::ResetAll),
        2 => (any64(), any::<bool>()).prop_map(|(raw, grow)| Op::Truncate { raw, grow }),
        2 => (-2i32..=3, vec((any64(), any64()), 0..6), prop::bool::weighted(0.1))
            .prop_map(|(granularity_delta, sets, mismatch)| Op::Merge { granularity_delta, sets, mismatch }),
        1 => any64().prop_map(|chunk_words| Op::RoundTrip { chunk_words }),
        2 => (any64(), any::<u8>(), any64(), any::<bool>())
            .prop_map(|(chunk, kind, seed, finish)| Op::Deserialize { chunk, kind, seed, finish }),
        2 => (any64(), vec((any::<bool>(), any64()), 0..12))
            .prop_map(|(start, edits)| Op::CursorWalk { start, edits }),
    ]
}

proptest! {
    // 400 cases keep the dev test run short; PROPTEST_CASES=20000 for a long hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(400),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Every query matches the model after every operation.
    #[test]
    fn matches_model_after_every_step(
        (size, granularity) in shape(),
        ops in vec(op(), 1..12),
        probes in vec(any::<(u64, u64)>(), 4),
    ) {
        run(size, granularity, &ops, &probes);
    }
}
