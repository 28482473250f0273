//! The blocking request API: every call checks its range against the export, then runs
//! as requests the export takes: reads and writes in pieces of at most the maximum
//! payload, at most `SPLIT_WINDOW` in flight at once; trims, write zeroes and block
//! status in pieces of at most `MAX_EFFECT_LENGTH`, aligned to the minimum block size.

use crate::nbd::{Command, Extent, ReplyPayload};

use super::{NbdClient, NbdClientError};

/// The longest trim, write zeroes or block status request (before alignment): commands
/// without payload may exceed the maximum payload, but lengths are 32-bit.
const MAX_EFFECT_LENGTH: u64 = 1 << 30;
/// Pieces of one split read or write in flight at once.
const SPLIT_WINDOW: usize = 8;

impl NbdClient {
    /// Reads `buf.len()` bytes at `offset`, in pieces of at most the maximum payload.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), NbdClientError> {
        self.check_range(offset, buf.len() as u64)?;
        let piece = self.info.block_size.maximum as usize;
        let mut pieces = buf.chunks_mut(piece).enumerate().peekable();
        while pieces.peek().is_some() {
            let window: Vec<_> = pieces.by_ref().take(SPLIT_WINDOW).collect();
            let mut pending = Vec::with_capacity(window.len());
            for (i, chunk) in &window {
                let command = Command::Read {
                    offset: offset + (i * piece) as u64,
                    length: chunk.len() as u32,
                };
                pending.push(self.submit(command, "read"));
            }
            for ((_, chunk), request) in window.into_iter().zip(pending) {
                match self.wait(request?)? {
                    ReplyPayload::Data(data) if data.len() == chunk.len() => {
                        chunk.copy_from_slice(&data)
                    }
                    _ => return Err(NbdClientError::Disconnected),
                }
            }
        }
        Ok(())
    }

    /// Writes `data` at `offset` (`fua`: persisted before the call returns), in pieces of
    /// at most the maximum payload.
    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), NbdClientError> {
        self.check_range(offset, data.len() as u64)?;
        let piece = self.info.block_size.maximum as usize;
        let pieces: Vec<_> = data.chunks(piece).enumerate().collect();
        for window in pieces.chunks(SPLIT_WINDOW) {
            let pending: Vec<_> = window
                .iter()
                .map(|(i, chunk)| self.submit_write(offset + (i * piece) as u64, chunk, fua))
                .collect();
            for request in pending {
                self.wait(request?)?;
            }
        }
        Ok(())
    }

    /// Persists every write already completed.
    pub fn flush(&self) -> Result<(), NbdClientError> {
        self.wait(self.submit(Command::Flush, "flush")?).map(drop)
    }

    /// Tells the server `length` bytes at `offset` are no longer needed.
    pub fn trim(&self, offset: u64, length: u64) -> Result<(), NbdClientError> {
        self.split_effect(offset, length, "trim", |offset, length| Command::Trim {
            offset,
            length,
            fua: false,
        })
    }

    /// Makes `length` bytes at `offset` read as zeroes (`no_hole`: keep them allocated;
    /// `fast_zero`: fail with `NBD_ENOTSUP` rather than be slower than a write).
    pub fn write_zeroes(
        &self,
        offset: u64,
        length: u64,
        no_hole: bool,
        fast_zero: bool,
    ) -> Result<(), NbdClientError> {
        self.split_effect(offset, length, "write zeroes", |offset, length| {
            Command::WriteZeroes {
                offset,
                length,
                fua: false,
                no_hole,
                fast_zero,
            }
        })
    }

    /// The `base:allocation` extents of `length` bytes at `offset`: consecutive, covering
    /// exactly the range (the last one clipped to it).
    pub fn block_status(&self, offset: u64, length: u64) -> Result<Vec<Extent>, NbdClientError> {
        self.check_range(offset, length)?;
        let mut extents = Vec::new();
        let (mut at, end) = (offset, offset + length);
        while at < end {
            let ask = self.effect_piece(end - at);
            let command = Command::BlockStatus {
                offset: at,
                length: ask,
                req_one: false,
            };
            let request = self.submit(command, "block status")?;
            let ReplyPayload::Extents(answer) = self.wait(request)? else {
                return Err(NbdClientError::Disconnected);
            };
            for mut extent in answer {
                let left = end - at;
                if left == 0 {
                    break;
                }
                extent.length = extent.length.min(u32::try_from(left).unwrap_or(u32::MAX));
                at += u64::from(extent.length);
                extents.push(extent);
            }
        }
        Ok(extents)
    }

    fn check_range(&self, offset: u64, length: u64) -> Result<(), NbdClientError> {
        let size = self.info.size;
        match offset.checked_add(length) {
            Some(end) if end <= size => Ok(()),
            _ => Err(NbdClientError::OutOfRange {
                offset,
                length,
                size,
            }),
        }
    }

    /// A piece of a payload-free command: at most `MAX_EFFECT_LENGTH`, aligned down to the
    /// minimum block size when it is not the last.
    fn effect_piece(&self, left: u64) -> u32 {
        let minimum = u64::from(self.info.block_size.minimum);
        let piece = if left > MAX_EFFECT_LENGTH {
            MAX_EFFECT_LENGTH / minimum * minimum
        } else {
            left
        };
        u32::try_from(piece).expect("at most MAX_EFFECT_LENGTH")
    }

    fn split_effect(
        &self,
        offset: u64,
        length: u64,
        operation: &'static str,
        command: impl Fn(u64, u32) -> Command,
    ) -> Result<(), NbdClientError> {
        self.check_range(offset, length)?;
        let (mut at, end) = (offset, offset + length);
        let mut pending = Vec::new();
        while at < end {
            let piece = self.effect_piece(end - at);
            pending.push(self.submit(command(at, piece), operation)?);
            at += u64::from(piece);
        }
        for request in pending {
            self.wait(request)?;
        }
        Ok(())
    }
}
