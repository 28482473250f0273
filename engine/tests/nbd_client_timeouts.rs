//! The NBD client's time limits against a fake server on a Unix socket (built on the
//! crate's own sans-io `ServerSession`, so each connection can be told to answer, to go
//! silent after the handshake, or to say nothing at all): a request that is never answered
//! fails with `TimedOut` after the request timeout, every other caller then fails at once,
//! the socket is shut down (the server sees its end) and `close` returns; a listener that
//! never greets fails the connect within the connect timeout; an `NbdTarget` whose
//! request timed out connects again on its next operation, as after a dropped connection.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockmirror_engine::nbd::{
    Command, ExportInfo, NbdAddress, NbdUri, ReplyPayload, ServerEvent, ServerLimits, ServerSession,
};
use blockmirror_engine::net::{ClientConfig, NbdClient, NbdClientError};
use blockmirror_engine::target::NbdTarget;

const SIZE: u64 = 8 << 20;
/// Short enough to keep the tests quick, long enough that a loaded machine answers a
/// healthy request well within it.
const SHORT: Duration = Duration::from_millis(400);
/// The most any step here may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(60);

fn short_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: SHORT,
        request_timeout: SHORT,
    }
}

/// What one connection of the fake server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Accepts and sends nothing, not even the greeting.
    Silent,
    /// Completes the handshake, then reads every request and answers none.
    Stall,
    /// Completes the handshake, then reads nothing more (the socket's buffers fill up).
    Deaf,
    /// Completes the handshake and answers every request (reads with zeroes).
    Answer,
}

/// What the fake server saw, with the connection's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The handshake ended.
    Ready(usize),
    /// A request's bytes arrived after the handshake (a stalling connection counts reads).
    Request(usize),
    /// The client's end of the socket closed.
    Closed(usize),
}

struct FakeServer {
    dir: PathBuf,
    uri: NbdUri,
    seen: Receiver<Seen>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl FakeServer {
    /// Listens on a fresh socket; connection `i` behaves as `behaviours[i]` (the last one
    /// for every later connection).
    fn start(name: &str, behaviours: Vec<Behaviour>) -> Self {
        let dir =
            std::env::temp_dir().join(format!("bm-nbd-timeouts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("nbd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let (sender, seen) = mpsc::channel();
        // The accepting thread outlives the test's use of it, blocked in accept: harmless in
        // a test process.
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let behaviour = behaviours.get(i).or(behaviours.last()).copied().unwrap();
                let sender = sender.clone();
                std::thread::spawn(move || serve(i, stream, behaviour, &sender));
            }
        });
        let uri = NbdUri {
            address: NbdAddress::Unix(socket),
            export: "exp".into(),
        };
        FakeServer { dir, uri, seen }
    }

    /// Waits (at most `LIMIT`) until the server reports `what`.
    fn wait_for(&self, what: Seen) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seen.recv_timeout(left) {
                Ok(seen) if seen == what => return,
                Ok(_) => {}
                Err(_) => panic!("the fake server never saw {what:?}"),
            }
        }
    }
}

fn serve(i: usize, mut stream: UnixStream, behaviour: Behaviour, seen: &Sender<Seen>) {
    if behaviour != Behaviour::Silent {
        let _ = run_session(i, &mut stream, behaviour, seen);
    }
    if behaviour == Behaviour::Deaf {
        // Hold the socket open, unread, for the rest of the test process.
        loop {
            std::thread::park();
        }
    }
    // Silent, or stalling after the handshake: read (and drop) until the client's end closes.
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        let _ = seen.send(Seen::Request(i));
    }
    let _ = seen.send(Seen::Closed(i));
}

/// The handshake and, when answering, the transmission phase. Returns once the session is
/// over, or right after the handshake when stalling.
fn run_session(
    i: usize,
    stream: &mut UnixStream,
    behaviour: Behaviour,
    seen: &Sender<Seen>,
) -> std::io::Result<()> {
    let mut session =
        ServerSession::new(vec![ExportInfo::new("exp", SIZE)], ServerLimits::default());
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let mut requests = Vec::new();
        while let Some(event) = session.poll_event() {
            match event {
                ServerEvent::ExportChosen { .. } => {
                    let _ = seen.send(Seen::Ready(i));
                }
                ServerEvent::Request(request) => requests.push(request),
                _ => {}
            }
        }
        for request in requests {
            let _ = seen.send(Seen::Request(i));
            let reply = match request.command {
                Command::Read { length, .. } => ReplyPayload::Data(vec![0; length as usize]),
                _ => ReplyPayload::None,
            };
            session.handle_reply(request.handle, Ok(reply));
        }
        while let Some(bytes) = session.poll_output() {
            stream.write_all(&bytes)?;
        }
        let stalls = matches!(behaviour, Behaviour::Stall | Behaviour::Deaf);
        if session.is_closed() || (stalls && session.export().is_some()) {
            return Ok(());
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        session.handle_input(&buf[..n]);
    }
}

