//! The op table and chunk ownership.
//!
//! Every action the job emits belongs to an op in this table, from the action to its
//! completion. Ops that touch disk ranges own whole chunks while they are active: at most
//! one owner per chunk (so that target writes to one chunk land in the order they were
//! issued), recorded as disjoint intervals keyed by their first
//! chunk. Guest writes in write-blocking mode wait in a FIFO, owning nothing, until their
//! whole range is free and no earlier waiting write overlaps them; since waiters own
//! nothing and owners never wait, waits cannot form a cycle.
//!
//! Costs: O(log ops) per lookup, plus a shift of at most the live ops on insert/removal
//! (a few dozen in practice); the tables hold only live ops.

use super::action::{ActionKind, OpId};
use std::collections::VecDeque;

/// Stages of a background copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CopyStage {
    /// The read of the source is out.
    Read,
    /// The write (data, zeroes or discard) to the target is out.
    Write(ActionKind),
}

/// Why a flush was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlushPurpose {
    /// First convergence: READY follows if the bitmap is still empty.
    Ready,
    /// Final switch under quiesce: pivot (or un-quiesce and finish) follows.
    Final,
}

/// What to do once an un-quiesce completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterUnquiesce {
    /// Go on mirroring; `retry_now` allows the next quiesce at once (after a pause) rather
    /// than at the next convergence (after dirt or an error at the recheck).
    Continue { retry_now: bool },
    /// The job is done (soft cancel in ready): finish successfully without pivot.
    Finish,
    /// The job is aborting: conclude.
    Abort,
}

/// Where a guest write tracked as an op stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GuestStage {
    /// Waiting in the FIFO for its chunks, owning nothing. `landed`: reported after its
    /// source write (one step; it writes the target once admitted), or announced before it
    /// (two steps; it may write the source once admitted).
    Queued { landed: bool },
    /// Writing the source (two steps). `owned`: it owns its chunks (it is mirrored once it
    /// lands); otherwise it owns nothing and its landing only marks its range dirty.
    /// `overlapped`: an unowned write (started after a switch to background mode) overlaps
    /// it and may land after it, so its landing must not clean the chunks it covers.
    Landing { owned: bool, overlapped: bool },
    /// Its `guest_write` action (the guest's data to the target) is out or queued.
    Mirroring,
}

/// What an op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    /// A background copy of a chunk-aligned run (clipped at the disk end).
    Copy(CopyStage),
    /// A guest write the job tracks as an op (see `GuestStage`).
    Guest(GuestStage),
    /// A target flush.
    Flush(FlushPurpose),
    /// Hold guest writes.
    Quiesce,
    /// Release guest writes.
    Unquiesce(AfterUnquiesce),
    /// Switch the guest to the target.
    Pivot,
}

const UNOWNED_LANDING: OpKind = OpKind::Guest(GuestStage::Landing {
    owned: false,
    overlapped: false,
});

impl OpKind {
    /// Job ops are everything but guest writes: pause and the final switch wait for them.
    pub(super) fn is_job_op(self) -> bool {
        !matches!(self, OpKind::Guest { .. })
    }
}

/// One live op.
#[derive(Debug, Clone, Copy)]
pub(super) struct Op {
    pub(super) kind: OpKind,
    pub(super) offset: u64,
    pub(super) length: u64,
    /// The driver has polled this op's current action and owes a completion for it.
    pub(super) awaiting_completion: bool,
}

/// A guest write waiting for its chunks, in arrival order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waiter {
    pub(super) op: OpId,
    pub(super) first_chunk: u64,
    pub(super) end_chunk: u64,
}

/// A background copy's claim on one dirty chunk that guest writes keep busy. Guest writes
/// reported from `since` on that overlap it wait behind the copy, which takes the chunk as
/// soon as the earlier owners and waiters are done (QEMU's background iteration waits for
/// conflicts on its first chunk for the same reason): a stream of write-blocking writes
/// onto a partially covered dirty chunk cannot starve its copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reservation {
    pub(super) chunk: u64,
    pub(super) since: OpId,
}

