//! HBitmap against a flat `Vec<u64>` bitmap and the `fixedbitset` crate, on the workloads
//! of issue 2 §5: 2^24 granules, HBitmap at granularity 16 (1 TiB at 64 KiB) and 9.
//!
//! Every benchmark times a batch of operations and declares the batch size as its
//! throughput, so `median / elements` is the cost of one operation (one dirty granule for
//! the iteration benchmarks). State changes needed between batches (clearing, filling) are
//! made outside the timed part. Times are the benchmark thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), so other processes on a shared machine do not inflate them
//! by preempting it (their cache pressure still can). `core/benches/bitmap_report.py` turns
//! criterion's output into the table of docs/PERFORMANCE.md.
//!
//! Run: `cargo bench -p blockmirror-core --bench bitmap`

use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use cpu_time::ThreadTime;

use blockmirror_core::bitmap::HBitmap;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use fixedbitset::FixedBitSet;

/// Granules in every bitmap.
const GRANULES: u64 = 1 << 24;

/// xorshift64*: reproducible pseudo-random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// The operations every implementation offers, in granule units.
trait Bits {
    fn set_one(&mut self, granule: u64);
    fn set_range(&mut self, first: u64, len: u64);
    fn reset_range(&mut self, first: u64, len: u64);
    fn clear(&mut self);
    fn fill(&mut self);
    /// Sum of the indices of the first `limit` dirty granules (keeps the iteration from
    /// being optimised away).
    fn iterate_sum(&self, limit: u64) -> u64;
    /// `None` when the implementation has no search from a position.
    fn next_dirty(&self, from: u64) -> Option<Option<u64>>;
    fn next_zero(&self, from: u64) -> Option<Option<u64>>;
    fn count(&self) -> u64;
    fn serialize(&self) -> Vec<u8>;
    /// `count` calls per timed batch: enough for a batch of about 100 µs.
    const COUNT_BATCH: u64 = 4;
}

/// HBitmap driven in granules (items are `granule << granularity`).
struct Hier {
    bitmap: HBitmap,
    shift: u32,
}

impl Hier {
    fn new(granularity: u32) -> Self {
        Self {
            bitmap: HBitmap::new(GRANULES << granularity, granularity).unwrap(),
            shift: granularity,
        }
    }
}

impl Bits for Hier {
    const COUNT_BATCH: u64 = 1 << 16;

    #[inline]
    fn set_one(&mut self, granule: u64) {
        self.bitmap.set(granule << self.shift, 1).unwrap();
    }
    fn set_range(&mut self, first: u64, len: u64) {
        self.bitmap
            .set(first << self.shift, len << self.shift)
            .unwrap();
    }
    fn reset_range(&mut self, first: u64, len: u64) {
        self.bitmap
            .reset(first << self.shift, len << self.shift)
            .unwrap();
    }
    fn clear(&mut self) {
        self.bitmap.reset_all();
    }
    fn fill(&mut self) {
        self.bitmap.set(0, self.bitmap.size()).unwrap();
    }
    fn iterate_sum(&self, limit: u64) -> u64 {
        self.bitmap
            .iter_dirty(0)
            .take(limit as usize)
            .fold(0, |sum, item| sum.wrapping_add(item >> self.shift))
    }
    fn next_dirty(&self, from: u64) -> Option<Option<u64>> {
        Some(
            self.bitmap
                .next_dirty(from << self.shift, u64::MAX)
                .map(|item| item >> self.shift),
        )
    }
    fn next_zero(&self, from: u64) -> Option<Option<u64>> {
        Some(
            self.bitmap
                .next_zero(from << self.shift, u64::MAX)
                .map(|item| item >> self.shift),
        )
    }
    fn count(&self) -> u64 {
        self.bitmap.count()
    }
    fn serialize(&self) -> Vec<u8> {
        self.bitmap.serialize(0, self.bitmap.size()).unwrap()
    }
}

/// The baseline: one flat array of words, every search a linear scan.
struct Flat {
    words: Vec<u64>,
}

impl Flat {
    fn new() -> Self {
        Self {
            words: vec![0; (GRANULES / 64) as usize],
        }
    }
    /// Applies `op(word, mask)` to every word of granules `first..first + len`.
    #[inline]
    fn each_word(&mut self, first: u64, len: u64, op: impl Fn(&mut u64, u64)) {
        let last = first + len - 1;
        let (wf, wl) = ((first / 64) as usize, (last / 64) as usize);
        let head = u64::MAX << (first % 64);
        let tail = u64::MAX >> (63 - last % 64);
        if wf == wl {
            return op(&mut self.words[wf], head & tail);
        }
        op(&mut self.words[wf], head);
        self.words[wf + 1..wl]
            .iter_mut()
            .for_each(|w| op(w, u64::MAX));
        op(&mut self.words[wl], tail);
    }
    fn scan(&self, from: u64, invert: u64) -> Option<u64> {
        let start = (from / 64) as usize;
        let first = (self.words[start] ^ invert) & (u64::MAX << (from % 64));
        if first != 0 {
            return Some(start as u64 * 64 + u64::from(first.trailing_zeros()));
        }
        self.words[start + 1..]
            .iter()
            .position(|&w| w ^ invert != 0)
            .map(|i| {
                let index = start + 1 + i;
                index as u64 * 64 + u64::from((self.words[index] ^ invert).trailing_zeros())
            })
    }
}

