//! [`FileMirror::verify_online`]: comparing a running mirror's source and target while the guest keeps writing, without
//! false mismatches.
//!
//! A segment's comparison is believed only when nothing could have changed either side
//! while it was read. Before and after reading both sides, under the job's lock: no chunk
//! of the segment is dirty, no listed operation (copy, owned guest write) overlaps it, and
//! (after) no unlisted operation is in flight (a background-mode guest write between its
//! start and its landing is such an operation: it owns nothing, yet its bytes may be on
//! the source already). Around both checks no write to the target may have completed
//! anywhere (copies, zero writes, mirrored guest writes: their byte counters stay put).
//! Why that suffices: the target is only written by copies of dirty chunks and by
//! mirrored guest writes; a background-mode guest write that lands on the segment during
//! the reads leaves it dirty (seen after), or gets copied (its copy is listed while in
//! flight, and moves the counters when done); a write still under way is an unlisted
//! operation (seen after); a mirrored write in flight is listed, and moves the counters
//! when done. So under these conditions neither side changed during the reads: equal
//! digests mean equal, different ones a real difference. A segment that fails the conditions is tried again a few times,
//! then reported as skipped (still dirty or busy: the mirror will copy it anyway).

use std::ops::Range;
use std::time::Instant;

use blockmirror_core::job::{JobStatus, MirrorJob};

use crate::engine::FileMirror;
use crate::verify::{VerifyError, VerifySide};

/// Tries per segment before it is reported as skipped.
const ATTEMPTS: usize = 8;

/// The outcome of [`FileMirror::verify_online`].
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineVerifyReport {
    /// Disk length.
    pub length: u64,
    /// Segment size used (the precision of the ranges).
    pub granularity: u64,
    /// Bytes compared with both sides still.
    pub verified_bytes: u64,
    /// Ranges found different while neither side changed (merged, ascending).
    pub differing: Vec<Range<u64>>,
    /// Ranges not compared: dirty or busy on every try (merged, ascending).
    pub skipped: Vec<Range<u64>>,
    /// Wall-clock seconds taken.
    pub elapsed_secs: f64,
}

/// Whether `segment` is quiet in the job now: clean, no listed op on it, and (when
/// `strict`) no unlisted op in flight anywhere.
fn quiet(job: &MirrorJob, segment: &Range<u64>, strict: bool) -> bool {
    // Once the job ends (or is aborting) it no longer tracks guest writes: nothing then
    // says whether one is under way.
    if !matches!(job.status(), JobStatus::Running | JobStatus::Ready | JobStatus::Paused | JobStatus::Standby) {
        return false;
    }
    let len = segment.end - segment.start;
    if job.bitmap().next_dirty(segment.start, len).is_some() {
        return false;
    }
    let mut listed = 0;
    for op in job.ops() {
        listed += 1;
        if op.offset < segment.end && segment.start < op.offset + op.length {
            return false;
        }
    }
    !strict || job.ops_in_flight() == listed
}

fn push_merged(ranges: &mut Vec<Range<u64>>, range: Range<u64>) {
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

impl FileMirror {
    /// Compares the source and the target of this running mirror in segments of
    /// `granularity` bytes (a power of two of at least 4096) while guest writes go on (see
    /// the module docs for why no write can cause a false mismatch). Each side is read as
    /// the guest sees it: a qcow2 image through its chain, an NBD target over NBD.
    pub fn verify_online(&self, granularity: u64) -> Result<OnlineVerifyReport, VerifyError> {
        if !granularity.is_power_of_two() || !(4096..=(64 << 20)).contains(&granularity) {
            return Err(VerifyError::Granularity(granularity));
        }
        let started = Instant::now();
        // The guest's view of each side: through a qcow2 chain, or over NBD, as the job
        // itself reads and writes them.
        let files = self.sides();
        let length = self.length();
        let target_writes = || {
            let stats = self.snapshot().stats;
            (stats.bytes_written, stats.bytes_zeroed, stats.guest_bytes_mirrored)
        };
        let check = |segment: &Range<u64>, strict: bool| {
            self.verb(|job| Ok(quiet(job, segment, strict))).unwrap_or(false) && !self.pivoted()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut report = OnlineVerifyReport {
            length,
            granularity,
            verified_bytes: 0,
            differing: Vec::new(),
            skipped: Vec::new(),
            elapsed_secs: 0.0,
        };
        let mut start = 0;
        while start < length {
            let segment = start..(start + granularity).min(length);
            let len = (segment.end - segment.start) as usize;
            a.resize(len, 0);
            b.resize(len, 0);
            let mut verdict = None;
            for _ in 0..ATTEMPTS {
                let before = target_writes();
                if !check(&segment, false) {
                    continue;
                }
                files.source_read(&mut a, segment.start).map_err(|e| VerifyError::Read {
                    side: VerifySide::Source,
                    offset: segment.start,
                    source: e,
                })?;
                files.target.read_exact(&mut b, segment.start).map_err(|e| VerifyError::Read {
                    side: VerifySide::Target,
                    offset: segment.start,
                    source: e,
                })?;
                if check(&segment, true) && target_writes() == before {
                    verdict = Some(xxhash_rust::xxh3::xxh3_128(&a) == xxhash_rust::xxh3::xxh3_128(&b));
                    break;
                }
            }
            match verdict {
                Some(true) => report.verified_bytes += len as u64,
                Some(false) => {
                    report.verified_bytes += len as u64;
                    push_merged(&mut report.differing, segment.clone());
                }
                None => push_merged(&mut report.skipped, segment.clone()),
            }
            start = segment.end;
        }
        report.elapsed_secs = started.elapsed().as_secs_f64();
        Ok(report)
    }
}
