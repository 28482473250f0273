//! The guest's side of quiesce and pivot: new guest writes wait while the gate is held,
//! and a quiesce completes only once no guest write is between its start and its
//! acknowledgement.

use blockmirror_core::job::{ActionKind, OpId, OpResult};

use super::State;

/// The guest's side of quiesce and pivot.
#[derive(Debug, Default)]
pub struct GuestGate {
    /// New guest writes wait while held (between quiesce and unquiesce/pivot).
    pub held: bool,
    /// Guest writes between their start and their acknowledgement.
    pub active_writes: usize,
    /// A quiesce op waiting for `active_writes` to reach zero.
    pub quiesce_op: Option<OpId>,
    /// The guest was switched over: its reads and writes go to the target.
    pub pivoted: bool,
}

impl State {
    /// Ends the quiesce when the last guest write in progress has finished.
    pub fn guest_write_finished(&mut self) {
        self.gate.active_writes -= 1;
        if self.gate.active_writes == 0 {
            if let Some(op) = self.gate.quiesce_op.take() {
                self.complete(op, OpResult::Ok);
            }
        }
    }

    /// Handles a quiesce, unquiesce or pivot action; returns its immediate result, or
    /// `None` for a quiesce that waits for the guest writes in progress. Waiters are
    /// woken: guest calls wait on the gate.
    pub(super) fn gate_action(&mut self, kind: ActionKind, op: OpId) -> Option<OpResult> {
        self.notify_waiters = true;
        match kind {
            ActionKind::Quiesce => {
                self.gate.held = true;
                if self.gate.active_writes == 0 {
                    return Some(OpResult::Ok);
                }
                self.gate.quiesce_op = Some(op);
                None
            }
            ActionKind::Unquiesce => {
                self.gate.held = false;
                Some(OpResult::Ok)
            }
            ActionKind::Pivot => {
                self.gate.pivoted = true;
                self.gate.held = false;
                Some(OpResult::Ok)
            }
            other => unreachable!("dispatch routes only gate actions here, not {other}"),
        }
    }
}