impl Bits for Flat {
    #[inline]
    fn set_one(&mut self, granule: u64) {
        self.words[(granule / 64) as usize] |= 1 << (granule % 64);
    }
    fn set_range(&mut self, first: u64, len: u64) {
        self.each_word(first, len, |w, m| *w |= m);
    }
    fn reset_range(&mut self, first: u64, len: u64) {
        self.each_word(first, len, |w, m| *w &= !m);
    }
    fn clear(&mut self) {
        self.words.fill(0);
    }
    fn fill(&mut self) {
        self.words.fill(u64::MAX);
    }
    fn iterate_sum(&self, limit: u64) -> u64 {
        let (mut sum, mut left) = (0u64, limit);
        for (index, &word) in self.words.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                if left == 0 {
                    return sum;
                }
                left -= 1;
                sum = sum.wrapping_add(index as u64 * 64 + u64::from(bits.trailing_zeros()));
                bits &= bits - 1;
            }
        }
        sum
    }
    fn next_dirty(&self, from: u64) -> Option<Option<u64>> {
        Some(self.scan(from, 0))
    }
    fn next_zero(&self, from: u64) -> Option<Option<u64>> {
        Some(self.scan(from, u64::MAX))
    }
    fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
    fn serialize(&self) -> Vec<u8> {
        let mut out = vec![0; self.words.len() * 8];
        for (bytes, word) in out.chunks_exact_mut(8).zip(&self.words) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        out
    }
}

struct Fixed(FixedBitSet);

impl Bits for Fixed {
    #[inline]
    fn set_one(&mut self, granule: u64) {
        self.0.insert(granule as usize);
    }
    fn set_range(&mut self, first: u64, len: u64) {
        self.0.insert_range(first as usize..(first + len) as usize);
    }
    fn reset_range(&mut self, first: u64, len: u64) {
        self.0.remove_range(first as usize..(first + len) as usize);
    }
    fn clear(&mut self) {
        self.0.clear();
    }
    fn fill(&mut self) {
        self.0.insert_range(..);
    }
    fn iterate_sum(&self, limit: u64) -> u64 {
        self.0
            .ones()
            .take(limit as usize)
            .fold(0u64, |sum, index| sum.wrapping_add(index as u64))
    }
    fn next_dirty(&self, _from: u64) -> Option<Option<u64>> {
        None
    }
    fn next_zero(&self, _from: u64) -> Option<Option<u64>> {
        None
    }
    fn count(&self) -> u64 {
        self.0.count_ones(..) as u64
    }
    fn serialize(&self) -> Vec<u8> {
        self.0
            .as_slice()
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }
}

/// Times `routine` over batches of `ops` operations, running `prepare` untimed before each.
fn timed<B: Bits>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    bits: &mut B,
    ops: u64,
    mut prepare: impl FnMut(&mut B),
    mut routine: impl FnMut(&mut B),
) {
    group.throughput(Throughput::Elements(ops));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                prepare(bits);
                let start = ThreadTime::now();
                routine(bits);
                total += start.elapsed();
            }
            total
        })
    });
}

/// Random granules at `density` (fraction of all granules).
fn dirty_at<B: Bits>(bits: &mut B, density: f64, seed: u64) {
    bits.clear();
    let mut rng = Rng(seed);
    let threshold = (density * 1_000_000.0) as u64;
    for granule in 0..GRANULES {
        if rng.below(1_000_000) < threshold {
            bits.set_one(granule);
        }
    }
}

fn ranges(max_len: u64, n: usize, seed: u64) -> Vec<(u64, u64)> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let len = 1 + rng.below(max_len);
            (rng.below(GRANULES - len + 1), len)
        })
        .collect()
}

