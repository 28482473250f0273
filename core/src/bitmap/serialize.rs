//! Serialization of the bottom level in chunks.
//!
//! A chunk covers items `[start, start + count)` where `start` is a multiple of
//! [`HBitmap::serialization_align`] (`64 << granularity` items, i.e. one bottom word) and
//! `count` is a multiple of it too, or runs exactly to the end. Its bytes are the covered
//! bottom words as little-endian `u64`s: granule `k` of the chunk is bit `k % 8` of byte
//! `k / 8`, the same on every platform. The concatenation of consecutive chunks is the
//! serialization of their union, and padding bits past the last granule are always zero
//! (and ignored on input).
//!
//! Unlike QEMU, every `deserialize_*` call leaves the bitmap consistent (summaries and count
//! are updated for the chunk it wrote), so `finish = false` is simply the cheap path and
//! [`HBitmap::deserialize_finish`] is a full rebuild that never changes the result.

use super::words::WORD_BITS;
use super::{BitmapError, HBitmap};

/// Bytes per serialized word.
const WORD_BYTES: usize = 8;

impl HBitmap {
    /// Items per serialization unit: `64 << granularity`. Errors for granularity 58 and
    /// above, where that does not fit in a `u64`.
    pub fn serialization_align(&self) -> Result<u64, BitmapError> {
        if self.granularity >= 58 {
            return Err(BitmapError::NotSerializable(self.granularity));
        }
        Ok(WORD_BITS << self.granularity)
    }

    /// Checks a chunk and returns the bottom word indices it covers (empty for `count == 0`).
    fn chunk_words(&self, start: u64, count: u64) -> Result<std::ops::Range<usize>, BitmapError> {
        let align = self.serialization_align()?;
        self.check_range(start, count)?;
        if start % align != 0 || (count % align != 0 && start + count != self.size) {
            return Err(BitmapError::ChunkUnaligned {
                start,
                count,
                align,
            });
        }
        if count == 0 {
            return Ok(0..0);
        }
        // Word indices fit in usize: the bottom level is allocated with that many words.
        let first = (start / align) as usize;
        let last = ((start + count - 1) / align) as usize;
        Ok(first..last + 1)
    }

    /// Bytes in the serialization of the chunk `[start, start + count)`.
    pub fn serialization_size(&self, start: u64, count: u64) -> Result<u64, BitmapError> {
        Ok((self.chunk_words(start, count)?.len() * WORD_BYTES) as u64)
    }

    /// Writes the chunk `[start, start + count)` into `out`, which must be exactly
    /// [`serialization_size`](Self::serialization_size) bytes long.
    pub fn serialize_part(
        &self,
        start: u64,
        count: u64,
        out: &mut [u8],
    ) -> Result<(), BitmapError> {
        let words = self.chunk_words(start, count)?;
        check_length(out.len(), words.len())?;
        write_words(&self.levels.bottom()[words], out);
        Ok(())
    }

    /// The serialization of the chunk `[start, start + count)` as a new buffer.
    pub fn serialize(&self, start: u64, count: u64) -> Result<Vec<u8>, BitmapError> {
        let words = self.chunk_words(start, count)?;
        let mut out = vec![0; words.len() * WORD_BYTES];
        write_words(&self.levels.bottom()[words], &mut out);
        Ok(out)
    }

    /// Replaces the chunk `[start, start + count)` with `data` (as made by
    /// [`serialize`](Self::serialize)). With `finish`, also runs
    /// [`deserialize_finish`](Self::deserialize_finish).
    pub fn deserialize_part(
        &mut self,
        start: u64,
        count: u64,
        data: &[u8],
        finish: bool,
    ) -> Result<(), BitmapError> {
        let words = self.chunk_words(start, count)?;
        check_length(data.len(), words.len())?;
        let mut values = data.chunks_exact(WORD_BYTES).map(|bytes| {
            u64::from_le_bytes(bytes.try_into().expect("chunks_exact yields 8-byte slices"))
        });
        self.store_words(
            words,
            || values.next().expect("length checked above"),
            finish,
        );
        Ok(())
    }

    /// Makes the chunk `[start, start + count)` clean.
    pub fn deserialize_zeroes(
        &mut self,
        start: u64,
        count: u64,
        finish: bool,
    ) -> Result<(), BitmapError> {
        let words = self.chunk_words(start, count)?;
        self.store_words(words, || 0, finish);
        Ok(())
    }

    /// Makes the chunk `[start, start + count)` dirty.
    pub fn deserialize_ones(
        &mut self,
        start: u64,
        count: u64,
        finish: bool,
    ) -> Result<(), BitmapError> {
        let words = self.chunk_words(start, count)?;
        self.store_words(words, || u64::MAX, finish);
        Ok(())
    }

    /// Rebuilds every summary level and recounts the dirty granules from the bottom level.
    /// O(size / 64). Kept for QEMU's protocol: each `deserialize_*` call here already leaves
    /// the bitmap consistent.
    pub fn deserialize_finish(&mut self) {
        self.levels.rebuild_all();
    }

    /// Overwrites bottom words `words` with successive values of `next`, clears padding,
    /// and brings the count and the summaries above those words up to date.
    fn store_words(
        &mut self,
        words: std::ops::Range<usize>,
        mut next: impl FnMut() -> u64,
        finish: bool,
    ) {
        if words.is_empty() {
            return;
        }
        let (lo, hi) = (words.start as u64, words.end as u64 - 1);
        let levels = &mut self.levels;
        let mut removed = 0u64;
        let mut added = 0u64;
        for word in &mut levels.dirty[0][words] {
            removed += u64::from(word.count_ones());
            *word = next();
            added += u64::from(word.count_ones());
        }
        added -= levels.clear_padding();
        levels.set_granules = levels.set_granules - removed + added;
        levels.rebuild_summaries(lo, hi);
        if finish {
            self.deserialize_finish();
        }
    }
}

/// Writes `words` as little-endian bytes into `out` (exactly 8 bytes per word). A plain
/// copy on little-endian machines.
fn write_words(words: &[u64], out: &mut [u8]) {
    for (bytes, word) in out.chunks_exact_mut(WORD_BYTES).zip(words) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
}

/// `Ok` when a buffer of `got` bytes holds exactly `words` serialized words.
fn check_length(got: usize, words: usize) -> Result<(), BitmapError> {
    let expected = words * WORD_BYTES;
    if got == expected {
        Ok(())
    } else {
        Err(BitmapError::SerializedLength {
            got: got as u64,
            expected: expected as u64,
        })
    }
}
