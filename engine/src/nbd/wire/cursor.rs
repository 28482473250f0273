//! [`Cursor`]: bounds-checked reading of a received message.

use super::MAX_STRING_LEN;

/// A cursor over a message's bytes; every read is bounds-checked and returns `None` past
/// the end, so a short or lying message can only fail, never panic.
#[derive(Debug)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    /// The rest of the bytes.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.bytes;
        self.bytes = &[];
        rest
    }

    /// The next big-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// The next big-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next big-endian u64.
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("take(8) returns 8 bytes")))
    }

    /// A string prefixed by its u32 length, at most [`MAX_STRING_LEN`] bytes of UTF-8.
    pub fn string32(&mut self) -> Option<String> {
        let len = usize::try_from(self.u32()?).ok()?;
        if len > MAX_STRING_LEN {
            return None;
        }
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}
