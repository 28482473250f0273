//! The session checked against the real thing: the same request bytes go to a
//! `qemu-storage-daemon` monitor and to a [`QmpSession`], and the replies must agree in
//! class, description and echoed `id`.
//!
//! The daemon has one file node and no jobs, so the few requests that reach the driver are
//! answered the way a driver with no jobs answers (empty lists, "not found" errors from
//! `verbs`). Without `qemu-storage-daemon` on the `PATH` the test says so and passes,
//! unless `BLOCKMIRROR_REQUIRE_QEMU=1` asks for it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::verbs::{block_job_not_found, job_not_found};
use super::{Command, Greeting, QmpError, QmpSession};

/// A running `qemu-storage-daemon` with a monitor socket, killed on drop.
struct Daemon {
    child: Child,
    dir: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Daemon {
    /// Starts the daemon; `None` when it is not installed.
    fn start() -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("bm-qmp-reference-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("make the temp dir");
        let socket = dir.join("qmp.sock");
        let image = dir.join("source.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(1 << 20))
            .expect("make the image");
        let spawned = Process::new("qemu-storage-daemon")
            .arg("--chardev")
            .arg(format!(
                "socket,path={},server=on,wait=off,id=q",
                socket.display()
            ))
            .args(["--monitor", "chardev=q"])
            .arg("--blockdev")
            .arg(format!(
                "driver=file,node-name=f,filename={}",
                image.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&dir);
                return None;
            }
            Err(error) => panic!("qemu-storage-daemon did not start: {error}"),
        };
        // The socket appears once the daemon listens: poll for it, a bounded number of times.
        let mut stream = None;
        for _ in 0..500 {
            if let Some(status) = child.try_wait().expect("poll the daemon") {
                panic!("qemu-storage-daemon exited early: {status}");
            }
            if let Ok(connected) = UnixStream::connect(&socket) {
                stream = Some(connected);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let writer = match stream {
            Some(stream) => stream,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the monitor socket never accepted a connection");
            }
        };
        writer
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set a read timeout");
        let reader = BufReader::new(writer.try_clone().expect("clone the socket"));
        Some(Self {
            child,
            dir,
            reader,
            writer,
        })
    }

    fn read_line(&mut self) -> Value {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("a line from the daemon in time");
        assert!(
            line.ends_with("\r\n"),
            "QEMU ends lines with CRLF: {line:?}"
        );
        serde_json::from_str(&line).expect("the daemon sends JSON")
    }

    /// Sends one request line and returns its reply (events in between are skipped).
    fn request(&mut self, line: &[u8]) -> Value {
        self.writer.write_all(line).expect("send to the daemon");
        loop {
            let message = self.read_line();
            if message.get("event").is_none() {
                return message;
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Our reply to one request line, answering driver commands as a driver with no jobs would.
fn our_reply(session: &mut QmpSession, line: &[u8]) -> Value {
    session.handle_input(line);
    if let Some(pending) = session.poll_command() {
        let result: Result<Value, QmpError> = match &pending.command {
            Command::QueryBlockJobs | Command::QueryJobs => Ok(json!([])),
            Command::BlockJobComplete { device }
            | Command::BlockJobCancel { device, .. }
            | Command::BlockJobPause { device }
            | Command::BlockJobResume { device }
            | Command::BlockJobSetSpeed { device, .. } => Err(block_job_not_found(device)),
            Command::BlockJobChange { id, .. } => Err(block_job_not_found(id)),
            Command::JobDismiss { .. }
            | Command::JobPause { .. }
            | Command::JobResume { .. }
            | Command::JobCancel { .. }
            | Command::JobComplete { .. } => Err(job_not_found()),
            other => panic!("the script sends no {other:?}"),
        };
        session.handle_result(pending.id, result);
    }
    let reply = session.poll_output().expect("one reply per request");
    assert!(session.poll_output().is_none(), "exactly one reply");
    serde_json::from_slice(&reply).expect("we send JSON")
}

/// The requests, one per line, in order: before negotiation, negotiation, then refusals of
/// every kind and the answers of a server without jobs.
const SCRIPT: &[&str] = &[
    r#"{"execute": "query-block-jobs", "id": 1}"#,
    r#"{"execute": "drive-mirror", "arguments": {"sync": "bogus"}}"#,
    r#"{"execute": "qmp_capabilities", "id": "neg"}"#,
    r#"{"execute": "qmp_capabilities"}"#,
    r#"{"execute": "no-such-thing", "id": [1, 2]}"#,
    r#"{"execute": "drive-mirror", "arguments": {"device": "f", "target": "/nonexistent/x", "sync": "bogus"}}"#,
    r#"{"execute": "drive-mirror", "arguments": {"device": "f", "target": "/nonexistent/x", "sync": "full", "speed": "fast"}}"#,
    r#"{"execute": "drive-mirror", "arguments": {"device": "f", "target": "/nonexistent/x", "sync": "full", "speed": 1.5}}"#,
    r#"{"execute": "drive-mirror", "arguments": {"device": "f", "target": "/nonexistent/x", "sync": "full", "wat": 1}}"#,
    r#"{"execute": "drive-mirror", "arguments": {"device": "f", "target": "/nonexistent/x"}}"#,
    r#"{"execute": "drive-mirror", "arguments": {"device": "f", "sync": "full"}}"#,
    r#"{"execute": "drive-mirror", "arguments": {"speed": "x", "sync": "bogus", "device": "f", "target": "/nonexistent/x"}}"#,
    r#"{"execute": "drive-mirror", "arguments": {"device": "f", "target": "/nonexistent/x", "sync": "full", "mode": "bogus"}}"#,
    r#"{"execute": "drive-mirror", "arguments": {"device": "f", "target": "/nonexistent/x", "sync": "full", "copy-mode": "bogus"}}"#,
    r#"{"execute": "drive-mirror", "arguments": {"device": "f", "target": "/nonexistent/x", "sync": "full", "on-target-error": "bogus"}}"#,
    r#"{"execute": "drive-mirror", "arguments": {"device": "f", "target": "/nonexistent/x", "sync": "full", "granularity": -1}}"#,
    r#"{"execute": "drive-mirror", "arguments": {"device": "f", "target": "/nonexistent/x", "sync": "full", "unmap": "yes"}}"#,
    r#"{"execute": "drive-mirror", "arguments": {"device": 5, "target": "/nonexistent/x", "sync": "full"}}"#,
    r#"{"execute": "query-block-jobs", "id": "q"}"#,
    r#"{"execute": "query-jobs"}"#,
    r#"{"execute": "block-job-complete", "arguments": {"device": "nope"}, "id": 7}"#,
    r#"{"execute": "block-job-cancel", "arguments": {"device": "nope", "force": true}}"#,
    r#"{"execute": "block-job-cancel", "arguments": {"device": "nope", "force": 1}}"#,
    r#"{"execute": "block-job-set-speed", "arguments": {"device": "nope", "speed": 5}}"#,
    r#"{"execute": "block-job-set-speed", "arguments": {"device": "nope"}}"#,
    r#"{"execute": "block-job-change", "arguments": {"id": "nope", "type": "mirror", "copy-mode": "write-blocking"}}"#,
    r#"{"execute": "block-job-change", "arguments": {"id": "nope", "type": "mirror"}}"#,
    r#"{"execute": "block-job-change", "arguments": {"id": "nope", "type": "bogus"}}"#,
    r#"{"execute": "job-dismiss", "arguments": {"id": "nope"}}"#,
    r#"{"execute": "job-pause", "arguments": {"id": "nope"}}"#,
    r#"{"execute": "block-job-complete"}"#,
    r#"{"execute": "query-jobs", "arguments": {"a": 1}}"#,
    r#"{"execute": "block-job-complete", "arguments": []}"#,
    r#"{"execute": "query-jobs", "wat": 1, "id": 9}"#,
    r#"{"arguments": {}}"#,
    r#"[1, 2]"#,
    r#""hello""#,
    r#"{"execute": 5}"#,
    r#"{"execute": "query-version", "arguments": {"x": 1}}"#,
];

#[test]
fn replies_match_qemu_storage_daemon() {
    let Some(mut daemon) = Daemon::start() else {
        assert!(
            std::env::var_os("BLOCKMIRROR_REQUIRE_QEMU").is_none(),
            "BLOCKMIRROR_REQUIRE_QEMU is set but qemu-storage-daemon is not installed"
        );
        eprintln!("qemu-storage-daemon is not installed: the QMP reference comparison did not run");
        return;
    };
    let mut session = QmpSession::new(Greeting::blockmirror());

    // The greetings have the same shape (QEMU also offers "oob"; we offer nothing).
    let theirs = daemon.read_line();
    let ours: Value = serde_json::from_slice(&session.poll_output().unwrap()).unwrap();
    for greeting in [&theirs, &ours] {
        let version = &greeting["QMP"]["version"];
        for number in ["major", "minor", "micro"] {
            assert!(version["qemu"][number].is_u64(), "{greeting}");
        }
        assert!(
            version["package"].is_string() && greeting["QMP"]["capabilities"].is_array(),
            "{greeting}"
        );
    }

    for request in SCRIPT {
        let line = format!("{request}\r\n");
        let theirs = daemon.request(line.as_bytes());
        let ours = our_reply(&mut session, line.as_bytes());
        assert_eq!(ours.get("id"), theirs.get("id"), "id echo for {request}");
        assert_eq!(
            ours.get("return"),
            theirs.get("return"),
            "return of {request}"
        );
        assert_eq!(
            ours["error"]["class"], theirs["error"]["class"],
            "error class for {request}: ours {ours}, QEMU {theirs}"
        );
        assert_eq!(
            ours["error"]["desc"], theirs["error"]["desc"],
            "error text for {request}"
        );
    }

    // Invalid JSON: one error of the same class each, then both go on with the next line.
    let bad = b"{\"execute\": nope}\r\n";
    let (theirs, ours) = (daemon.request(bad), our_reply(&mut session, bad));
    assert_eq!(ours["error"]["class"], theirs["error"]["class"]);
    let (theirs, ours) = (
        daemon.request(b"{\"execute\": \"query-version\", \"id\": 2}\r\n"),
        our_reply(
            &mut session,
            b"{\"execute\": \"query-version\", \"id\": 2}\r\n",
        ),
    );
    assert_eq!(
        (ours["id"].clone(), theirs["id"].clone()),
        (json!(2), json!(2))
    );
    let keys = |v: &Value| {
        v["return"]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
    };
    assert_eq!(keys(&ours), keys(&theirs), "query-version has QEMU's shape");
}
