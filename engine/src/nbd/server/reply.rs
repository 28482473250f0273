//! Reply encoding: the driver's answer is checked against what its request expects
//! (anything else is sent as `NBD_EIO`) and encoded as a simple reply, or, once
//! structured replies were negotiated, as chunks: reads in pieces of at most
//! [`READ_CHUNK_BYTES`], block status in one chunk of at most [`MAX_EXTENTS_PER_REPLY`]
//! extents.

use super::{
    CloseReason, Expect, Phase, ServerSession, BASE_ALLOCATION_ID, MAX_EXTENTS_PER_REPLY,
    READ_CHUNK_BYTES,
};
use crate::nbd::command::{Extent, ReplyPayload};
use crate::nbd::wire::*;

impl ServerSession {
    /// The driver's answer to request `handle`. A read must answer with exactly its
    /// length of data, a block status with at least one extent (none of length 0), every
    /// other command with [`ReplyPayload::None`]; anything else is sent as `NBD_EIO`.
    /// A handle not in flight (already answered, never asked, or the session closed) is
    /// ignored.
    pub fn handle_reply(&mut self, handle: u64, reply: Result<ReplyPayload, NbdError>) {
        let Some(entry) = self.in_flight.remove(&handle) else {
            return;
        };
        self.in_flight_bytes -= entry.bytes;
        match (entry.expect, reply) {
            (_, Err(error)) => self.reply_error(handle, error),
            (Expect::Data { offset, length }, Ok(ReplyPayload::Data(data)))
                if data.len() == length as usize =>
            {
                self.reply_data(handle, offset, &data)
            }
            (Expect::Extents { length, req_one }, Ok(ReplyPayload::Extents(extents)))
                if !extents.is_empty() && extents.iter().all(|e| e.length > 0) =>
            {
                self.reply_extents(handle, length, req_one, &extents)
            }
            (Expect::Nothing, Ok(ReplyPayload::None)) => {
                self.push_output(encode_simple_reply(0, handle, &[]))
            }
            (_, Ok(_)) => self.reply_error(handle, NbdError::Io),
        }
        if self.phase == Phase::Disconnecting && self.in_flight.is_empty() {
            self.close(CloseReason::ClientDisconnected);
        } else if self.phase == Phase::Transmission && !self.input.is_empty() {
            // Requests held back by the limits may be parsed now that one finished.
            self.process();
        }
    }

    pub(super) fn reply_error(&mut self, handle: u64, error: NbdError) {
        // With structured replies a read must be answered in chunks; errors of other
        // commands go in chunks too, which carry a message.
        let bytes = if self.structured {
            encode_error_chunk(handle, error, &error.to_string())
        } else {
            encode_simple_reply(error.to_wire(), handle, &[])
        };
        self.push_output(bytes);
    }

    fn reply_data(&mut self, handle: u64, offset: u64, data: &[u8]) {
        if !self.structured {
            return self.push_output(encode_simple_reply(0, handle, data));
        }
        let chunks = data.len().div_ceil(READ_CHUNK_BYTES);
        for (i, piece) in data.chunks(READ_CHUNK_BYTES).enumerate() {
            let flags = if i + 1 == chunks { REPLY_FLAG_DONE } else { 0 };
            let piece_offset = offset + (i * READ_CHUNK_BYTES) as u64;
            self.push_output(encode_chunk(
                flags,
                REPLY_TYPE_OFFSET_DATA,
                handle,
                &[&piece_offset.to_be_bytes(), piece],
            ));
        }
    }

    /// One `NBD_REPLY_TYPE_BLOCK_STATUS` chunk. With `req_one`, the first extent clipped to
    /// the request; otherwise extents up to the first that reaches the request's end (the
    /// protocol allows only the last to go past it), at most `MAX_EXTENTS_PER_REPLY`.
    fn reply_extents(&mut self, handle: u64, length: u32, req_one: bool, extents: &[Extent]) {
        let mut kept = Vec::new();
        let mut covered = 0u64;
        for extent in extents.iter().take(MAX_EXTENTS_PER_REPLY) {
            let mut extent = *extent;
            if req_one {
                extent.length = extent.length.min(length);
            }
            kept.push(extent);
            covered += u64::from(extent.length);
            if req_one || covered >= u64::from(length) {
                break;
            }
        }
        let mut payload = Vec::with_capacity(4 + 8 * kept.len());
        payload.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
        for extent in kept {
            payload.extend_from_slice(&extent.length.to_be_bytes());
            payload.extend_from_slice(&extent.flags.to_be_bytes());
        }
        self.push_output(encode_chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            handle,
            &[&payload],
        ));
    }
}
