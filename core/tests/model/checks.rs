//! The invariant checks of the model (no lost write, one owner per chunk, READY once and
//! only when clean, ready sticky, target == source at a clean completion, ...), run after
//! every input and at the end.

use super::guest::Landing;
use super::Model;
use blockmirror_core::job::*;

impl Model {
    /// Drains the outputs (the driver rule) and checks the invariants.
    pub(super) fn after_input(&mut self, what: &str) {
        let trace = std::env::var_os("BM_MODEL_TRACE").is_some();
        if trace {
            eprintln!(
                "-- {what}: status {} progress {:?} ops {:?}",
                self.job.status(),
                self.job.progress(),
                self.job.ops().collect::<Vec<_>>()
            );
        }
        let reads_allowed = !matches!(self.job.status(), JobStatus::Paused | JobStatus::Standby)
            || matches!(what, "resume" | "cancel");
        while let Some(action) = self.job.poll_action() {
            assert!(self.end.is_none(), "no action after the end");
            assert!(
                action.offset + action.length <= self.length,
                "{action:?} within the disk"
            );
            if action.kind == ActionKind::Read {
                assert!(reads_allowed, "no copy starts while paused ({what})");
                assert_eq!(
                    action.offset % self.setup.granularity,
                    0,
                    "runs start on a chunk"
                );
                assert!(action.length <= self.setup.max_io_chunks * self.setup.granularity);
            }
            if trace {
                eprintln!("   action {action:?}");
            }
            self.pending.push(action);
        }
        while let Some(event) = self.job.poll_event() {
            if trace {
                eprintln!("   event {event:?}");
            }
            self.check_event(event, what);
        }
        self.check_state(what);
    }

    fn check_event(&mut self, event: Event, what: &str) {
        match &event {
            Event::StatusChange { status } => {
                assert!(
                    self.seen_status.can_become(*status),
                    "{} -> {status} ({what})",
                    self.seen_status
                );
                if self.ever_ready {
                    assert!(
                        !matches!(status, JobStatus::Running | JobStatus::Paused),
                        "invariant 8: ready is sticky"
                    );
                }
                self.seen_status = *status;
                if *status == JobStatus::Ready {
                    self.ever_ready = true;
                }
            }
            Event::Ready { .. } => {
                self.ready_events += 1;
                assert_eq!(self.ready_events, 1, "invariant 4: READY fires once");
                assert!(
                    self.job.bitmap().is_empty(),
                    "invariant 4: READY with an empty bitmap"
                );
                assert!(
                    !self
                        .job
                        .ops()
                        .any(|v| matches!(v.kind, OpViewKind::Reading | OpViewKind::Writing)),
                    "invariant 4: READY with no copy in flight"
                );
            }
            Event::Error { action, error, .. } => {
                if *action == ErrorAction::Report {
                    self.report_errors.push(*error);
                }
            }
            Event::Completed { .. } | Event::Cancelled { .. } => {
                assert!(self.end.is_none(), "one end event");
                self.end = Some(event.clone());
            }
            Event::NotConverging { .. } => {
                // Auto-converge may have switched right after it (an AutoConverge event follows).
                if !self.setup.auto_converge {
                    assert_eq!(self.job.config().copy_mode, CopyMode::Background);
                }
            }
            Event::AutoConverge { .. } => {
                assert!(
                    self.setup.auto_converge,
                    "auto-converge only when asked for"
                );
                // Events are drained before the next input, so nothing switched back yet.
                assert_eq!(self.job.config().copy_mode, CopyMode::WriteBlocking);
                self.auto_converged += 1;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }

    fn check_state(&mut self, what: &str) {
        assert_eq!(
            self.seen_status,
            self.job.status(),
            "every status change is reported ({what})"
        );
        assert_eq!(
            self.job.is_guest_held(),
            self.held,
            "the job and the driver agree on the hold ({what})"
        );
        // Invariant 2: never two owners of a chunk.
        let g = self.setup.granularity;
        let mut owned: Vec<(u64, u64)> = self
            .job
            .ops()
            .filter(|v| v.kind != OpViewKind::WaitingGuestWrite)
            .map(|v| (v.offset / g, (v.offset + v.length).div_ceil(g)))
            .collect();
        owned.sort_unstable();
        for pair in owned.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "invariant 2: chunks {:?} and {:?} overlap ({what})",
                pair[0],
                pair[1]
            );
        }
        // Progress: current only grows; total = current + dirty + in flight, all recounted here.
        let progress = self.job.progress();
        assert!(
            progress.current >= self.last_current,
            "current never shrinks"
        );
        self.last_current = progress.current;
        let in_flight: u64 = self.job.ops().map(|v| v.length).sum();
        let dirty: u64 = (0..self.length.div_ceil(g))
            .filter(|c| self.job.bitmap().get(c * g))
            .map(|c| g.min(self.length - c * g))
            .sum();
        assert_eq!(
            progress.total,
            progress.current + dirty + in_flight,
            "progress accounting ({what})"
        );
        // Every polled read or write is visible as an op owning its range.
        for action in &self.pending {
            if matches!(
                action.kind,
                ActionKind::Read
                    | ActionKind::Write
                    | ActionKind::WriteZeroes
                    | ActionKind::Discard
            ) {
                assert!(self.job.ops().any(|v| v.op == action.op
                    && v.offset == action.offset
                    && v.length == action.length));
            }
        }
        if self.job.status() == JobStatus::Concluded {
            assert!(
                self.pending.is_empty(),
                "concluded only after every polled action completed"
            );
            // Only guest writes still landing may outlive the job (a job cancelled before
            // its start ends at once); their reports still find their ops.
            let landing = self.in_progress.iter().filter(|w| w.op.is_some()).count();
            assert_eq!(self.job.ops_in_flight(), landing);
            assert!(
                !self.held,
                "the job ends with the guest un-quiesced or pivoted"
            );
        }
    }