/// Consecutive slices of a long operation sequence, one slice per timed batch, with `reset`
/// run (untimed) before the first slice of each pass over the sequence: the sequence as a
/// whole is the workload of the issue, the slices keep each timed batch far below a
/// scheduler time slice on a busy machine.
fn sliced<B: Bits, T: Copy>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    bits: &mut B,
    sequence: &[T],
    slice: usize,
    reset: impl Fn(&mut B),
    apply: impl Fn(&mut B, T),
) {
    assert_eq!(sequence.len() % slice, 0, "whole slices only");
    let position = Cell::new(0usize);
    timed(
        group,
        name,
        bits,
        slice as u64,
        |b| {
            if position.get() == 0 {
                reset(b);
            }
        },
        |b| {
            let start = position.get();
            sequence[start..start + slice]
                .iter()
                .for_each(|&op| apply(b, op));
            position.set((start + slice) % sequence.len());
        },
    );
}

/// Every workload of issue 2 §5 on one implementation.
fn workloads<B: Bits>(c: &mut Criterion, name: &str, bits: &mut B) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let singles: Vec<u64> = (0..1 << 20).map(|_| rng.below(GRANULES)).collect();
    let starts: Vec<u64> = (0..1 << 14).map(|_| rng.below(GRANULES)).collect();

    let mut group = c.benchmark_group("set_one");
    sliced(
        &mut group,
        name,
        bits,
        &singles,
        1 << 16,
        B::clear,
        |b, g| b.set_one(g),
    );
    group.finish();

    for (max_len, n, slice) in [
        (32u64, 1usize << 16, 1usize << 13),
        (4096, 1 << 13, 1 << 10),
    ] {
        let list = ranges(max_len, n, max_len);
        let mut group = c.benchmark_group(format!("set_range_{max_len}"));
        sliced(
            &mut group,
            name,
            bits,
            &list,
            slice,
            B::clear,
            |b, (f, l)| b.set_range(f, l),
        );
        group.finish();
        let mut group = c.benchmark_group(format!("reset_range_{max_len}"));
        sliced(
            &mut group,
            name,
            bits,
            &list,
            slice,
            B::fill,
            |b, (f, l)| b.reset_range(f, l),
        );
        group.finish();
    }

    for (label, density) in [("0.1", 0.001), ("1", 0.01), ("50", 0.5)] {
        dirty_at(bits, density, 7);
        let dirty = dirty_granules(bits);
        let mut group = c.benchmark_group(format!("iterate_{label}pct"));
        timed(
            &mut group,
            name,
            bits,
            dirty,
            |_| {},
            |b| {
                black_box(b.iterate_sum(dirty));
            },
        );
        group.finish();
    }

    for (label, density) in [("0.1", 0.001), ("0.001", 0.000_01)] {
        dirty_at(bits, density, 11);
        if bits.next_dirty(0).is_some() {
            let mut group = c.benchmark_group(format!("next_dirty_{label}pct"));
            timed(
                &mut group,
                name,
                bits,
                starts.len() as u64,
                |_| {},
                |b| {
                    starts.iter().for_each(|&s| {
                        black_box(b.next_dirty(s));
                    })
                },
            );
            group.finish();
        }
    }

    dirty_at(bits, 0.99, 13);
    if bits.next_zero(0).is_some() {
        let mut group = c.benchmark_group("next_zero_99pct");
        timed(
            &mut group,
            name,
            bits,
            starts.len() as u64,
            |_| {},
            |b| {
                starts.iter().for_each(|&s| {
                    black_box(b.next_zero(s));
                })
            },
        );
        group.finish();
    }

    dirty_at(bits, 0.5, 17);
    let mut group = c.benchmark_group("count");
    timed(
        &mut group,
        name,
        bits,
        B::COUNT_BATCH,
        |_| {},
        |b| {
            for _ in 0..B::COUNT_BATCH {
                black_box(black_box(&*b).count());
            }
        },
    );
    group.finish();

    let mut group = c.benchmark_group("serialize_whole");
    timed(
        &mut group,
        name,
        bits,
        1,
        |_| {},
        |b| {
            black_box(b.serialize());
        },
    );
    group.finish();
}

/// Dirty granules, counted from the serialization (the same way for every implementation).
fn dirty_granules(bits: &impl Bits) -> u64 {
    bits.serialize()
        .iter()
        .map(|byte| u64::from(byte.count_ones()))
        .sum()
}

fn benches(c: &mut Criterion) {
    workloads(c, "hbitmap_g16", &mut Hier::new(16));
    workloads(c, "hbitmap_g9", &mut Hier::new(9));
    workloads(c, "flat", &mut Flat::new());
    workloads(
        c,
        "fixedbitset",
        &mut Fixed(FixedBitSet::with_capacity(GRANULES as usize)),
    );
}

criterion_group! {
    name = bitmap;
    // Many short samples: on a shared machine most of them then run without preemption,
    // and the median is theirs.
    config = Criterion::default()
        .sample_size(200)
        .nresamples(10_000)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(400));
    targets = benches
}
criterion_main!(bitmap);
