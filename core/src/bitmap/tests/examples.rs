//! Edge cases by example. Failures of the property test are frozen here too, as named
//! tests calling `props::run` with the shrunk inputs.

use crate::bitmap::{BitmapError, HBitmap, MAX_LOG_GRANULES};

fn dirty(bitmap: &HBitmap) -> Vec<u64> {
    bitmap.iter_dirty(0).collect()
}

#[test]
fn size_zero_is_empty_and_refuses_ranges() {
    let mut bitmap = HBitmap::new(0, 0).unwrap();
    assert_eq!(bitmap.granules(), 0);
    assert!(bitmap.is_empty());
    assert!(!bitmap.get(0));
    assert_eq!(bitmap.iter_dirty(0).next(), None);
    assert_eq!(bitmap.next_dirty(0, u64::MAX), None);
    assert_eq!(bitmap.next_zero(0, u64::MAX), None);
    assert_eq!(bitmap.next_dirty_area(0, u64::MAX, u64::MAX), None);
    bitmap.set(0, 0).unwrap();
    bitmap.reset(0, 0).unwrap();
    assert!(matches!(
        bitmap.set(0, 1),
        Err(BitmapError::OutOfRange { .. })
    ));
    assert!(matches!(
        bitmap.status(0, 1),
        Err(BitmapError::OutOfRange { .. })
    ));
    assert_eq!(bitmap.serialize(0, 0).unwrap(), Vec::<u8>::new());
    bitmap.deserialize_ones(0, 0, true).unwrap();
    assert!(bitmap.is_empty());
}

#[test]
fn bad_shapes_are_refused() {
    assert_eq!(HBitmap::new(1, 64), Err(BitmapError::Granularity(64)));
    assert!(matches!(
        HBitmap::new(u64::MAX, 0),
        Err(BitmapError::TooLarge { .. })
    ));
    let limit = 1u64 << MAX_LOG_GRANULES;
    assert!(matches!(
        HBitmap::new((limit + 1) << 20, 20),
        Err(BitmapError::TooLarge { .. })
    ));
    let mut small = HBitmap::new(100, 0).unwrap();
    assert!(matches!(
        small.truncate(u64::MAX),
        Err(BitmapError::TooLarge { .. })
    ));
    assert_eq!(small.size(), 100, "a refused truncate changes nothing");
}

#[test]
fn single_granule_bitmap() {
    let mut bitmap = HBitmap::new(1000, 10).unwrap();
    assert_eq!(bitmap.granules(), 1);
    bitmap.set(999, 1).unwrap();
    assert!(bitmap.get(0) && bitmap.get(999) && !bitmap.get(1000));
    assert_eq!(bitmap.count(), 1024, "a dirty partial granule counts whole");
    assert_eq!(dirty(&bitmap), [0]);
    assert_eq!(bitmap.next_dirty(500, 10), Some(500));
    assert_eq!(bitmap.next_zero(0, u64::MAX), None);
    assert_eq!(bitmap.status(3, 997), Ok((true, 997)));
    assert!(matches!(
        bitmap.reset(0, 999),
        Err(BitmapError::Unaligned { .. })
    ));
    bitmap.reset(0, 1000).unwrap();
    assert!(bitmap.is_empty());
}

#[test]
fn last_partial_granule_resets_to_the_end() {
    // 10 granules of 8 items, the last one holding only 3.
    let mut bitmap = HBitmap::new(75, 3).unwrap();
    bitmap.set(0, 75).unwrap();
    assert_eq!(bitmap.count(), 80);
    assert!(matches!(
        bitmap.reset(72, 2),
        Err(BitmapError::Unaligned { .. })
    ));
    assert!(matches!(
        bitmap.reset(70, 5),
        Err(BitmapError::Unaligned { .. })
    ));
    assert!(matches!(
        bitmap.reset(72, 8),
        Err(BitmapError::OutOfRange { .. })
    ));
    bitmap.reset(72, 3).unwrap();
    assert_eq!(bitmap.next_zero(0, u64::MAX), Some(72));
    bitmap.reset(8, 16).unwrap();
    assert_eq!(dirty(&bitmap), [0, 24, 32, 40, 48, 56, 64]);
    assert_eq!(bitmap.next_dirty_area(1, 75, 1000), Some(1..8));
    assert_eq!(bitmap.next_dirty_area(9, 75, 1000), Some(24..72));
    assert_eq!(bitmap.next_dirty_area(9, 75, 10), Some(24..34));
    assert_eq!(bitmap.status(8, 67), Ok((false, 16)));
}

