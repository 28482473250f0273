//! Read-only views of a simulation: accessors, samples, per-chunk states and the summary.

use super::config::SimConfig;
use super::engine::Simulation;
use super::record::{ChunkState, Sample, SimEvent, SimSummary, TraceEntry, Violation};
use crate::job::{MirrorJob, OpViewKind};

impl Simulation {
    /// The configuration it runs.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The job (read-only: the simulator is its only driver).
    pub fn job(&self) -> &MirrorJob {
        &self.job
    }

    /// Virtual time now.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Events processed so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Number of chunks per disk.
    pub fn chunks(&self) -> u64 {
        self.disks.chunks()
    }

    /// Whether the source and the target hold the same bytes now. O(1).
    pub fn source_equals_target(&self) -> bool {
        self.disks.source_equals_target()
    }

    /// The first chunk at or after `from` whose contents differ now (a linear scan).
    pub fn next_mismatched_chunk(&self, from: u64) -> Option<u64> {
        self.disks.next_mismatch(from)
    }

    /// Chunks whose contents differ now.
    pub fn mismatched_chunks(&self) -> u64 {
        self.disks.mismatched_chunks()
    }

    /// The guest's writes in flight (queue slot taken, not yet acknowledged) integrated
    /// over virtual time up to now, in write-nanoseconds. Its growth over an interval,
    /// divided by the writes completed in it, is their mean latency (Little's law, exact
    /// when the interval starts and ends with nothing in flight, close otherwise).
    pub fn guest_in_flight_integral_ns(&self) -> u128 {
        let since = self.stats.guest_in_flight_since_ns;
        let elapsed = u128::from(self.now_ns.saturating_sub(since));
        self.stats.guest_in_flight_ns + u128::from(self.guest_outstanding) * elapsed
    }

    /// Bytes the guest has written so far, and the number of writes (counted when each
    /// reaches its disk).
    pub fn guest_written(&self) -> (u64, u64) {
        (self.stats.guest_bytes, self.stats.guest_writes)
    }

    /// Whether the guest has been switched over to the target.
    pub fn pivoted(&self) -> bool {
        self.pivoted
    }

    /// Every event so far, in order: the job's events and the commands given.
    pub fn events(&self) -> &[SimEvent] {
        &self.events
    }

    /// The time series so far.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The full step trace (empty unless `record_trace` is on).
    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }

    /// A digest of every step so far: equal for runs that did the same things at the same times.
    pub fn trace_digest(&self) -> u64 {
        self.digest
    }

    /// Protocol violations seen (empty for a correct job).
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// The state now, as a sample.
    pub(super) fn sample_at(&self, time_ns: u64) -> Sample {
        let progress = self.job.progress();
        let rates = self.job.rates();
        Sample {
            time_ns,
            status: self.job.status(),
            dirty_bytes: self.job.bitmap().count(),
            current: progress.current,
            total: progress.total,
            dirty_bytes_per_sec: rates.dirty_bytes_per_sec,
            copy_bytes_per_sec: rates.copy_bytes_per_sec,
            guest_bytes: self.stats.guest_bytes,
            target_bytes: self.stats.bytes_copied,
        }
    }

    /// One byte per chunk, a [`ChunkState`] each, into `out` (resized to [`chunks`](Self::chunks)).
    /// Cost: O(chunks + dirty runs + recent guest writes + ops in flight).
    pub fn chunk_states(&self, out: &mut Vec<u8>) {
        let length = self.config.job.length;
        out.clear();
        out.resize(self.disks.chunks() as usize, ChunkState::Clean as u8);
        let paint = |out: &mut Vec<u8>, offset: u64, len: u64, state: ChunkState| {
            for chunk in self.disks.chunk_range(offset, len) {
                out[chunk as usize] = state as u8;
            }
        };
        let bitmap = self.job.bitmap();
        let mut from = 0;
        while let Some(run) = bitmap.next_dirty_area(from, length, u64::MAX) {
            paint(out, run.start, run.end - run.start, ChunkState::Dirty);
            from = run.end;
        }
        let window = self.config.recent_write_window_ns;
        for &(time_ns, offset, len) in &self.recent_writes {
            if time_ns.saturating_add(window) >= self.now_ns {
                paint(out, offset, len, ChunkState::GuestWritten);
            }
        }
        for &chunk in &self.failed_chunks {
            out[chunk as usize] = ChunkState::Failed as u8;
        }
        for view in self.job.ops() {
            let state = match view.kind {
                OpViewKind::Reading => ChunkState::Reading,
                OpViewKind::WaitingGuestWrite => ChunkState::Waiting,
                _ => ChunkState::Writing,
            };
            paint(out, view.offset, view.length, state);
        }
    }

    /// The run so far, in numbers.
    pub fn summary(&self) -> SimSummary {
        let progress = self.job.progress();
        let s = &self.stats;
        SimSummary {
            time_ns: self.now_ns,
            ready_at_ns: s.ready_at_ns,
            concluded_at_ns: s.concluded_at_ns,
            not_converging_at_ns: s.not_converging_at_ns,
            status: self.job.status(),
            current: progress.current,
            total: progress.total,
            bytes_copied: s.bytes_copied,
            bytes_recopied: s.bytes_recopied,
            guest_bytes_written: s.guest_bytes,
            guest_writes: s.guest_writes,
            events: s.job_events,
            ready_events: s.ready_events,
            error_events: s.error_events,
            ending: s.ending,
            error: s.end_error,
            pivoted: self.pivoted,
            converged: s.ready_at_ns.is_some(),
            equal: self.disks.source_equals_target(),
            equal_at_end: s.equal_at_end,
            steps: self.steps,
            violations: self.violations.len() as u64,
            trace_digest: self.digest,
        }
    }
}
