//! Sending what a sans-io protocol session produced (NBD or QMP), shared by the export's
//! connections and the monitor's clients.

use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::net::Stream;

/// A session that queues bytes to send, in order.
pub(super) trait Output {
    /// The next bytes to send, if any.
    fn next_output(&mut self) -> Option<Vec<u8>>;
}

impl Output for crate::nbd::ServerSession {
    fn next_output(&mut self) -> Option<Vec<u8>> {
        self.poll_output()
    }
}

impl Output for crate::qmp::QmpSession {
    fn next_output(&mut self) -> Option<Vec<u8>> {
        self.poll_output()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes whatever `session` has produced. The writer lock is taken before the session
/// lock, by every thread that sends, so bytes leave in the order the session made them. A
/// write error means the peer is gone: the stream is shut down and its reader ends.
pub(super) fn send_output<S: Output>(writer: &Mutex<Stream>, session: &Mutex<S>) {
    let mut writer = lock(writer);
    let mut out = Vec::new();
    {
        let mut session = lock(session);
        while let Some(bytes) = session.next_output() {
            out.extend_from_slice(&bytes);
        }
    }
    if !out.is_empty() && writer.write_all(&out).is_err() {
        let _ = writer.shutdown(std::net::Shutdown::Both);
    }
}