#[test]
fn runs_across_level_boundaries() {
    // 2^18 + 1 granules: three dirty levels plus a fourth for the one extra word.
    let granules = (1u64 << 18) + 1;
    let mut bitmap = HBitmap::new(granules, 0).unwrap();
    bitmap.set(4095, 2).unwrap();
    bitmap.set(granules - 1, 1).unwrap();
    assert_eq!(dirty(&bitmap), [4095, 4096, granules - 1]);
    assert_eq!(bitmap.next_dirty(4097, u64::MAX), Some(granules - 1));
    bitmap.set(0, granules).unwrap();
    assert_eq!(bitmap.next_zero(0, u64::MAX), None);
    bitmap.reset(262_000, 1).unwrap();
    assert_eq!(bitmap.next_zero(5, u64::MAX), Some(262_000));
    assert_eq!(bitmap.next_zero(262_001, u64::MAX), None);
    assert_eq!(bitmap.count(), granules - 1);
    bitmap.levels.check_invariants().unwrap();
}

#[test]
fn items_near_the_top_of_u64() {
    // 2^24 granules of 2^40 items: the last granule ends at u64::MAX.
    let mut bitmap = HBitmap::new(u64::MAX, 40).unwrap();
    assert_eq!(bitmap.granules(), 1 << 24);
    bitmap.set(u64::MAX - 1, 1).unwrap();
    let last = ((1u64 << 24) - 1) << 40;
    assert_eq!(dirty(&bitmap), [last]);
    assert_eq!(bitmap.next_dirty(last + 5, u64::MAX), Some(last + 5));
    let mut cursor = bitmap.cursor(last);
    assert_eq!(cursor.next(&bitmap), Some(last));
    assert_eq!(cursor.next(&bitmap), None);
    assert_eq!(cursor.position(&bitmap), u64::MAX);
    bitmap.set(0, u64::MAX).unwrap();
    assert_eq!(bitmap.count(), u64::MAX, "the item count saturates");
    bitmap.reset(last, u64::MAX - last).unwrap();
    assert_eq!(bitmap.dirty_granules(), (1 << 24) - 1);
}

#[test]
fn every_chunk_serializes_like_the_whole() {
    for (size, granularity) in [
        (64 * 10 + 7, 0),
        (5000 << 3, 3),
        (64 << 9, 9),
        (1, 0),
        (64, 0),
    ] {
        let mut bitmap = HBitmap::new(size, granularity).unwrap();
        for item in (0..size).step_by(7 << granularity) {
            bitmap.set(item, 1).unwrap();
        }
        let align = bitmap.serialization_align().unwrap();
        assert_eq!(align, 64 << granularity);
        let whole = bitmap.serialize(0, size).unwrap();
        assert_eq!(
            whole.len() as u64,
            bitmap.serialization_size(0, size).unwrap()
        );
        let mut joined = Vec::new();
        let mut start = 0;
        while start < size {
            let count = align.min(size - start);
            joined.extend(bitmap.serialize(start, count).unwrap());
            start += count;
        }
        assert_eq!(joined, whole, "size {size} granularity {granularity}");
    }
}

#[test]
fn serialized_bytes_are_little_endian_granule_bits() {
    let mut bitmap = HBitmap::new(128, 0).unwrap();
    bitmap.set(0, 1).unwrap();
    bitmap.set(9, 1).unwrap();
    bitmap.set(127, 1).unwrap();
    let bytes = bitmap.serialize(0, 128).unwrap();
    let mut expected = vec![0u8; 16];
    expected[0] = 0b1;
    expected[1] = 0b10;
    expected[15] = 0x80;
    assert_eq!(bytes, expected);
}