/// Live ops, chunk owners and the guest-write wait queue.
#[derive(Debug, Clone, Default)]
pub(super) struct OpTable {
    /// Live ops sorted by id. Ids only grow, so inserting is a push; lookups are binary
    /// searches; removal shifts the few younger live ops.
    ops: Vec<(u64, Op)>,
    /// Owned chunk intervals `(first, end, owner)`, disjoint and sorted by `first`. A sorted
    /// vector: it holds one entry per active op (a few dozen), where binary search and a
    /// short shift beat a tree.
    owners: Vec<(u64, u64, OpId)>,
    pub(super) waiting: VecDeque<Waiter>,
    /// Set when chunks were released, a waiter arrived or the reservation went: only then
    /// may a waiter start.
    pub(super) waiters_may_start: bool,
    /// At most one chunk reserved for a background copy.
    pub(super) reservation: Option<Reservation>,
    next_id: u64,
    job_ops: usize,
    /// Live guest writes landing without owning their chunks.
    unowned_landings: usize,
}

impl OpTable {
    pub(super) fn insert(&mut self, kind: OpKind, offset: u64, length: u64) -> OpId {
        let id = OpId(self.next_id);
        self.next_id += 1;
        if kind.is_job_op() {
            self.job_ops += 1;
        }
        if kind == UNOWNED_LANDING {
            self.unowned_landings += 1;
        }
        self.ops.push((
            id.0,
            Op {
                kind,
                offset,
                length,
                awaiting_completion: false,
            },
        ));
        id
    }

    fn index_of(&self, op: OpId) -> Option<usize> {
        self.ops.binary_search_by_key(&op.0, |&(id, _)| id).ok()
    }

    pub(super) fn get(&self, op: OpId) -> Option<&Op> {
        self.index_of(op).map(|index| &self.ops[index].1)
    }

    pub(super) fn get_mut(&mut self, op: OpId) -> Option<&mut Op> {
        self.index_of(op).map(|index| &mut self.ops[index].1)
    }

    /// Removes a finished op; the caller has released its chunks.
    pub(super) fn remove(&mut self, op: OpId) -> Op {
        let index = self
            .index_of(op)
            .expect("only live ops are removed: callers looked them up first");
        let (_, removed) = self.ops.remove(index);
        if removed.kind.is_job_op() {
            self.job_ops -= 1;
        }
        if removed.kind == UNOWNED_LANDING {
            self.unowned_landings -= 1;
        }
        removed
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.ops.len()
    }

    /// Live guest writes landing without owning their chunks (an op's kind never becomes
    /// or stops being that while it lives, so insert and remove keep the count).
    pub(super) fn unowned_landings(&self) -> usize {
        self.unowned_landings
    }

    /// Live ops other than guest writes.
    pub(super) fn job_ops(&self) -> usize {
        self.job_ops
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (OpId, &Op)> + '_ {
        self.ops.iter().map(|(id, op)| (OpId(*id), op))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Op> + '_ {
        self.ops.iter_mut().map(|(_, op)| op)
    }

    /// Makes `op` the owner of chunks `[first, end)`, which must all be free.
    pub(super) fn claim(&mut self, op: OpId, first: u64, end: u64) {
        assert!(
            self.first_owned_in(first, end).is_none(),
            "chunks {first}..{end} claimed by {op} are free: callers check ownership first"
        );
        let index = self.owners.partition_point(|&(start, _, _)| start < first);
        self.owners.insert(index, (first, end, op));
    }

    /// Releases the chunks owned from `first` (the first chunk passed to `claim`).
    pub(super) fn release(&mut self, first: u64) {
        let index = self
            .owners
            .binary_search_by_key(&first, |&(start, _, _)| start)
            .expect("an owning op releases exactly the interval it claimed");
        self.owners.remove(index);
        self.waiters_may_start = true;
    }

    /// The first owned interval that overlaps `[first, end)`, as `(start, end)`.
    pub(super) fn first_owned_in(&self, first: u64, end: u64) -> Option<(u64, u64)> {
        if first >= end {
            return None;
        }
        // Intervals are disjoint and sorted, so at most the one starting at or before
        // `first` can cover it; otherwise the next one is the first inside the range.
        let after = self.owners.partition_point(|&(start, _, _)| start <= first);
        if let Some(&(start, stop, _)) = after.checked_sub(1).map(|i| &self.owners[i]) {
            if stop > first {
                return Some((start, stop));
            }
        }
        match self.owners.get(after) {
            Some(&(start, stop, _)) if start < end => Some((start, stop)),
            _ => None,
        }
    }