    pub(super) fn check_end(&self) {
        let end = self.end.as_ref().expect("an end event");
        if let Some(path) = std::env::var_os("BM_MODEL_STATS") {
            use std::io::Write;
            let kind = match end {
                Event::Cancelled { .. } => "cancelled".to_string(),
                Event::Completed { error: Some(_), .. } => "failed".to_string(),
                Event::Completed { pivoted, .. } => format!("completed pivoted={pivoted}"),
                _ => "other".to_string(),
            };
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .unwrap();
            writeln!(
                file,
                "{kind} steps={} ready={} sync={:?} mode={:?}",
                self.steps,
                self.ever_ready,
                self.setup.sync,
                self.job.config().copy_mode
            )
            .unwrap();
        }
        match end {
            Event::Cancelled { .. } => assert!(
                self.force_cancelled,
                "cancelled only by a cancel before ready or a force"
            ),
            Event::Completed {
                error: Some(error),
                pivoted,
                ..
            } => {
                assert!(!pivoted);
                assert!(
                    self.report_errors.first() == Some(error)
                        || self.switch_failures.contains(error),
                    "the error is a reported one: {error:?} vs {:?} / {:?}",
                    self.report_errors,
                    self.switch_failures
                );
            }
            Event::Completed {
                error: None,
                pivoted,
                current,
                total,
            } => {
                assert_eq!(current, total);
                assert_eq!(*pivoted, self.pivoted);
                // Invariant 5: target == source at the quiesce (the guest was held since).
                let snapshot = self
                    .snapshot_at_hold
                    .as_ref()
                    .expect("a graceful end quiesces");
                assert_eq!(
                    &self.target, snapshot,
                    "invariant 5: target equals the source at the switch"
                );
                if *pivoted {
                    assert_eq!(
                        self.target, self.source,
                        "after the pivot the target equals the source"
                    );
                }
            }
            other => panic!("{other:?}"),
        }
        if self.report_errors.is_empty() && self.switch_failures.is_empty() && !self.force_cancelled
        {
            // Invariant 6 and 7: with faults stopped, ignore/stop and write-blocking converge.
            assert!(
                matches!(end, Event::Completed { error: None, .. }),
                "converged to a clean end: {end:?}"
            );
        }
    }

    /// A completion for no polled action (or the wrong result) is refused and changes nothing.
    pub(super) fn bad_completion(&mut self, a: u32, b: u32) {
        let before = (
            self.job.status(),
            self.job.progress(),
            self.job.ops_in_flight(),
        );
        let op = OpId(a as u64 % 4 + 10_000_000 * (b as u64 % 2));
        let polled = self.pending.iter().any(|p| p.op == op);
        let result = if b % 3 == 0 {
            OpResult::OkZeroes
        } else {
            OpResult::Ok
        };
        let pending = self.pending.iter().find(|p| p.op == op).copied();
        match pending {
            Some(action) if action.kind == ActionKind::Admit => {
                assert_eq!(
                    self.job.handle_completion(op, result),
                    Err(JobError::LandingExpected(op))
                );
            }
            Some(action) if action.kind != ActionKind::Read && result == OpResult::OkZeroes => {
                assert!(matches!(
                    self.job.handle_completion(op, result),
                    Err(JobError::BadResult { .. })
                ));
            }
            _ if polled => return, // a real completion: not bad input
            _ if self
                .in_progress
                .iter()
                .any(|w| w.op == Some(op) && w.stage != Landing::AwaitingAdmit) =>
            {
                assert_eq!(
                    self.job.handle_completion(op, result),
                    Err(JobError::LandingExpected(op))
                );
            }
            _ => assert_eq!(
                self.job.handle_completion(op, result),
                Err(JobError::UnknownOp(op))
            ),
        }
        assert_eq!(
            before,
            (
                self.job.status(),
                self.job.progress(),
                self.job.ops_in_flight()
            )
        );
    }
}
