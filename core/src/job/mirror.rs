//! The mirror job: its state, the dispatch of completions and time, and the outputs.
//!
//! The protocol lives in sibling modules, each an `impl MirrorJob` block with one concern:
//! `copy` (picking and issuing background copies), `guest` (guest writes, write-blocking),
//! `ending` (ready, pause, complete, cancel, conclusion), `policy` (error policies),
//! `sync` (sync modes and declarations), `verbs` (the user's commands), `views` (getters).

use super::ops::{CopyStage, GuestStage, OpKind, OpTable};
use super::policy::RetryBackoff;
use super::ratelimit::RateLimiter;
use super::rates::{Backlog, ConvergenceWatch, NotConvergingRule, RaceWatch, RateWindow};
use super::*;
use crate::bitmap::HBitmap;
use std::collections::VecDeque;

/// How the job is ending, once an end was requested or forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// No end requested.
    None,
    /// `complete()` (pivot) or a soft cancel in ready (no pivot): converge under quiesce.
    Graceful { pivot: bool },
    /// Force cancel, cancel before ready, or a `report` error: drain in-flight ops, abort.
    Abort(AbortReason),
}

/// Why a job aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AbortReason {
    /// Cancelled: ends with `BLOCK_JOB_CANCELLED`.
    Cancelled,
    /// A `report` error (or a failed quiesce/unquiesce/pivot): `BLOCK_JOB_COMPLETED` with it.
    Failed(IoErrorKind),
}

/// The guest's state as far as the final switch is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GuestHold {
    /// Guest writes flow.
    Free,
    /// A quiesce action is out.
    Quiescing(OpId),
    /// Guest writes are held; the job copies what is left. `failed` records an error in
    /// this pass: then the job stops copying, drains and un-quiesces.
    Held { failed: bool },
    /// The final flush is out (guest held).
    FinalFlush(OpId),
    /// The pivot is out (guest held).
    Pivoting(OpId),
    /// An un-quiesce is out.
    Unquiescing(OpId),
    /// The guest runs on the target now.
    Pivoted,
}

/// The mirror job: a sans-io state machine (see the [module docs](super)). It is `Clone`:
/// a copy is a snapshot that, fed the same inputs, gives the same outputs (what-if runs).
#[derive(Clone)]
pub struct MirrorJob {
    pub(super) config: MirrorConfig,
    /// log2 of the granularity.
    pub(super) chunk_shift: u32,
    /// Number of chunks (the last may be partial).
    pub(super) chunk_count: u64,
    /// Dirty chunks (items are bytes).
    pub(super) bitmap: HBitmap,
    /// Chunks whose dirt may not come from the initial selection: the guest wrote them, or
    /// a copy or guest write there failed (the target may hold anything). Declarations never
    /// clean them. Only kept for the sync modes that honour declarations, and made on the
    /// first mark (until then nothing is protected), so a job nobody writes to never pays
    /// for it.
    pub(super) protected: Option<HBitmap>,
    /// The protected map could not be allocated: treat every chunk as protected (then
    /// declarations after that clean nothing, which is always safe).
    pub(super) protect_everything: bool,
    /// While a guest-touch watch runs: the chunks guest writes were announced on since a
    /// reader last looked (see `touches`).
    pub(super) touched: Option<HBitmap>,
    /// Declarations made before `start()`, applied at start in order.
    pub(super) early_declarations: Vec<(u64, u64, RangeState)>,
    pub(super) status: JobStatus,
    pub(super) now: Nanos,
    pub(super) ops: OpTable,
    /// Byte offset where the next search for dirty chunks begins (wraps to 0).
    pub(super) cursor: u64,
    /// Background copies live (any stage).
    pub(super) copy_ops: usize,
    /// Buffer bytes held by live copies (whole chunks): counted against `buf_size`.
    pub(super) copy_buffer_bytes: u64,
    /// Exact bytes of live copies (clipped at the disk end).
    pub(super) copy_bytes_in_flight: u64,
    /// Bytes of actively mirrored guest writes not yet completed on the target: from their
    /// report (one step) or start (two steps), waiting, landing or writing.
    pub(super) guest_bytes_in_flight: u64,
    /// Bytes copied, zeroed or actively mirrored so far.
    pub(super) current: u64,
    pub(super) actions: VecDeque<Action>,
    pub(super) events: VecDeque<Event>,
    pub(super) limiter: RateLimiter,
    /// The wait before retrying after `ignore`d errors.
    pub(super) backoff: RetryBackoff,
    pub(super) dirty_rate: RateWindow,
    pub(super) copy_rate: RateWindow,
    pub(super) convergence: ConvergenceWatch,
    /// Auto-converge's rate rule.
    pub(super) race: RaceWatch,
    /// The next instant the driver must call back (the speed limit), computed by `pump`.
    pub(super) timer: Option<Nanos>,
    /// A pause was requested (by the user or a `stop` policy) and not yet resumed.
    pub(super) user_paused: bool,
    /// READY was reached (sticky).
    pub(super) ready_reached: bool,
    /// The READY flush that is out, if any.
    pub(super) ready_flush: Option<OpId>,
    pub(super) cancel_requested: bool,
    pub(super) ending: Ending,
    pub(super) hold: GuestHold,
    /// Whether the graceful ending may quiesce now (first attempt, after a pause, or at
    /// the convergence point after a failed recheck).
    pub(super) quiesce_allowed: bool,
    /// The error that failed the job.
    pub(super) error: Option<IoErrorKind>,
}

