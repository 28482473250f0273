//! Offline comparison of two images: chunk digests of the source and the target, computed
//! in parallel, and the ranges where they differ; optionally those ranges repaired.
//!
//! Each chunk of `granularity` bytes (the last one may be short) is digested on both sides
//! with XXH3-128 and the digests compared. A chunk that lies wholly in a hole of a side
//! (`SEEK_DATA`/`SEEK_HOLE`) reads as zeroes there and is not read; a chunk in a hole on
//! both sides is equal without any read, so a large sparse pair costs little more than its
//! data. Segments of several chunks are spread over rayon's pool, and within a segment the
//! two sides are read at the same time.
//!
//! Repair copies the differing chunks from the source directly (read, write, then one
//! `fdatasync` of the target), then digests them again. A direct copy is right here because
//! this comparison is offline: nothing writes either image through a mirror meanwhile, so
//! the mirror's ordering of guest writes against copies has nothing to order, and a direct
//! copy of exactly the differing chunks touches nothing else. Both images must stay
//! unwritten by other programs while this runs (a concurrent writer makes any comparison
//! meaningless); a running mirror compares itself online instead.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use crate::extents;
use crate::io_ops;

/// Chunk size when the caller names none: 1 MiB (a differing range is reported to this
/// precision; reads are this large).
pub const DEFAULT_VERIFY_GRANULARITY: u64 = 1 << 20;

/// The smallest and largest chunk sizes accepted (powers of two).
pub const VERIFY_GRANULARITY_RANGE: Range<u64> = 512..(64 << 20) + 1;

/// Bytes one parallel task compares (whole chunks, at least one).
const SEGMENT_BYTES: u64 = 16 << 20;

/// One side of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifySide {
    /// The image copied from.
    Source,
    /// The image copied to.
    Target,
}

impl std::fmt::Display for VerifySide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerifySide::Source => "source",
            VerifySide::Target => "target",
        })
    }
}

/// Why a comparison (or its repair) could not be done.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// An image could not be opened or sized.
    #[error("cannot open {side} {}: {source}", path.display())]
    Open {
        /// Which image.
        side: VerifySide,
        /// Its path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The images have different sizes: they cannot be equal.
    #[error("source is {source_length} bytes but target is {target_length} bytes")]
    SizeMismatch {
        /// Source size.
        source_length: u64,
        /// Target size.
        target_length: u64,
    },
    /// The chunk size is not a power of two in [`VERIFY_GRANULARITY_RANGE`].
    #[error("granularity {0} is not a power of two between 512 bytes and 64 MiB")]
    Granularity(u64),
    /// A running mirror cannot be verified now.
    #[error("the running mirror cannot be verified: {0}")]
    NotVerifiable(&'static str),
    /// Reading an image failed.
    #[error("reading the {side} at offset {offset}: {source}")]
    Read {
        /// Which image.
        side: VerifySide,
        /// First byte of the failed read.
        offset: u64,
        /// The OS error.
        source: io::Error,
    },
    /// Writing (or syncing) the target during a repair failed.
    #[error("repairing the target at offset {offset}: {source}")]
    Repair {
        /// First byte of the failed write (the image length for the final sync).
        offset: u64,
        /// The OS error.
        source: io::Error,
    },
}

/// What to compare and whether to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Chunk size: the precision of the reported ranges.
    pub granularity: u64,
    /// Copy the differing chunks from the source onto the target, then check them again.
    pub repair: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self { granularity: DEFAULT_VERIFY_GRANULARITY, repair: false }
    }
}

/// The outcome of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    /// Bytes compared (the images' common size).
    pub length: u64,
    /// Chunk size used.
    pub granularity: u64,
    /// Chunks compared.
    pub chunks: u64,
    /// The differing ranges before any repair: whole chunks (the last one may be short),
    /// ascending, adjacent differing chunks merged into one range.
    pub differing: Vec<Range<u64>>,
    /// Bytes in `differing`.
    pub differing_bytes: u64,
    /// Bytes read from each side (holes are not read).
    pub bytes_read: u64,
    /// Bytes copied onto the target by the repair (0 without one).
    pub repaired_bytes: u64,
    /// The ranges still differing after the repair (empty when it worked, and without one).
    pub still_differing: Vec<Range<u64>>,
    /// Wall-clock seconds taken.
    pub elapsed_secs: f64,
}

impl VerifyReport {
    /// Whether the images are equal now: they were, or the repair made them so.
    pub fn equal(&self) -> bool {
        if self.repaired_bytes > 0 {
            self.still_differing.is_empty()
        } else {
            self.differing.is_empty()
        }
    }
}

/// An open image with its holes.
struct Image {
    side: VerifySide,
    file: File,
    holes: Vec<Range<u64>>,
}

impl Image {
    fn open(side: VerifySide, path: &Path, write: bool) -> Result<(Self, u64), VerifyError> {
        let open_error = |source| VerifyError::Open { side, path: path.to_owned(), source };
        let mut file = File::options().read(true).write(write).open(path).map_err(open_error)?;
        let length = file.seek(SeekFrom::End(0)).map_err(open_error)?;
        let holes = extents::holes(&file, length).map_err(open_error)?;
        Ok((Self { side, file, holes }, length))
    }

