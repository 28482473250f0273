//! The blocking `NbdClient` against real NBD servers: qemu-nbd over a sparse raw file and
//! nbdkit's memory plugin. Each server runs as a child process killed by a guard.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use blockmirror_engine::nbd::{Extent, NbdAddress, NbdUri};
use blockmirror_engine::net::{NbdClient, NbdClientError};

/// A server child process and its scratch directory, both gone on drop.
struct Peer {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Peer {
    fn uri(&self) -> NbdUri {
        NbdUri {
            address: NbdAddress::Unix(self.socket.clone()),
            export: String::new(),
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn scratch(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("bm-nbd-{name}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `command` and waits (a bounded number of polls) for its socket to accept.
fn start(mut command: Command, dir: PathBuf, socket: PathBuf) -> Peer {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let mut peer = Peer { child, dir, socket };
    for _ in 0..1000 {
        if peer.socket.exists() && std::os::unix::net::UnixStream::connect(&peer.socket).is_ok() {
            return peer;
        }
        if let Ok(Some(status)) = peer.child.try_wait() {
            panic!("server exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "the server's socket {} never appeared",
        peer.socket.display()
    );
}

/// qemu-nbd serving a sparse raw file of `size` bytes, persistent (several connections).
fn qemu_nbd(size: u64) -> Option<Peer> {
    if !have("qemu-nbd") {
        eprintln!("qemu-nbd not installed; skipped");
        return None;
    }
    let dir = scratch("qemu");
    let image = dir.join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(size)
        .unwrap();
    let socket = dir.join("nbd.sock");
    let mut command = Command::new("qemu-nbd");
    command
        .args(["-f", "raw", "-t", "-k"])
        .arg(&socket)
        .arg(&image);
    Some(start(command, dir, socket))
}

/// nbdkit's memory plugin with `size` (e.g. "64M"), in the foreground.
fn nbdkit_memory(size: &str) -> Option<Peer> {
    if !have("nbdkit") {
        eprintln!("nbdkit not installed; skipped");
        return None;
    }
    let dir = scratch("nbdkit");
    let socket = dir.join("nbd.sock");
    let mut command = Command::new("nbdkit");
    command.arg("-U").arg(&socket).args(["-f", "memory", size]);
    Some(start(command, dir, socket))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i / 7) as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// Write, read back, flush, write zeroes, trim, on any server.
fn exercise(client: &NbdClient) {
    let data = pattern(256 << 10, 1);
    client.write(1 << 20, &data, false).unwrap();
    let mut back = vec![0; data.len()];
    client.read(1 << 20, &mut back).unwrap();
    assert_eq!(back, data);
    client.write(2 << 20, &data[..4096], true).unwrap();
    client.flush().unwrap();
    client
        .write_zeroes(1 << 20, 64 << 10, false, false)
        .unwrap();
    client
        .write_zeroes((1 << 20) + (64 << 10), 64 << 10, true, false)
        .unwrap();
    client.read(1 << 20, &mut back).unwrap();
    assert!(back[..128 << 10].iter().all(|&b| b == 0));
    assert_eq!(&back[128 << 10..], &data[128 << 10..]);
    client.trim((1 << 20) + (128 << 10), 64 << 10).unwrap();
    let end = client.info().size;
    assert!(matches!(
        client.read(end - 512, &mut [0; 1024]),
        Err(NbdClientError::OutOfRange { .. })
    ));
}

/// Extents covering exactly `length` bytes, as `block_status` promises.
fn assert_covers(extents: &[Extent], length: u64) {
    assert!(extents.iter().all(|e| e.length > 0));
    assert_eq!(
        extents.iter().map(|e| u64::from(e.length)).sum::<u64>(),
        length
    );
}

#[test]
fn qemu_nbd_commands_and_sparse_block_status() {
    let Some(peer) = qemu_nbd(16 << 20) else {
        return;
    };
    let client = NbdClient::connect(&peer.uri()).unwrap();
    let info = client.info().clone();
    assert_eq!(info.size, 16 << 20);
    assert!(!info.read_only && info.can_flush && info.can_write_zeroes);

    let extents = client.block_status(0, 16 << 20).unwrap();
    assert_covers(&extents, 16 << 20);
    assert!(
        extents.iter().all(|e| e.flags & Extent::ZERO != 0),
        "a new sparse file reads as zeroes: {extents:?}"
    );

    exercise(&client);
    client.write(8 << 20, &[9; 65536], false).unwrap();
    client.flush().unwrap();
    let extents = client.block_status(8 << 20, 1 << 20).unwrap();
    assert_covers(&extents, 1 << 20);
    assert_eq!(
        extents[0].flags & (Extent::HOLE | Extent::ZERO),
        0,
        "written data is allocated: {extents:?}"
    );
    assert!(
        extents.last().unwrap().flags & Extent::ZERO != 0,
        "the rest is still a hole: {extents:?}"
    );
    client.close();
    assert!(matches!(client.flush(), Err(NbdClientError::Disconnected)));
}

#[test]
fn nbdkit_memory_commands_and_block_status() {
    let Some(peer) = nbdkit_memory("64M") else {
        return;
    };
    let client = NbdClient::connect(&peer.uri()).unwrap();
    assert_eq!(client.info().size, 64 << 20);
    exercise(&client);
    let extents = client.block_status(0, 64 << 20).unwrap();
    assert_covers(&extents, 64 << 20);
    assert!(
        extents.iter().any(|e| e.flags & Extent::HOLE != 0),
        "most of a fresh memory disk is a hole: {extents:?}"
    );
}

#[test]
fn nbdkit_io_longer_than_the_maximum_payload_is_split() {
    let Some(peer) = nbdkit_memory("64M") else {
        return;
    };
    let client = NbdClient::connect(&peer.uri()).unwrap();
    assert!(client.info().block_size.maximum <= 32 << 20);
    let data = pattern(40 << 20, 5);
    client.write(4096, &data, false).unwrap();
    let mut back = vec![0; data.len()];
    client.read(4096, &mut back).unwrap();
    assert!(back == data);
    client.write_zeroes(0, 64 << 20, false, false).unwrap();
    client.read(4096, &mut back[..1 << 20]).unwrap();
    assert!(back[..1 << 20].iter().all(|&b| b == 0));
}

#[test]
fn several_threads_share_one_client() {
    for peer in [nbdkit_memory("64M"), qemu_nbd(64 << 20)]
        .into_iter()
        .flatten()
    {
        let client = NbdClient::connect(&peer.uri()).unwrap();
        std::thread::scope(|scope| {
            for t in 0..8u8 {
                let client = &client;
                scope.spawn(move || {
                    let base = u64::from(t) * (4 << 20);
                    for round in 0..20u8 {
                        let data = pattern(64 << 10, t.wrapping_mul(31).wrapping_add(round));
                        let offset = base + u64::from(round) * (64 << 10);
                        client.write(offset, &data, round % 5 == 0).unwrap();
                        let mut back = vec![0; data.len()];
                        client.read(offset, &mut back).unwrap();
                        assert_eq!(back, data, "thread {t} round {round}");
                    }
                });
            }
        });
        client.flush().unwrap();
    }
}

#[test]
fn a_killed_server_fails_every_call_promptly() {
    for mut peer in [nbdkit_memory("64M"), qemu_nbd(64 << 20)]
        .into_iter()
        .flatten()
    {
        let client = Arc::new(NbdClient::connect(&peer.uri()).unwrap());
        let (done, finished) = crossbeam_channel::unbounded();
        let (started, running) = crossbeam_channel::unbounded();
        for t in 0..4u64 {
            let client = Arc::clone(&client);
            let done = done.clone();
            let started = started.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0; 1 << 20];
                let mut calls = 0u64;
                let result = loop {
                    let offset = (t * 8 + calls % 8) << 20;
                    let result = if calls % 2 == 0 {
                        client.write(offset, &buf, false)
                    } else {
                        client.read(offset, &mut buf)
                    };
                    calls += 1;
                    if calls == 4 {
                        let _ = started.send(());
                    }
                    if let Err(error) = result {
                        break error;
                    }
                };
                let _ = done.send(result);
            });
        }
        for _ in 0..4 {
            running
                .recv_timeout(Duration::from_secs(30))
                .expect("every thread makes calls");
        }
        peer.kill();
        for _ in 0..4 {
            let error = finished
                .recv_timeout(Duration::from_secs(30))
                .expect("no call hangs after the server died");
            assert!(matches!(error, NbdClientError::Disconnected), "{error}");
        }
        assert!(matches!(client.flush(), Err(NbdClientError::Disconnected)));
        assert!(matches!(
            client.read(0, &mut [0; 512]),
            Err(NbdClientError::Disconnected)
        ));
    }
}

#[test]
fn connecting_to_nothing_fails_with_the_uri() {
    let dir = scratch("none");
    let uri = NbdUri {
        address: NbdAddress::Unix(dir.join("missing.sock")),
        export: String::new(),
    };
    match NbdClient::connect(&uri) {
        Err(NbdClientError::Connect { uri: text, .. }) => assert!(text.contains("missing.sock")),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_export_fails_the_handshake() {
    // qemu-nbd checks export names (nbdkit serves any name by default).
    let Some(qemu) = qemu_nbd(1 << 20) else {
        return;
    };
    let mut uri = qemu.uri();
    uri.export = "no-such-export".into();
    match NbdClient::connect(&uri) {
        Err(NbdClientError::Handshake(error)) => {
            assert!(error.to_string().contains("no-such-export"), "{error}")
        }
        other => panic!("{other:?}"),
    }
}