#[test]
fn serialization_refuses_bad_chunks() {
    let mut bitmap = HBitmap::new(1000, 2).unwrap();
    assert!(matches!(
        bitmap.serialize(1, 256),
        Err(BitmapError::ChunkUnaligned { .. })
    ));
    assert!(matches!(
        bitmap.serialize(0, 255),
        Err(BitmapError::ChunkUnaligned { .. })
    ));
    assert!(matches!(
        bitmap.serialize(768, 300),
        Err(BitmapError::OutOfRange { .. })
    ));
    assert_eq!(bitmap.serialization_size(768, 232), Ok(8));
    assert_eq!(
        bitmap.deserialize_part(0, 256, &[0; 7], true),
        Err(BitmapError::SerializedLength {
            got: 7,
            expected: 8
        })
    );
    let mut out = [0u8; 9];
    assert!(matches!(
        bitmap.serialize_part(0, 256, &mut out),
        Err(BitmapError::SerializedLength { .. })
    ));
    let coarse = HBitmap::new(1 << 62, 58).unwrap();
    assert_eq!(
        coarse.serialization_align(),
        Err(BitmapError::NotSerializable(58))
    );
}

#[test]
fn deserialized_ones_never_set_padding() {
    // 1000 items at granularity 2: 250 granules, the last word holds 58 of them.
    let mut bitmap = HBitmap::new(1000, 2).unwrap();
    bitmap.deserialize_ones(768, 232, false).unwrap();
    assert_eq!(bitmap.dirty_granules(), 250 - 192);
    assert_eq!(bitmap.next_zero(768, u64::MAX), None);
    let data = [0xffu8; 8];
    bitmap.deserialize_part(768, 232, &data, true).unwrap();
    assert_eq!(bitmap.dirty_granules(), 58);
    bitmap.levels.check_invariants().unwrap();
}

#[test]
fn merge_across_granularities() {
    let mut fine = HBitmap::new(100, 0).unwrap();
    fine.set(5, 1).unwrap();
    fine.set(99, 1).unwrap();
    let mut coarse = HBitmap::new(100, 4).unwrap();
    coarse.merge(&fine).unwrap();
    assert_eq!(dirty(&coarse), [0, 96]);

    let mut back = HBitmap::new(100, 0).unwrap();
    back.merge(&coarse).unwrap();
    assert_eq!(
        back.count(),
        16 + 4,
        "a coarse granule dirties every fine one it covers, up to the end"
    );

    let other = HBitmap::new(101, 0).unwrap();
    assert_eq!(
        back.merge(&other),
        Err(BitmapError::SizeMismatch {
            size: 100,
            other: 101
        })
    );
}

#[test]
fn truncate_grows_clean_and_shrinks_exactly() {
    let mut bitmap = HBitmap::new(100, 2).unwrap();
    bitmap.set(0, 100).unwrap();
    bitmap.truncate(10).unwrap();
    assert_eq!(
        bitmap.dirty_granules(),
        3,
        "granule 2 keeps its bit for items 8 and 9"
    );
    assert_eq!(bitmap.count(), 12);
    bitmap.truncate(5000).unwrap();
    assert_eq!(dirty(&bitmap), [0, 4, 8]);
    assert_eq!(bitmap.next_zero(0, u64::MAX), Some(12));
    bitmap.set(4999, 1).unwrap();
    bitmap.truncate(4996).unwrap();
    assert_eq!(dirty(&bitmap), [0, 4, 8]);
    bitmap.truncate(0).unwrap();
    assert!(bitmap.is_empty());
    bitmap.levels.check_invariants().unwrap();
}

