//! Draining the job's outputs: each action becomes a task for the I/O threads or is
//! handled at once (admit, the gate), and each event is recorded for the API's callers.
//! Runs with the job's lock held (see the rule in the parent module).

use blockmirror_core::job::{Action, ActionKind, ErrorAction, Event, IoErrorKind, OpResult};

use super::{ReadBuf, Shared, State};
use crate::stats::Failure;
use crate::task::Task;

impl State {
    /// Queues a task: copy I/O to the io_uring thread when it runs, the first task caused
    /// by a worker's own completion back to that worker, anything else to the pool.
    fn send(&mut self, task: Task) {
        self.tasks_in_flight += 1;
        let for_ring = match &task {
            Task::Read { .. } => true,
            // The ring writes whole buffers: a copy with zero pieces is split by a worker.
            Task::Write { zero_runs, .. } => zero_runs.is_empty(),
            _ => false,
        };
        if let (Some(ring), true) = (&self.uring_tasks, for_ring) {
            ring.send(task).expect("the ring thread lives until its sender is dropped");
            return;
        }
        if self.keep_one_task && self.kept_task.is_none() {
            self.kept_task = Some(task);
            return;
        }
        let sender = self.tasks.as_ref().expect("tasks are only dispatched before shutdown");
        sender.send(task).expect("workers live until the task sender is dropped");
    }

    /// Returns the action's immediate result when the driver handles it without I/O.
    fn dispatch(&mut self, shared: &Shared, action: Action) -> Option<OpResult> {
        let Action { kind, op, offset, length } = action;
        match kind {
            ActionKind::Read => {
                let buf = shared.pool.take(length as usize);
                self.send(Task::Read { op, offset, buf });
                None
            }
            ActionKind::Write => match self.read_bufs.remove(&op) {
                Some(ReadBuf { buf, offloaded, zero_runs }) => {
                    self.send(Task::Write { op, offset, buf, offloaded, zero_runs });
                    None
                }
                None => {
                    self.internal_error.get_or_insert(format!("write for {op} without a completed read"));
                    Some(OpResult::Failed(IoErrorKind::Io))
                }
            },
            ActionKind::WriteZeroes | ActionKind::Discard => {
                if let Some(read) = self.read_bufs.remove(&op) {
                    shared.pool.give_back(read.buf);
                }
                self.send(Task::Zero { op, offset, length, discard: kind == ActionKind::Discard });
                None
            }
            ActionKind::Admit => {
                // The waiting guest call writes the source, then reports the landing.
                self.guest_admitted.insert(op);
                self.notify_waiters = true;
                None
            }
            ActionKind::GuestWrite => match self.guest_data.remove(&op) {
                Some(payload) => {
                    self.send(Task::GuestWrite { op, offset, length, payload });
                    None
                }
                None => {
                    self.internal_error.get_or_insert(format!("guest_write for {op} without guest data"));
                    Some(OpResult::Failed(IoErrorKind::Io))
                }
            },
            ActionKind::Flush => {
                self.send(Task::Flush { op });
                None
            }
            ActionKind::Pivot => match shared.intent.get().map(|intent| intent.remove_file()) {
                // The bitmap file goes before the guest moves to the target: a crash after
                // the switch must not leave a file that a resume would act on (copying the
                // old source over the disk the guest now writes). Removing it first is safe:
                // without a file a resume refuses or copies everything.
                // The job fails a failed pivot: the source stays the guest's disk.
                Some(Err(_)) => Some(OpResult::Failed(IoErrorKind::Io)),
                _ => self.gate_action(kind, op),
            },
            ActionKind::Quiesce | ActionKind::Unquiesce => self.gate_action(kind, op),
            other => {
                self.internal_error.get_or_insert(format!("unknown action {other}"));
                Some(OpResult::Failed(IoErrorKind::Io))
            }
        }
    }

    fn record(&mut self, shared: &Shared, event: Event) {
        let time_ns = shared.clock.elapsed().as_nanos() as u64;
        self.notify_waiters = true;
        match &event {
            Event::Ready { .. } => {
                self.ready_seen = true;
                self.stats.ready_ns = Some(time_ns);
            }
            Event::Error { operation, action: ErrorAction::Report, offset, error, .. } => {
                self.last_report = Some(Failure { error: *error, operation: Some(*operation), offset: Some(*offset) });
            }
            Event::Completed { error, .. } => {
                self.end_event_seen = true;
                self.stats.end_ns = Some(time_ns);
                if let Some(kind) = error {
                    let named = self.last_report.filter(|f| f.error == *kind);
                    self.failure = Some(named.unwrap_or(Failure { error: *kind, operation: None, offset: None }));
                }
            }
            Event::Cancelled { .. } => {
                self.end_event_seen = true;
                self.stats.end_ns = Some(time_ns);
            }
            _ => {}
        }
        self.events.push(time_ns, event);
    }

    /// Drains `poll_action` and `poll_event` until both are empty, feeding the immediate
    /// results of actions handled here back in (which may cause more outputs).
    pub(super) fn pump(&mut self, shared: &Shared) {
        loop {
            let mut immediate = Vec::new();
            while let Some(action) = self.job.poll_action() {
                if let Some(result) = self.dispatch(shared, action) {
                    immediate.push((action.op, result));
                }
            }
            while let Some(event) = self.job.poll_event() {
                self.record(shared, event);
            }
            if immediate.is_empty() {
                break;
            }
            for (op, result) in immediate {
                self.complete(op, result);
            }
        }
        if self.finished() && self.stats.end_ns.is_none() {
            self.stats.end_ns = Some(shared.clock.elapsed().as_nanos() as u64);
        }
    }
}
