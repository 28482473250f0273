//! The client session against the server session, bytes pumped between them in memory.
//!
//! This module holds the pair of sessions and the driver that answers from an in-memory
//! disk; the tests are grouped by topic, one submodule each:
//! - `commands`: every command's round trip, simple and structured.
//! - `ordering`: replies out of order, `NBD_CMD_DISC` and back-pressure.
//! - `errors`: errors and refusals, on either side, including raw bytes no
//!   well-behaved peer sends.
//! - `handshake`: option haggling and the handshake's failures and fallbacks.

mod commands;
mod errors;
mod handshake;
mod ordering;

use super::client::{ClientError, ClientEvent, ClientOptions, ClientSession};
use super::command::{Command, Extent, ReplyPayload, Request};
use super::export::{BlockSize, ExportInfo};
use super::server::{CloseReason, ServerEvent, ServerLimits, ServerSession};
use super::wire::*;

const SIZE: u64 = 1 << 20;

/// Both sessions and the disk the server's driver serves from.
struct Pair {
    server: ServerSession,
    client: ClientSession,
    disk: Vec<u8>,
    /// Requests the driver holds instead of answering at once.
    held: Vec<Request>,
    hold: bool,
    server_events: Vec<ServerEvent>,
    client_events: Vec<ClientEvent>,
}

impl Pair {
    fn new(export: ExportInfo, options: ClientOptions) -> Self {
        Self::with_limits(export, options, ServerLimits::default())
    }

    fn with_limits(export: ExportInfo, options: ClientOptions, limits: ServerLimits) -> Self {
        let disk = vec![0; export.size as usize];
        let name = export.name.clone();
        let mut pair = Self {
            server: ServerSession::new(vec![export], limits),
            client: ClientSession::new(&name, options),
            disk,
            held: Vec::new(),
            hold: false,
            server_events: Vec::new(),
            client_events: Vec::new(),
        };
        pair.pump();
        pair
    }

    /// Moves bytes both ways and runs the server's driver until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(bytes) = self.client.poll_output() {
                self.server.handle_input(&bytes);
                moved = true;
            }
            while let Some(event) = self.server.poll_event() {
                moved = true;
                match event {
                    ServerEvent::Request(request) if self.hold => self.held.push(request),
                    ServerEvent::Request(request) => self.answer(request),
                    other => self.server_events.push(other),
                }
            }
            while let Some(bytes) = self.server.poll_output() {
                self.client.handle_input(&bytes);
                moved = true;
            }
            while let Some(event) = self.client.poll_event() {
                self.client_events.push(event);
            }
            if !moved {
                break;
            }
        }
    }

    /// Runs `request` against the disk model.
    fn answer(&mut self, request: Request) {
        let result = match request.command {
            Command::Read { offset, length } => Ok(ReplyPayload::Data(
                self.disk[offset as usize..][..length as usize].to_vec(),
            )),
            Command::Write { offset, data, .. } => {
                self.disk[offset as usize..][..data.len()].copy_from_slice(&data);
                Ok(ReplyPayload::None)
            }
            Command::Trim { offset, length, .. } | Command::WriteZeroes { offset, length, .. } => {
                self.disk[offset as usize..][..length as usize].fill(0);
                Ok(ReplyPayload::None)
            }
            Command::Flush => Ok(ReplyPayload::None),
            Command::BlockStatus { offset, length, .. } => {
                // Zero blocks of 4 KiB are holes; the answer may run past the request.
                let mut extents: Vec<Extent> = Vec::new();
                let mut at = offset - offset % 4096;
                while at < offset + u64::from(length) {
                    let block = &self.disk[at as usize..(at as usize + 4096).min(self.disk.len())];
                    let flags = if block.iter().all(|&b| b == 0) {
                        Extent::HOLE | Extent::ZERO
                    } else {
                        0
                    };
                    let len = (block.len() as u64 - (offset.max(at) - at)) as u32;
                    match extents.last_mut() {
                        Some(last) if last.flags == flags => last.length += len,
                        _ => extents.push(Extent { length: len, flags }),
                    }
                    at += 4096;
                }
                Ok(ReplyPayload::Extents(extents))
            }
        };
        self.server.handle_reply(request.handle, result);
    }

    fn ready(&self) -> ExportInfo {
        match self.client_events.first() {
            Some(ClientEvent::Ready(info)) => info.clone(),
            other => panic!("not ready: {other:?}"),
        }
    }

    /// Sends `command`, pumps, and returns its result.
    fn call(&mut self, command: Command) -> Result<ReplyPayload, super::NbdError> {
        let handle = self
            .client
            .send(command)
            .expect("client accepts the request");
        self.pump();
        self.take_reply(handle)
    }

    fn take_reply(&mut self, handle: u64) -> Result<ReplyPayload, super::NbdError> {
        let at = self
            .client_events
            .iter()
            .position(|e| matches!(e, ClientEvent::Reply { handle: h, .. } if *h == handle))
            .unwrap_or_else(|| panic!("no reply for {handle}: {:?}", self.client_events));
        match self.client_events.remove(at) {
            ClientEvent::Reply { result, .. } => result,
            _ => unreachable!(),
        }
    }
}

fn both() -> ClientOptions {
    ClientOptions::default()
}

fn simple() -> ClientOptions {
    ClientOptions {
        structured_replies: false,
        base_allocation: false,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
