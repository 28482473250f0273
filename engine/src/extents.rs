//! The source's allocation map from `SEEK_DATA` / `SEEK_HOLE`.
//!
//! A hole reads as zeroes and is not allocated, so the initial scan tells the job which
//! chunks it need not read (`full` onto a target that reads zero) or must skip (`top`).
//! Filesystems without hole support report the whole file as data, which is always safe.

use std::fs::File;
use std::io;
use std::ops::Range;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// Where the next data (or hole) at or after the position starts; `Ok(None)` when there is
/// none (ENXIO); `Err(Errno::INVAL)` when the filesystem cannot tell. Moves the file's own
/// position, which nothing else uses: every other I/O names its offset.
fn seek(file: &File, to: SeekFrom) -> Result<Option<u64>, Errno> {
    match rustix::fs::seek(file, to) {
        Ok(pos) => Ok(Some(pos)),
        Err(Errno::NXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The holes of `[0, length)`, ascending and disjoint. An empty list when the file has no
/// holes or the filesystem cannot tell (EINVAL: no SEEK_DATA support).
pub fn holes(file: &File, length: u64) -> io::Result<Vec<Range<u64>>> {
    holes_within(file, 0..length)
}

/// The holes inside `range` (clipped to it), as [`holes`] tells them. Safe to call from
/// several threads on one file: each seek's answer is its own, whatever the shared position.
pub fn holes_within(file: &File, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
    let length = range.end;
    let mut holes = Vec::new();
    let mut pos = range.start;
    while pos < length {
        let data = match seek(file, SeekFrom::Data(pos)) {
            Ok(d) => d.unwrap_or(length).min(length),
            Err(Errno::INVAL) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if data > pos {
            holes.push(pos..data);
        }
        if data >= length {
            break;
        }
        let hole = match seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h.unwrap_or(length).min(length),
            Err(Errno::INVAL) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        // SEEK_HOLE always moves past `data` (the end of file counts as a hole).
        pos = hole.max(data + 1);
    }
    Ok(holes)
}

/// The whole chunks (of `granularity` bytes) lying inside `range`, or `None`. A chunk that
/// only partly lies in a hole holds data and must be copied.
pub fn whole_chunks(range: &Range<u64>, granularity: u64, length: u64) -> Option<Range<u64>> {
    let start = range.start.div_ceil(granularity) * granularity;
    // The last chunk of the disk may be short: it counts as whole when the range runs to the end.
    let end = if range.end >= length { length } else { range.end / granularity * granularity };
    (start < end).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn finds_holes_between_data() {
        let dir = std::env::temp_dir().join(format!("bm-extents-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("img");
        let f = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
        f.sync_all().unwrap();
        let h = holes(&f, 8 << 20).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // Filesystems may round allocation up, but the data block is never inside a hole.
        assert!(h.iter().all(|r| r.end <= 1 << 20 || r.start >= (1 << 20) + 4096));
        assert!(h.iter().map(|r| r.end - r.start).sum::<u64>() >= 6 << 20);
    }

    #[test]
    fn whole_chunks_round_inward() {
        assert_eq!(whole_chunks(&(1000..200_000), 65536, 1 << 20), Some(65536..196608));
        assert_eq!(whole_chunks(&(1000..2000), 65536, 1 << 20), None);
        assert_eq!(whole_chunks(&(65536..100_000), 65536, 100_000), Some(65536..100_000));
    }
}
