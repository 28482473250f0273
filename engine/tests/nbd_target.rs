//! Mirrors onto NBD exports served by real servers (qemu-nbd, nbdkit): the target ends equal
//! to the source in both copy modes, guest I/O follows the switch-over to the export, and
//! remote write errors and a dead server act through `on_target_error` (report fails the
//! job, stop pauses it until a resume reconnects, ignore retries). A test whose server
//! program is not installed says so and passes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockmirror_core::job::{CopyMode, ErrorPolicy, IoErrorKind, JobStatus, Operation};
use blockmirror_engine::files::OpenError;
use blockmirror_engine::nbd::NbdUri;
use blockmirror_engine::net::NbdClient;
use blockmirror_engine::{FileMirror, MirrorSetup, MirrorTarget, StartError, WaitOutcome};

const WAIT: Option<Duration> = Some(Duration::from_secs(120));
const MIB: u64 = 1 << 20;

mod common;

/// This suite's temporary directory.
struct Dir(common::TestDir);

impl Dir {
    fn new(name: &str) -> Self {
        Dir(common::TestDir::new("nbd-target", name))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }
}

/// Polls `done` every few milliseconds until it holds; panics after `limit`.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A server child process, killed (and reaped) on drop.
struct Server {
    child: Child,
}

impl Server {
    /// Starts `program args...` and waits until it accepts connections on `socket`.
    /// `None` when the program is not installed.
    fn start(program: &str, args: &[&str], socket: &Path) -> Option<Server> {
        let _ = std::fs::remove_file(socket);
        let child = match Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("skipped: {program} is not installed");
                return None;
            }
            Err(e) => panic!("starting {program}: {e}"),
        };
        let mut server = Server { child };
        wait_until(
            &format!("{program} to listen"),
            Duration::from_secs(30),
            || {
                if let Some(status) = server.child.try_wait().unwrap() {
                    panic!("{program} exited early: {status}");
                }
                std::os::unix::net::UnixStream::connect(socket).is_ok()
            },
        );
        Some(server)
    }

    /// Ends the server with SIGTERM (it closes its image cleanly) and reaps it.
    fn stop(mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill takes only integers; the child is not reaped yet, so its pid is ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        wait_until("the server to exit", Duration::from_secs(30), || {
            self.child.try_wait().unwrap().is_some()
        });
    }

    /// Kills the server at once (SIGKILL) and reaps it.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn unix_uri(socket: &Path) -> NbdUri {
    NbdUri::parse(&format!("nbd+unix:///?socket={}", socket.display())).unwrap()
}

/// A deterministic xorshift stream.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length.div_ceil(8))
            .flat_map(|_| self.next().to_le_bytes())
            .take(length)
            .collect()
    }
}

/// A sparse source of `length` bytes: random data in about half of its 1 MiB blocks (some
/// of those with a zeroed part), holes elsewhere.
fn write_sparse_random(path: &Path, length: u64, seed: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(path).unwrap();
    file.set_len(length).unwrap();
    let mut random = Random(seed);
    for block in 0..length / MIB {
        if random.next() % 2 == 0 {
            let mut data = random.bytes(MIB as usize);
            if block % 3 == 0 {
                data[64 << 10..320 << 10].fill(0);
            }
            file.write_all_at(&data, block * MIB).unwrap();
        }
    }
}

fn assert_same_files(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(x.len(), y.len());
    if let Some(at) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!(
            "{} and {} differ first at byte {at}",
            a.display(),
            b.display()
        );
    }
}

fn setup(mode: CopyMode, on_target_error: ErrorPolicy) -> MirrorSetup {
    let mut setup = MirrorSetup::default();
    setup.config.copy_mode = mode;
    setup.config.granularity = 64 << 10;
    setup.config.on_target_error = on_target_error;
    setup
}

/// Completes a job that reached READY and checks that it ended cleanly, switched over.
fn complete(mirror: &FileMirror) {
    assert_eq!(
        mirror.wait_ready(WAIT),
        WaitOutcome::Reached,
        "{:?}",
        mirror.snapshot()
    );
    mirror.verb(|job| job.complete()).unwrap();
    assert_eq!(mirror.wait_end(WAIT), WaitOutcome::Reached);
    let snap = mirror.snapshot();
    assert_eq!((snap.failure, snap.internal_error), (None, None));
    assert!(mirror.pivoted());
}

