//! qcow2 sources and targets through `FileMirror`, judged by QEMU's tools: chains built
//! with `qemu-img create -b` and filled with `qemu-io` patterns, results checked with
//! `qemu-img compare`, `qemu-img check` and `qemu-img info`. The tools are required.

mod common;

use std::path::Path;
use std::process::Command;

use blockmirror_core::job::{CopyMode, SyncMode};
use blockmirror_engine::files::OpenError;
use blockmirror_engine::image::{ImageError, ImageFormat};
use blockmirror_engine::{FileMirror, MirrorSetup, StartError, WaitOutcome};
use common::TestDir;

const MIB: u64 = 1 << 20;

fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} is required (CI installs qemu-utils): {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// base (8 MiB) <- mid <- top, each with its own patterns; mid zeroes one cluster.
fn chain(dir: &TestDir) -> [std::path::PathBuf; 3] {
    let (base, mid, top) = (
        dir.path("base.qcow2"),
        dir.path("mid.qcow2"),
        dir.path("top.qcow2"),
    );
    tool("qemu-img", &["create", "-q", "-f", "qcow2", s(&base), "8M"]);
    tool(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x11 0 1M",
            "-c",
            "write -P 0x12 3M 512k",
            s(&base),
        ],
    );
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            s(&base),
            "-F",
            "qcow2",
            s(&mid),
        ],
    );
    tool(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x21 512k 1M",
            "-c",
            "write -z 3M 64k",
            s(&mid),
        ],
    );
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            s(&mid),
            "-F",
            "qcow2",
            s(&top),
        ],
    );
    tool(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x31 5M 100k",
            "-c",
            "write -P 0x32 7000000 5000",
            s(&top),
        ],
    );
    [base, mid, top]
}

fn run(
    source: &Path,
    target: &Path,
    setup: MirrorSetup,
    guest: impl FnOnce(&FileMirror),
) -> FileMirror {
    let mirror = FileMirror::start(source, target, setup).expect("start");
    guest(&mirror);
    assert_eq!(mirror.wait_ready(None), WaitOutcome::Reached);
    mirror.verb(|job| job.complete()).unwrap();
    mirror.wait_end(None);
    let snap = mirror.snapshot();
    assert_eq!(snap.failure, None);
    assert!(snap.pivoted);
    mirror
}

fn setup(sync: SyncMode, copy_mode: CopyMode) -> MirrorSetup {
    let mut setup = MirrorSetup::default();
    setup.config.sync = sync;
    setup.config.copy_mode = copy_mode;
    setup
}

fn check_and_compare(source: &Path, target: &Path) {
    assert!(tool("qemu-img", &["check", "-U", s(target)]).contains("No errors were found"));
    tool("qemu-img", &["compare", "-U", s(source), s(target)]);
}

#[test]
fn full_copies_the_whole_chain_into_a_standalone_qcow2() {
    let dir = TestDir::new("qcow2", "full");
    let [_, _, top] = chain(&dir);
    let target = dir.path("full.qcow2");
    let mirror = run(
        &top,
        &target,
        setup(SyncMode::Full, CopyMode::Background),
        |_| {},
    );
    // Only what the chain allocates was read: 1.5 MiB + 448 KiB + two top-layer clusters'
    // worth (the 64 KiB zero cluster of mid hides base there and is skipped).
    assert_eq!(mirror.snapshot().stats.bytes_read, 2_228_224);
    drop(mirror);
    check_and_compare(&top, &target);
    assert!(!tool("qemu-img", &["info", "-U", s(&target)]).contains("backing file"));
}

#[test]
fn top_with_guest_writes_in_both_copy_modes() {
    for mode in [CopyMode::Background, CopyMode::WriteBlocking] {
        let dir = TestDir::new("qcow2", &format!("top-{mode}"));
        let [_, mid, top] = chain(&dir);
        let target = dir.path("top-target.qcow2");
        let mirror = run(&top, &target, setup(SyncMode::Top, mode), |m| {
            m.guest_write(100, vec![0xAB; 5000]).unwrap();
            m.guest_write(3 * MIB + 4096, vec![0xCD; 70_000]).unwrap();
        });
        // After the pivot a range the target does not hold reads from its backing chain.
        assert_eq!(mirror.guest_read(0, 100).unwrap(), vec![0x11; 100]);
        drop(mirror);
        check_and_compare(&top, &target);
        let info = tool("qemu-img", &["info", "-U", s(&target)]);
        let abs = std::path::absolute(&mid).unwrap();
        assert!(
            info.contains(&format!("backing file: {}", abs.display())),
            "{info}"
        );
        assert!(info.contains("backing file format: qcow2"), "{info}");
    }
}

