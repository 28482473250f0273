//! The guest-touch watch: which chunks guest writes were announced on (or a target mismatch
//! reported for) since a reader last looked, for readers that compare both sides while the
//! guest writes (an online verify).
//!
//! Why the job's other views are not enough: a write-blocking guest write can be announced,
//! land on the source, be mirrored to the target and clean its chunks between two looks;
//! a background one can land, be copied and be cleaned again. Both leave the chunk clean
//! with no op on it, yet both sides changed in between. A touch is recorded when the write
//! is announced, before it can touch the source, so a range whose touches are clear at
//! both ends of a read, with no op on it at either end, was not written during it.
//!
//! Exact for two-step drivers (writes announced before they touch the source); a one-step
//! driver reports a write only after it landed, so a reader can miss one in flight.

use super::mirror::MirrorJob;
use super::*;

impl MirrorJob {
    /// Starts recording guest touches (clearing any earlier record). Returns false when the
    /// record cannot be allocated (nothing is watched then).
    pub fn watch_guest_touches(&mut self) -> bool {
        self.touched = crate::bitmap::HBitmap::new(self.config.length, self.chunk_shift).ok();
        self.touched.is_some()
    }

    /// Stops recording guest touches.
    pub fn stop_watching_guest_touches(&mut self) {
        self.touched = None;
    }

    /// Whether a guest write was announced, or a mismatch reported, on a chunk of `[offset,
    /// offset+length)` (rounded out to whole chunks) since the watch began or since the
    /// last call for those chunks; the chunks' record is cleared. True when no watch runs
    /// (nothing is known). Errors:
    /// [`JobError::OutOfRange`], [`JobError::ZeroLength`].
    pub fn take_guest_touches(&mut self, offset: u64, length: u64) -> Result<bool, JobError> {
        self.check_range(offset, length)?;
        let (first, end) = self.chunks_of(offset, length);
        let start = first << self.chunk_shift;
        let stop = (end << self.chunk_shift).min(self.config.length);
        let Some(touched) = self.touched.as_mut() else { return Ok(true) };
        // The record is per chunk: a range is looked at (and cleared) in whole chunks.
        let any = touched.next_dirty(start, stop - start).is_some();
        touched.reset(start, stop - start).expect("whole chunks inside the disk");
        Ok(any)
    }

    /// Records a touch of `[offset, offset+length)` (checked against the disk) while a
    /// watch runs.
    pub(super) fn record_guest_touch(&mut self, offset: u64, length: u64) {
        if let Some(touched) = self.touched.as_mut() {
            touched.set(offset, length).expect("checked against the disk");
        }
    }
}
