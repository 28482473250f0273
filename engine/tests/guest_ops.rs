//! The guest operations a server needs from a running mirror: write-zeroes and trim (the
//! target must end equal to the source, and in write-blocking mode read zero at once),
//! flush, and the switch-over to the target with its handle.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use blockmirror_core::job::CopyMode;
use blockmirror_engine::engine::MAX_GUEST_ZEROES_PIECE_BYTES;
use blockmirror_engine::{FileMirror, GuestIoError, MirrorSetup, WaitOutcome};

const WAIT: Option<Duration> = Some(Duration::from_secs(120));

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bm-guest-ops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn source(&self) -> PathBuf {
        self.0.join("src.img")
    }

    fn target(&self) -> PathBuf {
        self.0.join("dst.img")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes that differ from block to block and are never zero.
fn pattern(length: usize) -> Vec<u8> {
    (0..length).map(|i| (i / 512 % 251 + 1) as u8).collect()
}

fn setup(mode: CopyMode) -> MirrorSetup {
    let mut setup = MirrorSetup::default();
    setup.config.copy_mode = mode;
    setup.config.granularity = 64 << 10;
    setup
}

/// Completes the job (switching the guest over) and checks that it ended cleanly.
fn complete(mirror: &FileMirror) {
    assert_eq!(mirror.wait_ready(WAIT), WaitOutcome::Reached);
    mirror.verb(|job| job.complete()).unwrap();
    assert_eq!(mirror.wait_end(WAIT), WaitOutcome::Reached);
    let snap = mirror.snapshot();
    assert_eq!((snap.failure, snap.internal_error), (None, None));
    assert!(mirror.pivoted());
}

fn assert_same_files(a: &Path, b: &Path) {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(a.len(), b.len());
    if let Some(at) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!("the files differ first at byte {at}");
    }
}

fn reads_zero(path: &Path, offset: u64, length: u64) -> bool {
    let data = std::fs::read(path).unwrap();
    data[offset as usize..(offset + length) as usize].iter().all(|&b| b == 0)
}

/// Zeroes, trims (aligned and not) and a data write, before and after READY.
fn zeroes_and_trims_end_equal(name: &str, mode: CopyMode) {
    let dir = Dir::new(name);
    std::fs::write(dir.source(), pattern(8 << 20)).unwrap();
    let mirror = FileMirror::start(&dir.source(), &dir.target(), setup(mode)).unwrap();
    mirror.guest_write_zeroes(1 << 20, 256 << 10, false).unwrap();
    mirror.guest_trim(3 << 20, 100_000).unwrap();
    assert_eq!(mirror.wait_ready(WAIT), WaitOutcome::Reached);
    mirror.guest_write_zeroes(5 << 20, 128 << 10, true).unwrap();
    mirror.guest_trim((6 << 20) + 777, 70_001).unwrap();
    mirror.guest_write(7 << 20, vec![0xa5; 1000]).unwrap();
    if mode == CopyMode::WriteBlocking {
        // Mirrored actively: the target reads zero there before the job completes.
        assert!(reads_zero(&dir.target(), 5 << 20, 128 << 10));
        assert!(reads_zero(&dir.target(), (6 << 20) + 777, 70_001));
        assert!(mirror.snapshot().stats.guest_bytes_mirrored >= (128 << 10) + 70_001);
    }
    mirror.guest_flush().unwrap();
    complete(&mirror);
    drop(mirror);
    assert_same_files(&dir.source(), &dir.target());
    for (offset, length) in [(1 << 20, 256 << 10), (3 << 20, 100_000), (5 << 20, 128 << 10)] {
        assert!(reads_zero(&dir.target(), offset, length), "{offset}+{length}");
    }
}

#[test]
fn write_zeroes_and_trim_in_background_mode_leave_the_target_equal() {
    zeroes_and_trims_end_equal("background", CopyMode::Background);
}

#[test]
fn write_zeroes_and_trim_in_write_blocking_mode_leave_the_target_equal() {
    zeroes_and_trims_end_equal("blocking", CopyMode::WriteBlocking);
}

