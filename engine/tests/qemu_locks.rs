//! Image locks against real QEMU programs: a running `qemu-nbd` keeps the mirror from
//! starting; a running mirror keeps `qemu-io` from writing but lets `qemu-img info -U`
//! read; once the mirror is gone, `qemu-io` writes again. Skipped where QEMU's tools are
//! not installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use blockmirror_engine::locks::{probe, Perm};
use blockmirror_engine::{FileMirror, MirrorSetup, StartError};

mod common;

/// This suite's temporary directory.
struct Dir(common::TestDir);

impl Dir {
    fn new(name: &str) -> Self {
        Dir(common::TestDir::new("qemu-locks", name))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }
}

/// A child process killed (and reaped) when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        eprintln!("skipped: {tool} is not installed");
    }
    found
}

fn run(tool: &str, args: &[&str]) -> Output {
    Command::new(tool).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Polls `done` up to `tries` times, 50 ms apart; whether it became true.
fn poll(tries: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

fn image(dir: &Dir) -> PathBuf {
    let path = dir.path("disk.img");
    std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
    path
}

/// Starts `qemu-nbd` serving `image` read-write on a Unix socket, and waits until its socket
/// exists and its write lock is taken.
fn qemu_nbd(dir: &Dir, image: &Path) -> Killed {
    let socket = dir.path("nbd.sock");
    let child = Command::new("qemu-nbd")
        .args(["-f", "raw", "-k"])
        .arg(&socket)
        .arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let observer = std::fs::File::open(image).unwrap();
    let up = poll(400, || {
        let exited = child.0.try_wait().unwrap();
        assert!(exited.is_none(), "qemu-nbd exited: {exited:?}");
        socket.exists() && probe(&observer, Perm::Write, false).unwrap()
    });
    assert!(up, "qemu-nbd did not come up within 20 s");
    child
}

#[test]
fn a_running_qemu_nbd_keeps_the_mirror_from_starting() {
    if !have("qemu-nbd") {
        return;
    }
    let dir = Dir::new("nbd");
    let source = image(&dir);
    let target = dir.path("dst.img");
    let nbd = qemu_nbd(&dir, &source);
    match FileMirror::start(&source, &target, MirrorSetup::default()) {
        Err(StartError::Locked(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("in use by another process") && msg.contains("\"write\""), "{msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("the mirror started on an image qemu-nbd writes"),
    }
    assert!(!target.exists(), "the created target was not removed");
    // As a target, too.
    let other = dir.path("other.img");
    std::fs::write(&other, vec![1u8; 1 << 20]).unwrap();
    let setup = MirrorSetup { reuse: true, ..MirrorSetup::default() };
    assert!(matches!(FileMirror::start(&other, &source, setup), Err(StartError::Locked(_))));
    drop(nbd);
}

#[test]
fn a_running_mirror_refuses_qemu_io_writers_but_not_shared_readers() {
    if !have("qemu-io") || !have("qemu-img") {
        return;
    }
    let dir = Dir::new("io");
    let source = image(&dir);
    let target = dir.path("dst.img");
    let mirror = FileMirror::start(&source, &target, MirrorSetup::default()).unwrap();
    assert!(mirror.lock_warnings().is_empty(), "{:?}", mirror.lock_warnings());
    for image in [&source, &target] {
        let image = image.to_str().unwrap();
        let write = run("qemu-io", &["-f", "raw", "-c", "write 0 4k", image]);
        let stderr = String::from_utf8_lossy(&write.stderr);
        assert!(!write.status.success(), "qemu-io wrote {image} while the mirror ran");
        assert!(stderr.contains("lock"), "{stderr}");
        let info = run("qemu-img", &["info", "-U", image]);
        assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    }
    mirror.close();
    drop(mirror);
    for image in [&source, &target] {
        let write = run("qemu-io", &["-f", "raw", "-c", "write 0 4k", image.to_str().unwrap()]);
        assert!(write.status.success(), "{}", String::from_utf8_lossy(&write.stderr));
    }
}

#[test]
fn a_target_handle_keeps_the_lock_after_the_mirror_is_gone() {
    if !have("qemu-io") {
        return;
    }
    let dir = Dir::new("handle");
    let source = image(&dir);
    let target = dir.path("dst.img");
    let mirror = FileMirror::start(&source, &target, MirrorSetup::default()).unwrap();
    let handle = mirror.target_handle().unwrap();
    drop(mirror);
    let target = target.to_str().unwrap();
    assert!(!run("qemu-io", &["-f", "raw", "-c", "write 0 4k", target]).status.success());
    drop(handle);
    assert!(run("qemu-io", &["-f", "raw", "-c", "write 0 4k", target]).status.success());
}