#[test]
fn none_onto_a_created_target_backed_by_the_source() {
    for mode in [CopyMode::Background, CopyMode::WriteBlocking] {
        let dir = TestDir::new("qcow2", &format!("none-{mode}"));
        let [_, _, top] = chain(&dir);
        let target = dir.path("none-target.qcow2");
        let mirror = run(&top, &target, setup(SyncMode::None, mode), |m| {
            m.guest_write(70_000, vec![0xEE; 3000]).unwrap();
        });
        let seen = mirror.guest_read(0, 8 * MIB).unwrap();
        drop(mirror);
        check_and_compare(&top, &target);
        assert_eq!(seen[70_000..73_000], vec![0xEE; 3000][..]);
        assert_eq!(seen[0..100], vec![0x11; 100][..]);
    }
}

#[test]
fn a_raw_source_onto_a_forced_qcow2_target_and_back() {
    let dir = TestDir::new("qcow2", "raw");
    let raw = dir.path("src.raw");
    std::fs::write(&raw, vec![0u8; 4 << 20]).unwrap();
    tool(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x5a 1M 1M", s(&raw)],
    );
    let qcow2 = dir.path("dst.qcow2");
    let setup_q = MirrorSetup {
        target_format: Some(ImageFormat::Qcow2),
        ..MirrorSetup::default()
    };
    drop(run(&raw, &qcow2, setup_q, |_| {}));
    check_and_compare(&raw, &qcow2);
    let back = dir.path("back.raw");
    let setup_r = MirrorSetup {
        target_format: Some(ImageFormat::Raw),
        ..MirrorSetup::default()
    };
    drop(run(&qcow2, &back, setup_r, |_| {}));
    assert_eq!(std::fs::read(&raw).unwrap(), std::fs::read(&back).unwrap());
}

fn refused(source: &Path, target: &Path, setup: MirrorSetup) -> ImageError {
    let existed = target.exists();
    match FileMirror::start(source, target, setup) {
        Err(StartError::Open(OpenError::Image(e))) => {
            assert_eq!(
                target.exists(),
                existed,
                "a refused start left a created target"
            );
            e
        }
        Err(other) => panic!("expected an image error, got {other}"),
        Ok(_) => panic!("the mirror started"),
    }
}

#[test]
fn broken_chains_are_refused_with_typed_errors() {
    let dir = TestDir::new("qcow2", "errors");
    let [base, mid, top] = chain(&dir);
    let target = dir.path("t.qcow2");
    let e = refused(
        &top,
        &base,
        MirrorSetup {
            reuse: true,
            ..MirrorSetup::default()
        },
    );
    assert!(matches!(e, ImageError::TargetInChain { .. }), "{e}");
    let e = refused(&top, &dir.path("t.raw"), {
        let mut s = setup(SyncMode::None, CopyMode::Background);
        s.target_format = Some(ImageFormat::Raw);
        s
    });
    assert!(matches!(e, ImageError::NeedsBackingTarget { .. }), "{e}");
    tool(
        "qemu-img",
        &["rebase", "-q", "-u", "-b", s(&top), "-F", "qcow2", s(&base)],
    );
    let e = refused(&top, &target, MirrorSetup::default());
    assert!(matches!(e, ImageError::BackingLoop { .. }), "{e}");
    std::fs::remove_file(&base).unwrap();
    let e = refused(&top, &target, MirrorSetup::default());
    assert!(matches!(e, ImageError::MissingBacking { .. }), "{e}");
    let e = refused(
        &mid,
        &target,
        MirrorSetup {
            format: Some(ImageFormat::Qcow2),
            ..MirrorSetup::default()
        },
    );
    assert!(matches!(e, ImageError::MissingBacking { .. }), "{e}");
    let raw = dir.path("plain.raw");
    std::fs::write(&raw, vec![1u8; 65536]).unwrap();
    let e = refused(
        &raw,
        &target,
        MirrorSetup {
            format: Some(ImageFormat::Qcow2),
            ..MirrorSetup::default()
        },
    );
    assert!(matches!(e, ImageError::FormatMismatch { .. }), "{e}");
    let bad = dir.path("bad.qcow2");
    std::fs::write(&bad, [&b"QFI\xfb"[..], &[0xff; 508]].concat()).unwrap();
    let e = refused(&bad, &target, MirrorSetup::default());
    assert!(matches!(e, ImageError::Corrupt { .. }), "{e}");
}