/// Several threads write zeroes, trim and write data over overlapping ranges while the
/// copy runs (slowed down, so the copy is still going on); the target ends equal.
fn racing_copies(name: &str, mode: CopyMode) {
    let dir = Dir::new(name);
    let length = 16u64 << 20;
    std::fs::write(dir.source(), pattern(length as usize)).unwrap();
    let mut setup = setup(mode);
    setup.config.speed_bytes_per_sec = 32 << 20;
    let mirror = Arc::new(FileMirror::start(&dir.source(), &dir.target(), setup).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let mirror = Arc::clone(&mirror);
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                for i in 0..150u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let offset = x % (length - (600 << 10));
                    let size = 1 + (x >> 40) % (512 << 10);
                    match i % 3 {
                        0 => mirror.guest_write_zeroes(offset, size, i % 2 == 0).unwrap(),
                        1 => mirror.guest_trim(offset, size).unwrap(),
                        _ => mirror.guest_write(offset, vec![(t + 1) as u8; (size % (64 << 10)) as usize + 1]).unwrap(),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    mirror.verb(|job| job.set_speed(0)).unwrap();
    complete(&mirror);
    drop(mirror);
    assert_same_files(&dir.source(), &dir.target());
}

#[test]
fn zeroes_racing_copies_in_background_mode() {
    racing_copies("race-background", CopyMode::Background);
}

#[test]
fn zeroes_racing_copies_in_write_blocking_mode() {
    racing_copies("race-blocking", CopyMode::WriteBlocking);
}

#[test]
fn a_range_longer_than_a_piece_is_zeroed_in_pieces_on_both_sides() {
    let dir = Dir::new("long");
    // Sparse, with data at a few places the long zero write covers.
    let length = 3 * MAX_GUEST_ZEROES_PIECE_BYTES + (1 << 20);
    let file = std::fs::File::create(dir.source()).unwrap();
    file.set_len(length).unwrap();
    for at in [0, MAX_GUEST_ZEROES_PIECE_BYTES - 4096, 2 * MAX_GUEST_ZEROES_PIECE_BYTES + 12345, length - 4096] {
        std::os::unix::fs::FileExt::write_all_at(&file, &pattern(4096), at).unwrap();
    }
    drop(file);
    let mirror = FileMirror::start(&dir.source(), &dir.target(), setup(CopyMode::WriteBlocking)).unwrap();
    assert_eq!(mirror.wait_ready(WAIT), WaitOutcome::Reached);
    // Longer than a piece, starting and ending off piece boundaries.
    mirror.guest_write_zeroes(1000, length - 5000, false).unwrap();
    assert!(reads_zero(&dir.target(), 1000, length - 5000));
    complete(&mirror);
    drop(mirror);
    assert_same_files(&dir.source(), &dir.target());
    assert!(!reads_zero(&dir.source(), 0, 1000));
}

#[test]
fn after_the_switch_over_guest_io_and_flush_go_to_the_target_and_its_handle_outlives_the_mirror() {
    let dir = Dir::new("pivot");
    std::fs::write(dir.source(), pattern(2 << 20)).unwrap();
    let mirror = FileMirror::start(&dir.source(), &dir.target(), setup(CopyMode::Background)).unwrap();
    assert!(!mirror.pivoted());
    mirror.guest_flush().unwrap();
    complete(&mirror);
    mirror.guest_write_zeroes(0, 64 << 10, true).unwrap();
    mirror.guest_flush().unwrap();
    assert!(reads_zero(&dir.target(), 0, 64 << 10));
    assert!(!reads_zero(&dir.source(), 0, 64 << 10), "the source is no longer the guest's disk");
    let handle = mirror.target_handle().unwrap();
    let source = mirror.source_handle().unwrap();
    drop(source);
    drop(mirror);
    std::os::unix::fs::FileExt::write_all_at(&handle, b"served", 100).unwrap();
    handle.sync_data().unwrap();
    assert_eq!(&std::fs::read(dir.target()).unwrap()[100..106], b"served");
}

#[test]
fn bad_ranges_and_a_closed_mirror_are_refused() {
    let dir = Dir::new("bad");
    std::fs::write(dir.source(), pattern(1 << 20)).unwrap();
    let mirror = FileMirror::start(&dir.source(), &dir.target(), setup(CopyMode::Background)).unwrap();
    assert!(matches!(mirror.guest_write_zeroes(1 << 20, 1, false), Err(GuestIoError::OutOfRange { .. })));
    assert!(matches!(mirror.guest_trim(u64::MAX, 2), Err(GuestIoError::OutOfRange { .. })));
    mirror.guest_write_zeroes(1 << 20, 0, false).unwrap();
    mirror.close();
    assert!(matches!(mirror.guest_write_zeroes(0, 1, false), Err(GuestIoError::Closed)));
    assert!(matches!(mirror.guest_flush(), Err(GuestIoError::Closed)));
}