/// Guest writes from `threads` threads, `writes` each, at random places (some unaligned).
fn guest_writes(mirror: &Arc<FileMirror>, threads: u64, writes: usize) {
    let length = mirror.length();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mirror = Arc::clone(mirror);
            std::thread::spawn(move || {
                let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                for i in 0..writes {
                    let size = 512 + random.next() % (96 << 10);
                    let offset = random.next() % (length - size);
                    let data = if i % 5 == 4 {
                        vec![0; size as usize]
                    } else {
                        random.bytes(size as usize)
                    };
                    mirror.guest_write(offset, data).unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

fn qemu_nbd_mirror_with_guest_writes(name: &str, mode: CopyMode) {
    let dir = Dir::new(name);
    let (source, target, socket) = (
        dir.path("src.img"),
        dir.path("target.img"),
        dir.path("nbd.sock"),
    );
    write_sparse_random(&source, 32 * MIB, 7);
    // The target holds junk: the source's zero ranges must really be written.
    std::fs::write(&target, vec![0xa5u8; 32 * MIB as usize]).unwrap();
    let Some(server) = Server::start(
        "qemu-nbd",
        &[
            "-f",
            "raw",
            "-t",
            "-e",
            "4",
            "-k",
            socket.to_str().unwrap(),
            target.to_str().unwrap(),
        ],
        &socket,
    ) else {
        return;
    };
    let mut setup = setup(mode, ErrorPolicy::Report);
    // Slow enough that the guest writes race the copy.
    setup.config.speed_bytes_per_sec = 32 * MIB;
    let mirror = Arc::new(
        FileMirror::start_to(&source, MirrorTarget::Nbd(unix_uri(&socket)), setup).unwrap(),
    );
    assert!(mirror.target_handle().is_err());
    guest_writes(&mirror, 4, 40);
    mirror.verb(|job| job.set_speed(0)).unwrap();
    complete(&mirror);
    // After the switch-over, reads come from the export.
    let expected = std::fs::read(&source).unwrap();
    assert_eq!(
        mirror.guest_read(3 * MIB - 100, 2 * MIB).unwrap(),
        expected[(3 * MIB - 100) as usize..(5 * MIB - 100) as usize]
    );
    assert!(mirror.snapshot().stats.flushes >= 1);
    drop(mirror);
    server.stop();
    assert_same_files(&source, &target);
    let compare = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&source)
        .arg(&target)
        .status();
    match compare {
        Ok(status) => assert!(status.success(), "qemu-img compare: {status}"),
        Err(e) => eprintln!("qemu-img compare not run: {e}"),
    }
}

#[test]
fn qemu_nbd_target_ends_equal_in_background_mode_with_guest_writes() {
    qemu_nbd_mirror_with_guest_writes("qemu-bg", CopyMode::Background);
}

#[test]
fn qemu_nbd_target_ends_equal_in_write_blocking_mode_with_guest_writes() {
    qemu_nbd_mirror_with_guest_writes("qemu-wb", CopyMode::WriteBlocking);
}

/// nbdkit's memory plugin (optionally behind more filters), filled with junk first;
/// mirrors, switches over, writes, zeroes and flushes through the mirror, then reads the
/// export back over a connection of its own.
fn nbdkit_memory_mirror(name: &str, filters: &[&str]) {
    let dir = Dir::new(name);
    let (source, socket) = (dir.path("src.img"), dir.path("nbd.sock"));
    write_sparse_random(&source, 8 * MIB, 11);
    let mut args = vec!["-U", socket.to_str().unwrap(), "-f"];
    args.extend_from_slice(filters);
    args.extend_from_slice(&["memory", "8M"]);
    let Some(server) = Server::start("nbdkit", &args, &socket) else {
        return;
    };
    let uri = unix_uri(&socket);
    {
        let client = NbdClient::connect(&uri).unwrap();
        client
            .write(0, &vec![0x5au8; 8 * MIB as usize], false)
            .unwrap();
        client.close();
    }
    let mirror = FileMirror::start_to(
        &source,
        MirrorTarget::Nbd(uri.clone()),
        setup(CopyMode::Background, ErrorPolicy::Report),
    )
    .unwrap();
    complete(&mirror);
    let mut expected = std::fs::read(&source).unwrap();
    // Guest I/O after the switch-over goes to the export.
    mirror.guest_write(MIB + 3, vec![0xee; 10_000]).unwrap();
    expected[(MIB + 3) as usize..(MIB + 10_003) as usize].fill(0xee);
    mirror.guest_write_zeroes(4 * MIB, 300 << 10, true).unwrap();
    expected[(4 * MIB) as usize..(4 * MIB + (300 << 10)) as usize].fill(0);
    mirror.guest_flush().unwrap();
    assert_eq!(
        mirror.guest_read(MIB, 20_000).unwrap(),
        expected[MIB as usize..(MIB + 20_000) as usize]
    );
    let nbd = mirror.nbd_target().expect("an NBD target");
    assert_eq!((nbd.size(), nbd.reconnects()), (8 * MIB, 0));
    drop(mirror);
    // The handle outlives the mirror, as a server serving the export after it would keep it.
    let mut through_target = vec![0u8; 4096];
    nbd.read(MIB, &mut through_target).unwrap();
    assert_eq!(
        through_target,
        expected[MIB as usize..(MIB + 4096) as usize]
    );
    drop(nbd);
    let client = NbdClient::connect(&uri).unwrap();
    let mut back = vec![0u8; expected.len()];
    client.read(0, &mut back).unwrap();
    client.close();
    assert!(back == expected, "the export differs from the source");
    server.stop();
}

#[test]
fn nbdkit_memory_target_ends_equal_and_takes_guest_io_after_the_switch() {
    nbdkit_memory_mirror("memory", &[]);
}

#[test]
fn an_export_without_write_zeroes_gets_zero_buffers() {
    // The nozero filter hides NBD_CMD_WRITE_ZEROES: zero ranges are written as data.
    nbdkit_memory_mirror("nozero", &["--filter=nozero"]);
}

/// An nbdkit serving `target` whose writes fail with EIO while `trigger` exists, and the
/// source (8 MiB of data) it mirrors.
struct FailingExport {
    dir: Dir,
    server: Server,
}

impl FailingExport {
    fn start(name: &str) -> Option<Self> {
        let dir = Dir::new(name);
        let mut random = Random(23);
        std::fs::write(dir.path("src.img"), random.bytes(8 * MIB as usize)).unwrap();
        std::fs::File::create(dir.path("target.img"))
            .unwrap()
            .set_len(8 * MIB)
            .unwrap();
        std::fs::write(dir.path("trigger"), b"").unwrap();
        let socket = dir.path("nbd.sock");
        let error_file = format!("error-pwrite-file={}", dir.path("trigger").display());
        let file = format!("file={}", dir.path("target.img").display());
        let args = [
            "-U",
            socket.to_str().unwrap(),
            "-f",
            "--filter=error",
            "file",
            &file,
            "error-pwrite-rate=100%",
            &error_file,
        ];
        let server = Server::start("nbdkit", &args, &socket)?;
        Some(FailingExport { dir, server })
    }

    fn start_mirror(&self, policy: ErrorPolicy) -> FileMirror {
        let uri = unix_uri(&self.dir.path("nbd.sock"));
        FileMirror::start_to(
            &self.dir.path("src.img"),
            MirrorTarget::Nbd(uri),
            setup(CopyMode::Background, policy),
        )
        .unwrap()
    }

    fn heal(&self) {
        std::fs::remove_file(self.dir.path("trigger")).unwrap();
    }

    fn finish_and_compare(self) {
        self.server.stop();
        assert_same_files(&self.dir.path("src.img"), &self.dir.path("target.img"));
    }
}

#[test]
fn remote_write_errors_with_report_fail_the_job() {
    let Some(export) = FailingExport::start("err-report") else {
        return;
    };
    let mirror = export.start_mirror(ErrorPolicy::Report);
    assert_eq!(mirror.wait_end(WAIT), WaitOutcome::Reached);
    let failure = mirror.snapshot().failure.expect("the job failed");
    assert_eq!(
        (failure.error, failure.operation),
        (IoErrorKind::Io, Some(Operation::Write))
    );
    mirror.close();
}

/// Waits until a job stopped by a `stop` error has paused.
fn wait_paused(mirror: &FileMirror) {
    wait_until("the job to pause", Duration::from_secs(60), || {
        let snap = mirror.snapshot();
        assert!(!snap.finished, "the job ended instead of pausing: {snap:?}");
        snap.status == JobStatus::Paused
    });
}

#[test]
fn remote_write_errors_with_stop_pause_until_resumed() {
    let Some(export) = FailingExport::start("err-stop") else {
        return;
    };
    let mirror = export.start_mirror(ErrorPolicy::Stop);
    wait_paused(&mirror);
    export.heal();
    mirror.verb(|job| job.resume()).unwrap();
    complete(&mirror);
    drop(mirror);
    export.finish_and_compare();
}

#[test]
fn remote_write_errors_with_ignore_are_retried_until_they_stop() {
    let Some(export) = FailingExport::start("err-ignore") else {
        return;
    };
    let mirror = export.start_mirror(ErrorPolicy::Ignore);
    wait_until("a failed write", Duration::from_secs(60), || {
        mirror.snapshot().stats.failed_ops >= 3
    });
    assert!(!mirror.snapshot().ready);
    export.heal();
    complete(&mirror);
    drop(mirror);
    export.finish_and_compare();
}

/// An nbdkit file export of a 16 MiB target, and a mirror of random data copied at 4 MiB/s
/// onto it, past its first 2 MiB.
fn mirror_then_kill(name: &str, policy: ErrorPolicy) -> Option<(Dir, FileMirror)> {
    let dir = Dir::new(name);
    std::fs::write(dir.path("src.img"), Random(31).bytes(16 * MIB as usize)).unwrap();
    std::fs::File::create(dir.path("target.img"))
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let server = start_file_server(&dir)?;
    let mut setup = setup(CopyMode::Background, policy);
    setup.config.speed_bytes_per_sec = 4 * MIB;
    let uri = unix_uri(&dir.path("nbd.sock"));
    let mirror = FileMirror::start_to(&dir.path("src.img"), MirrorTarget::Nbd(uri), setup).unwrap();
    wait_until("2 MiB copied", Duration::from_secs(60), || {
        mirror.snapshot().progress.current >= 2 * MIB
    });
    server.kill();
    Some((dir, mirror))
}

fn start_file_server(dir: &Dir) -> Option<Server> {
    let socket = dir.path("nbd.sock");
    let file = format!("file={}", dir.path("target.img").display());
    Server::start(
        "nbdkit",
        &["-U", socket.to_str().unwrap(), "-f", "file", &file],
        &socket,
    )
}

#[test]
fn a_killed_server_with_report_fails_the_job_cleanly() {
    let Some((_dir, mirror)) = mirror_then_kill("kill-report", ErrorPolicy::Report) else {
        return;
    };
    assert_eq!(mirror.wait_end(WAIT), WaitOutcome::Reached);
    let failure = mirror.snapshot().failure.expect("the job failed");
    assert_eq!(
        (failure.error, failure.operation),
        (IoErrorKind::Io, Some(Operation::Write))
    );
    // Every thread ends.
    mirror.close();
}

#[test]
fn a_killed_server_with_stop_pauses_and_a_new_server_lets_it_complete() {
    let Some((dir, mirror)) = mirror_then_kill("kill-stop", ErrorPolicy::Stop) else {
        return;
    };
    wait_paused(&mirror);
    let server = start_file_server(&dir).unwrap();
    mirror.verb(|job| job.set_speed(0)).unwrap();
    mirror.verb(|job| job.resume()).unwrap();
    complete(&mirror);
    assert!(mirror.nbd_target().unwrap().reconnects() >= 1);
    drop(mirror);
    server.stop();
    assert_same_files(&dir.path("src.img"), &dir.path("target.img"));
}

#[test]
fn a_killed_server_with_ignore_is_retried_until_a_new_server_answers() {
    let Some((dir, mirror)) = mirror_then_kill("kill-ignore", ErrorPolicy::Ignore) else {
        return;
    };
    // Each retry (paced by the job's back-off) tries one connection, refused for now.
    wait_until(
        "retries against the dead server",
        Duration::from_secs(60),
        || mirror.snapshot().stats.failed_ops >= 3,
    );
    let server = start_file_server(&dir).unwrap();
    mirror.verb(|job| job.set_speed(0)).unwrap();
    complete(&mirror);
    assert!(mirror.nbd_target().unwrap().reconnects() >= 1);
    drop(mirror);
    server.stop();
    assert_same_files(&dir.path("src.img"), &dir.path("target.img"));
}

#[test]
fn another_size_a_read_only_export_or_no_server_is_refused_at_start() {
    let dir = Dir::new("refused");
    let (source, socket) = (dir.path("src.img"), dir.path("nbd.sock"));
    std::fs::write(&source, vec![1u8; 2 * MIB as usize]).unwrap();
    let start = || {
        FileMirror::start_to(
            &source,
            MirrorTarget::Nbd(unix_uri(&socket)),
            MirrorSetup::default(),
        )
    };
    match start() {
        Err(StartError::Open(OpenError::Os { path, .. })) => {
            assert!(path.to_str().unwrap().starts_with("nbd+unix:"))
        }
        other => panic!("no server: {:?}", other.map(|_| ())),
    }
    let Some(server) = Server::start(
        "nbdkit",
        &["-U", socket.to_str().unwrap(), "-f", "memory", "1M"],
        &socket,
    ) else {
        return;
    };
    match start() {
        Err(StartError::Open(OpenError::Invalid(msg))) => {
            assert!(
                msg.contains("Source and target image have different sizes"),
                "{msg}"
            );
            assert!(msg.contains("2097152") && msg.contains("1048576"), "{msg}");
        }
        other => panic!("another size: {:?}", other.map(|_| ())),
    }
    server.stop();
    let server = Server::start(
        "nbdkit",
        &["-U", socket.to_str().unwrap(), "-f", "-r", "memory", "2M"],
        &socket,
    )
    .unwrap();
    match start() {
        Err(StartError::Open(OpenError::Invalid(msg))) => {
            assert!(msg.contains("read-only"), "{msg}")
        }
        other => panic!("read-only: {:?}", other.map(|_| ())),
    }
    server.stop();
    assert_eq!(std::fs::read(&source).unwrap(), vec![1u8; 2 * MIB as usize]);
}
