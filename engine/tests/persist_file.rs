//! The bitmap file on disk: what a torn or damaged file, or one made for another mirror,
//! is refused with (each its own error), and that a torn newer slot falls back to the
//! older one instead of being trusted.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use blockmirror_core::bitmap::HBitmap;
use blockmirror_engine::persist::{BitmapFile, BitmapIdentity, PersistError, SideIdentity};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bm-persist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("dst.img.bmbitmap")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GRANULARITY: u64 = 64 << 10;
const LENGTH: u64 = 1 << 30;

fn identity() -> BitmapIdentity {
    BitmapIdentity {
        length: LENGTH,
        granularity: GRANULARITY,
        source: SideIdentity::Inode { dev: 1, ino: 10 },
        target: SideIdentity::Inode { dev: 1, ino: 11 },
    }
}

fn bitmap_with(chunks: &[u64]) -> HBitmap {
    let mut b = identity().new_bitmap().unwrap();
    for c in chunks {
        b.set(c * GRANULARITY, 1).unwrap();
    }
    b
}

/// A file written twice (generation 2 in slot 0, generation 1 in slot 1... alternating).
fn written(dir: &Dir) -> (BitmapFile, HBitmap) {
    let mut file = BitmapFile::create(&dir.file(), identity(), &bitmap_with(&[1])).unwrap();
    let newest = bitmap_with(&[1, 5, 9000]);
    assert_eq!(file.write(&newest).unwrap(), 2);
    (file, newest)
}

fn flip(path: &PathBuf, at: u64) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x04;
    f.write_all_at(&b, at).unwrap();
}

/// Slot offsets: slot 0 at 0, slot 1 after it (the slot size is a multiple of 4096).
fn slot_offsets(path: &PathBuf) -> [u64; 2] {
    let len = std::fs::metadata(path).unwrap().len();
    [0, len / 2]
}

#[test]
fn the_newest_slot_is_read_back() {
    let dir = Dir::new("newest");
    let (mut file, newest) = written(&dir);
    let (reopened, bitmap) = BitmapFile::open(&dir.file(), &identity(), 0).unwrap();
    assert_eq!((reopened.generation(), &bitmap), (2, &newest));
    // A third write goes to the other slot; the second one stays readable until it lands.
    let third = bitmap_with(&[2]);
    assert_eq!(file.write(&third).unwrap(), 3);
    assert_eq!(BitmapFile::open(&dir.file(), &identity(), 0).unwrap().1, third);
}

#[test]
fn a_torn_newer_slot_falls_back_to_the_older_one() {
    let dir = Dir::new("torn");
    let (_file, _newest) = written(&dir);
    // Generation 2 went to slot 0 (generation % 2): tear its body.
    let header_and_more = 200;
    flip(&dir.file(), header_and_more);
    let (reopened, bitmap) = BitmapFile::open(&dir.file(), &identity(), 0).unwrap();
    assert_eq!((reopened.generation(), bitmap), (1, bitmap_with(&[1])));
}

#[test]
fn damage_in_both_slots_is_refused_with_its_own_error() {
    type Case = (&'static str, u64, fn(&PersistError) -> bool);
    let cases: [Case; 4] = [
        ("magic", 0, |e| matches!(e, PersistError::BadMagic)),
        ("version", 9, |e| matches!(e, PersistError::UnsupportedVersion { .. })),
        ("header", 26, |e| matches!(e, PersistError::HeaderChecksum)),
        ("body", 300, |e| matches!(e, PersistError::BodyChecksum)),
    ];
    for (name, at, is_expected) in cases {
        let dir = Dir::new(name);
        written(&dir);
        for slot in slot_offsets(&dir.file()) {
            flip(&dir.file(), slot + at);
        }
        let e = BitmapFile::open(&dir.file(), &identity(), 0).unwrap_err();
        assert!(is_expected(&e), "{name}: {e}");
    }
}

#[test]
fn damage_to_a_new_files_only_slot_is_named_not_taken_for_a_missing_magic() {
    let dir = Dir::new("new-file-damaged");
    drop(BitmapFile::create(&dir.file(), identity(), &bitmap_with(&[1])).unwrap());
    // The first write went to slot 1 (generation 1 % 2); slot 0 was never written.
    let slot_one = slot_offsets(&dir.file())[1];
    flip(&dir.file(), slot_one + 26);
    let e = BitmapFile::open(&dir.file(), &identity(), 0).unwrap_err();
    assert!(matches!(e, PersistError::HeaderChecksum), "{e}");
    let e = blockmirror_engine::persist::inspect(&dir.file()).unwrap_err();
    assert!(matches!(e, PersistError::HeaderChecksum), "{e}");
}

#[test]
fn a_truncated_file_is_refused() {
    for len in [0, 50, 150, 1000] {
        let dir = Dir::new(&format!("truncated-{len}"));
        written(&dir);
        OpenOptions::new().write(true).open(dir.file()).unwrap().set_len(len).unwrap();
        let e = BitmapFile::open(&dir.file(), &identity(), 0).unwrap_err();
        assert!(matches!(e, PersistError::Truncated { .. }), "{len}: {e}");
    }
}

#[test]
fn a_bitmap_of_another_mirror_is_refused() {
    let dir = Dir::new("foreign");
    written(&dir);
    let mut other = identity();
    other.length = LENGTH / 2;
    assert!(matches!(BitmapFile::open(&dir.file(), &other, 0), Err(PersistError::OtherLength { .. })));
    let mut other = identity();
    other.granularity = GRANULARITY * 2;
    assert!(matches!(BitmapFile::open(&dir.file(), &other, 0), Err(PersistError::OtherGranularity { .. })));
    let mut other = identity();
    other.source = SideIdentity::Inode { dev: 1, ino: 99 };
    assert!(matches!(BitmapFile::open(&dir.file(), &other, 0), Err(PersistError::OtherSource { .. })));
    let mut other = identity();
    other.target = SideIdentity::Nbd { uri: "nbd://host/export".into() };
    assert!(matches!(BitmapFile::open(&dir.file(), &other, 0), Err(PersistError::OtherTarget { .. })));
}

#[test]
fn an_older_generation_than_expected_is_refused() {
    let dir = Dir::new("stale");
    written(&dir);
    // A copy of the file taken now is stale once the mirror writes again.
    let (mut file, _) = BitmapFile::open(&dir.file(), &identity(), 2).unwrap();
    let saved = std::fs::read(dir.file()).unwrap();
    assert_eq!(file.write(&bitmap_with(&[3])).unwrap(), 3);
    std::fs::write(dir.file(), saved).unwrap();
    match BitmapFile::open(&dir.file(), &identity(), 3) {
        Err(PersistError::StaleGeneration { found: 2, expected_at_least: 3 }) => {}
        other => panic!("not refused as stale: {other:?}"),
    }
}

#[test]
fn create_refuses_an_existing_file_and_open_a_missing_one() {
    let dir = Dir::new("exists");
    written(&dir);
    let e = BitmapFile::create(&dir.file(), identity(), &bitmap_with(&[])).unwrap_err();
    assert!(matches!(e, PersistError::Exists { .. }) && e.to_string().contains("--resume"), "{e}");
    std::fs::remove_file(dir.file()).unwrap();
    assert!(matches!(BitmapFile::open(&dir.file(), &identity(), 0), Err(PersistError::Missing { .. })));
}