/// Runs `f` on a thread of its own and returns its result with how long it took; fails
/// the test if it takes longer than `LIMIT` (a hang).
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> (T, Duration) {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let start = Instant::now();
        let value = f();
        let _ = sender.send((value, start.elapsed()));
    });
    receiver
        .recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("{what} did not return"))
}

#[test]
fn unanswered_requests_time_out_and_end_the_connection_for_every_caller() {
    let server = FakeServer::start("stall", vec![Behaviour::Stall]);
    let client = Arc::new(NbdClient::connect_with(&server.uri, short_config()).unwrap());
    server.wait_for(Seen::Ready(0));

    let callers: Vec<_> = (0..4u64)
        .map(|n| {
            let client = Arc::clone(&client);
            std::thread::spawn(move || {
                let start = Instant::now();
                let result = match n {
                    0 => client.write(0, &[7u8; 4096], false),
                    1 => client.read(4096, &mut [0u8; 4096]),
                    2 => client.flush(),
                    _ => client.write_zeroes(8192, 65536, false, false),
                };
                (result, start.elapsed())
            })
        })
        .collect();
    let (outcomes, _) = bounded("the callers", move || {
        callers
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });

    let mut timed_out = 0;
    for (result, elapsed) in &outcomes {
        match result {
            Err(NbdClientError::TimedOut { after, .. }) => {
                assert_eq!(*after, SHORT);
                assert!(*elapsed >= SHORT, "timed out early, after {elapsed:?}");
                timed_out += 1;
            }
            Err(NbdClientError::Disconnected) => {}
            other => panic!("an unanswered request returned {other:?}"),
        }
    }
    assert!(
        timed_out >= 1,
        "no caller saw its own deadline pass: {outcomes:?}"
    );
    // The socket was shut down: the server sees the client's end without a close call.
    server.wait_for(Seen::Closed(0));
    // Later calls fail at once, and closing does not wait for the silent server.
    assert!(matches!(client.flush(), Err(NbdClientError::Disconnected)));
    let client_for_close = Arc::clone(&client);
    bounded("close", move || client_for_close.close());
}

#[test]
fn a_write_the_server_never_reads_times_out() {
    // This server takes nothing after the handshake, so a write larger than the socket's
    // buffers blocks, and the write itself must give up.
    let server = FakeServer::start("unread", vec![Behaviour::Deaf]);
    let client = Arc::new(NbdClient::connect_with(&server.uri, short_config()).unwrap());
    server.wait_for(Seen::Ready(0));
    let data = vec![1u8; SIZE as usize];
    let writer = Arc::clone(&client);
    let (result, _) = bounded("the write", move || writer.write(0, &data, false));
    assert!(
        matches!(
            result,
            Err(NbdClientError::TimedOut {
                operation: "write",
                ..
            })
        ),
        "{result:?}"
    );
    bounded("close", move || client.close());
}

#[test]
fn a_listener_that_never_greets_fails_the_connect_within_the_connect_timeout() {
    let server = FakeServer::start("silent", vec![Behaviour::Silent]);
    let uri = server.uri.clone();
    let (result, elapsed) = bounded("connect", move || {
        NbdClient::connect_with(&uri, short_config())
    });
    match result {
        Err(NbdClientError::Connect { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::TimedOut)
        }
        other => panic!("connecting to a silent listener returned {other:?}"),
    }
    assert!(elapsed >= SHORT, "gave up early, after {elapsed:?}");
}

#[test]
fn zero_timeouts_are_refused() {
    let server = FakeServer::start("zero", vec![Behaviour::Answer]);
    for config in [
        ClientConfig {
            connect_timeout: Duration::ZERO,
            ..ClientConfig::default()
        },
        ClientConfig {
            request_timeout: Duration::ZERO,
            ..ClientConfig::default()
        },
    ] {
        match NbdClient::connect_with(&server.uri, config) {
            Err(NbdClientError::Connect { source, .. }) => {
                assert_eq!(source.kind(), ErrorKind::InvalidInput)
            }
            other => panic!("{config:?} gave {other:?}"),
        }
    }
}

#[test]
fn a_target_whose_request_timed_out_connects_again_on_its_next_operation() {
    // The first connection goes silent after the handshake; the next ones answer.
    let server = FakeServer::start("reconnect", vec![Behaviour::Stall, Behaviour::Answer]);
    let target = Arc::new(NbdTarget::open_with(&server.uri, SIZE, 65536, short_config()).unwrap());
    server.wait_for(Seen::Ready(0));

    let first = Arc::clone(&target);
    let (result, _) = bounded("the first write", move || first.write(0, &[3u8; 4096]));
    let error = result.expect_err("the stalled connection answered");
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    // No errno: the job counts it as a plain I/O error, and its target policy acts.
    assert_eq!(error.raw_os_error(), None);
    server.wait_for(Seen::Closed(0));

    let second = Arc::clone(&target);
    let (result, _) = bounded("the second write", move || second.write(0, &[3u8; 4096]));
    result.expect("the write after the reconnect failed");
    assert_eq!(target.reconnects(), 1);
    server.wait_for(Seen::Ready(1));
}
