//! [`FileMirror::verify_online`]: comparing a running mirror's source and target while the
//! guest keeps writing, without false mismatches, and optionally having the job copy again
//! what differs.
//!
//! A segment's comparison is believed only when nothing could have changed either side
//! while it was read. Before and after reading both sides, under the job's lock: the job
//! still tracks guest writes, no chunk of the segment is dirty, no op overlaps it (copies,
//! guest writes at any stage, a background-mode write between its announcement and its
//! landing included), and the job's guest-touch watch holds no announcement of a guest
//! write on it since the look before (the look before clears the record). Why that
//! suffices: the source changes only by guest writes, each announced to the job before it
//! touches the source, so one during the reads is on record after; the target changes
//! only by copies of dirty chunks and by mirrored guest writes: a copy of the segment
//! needs it dirtied after the look before, which only a recorded touch does, and a
//! mirrored write is a recorded touch. So neither side changed during the reads: equal
//! digests mean equal, different ones a real difference. A segment that fails the
//! conditions is tried again a few times, then reported as skipped (still dirty or busy:
//! the mirror will copy it anyway). One online verify runs at a time per mirror (the
//! watch's record is shared).

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
    /// With `repair`: the differing ranges the job took to copy again (a job that began to
    /// abort meanwhile takes none).
    pub repaired: Vec<Range<u64>>,
    /// Ranges not compared: dirty or busy on every try (merged, ascending).
    pub skipped: Vec<Range<u64>>,
    /// Wall-clock seconds taken.
    pub elapsed_secs: f64,
}

/// Whether `segment` is quiet in the job now: the job tracks guest writes, the segment is
/// clean and no op (copy, guest write of any stage) is on it.
fn quiet(job: &MirrorJob, segment: &Range<u64>) -> bool {
    // Once the job ends (or is aborting) it no longer tracks guest writes: nothing then
    // says whether one is under way.
    if !matches!(job.status(), JobStatus::Running | JobStatus::Ready | JobStatus::Paused | JobStatus::Standby) {
        return false;
    }
    let len = segment.end - segment.start;
    if job.bitmap().next_dirty(segment.start, len).is_some() {
        return false;
    }
    let overlaps = |start: u64, end: u64| start < segment.end && segment.start < end;
    !job.ops().any(|op| overlaps(op.offset, op.offset + op.length))
        && !job.guest_writes_in_flight().any(|w| overlaps(w.start, w.end))
}

fn push_merged(ranges: &mut Vec<Range<u64>>, range: Range<u64>) {
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

/// Stops the job's guest-touch watch when the verify ends, however it ends.
struct Watch<'a>(&'a FileMirror);

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let _ = self.0.verb(|job| {
            job.stop_watching_guest_touches();
            Ok(())
        });
    }
}

impl FileMirror {
    /// Compares the source and the target of this running mirror in segments of
    /// `granularity` bytes (a power of two of at least 4096) while guest writes go on (see
    /// the module docs for why no write can cause a false mismatch). Each side is read as
    /// the guest sees it: a qcow2 image through its chain, an NBD target over NBD. With
    /// `repair`, each differing segment is reported to the job, which copies it again (the
    /// target was changed behind the job's back; the source is right).
    pub fn verify_online(&self, granularity: u64, repair: bool) -> Result<OnlineVerifyReport, VerifyError> {
        if !granularity.is_power_of_two() || !(4096..=(64 << 20)).contains(&granularity) {
            return Err(VerifyError::Granularity(granularity));
        }
        let _one_at_a_time = self.online_verify_lock();
        let started = Instant::now();
        // The guest's view of each side: through a qcow2 chain, or over NBD, as the job
        // itself reads and writes them.
        let files = self.sides();
        let length = self.length();
        if !self.verb(|job| Ok(job.watch_guest_touches())).unwrap_or(false) {
            return Err(VerifyError::NotVerifiable("the job ended, or its guest-touch record could not be allocated"));
        }
        let _watch = Watch(self);
        let quiet_now = |segment: &Range<u64>| {
            self.verb(|job| {
                let touched = job.take_guest_touches(segment.start, segment.end - segment.start).unwrap_or(true);
                Ok((quiet(job, segment), touched))
            })
            .unwrap_or((false, true))
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut report = OnlineVerifyReport {
            length,
            granularity,
            verified_bytes: 0,
            differing: Vec::new(),
            repaired: Vec::new(),
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
                // This look clears the segment's record: only touches from now on count.
                if !quiet_now(&segment).0 || self.pivoted() {
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
                if let (true, false) = quiet_now(&segment) {
                    if !self.pivoted() {
                        verdict = Some(xxhash_rust::xxh3::xxh3_128(&a) == xxhash_rust::xxh3::xxh3_128(&b));
                        break;
                    }
                }
            }
            match verdict {
                Some(true) => report.verified_bytes += len as u64,
                Some(false) => {
                    report.verified_bytes += len as u64;
                    push_merged(&mut report.differing, segment.clone());
                    let taken = repair
                        && self
                            .verb(|job| job.handle_target_mismatch(segment.start, segment.end - segment.start))
                            .unwrap_or(false);
                    if taken {
                        push_merged(&mut report.repaired, segment.clone());
                    }
                }
                None => push_merged(&mut report.skipped, segment.clone()),
            }
            start = segment.end;
        }
        report.elapsed_secs = started.elapsed().as_secs_f64();
        Ok(report)
    }
}
