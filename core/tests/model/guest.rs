//! The model's guest: writes reported in one step, in two steps (start, landing and report
//! as separate steps other writes interleave with), or after landing (the unsafe protocol
//! the model must catch).

use super::{units_of, Model};
use blockmirror_core::job::*;

/// How the model's guest reports its writes to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestProtocol {
    /// `handle_guest_write` in the same step as the source write (one write at a time).
    OneStep,
    /// `handle_guest_write_start`, then (once admitted) the source write at a step of its
    /// own, then `handle_guest_write_landed` at a later step.
    TwoStep,
    /// Concurrent writes reported with the one-step call after landing at an earlier step:
    /// what a driver that writes the source before telling the job does. Unsafe with
    /// overlapping writes in write-blocking mode; kept to show the model catches it.
    ReportAfterLanding,
}

/// Where a guest write of the model stands (two-step and report-after-landing protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Landing {
    /// Announced; its `admit` action has not been performed yet.
    AwaitingAdmit,
    /// May write the source now.
    MayLand,
    /// On the source; not reported yet.
    Landed,
}

/// A guest write in progress (started, not yet reported).
#[derive(Debug, Clone, Copy)]
pub(super) struct InProgress {
    /// The two-step op, if any.
    pub(super) op: Option<OpId>,
    pub(super) offset: u64,
    pub(super) length: u64,
    pub(super) version: u32,
    pub(super) stage: Landing,
    /// The source write fails (the source then holds some of it).
    pub(super) fails: bool,
}

impl Model {
    pub(super) fn guest_write(&mut self, a: u64, b: u64) {
        let busy = self.unacknowledged + self.in_progress.len();
        // A driver holds new guest writes from the moment it is asked to quiesce (writes
        // already started finish first), as the file engine's gate does.
        let quiescing = self.pending.iter().any(|a| a.kind == ActionKind::Quiesce);
        if self.held || quiescing || self.pivoted || busy >= 6 || self.length == 0 {
            return;
        }
        let unit = self.setup.unit;
        let units = self.length.div_ceil(unit);
        // Two thirds of the writes go to a hot spot of three chunks, so writes overlap each
        // other and the copies often.
        let hot_units = (3 * self.setup.granularity / unit).min(units);
        // One write in five appends one block to a log that cycles through the first chunk:
        // a stream of partial writes onto one chunk (the write-blocking starvation case).
        let (first, count) = if b % 5 == 0 {
            let chunk_units = (self.setup.granularity / unit).min(units);
            self.log_position = (self.log_position + 1) % chunk_units;
            (self.log_position, 1)
        } else {
            let first = if a % 3 == 0 {
                a / 3 % units
            } else {
                a / 3 % hot_units
            };
            let count = (b % (3 * self.setup.granularity / unit + 2) + 1).min(units - first);
            (first, count)
        };
        let offset = first * unit;
        let length = (count * unit).min(self.length - offset);
        let version = self.next_version;
        self.next_version += 1;
        let mut write = InProgress {
            op: None,
            offset,
            length,
            version,
            stage: Landing::MayLand,
            // Only the two-step report can say that a source write failed.
            fails: self.setup.guest_protocol == GuestProtocol::TwoStep
                && self.faults_on
                && (a ^ b) % 100 < u64::from(self.setup.fault_percent),
        };
        match self.setup.guest_protocol {
            GuestProtocol::OneStep => {
                self.land(&write);
                self.report_landed(write);
            }
            GuestProtocol::ReportAfterLanding => self.in_progress.push(write),
            GuestProtocol::TwoStep => {
                match self
                    .job
                    .handle_guest_write_start(offset, length)
                    .expect("in-range guest write")
                {
                    GuestWriteStart::Proceed(op) => write.op = Some(op),
                    GuestWriteStart::Wait(op) => {
                        write.op = Some(op);
                        write.stage = Landing::AwaitingAdmit;
                    }
                    GuestWriteStart::Untracked => {
                        assert!(
                            self.end.is_some() || self.cancel_requested || !self.report_errors.is_empty()
                                || !self.switch_failures.is_empty(),
                            "only an ended or aborting job tracks nothing"
                        );
                        self.land(&write);
                        return;
                    }
                }
                self.in_progress.push(write);
                self.after_input("guest write start");
            }
        }
    }

    /// Moves one guest write in progress on by a step: lands it, or reports a landed one.
    /// Returns whether a write moved (one waiting for its `admit` cannot).
    pub(super) fn advance_a_guest_write(&mut self, pick: usize) -> bool {
        let movable: Vec<usize> = (0..self.in_progress.len())
            .filter(|&i| self.in_progress[i].stage != Landing::AwaitingAdmit)
            .collect();
        if movable.is_empty() {
            return false;
        }
        let index = movable[pick % movable.len()];
        if self.in_progress[index].stage == Landing::MayLand {
            let write = self.in_progress[index];
            self.land(&write);
            self.in_progress[index].stage = Landing::Landed;
        } else {
            let write = self.in_progress.remove(index);
            self.report_landed(write);
        }
        true
    }

    /// The guest's write reaches the source: its version, or for a failed write a version
    /// of its own (the source holds something the guest never acknowledged).
    fn land(&mut self, write: &InProgress) {
        let (x, y) = units_of(self.setup.unit, write.offset, write.length);
        let version = if write.fails {
            let torn = self.next_version;
            self.next_version += 1;
            torn
        } else {
            write.version
        };
        self.source[x..y].fill(version);
    }

    /// Tells the job a guest write has landed.
    fn report_landed(&mut self, write: InProgress) {
        let answer = match write.op {
            Some(op) => {
                let result = if write.fails {
                    OpResult::Failed(IoErrorKind::Io)
                } else {
                    OpResult::Ok
                };
                let answer = self
                    .job
                    .handle_guest_write_landed(op, result)
                    .expect("a landed guest write");
                if write.fails {
                    assert_eq!(
                        answer,
                        GuestWrite::Acknowledge,
                        "a failed source write is not mirrored"
                    );
                }
                answer
            }
            // The one-step call knows nothing of a failed source write: the data is there.
            None => self
                .job
                .handle_guest_write(write.offset, write.length)
                .expect("in-range guest write"),
        };
        if let GuestWrite::Mirror(op) = answer {
            self.guest_versions.insert(op, write.version);
            self.unacknowledged += 1;
        }
        self.after_input("guest write landed");
    }
}
