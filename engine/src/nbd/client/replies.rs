//! Replies in the transmission phase: simple replies and structured-reply chunks,
//! folded into their request's state per cookie until the chunk flagged done. Every
//! chunk's length is bounded by what its request can take before it is buffered; a reply
//! for a cookie not in flight, or one that does not fit its request, fails the session.

use super::{ClientError, ClientEvent, ClientSession, Pending, MAX_EXTENTS_PER_CHUNK};
use crate::nbd::command::{Extent, ReplyPayload};
use crate::nbd::wire::*;

impl ClientSession {
    pub(super) fn transmission_reply(&mut self, input: &[u8]) -> Option<usize> {
        let magic = u32::from_be_bytes(input.get(..4)?.try_into().expect("4 bytes"));
        match magic {
            SIMPLE_REPLY_MAGIC => self.simple_reply(input),
            STRUCTURED_REPLY_MAGIC if self.structured => self.structured_chunk(input),
            STRUCTURED_REPLY_MAGIC => {
                self.protocol("structured reply that was not negotiated");
                None
            }
            _ => {
                self.fail(ClientError::BadMagic);
                None
            }
        }
    }

    fn simple_reply(&mut self, input: &[u8]) -> Option<usize> {
        let mut c = Cursor::new(input.get(..SIMPLE_REPLY_HEADER_LEN)?);
        c.u32();
        let error = c.u32().expect("16 bytes");
        let handle = c.u64().expect("16 bytes");
        let Some(entry) = self.in_flight.get(&handle) else {
            self.protocol(format!("reply for cookie {handle:#x} not in flight"));
            return None;
        };
        let result = match (&entry.pending, error) {
            (_, error) if error != 0 => Err(NbdError::from_wire(error)),
            (Pending::Read { .. }, _) if self.structured => {
                self.protocol("simple reply to a read with structured replies");
                return None;
            }
            (Pending::Read { length, .. }, _) => {
                let end = SIMPLE_REPLY_HEADER_LEN + *length as usize;
                let data = input.get(SIMPLE_REPLY_HEADER_LEN..end)?.to_vec();
                self.in_flight.remove(&handle);
                self.events.push_back(ClientEvent::Reply {
                    handle,
                    result: Ok(ReplyPayload::Data(data)),
                });
                return Some(end);
            }
            (Pending::BlockStatus { .. }, _) => {
                self.protocol("simple reply to a successful block status");
                return None;
            }
            (Pending::Other, _) => Ok(ReplyPayload::None),
        };
        self.in_flight.remove(&handle);
        self.events.push_back(ClientEvent::Reply { handle, result });
        Some(SIMPLE_REPLY_HEADER_LEN)
    }

    fn structured_chunk(&mut self, input: &[u8]) -> Option<usize> {
        let header = ChunkHeader::decode_after_magic(
            input
                .get(4..CHUNK_HEADER_LEN)?
                .try_into()
                .expect("16 bytes"),
        );
        let handle = header.handle;
        let Some(entry) = self.in_flight.get(&handle) else {
            self.protocol(format!("chunk for cookie {handle:#x} not in flight"));
            return None;
        };
        let bound = match (header.reply_type, &entry.pending) {
            (REPLY_TYPE_NONE, _) => 0,
            (REPLY_TYPE_OFFSET_DATA, Pending::Read { length, .. }) => 8 + u64::from(*length),
            (REPLY_TYPE_OFFSET_HOLE, Pending::Read { .. }) => 12,
            (REPLY_TYPE_BLOCK_STATUS, Pending::BlockStatus { req_one: true, .. }) => 12,
            (REPLY_TYPE_BLOCK_STATUS, Pending::BlockStatus { .. }) => {
                4 + 8 * u64::from(MAX_EXTENTS_PER_CHUNK)
            }
            (t, _) if t & REPLY_TYPE_ERROR_BIT != 0 => 6 + MAX_STRING_LEN as u64 + 64,
            (t, _) => {
                self.protocol(format!("unexpected chunk type {t}"));
                return None;
            }
        };
        if u64::from(header.length) > bound {
            self.protocol(format!(
                "chunk of type {} with {} bytes",
                header.reply_type, header.length
            ));
            return None;
        }
        let end = CHUNK_HEADER_LEN + header.length as usize;
        let payload = input.get(CHUNK_HEADER_LEN..end)?;
        if let Err(what) = self.apply_chunk(header, payload) {
            self.protocol(what);
            return None;
        }
        if header.flags & REPLY_FLAG_DONE != 0 {
            let entry = self.in_flight.remove(&handle).expect("looked up above");
            let result = match (entry.error, entry.pending) {
                (Some(error), _) => Err(error),
                (
                    None,
                    Pending::Read {
                        length,
                        data,
                        covered,
                        ..
                    },
                ) => {
                    if covered != u64::from(length) {
                        self.protocol(format!("read answered {covered} of {length} bytes"));
                        return None;
                    }
                    Ok(ReplyPayload::Data(if data.is_empty() {
                        vec![0; length as usize]
                    } else {
                        data
                    }))
                }
                (
                    None,
                    Pending::BlockStatus {
                        extents: Some(extents),
                        ..
                    },
                ) => Ok(ReplyPayload::Extents(extents)),
                (None, Pending::BlockStatus { extents: None, .. }) => {
                    self.protocol("block status answered without extents");
                    return None;
                }
                (None, Pending::Other) => Ok(ReplyPayload::None),
            };
            self.events.push_back(ClientEvent::Reply { handle, result });
        }
        Some(end)
    }