    /// Whether `[range)` lies wholly inside one hole (holes are sorted and disjoint).
    fn in_hole(&self, range: &Range<u64>) -> bool {
        let i = self.holes.partition_point(|h| h.end <= range.start);
        self.holes.get(i).is_some_and(|h| h.start <= range.start && range.end <= h.end)
    }

    /// The digest of a chunk and the bytes read for it (`scratch` is reused).
    fn digest(&self, range: &Range<u64>, zero_digest: u128, scratch: &mut Vec<u8>) -> Result<(u128, u64), VerifyError> {
        if self.in_hole(range) {
            return Ok((zero_digest, 0));
        }
        let len = (range.end - range.start) as usize;
        scratch.resize(len, 0);
        io_ops::read_exact(&self.file, &mut scratch[..len], range.start).map_err(|source| VerifyError::Read {
            side: self.side,
            offset: range.start,
            source,
        })?;
        Ok((xxhash_rust::xxh3::xxh3_128(&scratch[..len]), len as u64))
    }

    /// Digests of consecutive chunks of `granularity` bytes covering `segment`.
    fn digests(
        &self,
        segment: &Range<u64>,
        granularity: u64,
        zero: &ZeroDigests,
    ) -> Result<(Vec<u128>, u64), VerifyError> {
        let mut scratch = Vec::new();
        let mut out = Vec::new();
        let mut read = 0;
        for chunk in chunks(segment.clone(), granularity) {
            let (digest, bytes) = self.digest(&chunk, zero.of(chunk.end - chunk.start), &mut scratch)?;
            out.push(digest);
            read += bytes;
        }
        Ok((out, read))
    }
}

/// Digests of all-zero chunks: the full size and the short last chunk.
struct ZeroDigests {
    full_len: u64,
    full: u128,
    tail: Option<(u64, u128)>,
}

impl ZeroDigests {
    fn new(length: u64, granularity: u64) -> Self {
        let zero_of = |len: u64| xxhash_rust::xxh3::xxh3_128(&vec![0u8; len as usize]);
        let tail_len = length % granularity;
        Self {
            full_len: granularity,
            full: zero_of(granularity.min(length.max(1))),
            tail: (tail_len != 0).then(|| (tail_len, zero_of(tail_len))),
        }
    }

    fn of(&self, len: u64) -> u128 {
        match self.tail {
            Some((tail_len, digest)) if len == tail_len && len != self.full_len => digest,
            _ => self.full,
        }
    }
}

/// The chunks of `granularity` bytes covering `range` (the last one clipped to its end).
fn chunks(range: Range<u64>, granularity: u64) -> impl Iterator<Item = Range<u64>> {
    let end = range.end;
    (range.start..end).step_by(granularity as usize).map(move |start| start..(start + granularity).min(end))
}

