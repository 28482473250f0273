//! How the simulator carries out the job's actions and reports their completions.

use super::config::{Command, ReadCapture};
use super::disk::Side;
use super::engine::{Mirrored, Pending, ReadBuffer, Simulation};
use super::record::{SimEvent, SimEventKind, TraceEntry};
use crate::fault::FaultOp;
use crate::job::{Action, ActionKind, ErrorAction, Event, IoErrorKind, JobStatus, OpId, OpResult};

impl Simulation {
    /// The driver rule: after every input, drain actions, events and deferred commands until
    /// the job has nothing more to say; then make sure its timeout is queued.
    pub(super) fn drain_job(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(action) = self.job.poll_action() {
                progressed = true;
                self.execute(action);
            }
            while let Some(event) = self.job.poll_event() {
                progressed = true;
                self.on_job_event(event);
            }
            if let Some(command) = self.deferred.pop_front() {
                progressed = true;
                // A refused automatic command is recorded and changes nothing.
                let _ = self.apply_command(command);
            }
            if !progressed {
                break;
            }
        }
        if let Some(at) = self.job.poll_timeout() {
            let at = at.0.max(self.now_ns);
            // One queued timeout at the earliest wanted instant; a stale later one is harmless
            // (an early handle_timeout is a no-op), so it is left in the queue.
            if self.timeout_at.is_none_or(|queued| at < queued) {
                self.timeout_at = Some(at);
                self.queue.push(at, Pending::Timeout);
            }
        }
    }

    /// Start an action: queue its I/O on the right device, or act on the guest.
    fn execute(&mut self, action: Action) {
        let Action { kind, op, offset, length } = action;
        self.record(TraceEntry::Action { time_ns: self.now_ns, kind, op, offset, length });
        match kind {
            ActionKind::Read => {
                // Only a guest write can make the two snapshots differ: with no guest writing,
                // the copy is skipped (a read without one returns the source at completion).
                let guest_may_write = self.workload.writing_at(self.now_ns) || !self.guest_in_flight.is_empty();
                if self.config.read_capture != ReadCapture::Completion && guest_may_write {
                    let range = self.disks.chunk_range(offset, length);
                    let snapshot = range.map(|c| self.disks.content(Side::Source, c)).collect();
                    self.read_snapshots.insert(op, snapshot);
                }
                let failure = self.draw_fault(Side::Source, kind);
                let done = self.source_dev.submit(self.now_ns, length, &mut self.timing_rng);
                self.queue.push(done, Pending::JobIo { op, kind, offset, length, failure });
            }
            ActionKind::Write | ActionKind::WriteZeroes | ActionKind::Discard | ActionKind::GuestWrite => {
                if kind == ActionKind::GuestWrite {
                    match self.mirrored.get_mut(&op) {
                        Some(m) => m.action_issued = true,
                        None => self.violation(format!("guest_write for {op}, which mirrors no guest write")),
                    }
                }
                self.claim_target(op, offset, length);
                let failure = self.draw_fault(Side::Target, kind);
                let bytes = if kind == ActionKind::Write || kind == ActionKind::GuestWrite { length } else { 0 };
                let done = self.target_dev.submit(self.now_ns, bytes, &mut self.timing_rng);
                self.queue.push(done, Pending::JobIo { op, kind, offset, length, failure });
            }
            // The simulated guest reports its writes in one step, so nothing is ever admitted.
            ActionKind::Admit => self.violation(format!("admit for {op}: the simulator announces no guest write")),
            ActionKind::Flush => {
                self.flush_covers.insert(op, self.target_writes_done);
                let failure = self.draw_fault(Side::Target, kind);
                let done = self.target_dev.submit(self.now_ns, 0, &mut self.timing_rng);
                self.queue.push(done, Pending::JobIo { op, kind, offset, length, failure });
            }
            ActionKind::Quiesce => {
                self.quiesced = true;
                if self.guest_issued == 0 {
                    self.queue.push(self.now_ns, Pending::SimOpDone { op });
                } else {
                    self.pending_quiesce = Some(op);
                }
            }
            ActionKind::Unquiesce => {
                // The drain ends here: this is the moment a soft cancel's copy is taken.
                self.stats.last_switch_equal = Some(self.disks.source_equals_target());
                self.quiesced = false;
                while let Some((offset, length)) = self.held.pop_front() {
                    self.issue_guest_write(offset, length);
                }
                self.queue.push(self.now_ns, Pending::SimOpDone { op });
            }
            ActionKind::Pivot => {
                if !self.quiesced {
                    self.violation("pivot while the guest is not quiesced".into());
                }
                self.stats.last_switch_equal = Some(self.disks.source_equals_target());
                self.pivoted = true;
                self.queue.push(self.now_ns, Pending::SimOpDone { op });
            }
        }
    }

    /// Check that no other op writes these target chunks now (one owner per chunk), and
    /// register this write.
    fn claim_target(&mut self, op: OpId, offset: u64, length: u64) {
        let chunks = self.disks.chunk_range(offset, length);
        let overlap = self
            .target_in_flight
            .range(..(chunks.end, OpId(0)))
            .next_back()
            .filter(|(&(start, other), &end)| other != op && start < chunks.end && end > chunks.start)
            .map(|(&(_, other), _)| other);
        if let Some(other) = overlap {
            self.violation(format!("{op} writes target chunks that {other} is still writing"));
        }
        self.target_in_flight.insert((chunks.start, op), chunks.end);
    }

    /// Decide at issue time whether this I/O fails: a scripted fault for this ordinal, else
    /// a random one within the window.
    fn draw_fault(&mut self, side: Side, kind: ActionKind) -> Option<IoErrorKind> {
        let op = FaultOp::of_action(kind).expect("only I/O actions draw faults");
        if let Some(rule) = self.scripted_faults.check(side, op) {
            return Some(self.scripted_faults.rules()[rule].error);
        }
        let faults = &self.config.faults;
        let rate = if side == Side::Source { faults.source_rate } else { faults.target_rate };
        let in_window = faults.window_ns.is_none_or(|(from, until)| (from..until).contains(&self.now_ns));
        if rate > 0.0 && in_window && self.fault_rng.chance(rate) {
            let target_error = if side == Side::Target { faults.target_random_error } else { None };
            return Some(target_error.or(faults.random_error).unwrap_or(IoErrorKind::Io));
        }
        None
    }

    /// A job I/O finished: apply its effect on the disks, then tell the job.
    pub(super) fn job_io_done(&mut self, op: OpId, kind: ActionKind, offset: u64, length: u64, failure: Option<IoErrorKind>) {
        if kind != ActionKind::Read && kind != ActionKind::Flush {
            let start = self.disks.chunk_range(offset, length).start;
            self.target_in_flight.remove(&(start, op));
        }
        if let Some(error) = failure {
            self.read_snapshots.remove(&op);
            for chunk in self.disks.chunk_range(offset, length) {
                self.failed_chunks.insert(chunk);
            }
            if matches!(kind, ActionKind::Write | ActionKind::WriteZeroes | ActionKind::Discard) {
                self.read_buffers.remove(&op);
            }
            self.deliver(op, Some(error), false);
            self.finish_mirrored(op, kind);
            return;
        }
        let mut zero = false;
        match kind {
            ActionKind::Read => {
                let range = self.disks.chunk_range(offset, length);
                let at_issue = self.read_snapshots.remove(&op).unwrap_or_default();
                let capture = self.config.read_capture;
                let mut chunks = Vec::with_capacity(at_issue.len().max(range.clone().count()));
                for (i, chunk) in range.clone().enumerate() {
                    let use_issue = !at_issue.is_empty()
                        && match capture {
                            ReadCapture::Issue => true,
                            ReadCapture::Completion => false,
                            ReadCapture::Either => self.read_rng.chance(0.5),
                        };
                    match at_issue.get(i) {
                        Some(old) if use_issue => chunks.push(old.clone()),
                        _ => chunks.push(self.disks.content(Side::Source, chunk)),
                    }
                }
                zero = chunks.iter().all(|c| c.is_zero());
                let buffer = ReadBuffer { offset, length, first_chunk: range.start, chunks, zero };
                self.read_buffers.insert(op, buffer);
            }
            ActionKind::Write => self.apply_copy(op, offset, length),
            ActionKind::WriteZeroes | ActionKind::Discard => {
                let reads_zero = kind == ActionKind::WriteZeroes || self.job.config().discard_reads_zero;
                match self.read_buffers.get(&op) {
                    Some(buffer) if buffer.zero => {}
                    _ => self.violation(format!("{kind} for {op} without a read that returned zeroes")),
                }
                self.read_buffers.remove(&op);
                self.apply_zeroes(offset, length, reads_zero);
            }
            ActionKind::GuestWrite => self.apply_guest_write(op, offset, length),
            ActionKind::Flush => {
                let covers = self.flush_covers.remove(&op).unwrap_or(0);
                self.flushed_upto = self.flushed_upto.max(covers);
            }
            _ => {}
        }
        self.deliver(op, None, zero);
        self.finish_mirrored(op, kind);
    }

    /// Write what `op`'s read captured to the target range.
    fn apply_copy(&mut self, op: OpId, offset: u64, length: u64) {
        let Some(buffer) = self.read_buffers.remove(&op) else {
            self.violation(format!("write for {op} without a completed read"));
            let garbage = self.disks.fresh();
            self.disks.write_version(Side::Target, offset, length, garbage);
            return;
        };
        if offset < buffer.offset || offset + length > buffer.offset + buffer.length {
            self.violation(format!(
                "write {offset}+{length} for {op} outside its read {}+{}",
                buffer.offset, buffer.length
            ));
        }
        for chunk in self.disks.chunk_range(offset, length) {
            let content = chunk.checked_sub(buffer.first_chunk).and_then(|i| buffer.chunks.get(i as usize));
            match content {
                Some(content) => self.disks.write_content(Side::Target, chunk, offset, length, content),
                None => {
                    let garbage = self.disks.fresh();
                    let (start, end) = self.disks.clip(offset, length, chunk);
                    self.disks.write_version(Side::Target, start, end - start, garbage);
                }
            }
        }
        self.count_target_write(offset, length, true);
    }

    fn apply_zeroes(&mut self, offset: u64, length: u64, reads_zero: bool) {
        let version = if reads_zero { 0 } else { self.disks.fresh() };
        self.disks.write_version(Side::Target, offset, length, version);
        self.count_target_write(offset, length, true);
    }

    /// Write the guest's own bytes for this range to the target. Bytes of the action that
    /// lie outside the guest's write have no defined content: they become garbage.
    fn apply_guest_write(&mut self, op: OpId, offset: u64, length: u64) {
        let end = offset + length;
        let (g_start, g_end, version) = match self.mirrored.get(&op) {
            Some(m) => (m.offset, m.offset + m.length, m.version),
            None => (0, 0, 0),
        };
        if offset < g_start || end > g_end {
            self.violation(format!("guest_write {offset}+{length} for {op} outside the guest's write {g_start}..{g_end}"));
            let garbage = self.disks.fresh();
            self.disks.write_version(Side::Target, offset, length, garbage);
        }
        let (start, stop) = (offset.max(g_start), end.min(g_end));
        if start < stop {
            self.disks.write_version(Side::Target, start, stop - start, version);
        }
        self.count_target_write(offset, length, false);
    }

    /// Bookkeeping for a successful target write.
    fn count_target_write(&mut self, offset: u64, length: u64, background: bool) {
        self.target_writes_done += 1;
        self.stats.bytes_copied += length;
        let any_failed = !self.failed_chunks.is_empty();
        for chunk in self.disks.chunk_range(offset, length) {
            if any_failed {
                self.failed_chunks.remove(&chunk);
            }
            if background {
                let (word, bit) = ((chunk / 64) as usize, chunk % 64);
                if self.copied_once[word] >> bit & 1 == 1 {
                    let (start, end) = self.disks.clip(offset, length, chunk);
                    self.stats.bytes_recopied += end - start;
                } else {
                    self.copied_once[word] |= 1 << bit;
                }
            }
        }
    }

    /// Tell the job that `op` finished.
    pub(super) fn deliver(&mut self, op: OpId, error: Option<IoErrorKind>, zero: bool) {
        self.record(TraceEntry::Completion { time_ns: self.now_ns, op, error, zero });
        let result = match (error, zero) {
            (Some(e), _) => OpResult::Failed(e),
            (None, true) => OpResult::OkZeroes,
            (None, false) => OpResult::Ok,
        };
        if let Err(e) = self.job.handle_completion(op, result) {
            self.violation(format!("job refused the completion of {op}: {e}"));
        }
    }

    /// After a guest_write op's completion, the guest's write is acknowledged (whatever the
    /// target said: the source write succeeded, and the job re-dirties on failure).
    fn finish_mirrored(&mut self, op: OpId, kind: ActionKind) {
        if kind == ActionKind::GuestWrite {
            if let Some(m) = self.mirrored.remove(&op) {
                self.acknowledge_guest(m.guest_id);
            }
        }
    }

    /// React to a job event: record it, and carry out the automatic reactions.
    fn on_job_event(&mut self, event: Event) {
        self.stats.job_events += 1;
        match &event {
            Event::Ready { .. } => {
                self.stats.ready_events += 1;
                self.stats.ready_at_ns.get_or_insert(self.now_ns);
                if self.config.complete_on_ready {
                    self.deferred.push_back(Command::Complete);
                }
            }
            Event::Completed { error, .. } => {
                self.stats.ending = Some("completed");
                self.stats.end_error = *error;
                if error.is_none() {
                    let equal = self.stats.last_switch_equal.unwrap_or_else(|| self.disks.source_equals_target());
                    self.stats.equal_at_end = Some(equal);
                    if self.flushed_upto < self.target_writes_done {
                        self.violation("completed with target writes no flush covered".into());
                    }
                }
            }
            Event::Cancelled { .. } => self.stats.ending = Some("cancelled"),
            Event::NotConverging { .. } => {
                self.stats.not_converging_at_ns.get_or_insert(self.now_ns);
            }
            Event::Error { action, .. } => {
                self.stats.error_events += 1;
                if *action == ErrorAction::Stop {
                    if let Some(delay) = self.config.resume_after_stop_ns {
                        self.queue.push(self.now_ns.saturating_add(delay), Pending::Command(Command::Resume));
                    }
                }
            }
            Event::StatusChange { status: JobStatus::Concluded } => {
                self.stats.concluded_at_ns.get_or_insert(self.now_ns);
                // Reads of copies the job abandoned while winding down are never written.
                self.read_buffers.clear();
                self.release_unmirrored_guest_writes();
            }
            _ => {}
        }
        self.events.push(SimEvent { time_ns: self.now_ns, kind: SimEventKind::Job(event) });
    }

    /// Once the job has ended, guest writes it took to mirror but never asked to write are
    /// acknowledged (the job is gone; the guest must not hang).
    fn release_unmirrored_guest_writes(&mut self) {
        let orphans: Vec<OpId> = self.mirrored.iter().filter(|(_, m)| !m.action_issued).map(|(&op, _)| op).collect();
        for op in orphans {
            let Mirrored { guest_id, .. } = self.mirrored.remove(&op).expect("collected from the map just now");
            self.acknowledge_guest(guest_id);
        }
        if self.quiesced {
            // The job ends with the guest un-quiesced, or pivoted (then the guest goes on
            // with the target). Held writes are released either way.
            if !self.pivoted {
                self.violation("job concluded with the guest still quiesced".into());
            }
            self.quiesced = false;
            while let Some((offset, length)) = self.held.pop_front() {
                self.issue_guest_write(offset, length);
            }
        }
    }
}