    /// Reserves `chunk` for a background copy: guest writes reported from now on wait.
    pub(super) fn reserve(&mut self, chunk: u64) {
        self.reservation = Some(Reservation {
            chunk,
            since: OpId(self.next_id),
        });
    }

    /// Gives up the reservation, if any; the writes it held back may start.
    pub(super) fn drop_reservation(&mut self) {
        if self.reservation.take().is_some() {
            self.waiters_may_start = true;
        }
    }

    /// The reserved chunk, once no op owns it and no guest write reported before the
    /// reservation wants it: the copy may take it now.
    pub(super) fn reserved_chunk_free(&self) -> Option<u64> {
        let reservation = self.reservation?;
        let chunk = reservation.chunk;
        let earlier_wants = self
            .waiting
            .iter()
            .any(|w| w.op < reservation.since && w.first_chunk <= chunk && chunk < w.end_chunk);
        (!earlier_wants && self.first_owned_in(chunk, chunk + 1).is_none()).then_some(chunk)
    }

    /// Whether the reservation holds `waiter` back (it came later and wants the chunk).
    pub(super) fn reservation_blocks(&self, waiter: &Waiter) -> bool {
        self.reservation.is_some_and(|r| {
            waiter.op >= r.since && waiter.first_chunk <= r.chunk && r.chunk < waiter.end_chunk
        })
    }

    /// Queues a guest write behind every earlier waiting one.
    pub(super) fn push_waiter(&mut self, waiter: Waiter) {
        self.waiting.push_back(waiter);
        self.waiters_may_start = true;
    }

    /// If `chunk` is owned or wanted by a waiting guest write, the first chunk after that
    /// blocking span; else `None`.
    pub(super) fn blocked_span_end(&self, chunk: u64) -> Option<u64> {
        if let Some((_, stop)) = self.first_owned_in(chunk, chunk + 1) {
            return Some(stop);
        }
        self.waiting
            .iter()
            .filter(|w| w.first_chunk <= chunk && chunk < w.end_chunk)
            .map(|w| w.end_chunk)
            .max()
    }

    /// The first chunk in `(first, end)` that is owned or wanted by a waiting guest write.
    pub(super) fn first_blocked_after(&self, first: u64, end: u64) -> Option<u64> {
        let owned = self
            .first_owned_in(first + 1, end)
            .map(|(start, _)| start.max(first + 1));
        let wanted = self
            .waiting
            .iter()
            .filter(|w| w.first_chunk < end && w.end_chunk > first + 1)
            .map(|w| w.first_chunk.max(first + 1))
            .min();
        match (owned, wanted) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_intervals() {
        let mut table = OpTable::default();
        let a = table.insert(OpKind::Copy(CopyStage::Read), 0, 0);
        let b = table.insert(OpKind::Copy(CopyStage::Read), 0, 0);
        table.claim(a, 4, 8);
        table.claim(b, 10, 11);
        assert_eq!(table.first_owned_in(0, 4), None);
        assert_eq!(table.first_owned_in(0, 5), Some((4, 8)));
        assert_eq!(table.first_owned_in(7, 20), Some((4, 8)));
        assert_eq!(table.first_owned_in(8, 20), Some((10, 11)));
        assert_eq!(table.blocked_span_end(5), Some(8));
        assert_eq!(table.blocked_span_end(9), None);
        assert_eq!(table.first_blocked_after(0, 20), Some(4));
        assert_eq!(table.first_blocked_after(8, 10), None);
        table.waiting.push_back(Waiter {
            op: OpId(99),
            first_chunk: 12,
            end_chunk: 15,
        });
        assert_eq!(table.blocked_span_end(13), Some(15));
        assert_eq!(table.first_blocked_after(11, 20), Some(12));
        table.release(4);
        assert_eq!(table.first_owned_in(0, 10), None);
        assert_eq!(table.job_ops(), 2);
        table.remove(a);
        assert_eq!(table.job_ops(), 1);
    }

    #[test]
    #[should_panic(expected = "are free")]
    fn double_claim_is_an_invariant_violation() {
        let mut table = OpTable::default();
        let a = table.insert(OpKind::Copy(CopyStage::Read), 0, 0);
        table.claim(a, 0, 2);
        table.claim(a, 1, 3);
    }
}