impl MirrorJob {
    /// Validates `config` and makes a job in status `created`. `buf_size` is rounded up to
    /// whole chunks; [`config`](Self::config) shows the value in use.
    pub fn new(mut config: MirrorConfig) -> Result<Self, JobError> {
        config.validate()?;
        let granularity = config.granularity;
        config.buf_size = config.buf_size.div_ceil(granularity) * granularity; // validate: fits
        let chunk_shift = granularity.trailing_zeros();
        let too_large = || ConfigError::TooLarge {
            length: config.length,
            granularity,
        };
        let bitmap = HBitmap::new(config.length, chunk_shift).map_err(|_| too_large())?;
        let chunk_count = config.length.div_ceil(granularity);
        Ok(Self {
            chunk_shift,
            chunk_count,
            bitmap,
            protected: None,
            protect_everything: false,
            touched: None,
            early_declarations: Vec::new(),
            status: JobStatus::Created,
            now: Nanos(0),
            ops: OpTable::default(),
            cursor: 0,
            copy_ops: 0,
            copy_buffer_bytes: 0,
            copy_bytes_in_flight: 0,
            guest_bytes_in_flight: 0,
            current: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            limiter: RateLimiter::new(config.speed_bytes_per_sec),
            backoff: RetryBackoff::new(),
            dirty_rate: RateWindow::new(),
            copy_rate: RateWindow::new(),
            convergence: ConvergenceWatch::new(),
            race: RaceWatch::new(),
            timer: None,
            user_paused: false,
            ready_reached: false,
            ready_flush: None,
            cancel_requested: false,
            ending: Ending::None,
            hold: GuestHold::Free,
            quiesce_allowed: false,
            error: None,
            config,
        })
    }

    // ----- inputs from the world -----

    /// Reports the completion of the action the driver polled for `op`.
    ///
    /// `OkZeroes` is only valid for reads. Errors: [`JobError::UnknownOp`] if `op` has no
    /// polled action waiting for a completion (unknown, double, or not yet polled),
    /// [`JobError::BadResult`] if the result does not fit the action. Neither changes anything.
    pub fn handle_completion(&mut self, op: OpId, result: OpResult) -> Result<(), JobError> {
        let entry = *self
            .ops
            .get(op)
            .filter(|e| e.awaiting_completion)
            .ok_or(JobError::UnknownOp(op))?;
        if let OpKind::Guest(GuestStage::Landing { .. }) = entry.kind {
            return Err(JobError::LandingExpected(op));
        }
        let is_read = matches!(entry.kind, OpKind::Copy(CopyStage::Read));
        if result == OpResult::OkZeroes && !is_read {
            return Err(JobError::BadResult {
                op,
                kind: action_kind_of(entry.kind).as_str(),
                result: "zeroes",
            });
        }
        self.ops
            .get_mut(op)
            .expect("looked up above")
            .awaiting_completion = false;
        match entry.kind {
            OpKind::Copy(stage) => self.complete_copy(op, entry, stage, result),
            OpKind::Guest { .. } => self.complete_guest_write(op, entry, result),
            OpKind::Flush(purpose) => self.complete_flush(op, purpose, result),
            OpKind::Quiesce => self.complete_quiesce(op, result),
            OpKind::Unquiesce(then) => self.complete_unquiesce(op, then, result),
            OpKind::Pivot => self.complete_pivot(op, result),
        }
        self.pump();
        Ok(())
    }

