//! The QMP monitor: a unix socket (mode 0600) where management clients send QEMU's
//! commands. Each client gets its own protocol session ([`crate::qmp::QmpSession`]), a
//! reader thread that runs its commands in order, and an event thread that sends it every
//! job event (QMP sends events only after negotiation; the session drops earlier ones).
//!
//! Unlike qemu-storage-daemon's monitor, which greets one client per socket, any number of
//! clients may connect, one after another or at once.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::jobs::JobHost;
use super::listener::{ListenAddress, Listener};
use super::output::{lock, send_output};
use crate::net::Stream;
use crate::qmp::{Command, Greeting, QmpSession};

/// What the monitor's threads share.
struct Shared {
    listener: Listener,
    jobs: Arc<JobHost>,
    on_quit: Arc<dyn Fn() + Send + Sync>,
    stopping: AtomicBool,
    /// Connected clients' streams by number (to shut down on stop), and every thread.
    clients: Mutex<Clients>,
}

#[derive(Default)]
struct Clients {
    next: u64,
    streams: HashMap<u64, Stream>,
    threads: Vec<JoinHandle<()>>,
}

/// A running monitor; `stop` ends it.
pub(super) struct Monitor {
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Monitor {
    /// Listens on `path` and serves clients until `stop`. `on_quit` runs when a client
    /// sends `quit` (after its reply is out).
    pub(super) fn start(
        path: &Path,
        jobs: Arc<JobHost>,
        on_quit: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<Self> {
        let listener = Listener::bind(&ListenAddress::Unix(path.to_owned()))?;
        let shared = Arc::new(Shared {
            listener,
            jobs,
            on_quit,
            stopping: AtomicBool::new(false),
            clients: Mutex::new(Clients::default()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name("bm-qmp-accept".into())
            .spawn(move || accept_loop(&accept_shared))?;
        Ok(Self {
            shared,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// Stops accepting, disconnects every client and waits for their threads.
    pub(super) fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.listener.wake();
        if let Some(accept) = lock(&self.accept).take() {
            let _ = accept.join();
        }
        let threads = {
            let mut clients = lock(&self.shared.clients);
            for stream in clients.streams.values() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            std::mem::take(&mut clients.threads)
        };
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>) {
    loop {
        let stream = match shared.listener.accept() {
            Ok(stream) => stream,
            Err(_) if shared.stopping.load(Ordering::SeqCst) => return,
            Err(_) => continue,
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let (Ok(reader), Ok(writer), Ok(kept)) =
            (stream.try_clone(), stream.try_clone(), stream.try_clone())
        else {
            continue;
        };
        let (bye_tx, bye_rx) = crossbeam_channel::bounded::<()>(0);
        let client = Arc::new(Client {
            session: Mutex::new(QmpSession::new(Greeting::blockmirror())),
            writer: Mutex::new(writer),
            bye: Mutex::new(Some(bye_tx)),
        });
        let events = shared.jobs.subscribe();
        let mut clients = lock(&shared.clients);
        let id = clients.next;
        clients.next += 1;
        clients.streams.insert(id, kept);
        clients.threads.retain(|t| !t.is_finished());
        let event_client = Arc::clone(&client);
        if let Ok(t) = std::thread::Builder::new()
            .name("bm-qmp-events".into())
            .spawn(move || loop {
                crossbeam_channel::select! {
                    recv(events) -> event => match event {
                        Ok(event) => {
                            lock(&event_client.session).send_event(event);
                            event_client.flush();
                        }
                        Err(_) => return,
                    },
                    // The client left (its sender was dropped).
                    recv(bye_rx) -> _ => return,
                }
            })
        {
            clients.threads.push(t);
        }
        let reader_shared = Arc::clone(shared);
        if let Ok(t) = std::thread::Builder::new()
            .name("bm-qmp-client".into())
            .spawn(move || {
                client.run(reader, &reader_shared);
                lock(&reader_shared.clients).streams.remove(&id);
            })
        {
            clients.threads.push(t);
        }
    }
}

/// One monitor client.
struct Client {
    session: Mutex<QmpSession>,
    writer: Mutex<Stream>,
    /// Dropped when the client leaves, which ends its event thread.
    bye: Mutex<Option<crossbeam_channel::Sender<()>>>,
}

impl Client {
    fn flush(&self) {
        send_output(&self.writer, &self.session);
    }

    fn run(&self, mut reader: Stream, shared: &Shared) {
        self.flush(); // the greeting
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            lock(&self.session).handle_input(&buf[..n]);
            loop {
                let pending = lock(&self.session).poll_command();
                let Some(pending) = pending else { break };
                let quit = pending.command == Command::Quit;
                let result = shared.jobs.execute(pending.command);
                lock(&self.session).handle_result(pending.id, result);
                self.flush();
                // After `quit` the connection stays open until the server stops: closing it
                // at once races QEMU's own client, which can meet the end of the stream
                // before it has handed the reply to its caller.
                if quit {
                    (shared.on_quit)();
                }
            }
            self.flush();
        }
        drop(lock(&self.bye).take());
        let _ = lock(&self.writer).shutdown(std::net::Shutdown::Both);
    }
}