    /// Folds one chunk (its length already bounded) into its request's state.
    fn apply_chunk(&mut self, header: ChunkHeader, payload: &[u8]) -> Result<(), String> {
        let context_id = self.context_id;
        let entry = self
            .in_flight
            .get_mut(&header.handle)
            .expect("looked up by the caller");
        let mut c = Cursor::new(payload);
        match header.reply_type {
            REPLY_TYPE_NONE => {
                if header.flags & REPLY_FLAG_DONE == 0 {
                    return Err("NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE".into());
                }
            }
            REPLY_TYPE_OFFSET_DATA | REPLY_TYPE_OFFSET_HOLE => {
                let Pending::Read {
                    offset,
                    length,
                    data,
                    covered,
                } = &mut entry.pending
                else {
                    unreachable!("bounded above only for reads")
                };
                let at = c.u64().ok_or("short content chunk")?;
                let (count, bytes) = if header.reply_type == REPLY_TYPE_OFFSET_HOLE {
                    let size = c.u32().ok_or("short NBD_REPLY_TYPE_OFFSET_HOLE")?;
                    if c.remaining() != 0 {
                        return Err("NBD_REPLY_TYPE_OFFSET_HOLE of the wrong length".into());
                    }
                    (size as usize, None)
                } else {
                    let bytes = c.rest();
                    (bytes.len(), Some(bytes))
                };
                let start = at
                    .checked_sub(*offset)
                    .ok_or("content before the request")?;
                let stop = start
                    .checked_add(count as u64)
                    .ok_or("content past the request")?;
                if count == 0 || stop > u64::from(*length) {
                    return Err("content chunk outside the request".into());
                }
                *covered += count as u64;
                if *covered > u64::from(*length) {
                    return Err("content chunks overlap".into());
                }
                if let Some(bytes) = bytes {
                    if data.is_empty() {
                        *data = vec![0; *length as usize];
                    }
                    data[start as usize..stop as usize].copy_from_slice(bytes);
                }
            }
            REPLY_TYPE_BLOCK_STATUS => {
                let Pending::BlockStatus {
                    length,
                    req_one,
                    extents,
                } = &mut entry.pending
                else {
                    unreachable!("bounded above only for block status")
                };
                let id = c.u32().ok_or("short NBD_REPLY_TYPE_BLOCK_STATUS")?;
                if Some(id) != context_id || extents.is_some() {
                    return Err(format!("block status for context {id}, or twice"));
                }
                if c.remaining() == 0 || c.remaining() % 8 != 0 {
                    return Err("NBD_REPLY_TYPE_BLOCK_STATUS of the wrong length".into());
                }
                let mut list = Vec::with_capacity(c.remaining() / 8);
                while c.remaining() > 0 {
                    let extent = Extent {
                        length: c.u32().expect("multiple of 8"),
                        flags: c.u32().expect("multiple of 8"),
                    };
                    if extent.length == 0 || (*req_one && extent.length > *length) {
                        return Err("extent of length 0 or longer than asked".into());
                    }
                    list.push(extent);
                }
                *extents = Some(list);
            }
            _ => {
                // An error chunk, known or not: the reply fails with its error.
                let error = c.u32().ok_or("short error chunk")?;
                let message_len = c.u16().ok_or("short error chunk")?;
                if usize::from(message_len) > c.remaining() {
                    return Err("error message longer than its chunk".into());
                }
                entry.error.get_or_insert(NbdError::from_wire(error));
            }
        }
        Ok(())
    }
}