#[test]
fn iteration_from_an_unaligned_start_reports_its_granule() {
    let mut bitmap = HBitmap::new(64, 3).unwrap();
    bitmap.set(10, 1).unwrap();
    bitmap.set(40, 1).unwrap();
    assert_eq!(bitmap.iter_dirty(13).collect::<Vec<_>>(), [8, 40]);
    assert_eq!(bitmap.iter_dirty(16).collect::<Vec<_>>(), [40]);
    assert_eq!(bitmap.iter_dirty(64).collect::<Vec<_>>(), Vec::<u64>::new());
}

#[test]
fn cursor_never_returns_a_reset_granule_and_sees_sets_ahead() {
    let mut bitmap = HBitmap::new(1 << 16, 0).unwrap();
    for item in [10, 20, 30, 40_000] {
        bitmap.set(item, 1).unwrap();
    }
    let mut cursor = bitmap.cursor(0);
    assert_eq!(cursor.next(&bitmap), Some(10));
    bitmap.reset(20, 1).unwrap();
    bitmap.set(5, 1).unwrap();
    bitmap.set(35, 1).unwrap();
    assert_eq!(cursor.next(&bitmap), Some(30));
    assert_eq!(cursor.next(&bitmap), Some(35));
    bitmap.reset(40_000, 1).unwrap();
    assert_eq!(cursor.next(&bitmap), None);
    bitmap.set(50_000, 1).unwrap();
    assert_eq!(
        cursor.next(&bitmap),
        Some(50_000),
        "a cursor that ran dry resumes"
    );
    assert_eq!(cursor.position(&bitmap), 50_001);
}

#[test]
fn an_impossible_allocation_is_an_error_not_an_abort() {
    // 2^41 granules need 256 GiB of bottom level: refused on small machines, mapped lazily
    // where memory is overcommitted. Either way the process must survive.
    match HBitmap::new(1 << MAX_LOG_GRANULES, 0) {
        Ok(bitmap) => assert_eq!(bitmap.granules(), 1 << MAX_LOG_GRANULES),
        Err(error) => assert!(matches!(error, BitmapError::OutOfMemory { .. }), "{error}"),
    }
    let mut small = HBitmap::new(1, 0).unwrap();
    match small.truncate(1 << MAX_LOG_GRANULES) {
        Ok(()) => assert_eq!(small.granules(), 1 << MAX_LOG_GRANULES),
        Err(error) => {
            assert!(matches!(error, BitmapError::OutOfMemory { .. }), "{error}");
            assert_eq!(small.size(), 1, "a refused truncate changes nothing");
        }
    }
}

#[test]
fn iteration_climbs_five_levels() {
    // 2^24 + 1 granules: five dirty levels, the top one barely used.
    let granules = (1u64 << 24) + 1;
    let mut bitmap = HBitmap::new(granules << 2, 2).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut expected: Vec<u64> = (0..300)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % granules
        })
        .chain([0, 4095, 4096, 262_143, 262_144, granules - 1])
        .collect();
    expected.sort_unstable();
    expected.dedup();
    for &granule in &expected {
        bitmap.set(granule << 2, 1).unwrap();
    }
    for start_index in [0, 1, 150, expected.len() - 2, expected.len() - 1] {
        let start = expected[start_index] << 2;
        let walked: Vec<u64> = bitmap.iter_dirty(start).collect();
        let wanted: Vec<u64> = expected[start_index..].iter().map(|g| g << 2).collect();
        assert_eq!(walked, wanted, "from granule {}", expected[start_index]);
        let mut cursor = bitmap.cursor(start);
        assert_eq!(
            std::iter::from_fn(|| cursor.next(&bitmap)).collect::<Vec<_>>(),
            wanted
        );
    }
}

#[test]
fn debug_prints_a_summary_not_the_words() {
    let mut bitmap = HBitmap::new(1 << 30, 4).unwrap();
    bitmap.set(4096, 100).unwrap();
    let text = format!("{bitmap:?}");
    assert!(
        text.contains("dirty_granules: 7") && text.contains("first_dirty_items: [4096, 4112"),
        "{text}"
    );
    assert!(text.len() < 300, "{text}");
    assert!(format!("{:?}", bitmap.iter_dirty(0)).len() < 100);
}