/// Appends `range` to sorted `ranges`, merging it with the last one when they touch.
fn push_merged(ranges: &mut Vec<Range<u64>>, range: Range<u64>) {
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

/// Differing ranges (merged) and the bytes read to find them.
type Compared = (Vec<Range<u64>>, u64);

/// Compares the chunks covering `within` (whole chunks) and returns the differing ones
/// merged, and the bytes read from each side.
fn compare(
    source: &Image,
    target: &Image,
    within: &[Range<u64>],
    granularity: u64,
    zero: &ZeroDigests,
) -> Result<Compared, VerifyError> {
    let segment_bytes = SEGMENT_BYTES.max(granularity) / granularity * granularity;
    let segments: Vec<Range<u64>> = within.iter().flat_map(|r| chunks(r.clone(), segment_bytes)).collect();
    let results: Vec<Result<Compared, VerifyError>> = segments
        .par_iter()
        .map(|segment| {
            if source.in_hole(segment) && target.in_hole(segment) {
                return Ok((Vec::new(), 0));
            }
            let (src, dst) = rayon::join(
                || source.digests(segment, granularity, zero),
                || target.digests(segment, granularity, zero),
            );
            let ((src, src_read), (dst, dst_read)) = (src?, dst?);
            let mut differing = Vec::new();
            for ((chunk, a), b) in chunks(segment.clone(), granularity).zip(src).zip(dst) {
                if a != b {
                    push_merged(&mut differing, chunk);
                }
            }
            Ok((differing, src_read + dst_read))
        })
        .collect();
    let mut differing = Vec::new();
    let mut read = 0;
    for result in results {
        let (ranges, bytes) = result?;
        read += bytes;
        for range in ranges {
            push_merged(&mut differing, range);
        }
    }
    Ok((differing, read))
}

/// Copies `ranges` from the source onto the target, then syncs the target. Returns the
/// bytes copied.
fn repair(source: &Image, target: &Image, ranges: &[Range<u64>], length: u64) -> Result<u64, VerifyError> {
    let mut buf = Vec::new();
    let mut copied = 0;
    for piece in ranges.iter().flat_map(|r| chunks(r.clone(), SEGMENT_BYTES)) {
        let len = (piece.end - piece.start) as usize;
        buf.resize(len, 0);
        io_ops::read_exact(&source.file, &mut buf[..len], piece.start).map_err(|e| VerifyError::Read {
            side: VerifySide::Source,
            offset: piece.start,
            source: e,
        })?;
        io_ops::write_all(&target.file, &buf[..len], piece.start)
            .map_err(|source| VerifyError::Repair { offset: piece.start, source })?;
        copied += len as u64;
    }
    io_ops::datasync(&target.file).map_err(|source| VerifyError::Repair { offset: length, source })?;
    Ok(copied)
}

/// Compares `source` with `target` chunk by chunk (see the module docs) and, with
/// `options.repair`, copies the differing chunks and checks them again.
pub fn verify(source: &Path, target: &Path, options: VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let granularity = options.granularity;
    if !granularity.is_power_of_two() || !VERIFY_GRANULARITY_RANGE.contains(&granularity) {
        return Err(VerifyError::Granularity(granularity));
    }
    let started = Instant::now();
    let (source_image, source_length) = Image::open(VerifySide::Source, source, false)?;
    let (mut target_image, target_length) = Image::open(VerifySide::Target, target, options.repair)?;
    if source_length != target_length {
        return Err(VerifyError::SizeMismatch { source_length, target_length });
    }
    let length = source_length;
    let zero = ZeroDigests::new(length, granularity);
    let (differing, mut bytes_read) = compare(&source_image, &target_image, std::slice::from_ref(&(0..length)), granularity, &zero)?;
    let differing_bytes = differing.iter().map(|r| r.end - r.start).sum();
    let (mut repaired_bytes, mut still_differing) = (0, Vec::new());
    if options.repair && !differing.is_empty() {
        repaired_bytes = repair(&source_image, &target_image, &differing, length)?;
        // The repaired chunks hold data now: they are no longer in the target's holes.
        target_image.holes = extents::holes(&target_image.file, length).map_err(|e| VerifyError::Read {
            side: VerifySide::Target,
            offset: 0,
            source: e,
        })?;
        let (again, read) = compare(&source_image, &target_image, &differing, granularity, &zero)?;
        still_differing = again;
        bytes_read += read;
    }
    Ok(VerifyReport {
        length,
        granularity,
        chunks: length.div_ceil(granularity),
        differing,
        differing_bytes,
        bytes_read,
        repaired_bytes,
        still_differing,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn pair(name: &str, length: u64) -> (PathBuf, PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("bm-verify-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (s, t) = (dir.join("src.img"), dir.join("dst.img"));
        for p in [&s, &t] {
            File::create(p).unwrap().set_len(length).unwrap();
        }
        (dir, s, t)
    }

    fn write_at(path: &Path, offset: u64, data: &[u8]) {
        File::options().write(true).open(path).unwrap().write_all_at(data, offset).unwrap();
    }

    #[test]
    fn equal_sparse_images_read_nothing() {
        let (dir, s, t) = pair("equal", 64 << 20);
        let report = verify(&s, &t, VerifyOptions::default()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(report.differing.is_empty() && report.equal());
        assert_eq!(report.chunks, 64);
    }

    #[test]
    fn adjacent_differences_merge_and_a_short_last_chunk_is_exact() {
        let length = (8 << 20) + 1000;
        let (dir, s, t) = pair("merge", length);
        write_at(&s, 1 << 20, &[1]);
        write_at(&t, (2 << 20) + 5, &[2]);
        write_at(&s, length - 1, &[3]);
        write_at(&t, 5 << 20, &[0]); // data that equals the source's hole
        let report = verify(&s, &t, VerifyOptions::default()).unwrap();
        assert_eq!(report.differing, vec![(1 << 20)..(3 << 20), (8 << 20)..length]);
        assert_eq!(report.differing_bytes, (2 << 20) + 1000);
        let repaired = verify(&s, &t, VerifyOptions { repair: true, ..VerifyOptions::default() }).unwrap();
        assert!(repaired.still_differing.is_empty() && repaired.equal());
        assert_eq!(repaired.repaired_bytes, (2 << 20) + 1000);
        assert!(verify(&s, &t, VerifyOptions::default()).unwrap().differing.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refusals_are_typed() {
        let (dir, s, t) = pair("refuse", 1 << 20);
        File::options().write(true).open(&t).unwrap().set_len(2 << 20).unwrap();
        assert!(matches!(verify(&s, &t, VerifyOptions::default()), Err(VerifyError::SizeMismatch { .. })));
        let bad = VerifyOptions { granularity: 1000, repair: false };
        assert!(matches!(verify(&s, &t, bad), Err(VerifyError::Granularity(1000))));
        let missing = dir.join("missing");
        assert!(matches!(
            verify(&missing, &t, VerifyOptions::default()),
            Err(VerifyError::Open { side: VerifySide::Source, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
