//! The server-wide budget of request payload bytes in flight (write data received, read
//! data to be sent), shared by every connection.
//!
//! Each connection's protocol session bounds its own buffers; this bounds their sum, so the
//! server's memory does not grow with the number of clients times their request size: a
//! connection's reader waits before handing a request on while the budget is spent, and
//! the I/O pool gives the bytes back once the reply is out.

use std::sync::{Condvar, Mutex, PoisonError};

/// The budget (see the module doc).
pub(super) struct PayloadBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

impl PayloadBudget {
    pub(super) fn new(limit: u64) -> Self {
        Self {
            limit,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Takes `bytes`, waiting while they do not fit. A request larger than the whole budget
    /// still goes through once nothing else is in flight, so no request waits forever.
    pub(super) fn acquire(&self, bytes: u64) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used > 0 && used.saturating_add(bytes) > self.limit {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *used += bytes;
    }

    /// Gives back what `acquire` took.
    pub(super) fn release(&self, bytes: u64) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        *used = used.saturating_sub(bytes);
        drop(used);
        self.freed.notify_all();
    }

    /// Bytes in flight now.
    #[cfg(test)]
    fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_request_waits_until_earlier_ones_give_their_bytes_back() {
        let budget = Arc::new(PayloadBudget::new(10));
        budget.acquire(6);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || {
                budget.acquire(6);
                tx.send(()).unwrap();
            })
        };
        // The second request cannot fit while the first holds its bytes.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(50))
            .is_err());
        budget.release(6);
        rx.recv().unwrap();
        waiter.join().unwrap();
        assert_eq!(budget.used(), 6);
    }

    #[test]
    fn a_request_larger_than_the_budget_passes_alone() {
        let budget = PayloadBudget::new(10);
        budget.acquire(100);
        budget.release(100);
        assert_eq!(budget.used(), 0);
    }
}
