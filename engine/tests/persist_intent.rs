//! The write intent's clearing rules: a chunk a guest wrote stays marked for the whole
//! activity window (the last few cleaning intervals), a chunk nobody wrote is cleared at
//! the first round, and a chunk under a guest write in progress is never cleared.

use std::path::PathBuf;
use std::sync::Arc;

use blockmirror_core::bitmap::HBitmap;
use blockmirror_engine::persist::{BitmapFile, BitmapIdentity, SideIdentity, WriteIntent, ACTIVITY_ROUNDS};

const CHUNK: u64 = 1 << 20;
const LENGTH: u64 = 16 * CHUNK;

fn intent(name: &str) -> (Arc<WriteIntent>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("bm-intent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let identity = BitmapIdentity {
        length: LENGTH,
        granularity: CHUNK,
        source: SideIdentity::Inode { dev: 1, ino: 2 },
        target: SideIdentity::Inode { dev: 1, ino: 3 },
    };
    let mut all = identity.new_bitmap().unwrap();
    all.set(0, LENGTH).unwrap();
    let file = BitmapFile::create(&dir.join("t.bmbitmap"), identity, &all).unwrap();
    (Arc::new(WriteIntent::new(file, all, CHUNK)), dir)
}

fn marked_chunks(bitmap: &HBitmap) -> Vec<u64> {
    (0..LENGTH / CHUNK).filter(|c| bitmap.get(c * CHUNK)).collect()
}

fn round(intent: &WriteIntent) {
    assert!(intent.begin_round());
    intent.finish_round().unwrap();
}

#[test]
fn a_written_chunk_stays_marked_for_the_activity_window_then_is_cleared() {
    let (intent, dir) = intent("window");
    // The first round clears every chunk nobody wrote (the job is assumed to have copied
    // them: the caller excludes what it still holds dirty).
    drop(intent.mark(3 * CHUNK + 10, 4096).unwrap());
    round(&intent);
    assert_eq!(marked_chunks(&intent.marked()), vec![3]);
    for quiet in 1..ACTIVITY_ROUNDS {
        round(&intent);
        assert_eq!(marked_chunks(&intent.marked()), vec![3], "still inside the window after {quiet} quiet rounds");
    }
    round(&intent);
    assert!(marked_chunks(&intent.marked()).is_empty(), "cleared once the window passed");
    // Marked again: it costs a file write, and the window starts over.
    let writes = intent.stats().file_writes;
    drop(intent.mark(3 * CHUNK, 1).unwrap());
    assert_eq!(intent.stats().file_writes, writes + 1);
    drop(intent.mark(3 * CHUNK + 5, 1).unwrap());
    assert_eq!(intent.stats().file_writes, writes + 1, "a marked chunk costs nothing");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_chunk_under_a_write_in_progress_and_an_excluded_one_are_never_cleared() {
    let (intent, dir) = intent("active");
    let ticket = intent.mark(5 * CHUNK, 4096).unwrap();
    for _ in 0..ACTIVITY_ROUNDS + 2 {
        assert!(intent.begin_round());
        intent.exclude(std::iter::once(9 * CHUNK..9 * CHUNK + 1));
        intent.finish_round().unwrap();
    }
    assert_eq!(marked_chunks(&intent.marked()), vec![5, 9]);
    drop(ticket);
    for _ in 0..ACTIVITY_ROUNDS + 1 {
        round(&intent);
    }
    assert!(marked_chunks(&intent.marked()).is_empty());
    // An empty round says so (the cleaner then skips the target's flush).
    assert!(intent.begin_round());
    assert!(intent.round_is_empty());
    intent.abandon_round();
    let _ = std::fs::remove_dir_all(dir);
}
