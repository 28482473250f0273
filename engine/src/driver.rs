//! The driver thread of a running mirror: it gives the job its clock (the speed limit, the
//! retry back-off and auto-converge's rate watch all wait on time) and notices the end.

use std::time::Duration;

use blockmirror_core::job::Nanos;

use crate::shared::Shared;

/// The driver thread: calls `handle_timeout` when the job asked for it and sleeps until the
/// next deadline or a wake-up; exits once the job has ended and all I/O has finished.
pub(crate) fn drive(shared: &Shared) {
    let mut st = shared.lock();
    loop {
        if st.finished() {
            shared.changed.notify_all();
            return;
        }
        let now = shared.now();
        st.job.handle_timeout(now);
        shared.pump(&mut st);
        let wait = match st.job.poll_timeout() {
            // Never spin: a deadline already due is retried after a short pause.
            Some(deadline) => Duration::from_nanos(deadline.0.saturating_sub(now.0).max(50_000)),
            // Idle wake-ups also feed the clock to the job's auto-converge rate watch.
            None => Duration::from_millis(if st.job.config().auto_converge { 100 } else { 500 }),
        };
        st.driver_sleep_until = Some(Nanos(now.0 + wait.as_nanos() as u64));
        st = shared.wait_driver(st, wait);
    }
}