    /// Tells the job the time is `now`. Call it whenever time advanced, at the latest at
    /// [`poll_timeout`](Self::poll_timeout); early or repeated calls are harmless, and time
    /// never goes backwards (an earlier `now` is ignored).
    pub fn handle_timeout(&mut self, now: Nanos) {
        self.advance_clock(now);
        self.pump();
    }

    pub(super) fn advance_clock(&mut self, now: Nanos) {
        self.now = self.now.max(now);
    }

    // ----- outputs -----

    /// The next action for the driver, if any. Every action must be completed exactly once
    /// with [`handle_completion`](Self::handle_completion).
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front()?;
        let entry = self
            .ops
            .get_mut(action.op)
            .expect("queued actions belong to live ops");
        entry.awaiting_completion = true;
        Some(action)
    }

    /// The next event for the user, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the driver must call [`handle_timeout`](Self::handle_timeout) at the latest
    /// (the speed limit holds work back until then); `None` if no timer is needed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Nanos> {
        self.timer
    }

    // ----- internal plumbing shared by the concern modules -----

    /// Queues an action for `op`.
    pub(super) fn emit_action(&mut self, kind: ActionKind, op: OpId, offset: u64, length: u64) {
        self.actions.push_back(Action {
            kind,
            op,
            offset,
            length,
        });
    }

    pub(super) fn emit(&mut self, event: Event) {
        self.events.push_back(event);
    }

    /// Changes status along a table edge and reports it.
    pub(super) fn set_status(&mut self, to: JobStatus) {
        let from = self.status;
        assert!(
            from.can_become(to),
            "status {from} -> {to} is a table edge: the phase logic only takes those"
        );
        self.status = to;
        self.emit(Event::StatusChange { status: to });
    }

    /// Records that the range's content may differ from what the initial selection assumed.
    pub(super) fn protect(&mut self, offset: u64, length: u64) {
        if self.config.sync == SyncMode::None || self.protect_everything {
            return; // nothing to protect from, or everything protected already
        }
        if self.protected.is_none() {
            match HBitmap::new(self.config.length, self.chunk_shift) {
                Ok(map) => self.protected = Some(map),
                Err(_) => {
                    // Out of memory for the map: stay correct by protecting everything.
                    self.protect_everything = true;
                    return;
                }
            }
        }
        if let Some(protected) = &mut self.protected {
            protected
                .set(offset, length)
                .expect("ranges are checked against the disk before marking");
        }
    }

    /// Checks a byte range against the disk.
    pub(super) fn check_range(&self, offset: u64, length: u64) -> Result<(), JobError> {
        if length == 0 {
            return Err(JobError::ZeroLength { offset });
        }
        match offset.checked_add(length) {
            Some(end) if end <= self.config.length => Ok(()),
            _ => Err(JobError::OutOfRange {
                offset,
                length,
                disk_length: self.config.length,
            }),
        }
    }

    /// Chunks `[first, end)` covering the byte range (rounded out).
    pub(super) fn chunks_of(&self, offset: u64, length: u64) -> (u64, u64) {
        (
            offset >> self.chunk_shift,
            (offset + length).div_ceil(self.config.granularity),
        )
    }

    /// Marks a byte range dirty (rounded out to chunks) from outside the initial selection
    /// (a guest write or a failure), so declarations never clean it.
    pub(super) fn mark_dirty(&mut self, offset: u64, length: u64) {
        self.protect(offset, length);
        self.bitmap
            .set(offset, length)
            .expect("ranges are checked against the disk before marking");
    }

    /// After every input or command: start what may start, advance the phase, settle
    /// pauses, watch convergence and compute the timer.
    pub(super) fn pump(&mut self) {
        self.timer = None;
        self.settle_reservation();
        self.start_waiting_guest_writes();
        self.issue_copies();
        self.advance_phase();
        self.watch_convergence();
    }

    fn watch_convergence(&mut self) {
        // Convergence matters while background copying competes with the guest: running,
        // ready, or a graceful end still waiting for its convergence point.
        let watching = self.config.copy_mode == CopyMode::Background
            && self.config.not_converging_window_ns != 0
            && matches!(self.status, JobStatus::Running | JobStatus::Ready)
            && !self.user_paused
            && self.hold == GuestHold::Free
            && !matches!(self.ending, Ending::Abort(_));
        let dirty_bytes = self.dirty_bytes();
        let window_ns = self.config.not_converging_window_ns;
        let backlog = Backlog {
            dirty_bytes,
            remaining_bytes: dirty_bytes + self.bytes_in_flight(),
            copied_bytes: self.copy_rate.total_bytes(),
            dirtied_bytes: self.dirty_rate.total_bytes(),
        };
        // The forecast is of the time to ready: it stops mattering once ready was reached.
        let forecasting = self.status == JobStatus::Running && !self.ready_reached;
        let rule = self
            .convergence
            .observe(self.now, backlog, watching, forecasting, window_ns);
        let not_converging = rule.is_some();
        let rates = self.rates();
        // The event carries the rates its rule went by: the forecast's window, or the
        // last 2 s for a stall.
        let (dirty_bytes_per_sec, copy_bytes_per_sec) = match rule {
            Some(NotConvergingRule::TooSlow {
                dirty_bytes_per_sec,
                copy_bytes_per_sec,
            }) => (dirty_bytes_per_sec, copy_bytes_per_sec),
            _ => (rates.dirty_bytes_per_sec, rates.copy_bytes_per_sec),
        };
        if not_converging {
            self.emit(Event::NotConverging {
                dirty_bytes,
                dirty_bytes_per_sec,
                copy_bytes_per_sec,
            });
        }
        if !self.config.auto_converge {
            return;
        }
        // The rate rule only while running: once ready, the job copies what the guest
        // dirties, so the two rates are equal by design.
        let race_lost = self.race.observe(
            self.now,
            rates.dirty_bytes_per_sec,
            rates.copy_bytes_per_sec,
            watching && self.status == JobStatus::Running,
            window_ns,
        );
        let trigger = if not_converging {
            AutoConvergeTrigger::NotConverging
        } else if race_lost {
            AutoConvergeTrigger::DirtyRate
        } else {
            return;
        };
        // Mirror actively (every guest write to a clean chunk also goes to the target),
        // which converges under any write rate. `watching` held, so the copy mode was
        // background and the job is not ending by an abort.
        self.config.copy_mode = CopyMode::WriteBlocking;
        self.emit(Event::AutoConverge {
            trigger,
            dirty_bytes,
            dirty_bytes_per_sec,
            copy_bytes_per_sec,
        });
        // As `set_copy_mode` does; the watch stays quiet now (write-blocking).
        self.pump();
    }
}

/// The action kind an op is currently waiting on (for error messages).
fn action_kind_of(kind: OpKind) -> ActionKind {
    match kind {
        OpKind::Copy(CopyStage::Read) => ActionKind::Read,
        OpKind::Copy(CopyStage::Write(kind)) => kind,
        OpKind::Guest(GuestStage::Landing { .. }) => ActionKind::Admit,
        OpKind::Guest(_) => ActionKind::GuestWrite,
        OpKind::Flush(_) => ActionKind::Flush,
        OpKind::Quiesce => ActionKind::Quiesce,
        OpKind::Unquiesce(_) => ActionKind::Unquiesce,
        OpKind::Pivot => ActionKind::Pivot,
    }
}
