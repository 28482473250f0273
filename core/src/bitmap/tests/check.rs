//! Compares a bitmap with the model through every query.

use super::model::Model;
use crate::bitmap::HBitmap;

/// Raw random numbers, mapped into the current size when used (the size changes).
pub(crate) type Probe = (u64, u64);

/// Maps a raw number to an item in `[0, size]` (the end itself included on purpose).
pub(crate) fn item_in(size: u64, raw: u64) -> u64 {
    if size == u64::MAX {
        raw
    } else {
        raw % (size + 1)
    }
}

/// Interesting items: both ends, granule boundaries near both ends.
fn fixed_items(model: &Model) -> Vec<u64> {
    let size = model.size;
    let granule = 1u64 << model.granularity;
    let mut items = vec![0, size.saturating_sub(1), size, size / 2];
    for k in [1u64, 63, 64, 65, 4095, 4096, 4097] {
        if let Some(item) = k.checked_mul(granule) {
            items.extend([item.saturating_sub(1), item]);
        }
    }
    items.retain(|&item| item <= size);
    items
}

/// Checks every query against the model; panics (with context) on the first difference.
pub(crate) fn check(bitmap: &HBitmap, model: &Model, probes: &[Probe]) {
    bitmap
        .levels
        .check_invariants()
        .unwrap_or_else(|e| panic!("invariant broken: {e}"));
    assert_eq!(bitmap.size(), model.size, "size");
    assert_eq!(bitmap.granules(), model.granules(), "granules");
    assert_eq!(bitmap.count(), model.count(), "count");
    assert_eq!(bitmap.is_empty(), model.count() == 0, "is_empty");
    assert_eq!(
        bitmap.iter_dirty(0).collect::<Vec<_>>(),
        model.dirty_items_from(0),
        "full iteration"
    );

    let size = model.size;
    // The model scans linearly: probe big bitmaps less densely to keep the run short.
    let big = model.granules() > 10_000;
    let mut starts = if big {
        vec![0, size.saturating_sub(1), size / 2]
    } else {
        fixed_items(model)
    };
    let mut pairs: Vec<(u64, u64)> = Vec::new();
    for &(a, b) in probes {
        let start = item_in(size, a);
        starts.push(start);
        let rest = size - start;
        // Alternate short counts, counts to the end and counts past the end.
        let counts = [
            item_in(rest, b),
            b % (3u64 << model.granularity.min(40)),
            b % 3,
            u64::MAX,
        ];
        let used = if big { 2 } else { counts.len() };
        pairs.extend(counts[..used].iter().map(|&count| (start, count)));
    }
    for &start in &starts {
        pairs.push((start, 1));
        pairs.push((start, u64::MAX));
    }

    for &start in &starts {
        assert_eq!(bitmap.get(start), model.get(start), "get({start})");
    }
    for &(start, count) in &pairs {
        assert_eq!(
            bitmap.next_dirty(start, count),
            model.next_dirty(start, count),
            "next_dirty({start}, {count})"
        );
        assert_eq!(
            bitmap.next_zero(start, count),
            model.next_zero(start, count),
            "next_zero({start}, {count})"
        );
        let end = start.saturating_add(count);
        for max_count in [1, count, u64::MAX] {
            assert_eq!(
                bitmap.next_dirty_area(start, end, max_count),
                model.next_dirty_area(start, end, max_count),
                "next_dirty_area({start}, {end}, {max_count})"
            );
        }
        assert_eq!(
            bitmap.status(start, count).ok(),
            model.status(start, count).ok(),
            "status({start}, {count})"
        );
    }
    for &(a, _) in probes.iter().take(2) {
        let start = item_in(size, a);
        assert_eq!(
            bitmap.iter_dirty(start).collect::<Vec<_>>(),
            model.dirty_items_from(start),
            "iter_dirty({start})"
        );
        let mut cursor = bitmap.cursor(start);
        let walked: Vec<u64> = std::iter::from_fn(|| cursor.next(bitmap)).collect();
        assert_eq!(
            walked,
            model.dirty_items_from(start),
            "cursor walk from {start}"
        );
    }
}
