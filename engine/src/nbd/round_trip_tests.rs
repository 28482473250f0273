//! The client session against the server session, bytes pumped between them in memory.

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

fn every_command(options: ClientOptions) {
    let mut pair = Pair::new(ExportInfo::new("disk", SIZE), options);
    let info = pair.ready();
    assert_eq!(info.size, SIZE);
    assert!(
        info.can_flush
            && info.can_fua
            && info.can_trim
            && info.can_write_zeroes
            && info.can_fast_zero
    );
    assert_eq!(
        pair.server_events,
        vec![ServerEvent::ExportChosen {
            name: "disk".into()
        }]
    );

    let data = pattern(3 * 1024 * 1024 / 2, 7)
        .into_iter()
        .take(SIZE as usize / 2)
        .collect::<Vec<_>>();
    assert_eq!(
        pair.call(Command::Write {
            offset: 8192,
            data: data.clone(),
            fua: true
        }),
        Ok(ReplyPayload::None)
    );
    assert_eq!(
        pair.call(Command::Read {
            offset: 8192,
            length: data.len() as u32
        }),
        Ok(ReplyPayload::Data(data.clone()))
    );
    assert_eq!(pair.call(Command::Flush), Ok(ReplyPayload::None));
    assert_eq!(
        pair.call(Command::Trim {
            offset: 8192,
            length: 4096,
            fua: false
        }),
        Ok(ReplyPayload::None)
    );
    let zeroes = Command::WriteZeroes {
        offset: 12288,
        length: 4096,
        fua: false,
        no_hole: true,
        fast_zero: true,
    };
    assert_eq!(pair.call(zeroes), Ok(ReplyPayload::None));
    let Ok(ReplyPayload::Data(back)) = pair.call(Command::Read {
        offset: 8192,
        length: 12288,
    }) else {
        panic!()
    };
    assert!(back[..8192].iter().all(|&b| b == 0));
    assert_eq!(&back[8192..], &data[8192..12288]);

    if options.base_allocation {
        let status = pair.call(Command::BlockStatus {
            offset: 0,
            length: 16384,
            req_one: false,
        });
        let hole = Extent::HOLE | Extent::ZERO;
        assert_eq!(
            status,
            Ok(ReplyPayload::Extents(vec![Extent {
                length: 16384,
                flags: hole
            }]))
        );
        let status = pair.call(Command::BlockStatus {
            offset: 16384,
            length: 4096,
            req_one: true,
        });
        assert_eq!(
            status,
            Ok(ReplyPayload::Extents(vec![Extent {
                length: 4096,
                flags: 0
            }]))
        );
    } else {
        let refused = pair.client.send(Command::BlockStatus {
            offset: 0,
            length: 4096,
            req_one: false,
        });
        assert_eq!(
            refused,
            Err(ClientError::Unsupported("NBD_CMD_BLOCK_STATUS"))
        );
    }
    pair.client.disconnect();
    pair.pump();
    assert_eq!(
        pair.server_events.last(),
        Some(&ServerEvent::Closed(CloseReason::ClientDisconnected))
    );
    assert!(pair.server.is_closed());
}

#[test]
fn every_command_with_structured_replies() {
    every_command(both());
}

#[test]
fn every_command_with_simple_replies() {
    every_command(simple());
}

#[test]
fn structured_replies_without_block_status() {
    every_command(ClientOptions {
        structured_replies: true,
        base_allocation: false,
    });
}

#[test]
fn replies_out_of_order_reach_their_requests() {
    for options in [both(), simple()] {
        let mut pair = Pair::new(ExportInfo::new("", SIZE), options);
        pair.ready();
        pair.disk = pattern(SIZE as usize, 3);
        pair.hold = true;
        let handles: Vec<u64> = (0..4)
            .map(|i| {
                pair.client
                    .send(Command::Read {
                        offset: i * 4096,
                        length: 4096,
                    })
                    .unwrap()
            })
            .collect();
        pair.pump();
        assert_eq!(pair.held.len(), 4);
        assert_eq!(pair.client.in_flight(), 4);
        let held: Vec<Request> = pair.held.drain(..).rev().collect();
        for request in held {
            pair.answer(request);
        }
        pair.pump();
        for (i, handle) in handles.into_iter().enumerate() {
            let expected = pattern(SIZE as usize, 3)[i * 4096..][..4096].to_vec();
            assert_eq!(pair.take_reply(handle), Ok(ReplyPayload::Data(expected)));
        }
    }
}

#[test]
fn driver_errors_reach_the_client() {
    for options in [both(), simple()] {
        let mut pair = Pair::new(ExportInfo::new("", SIZE), options);
        pair.hold = true;
        let read = pair
            .client
            .send(Command::Read {
                offset: 0,
                length: 512,
            })
            .unwrap();
        let write = pair
            .client
            .send(Command::Write {
                offset: 0,
                data: vec![1; 512],
                fua: false,
            })
            .unwrap();
        pair.pump();
        pair.server.handle_reply(read, Err(super::NbdError::Io));
        pair.server
            .handle_reply(write, Err(super::NbdError::NoSpace));
        // A wrong payload from the driver is an I/O error, and a stale handle is ignored.
        pair.server.handle_reply(write, Ok(ReplyPayload::None));
        pair.server.handle_reply(12345, Ok(ReplyPayload::None));
        pair.pump();
        assert_eq!(pair.take_reply(read), Err(super::NbdError::Io));
        assert_eq!(pair.take_reply(write), Err(super::NbdError::NoSpace));
        let short = pair
            .client
            .send(Command::Read {
                offset: 0,
                length: 512,
            })
            .unwrap();
        pair.pump();
        pair.server
            .handle_reply(short, Ok(ReplyPayload::Data(vec![0; 3])));
        pair.pump();
        assert_eq!(pair.take_reply(short), Err(super::NbdError::Io));
        assert!(pair
            .client_events
            .iter()
            .all(|e| !matches!(e, ClientEvent::Failed(_))));
    }
}

#[test]
fn structured_reads_are_split_into_chunks() {
    let mut export = ExportInfo::new("", 8 << 20);
    export.block_size = BlockSize {
        minimum: 512,
        preferred: 4096,
        maximum: 4 << 20,
    };
    let mut pair = Pair::new(export, both());
    assert_eq!(
        pair.ready().block_size,
        BlockSize {
            minimum: 512,
            preferred: 4096,
            maximum: 4 << 20
        }
    );
    pair.disk = pattern(8 << 20, 9);
    pair.hold = true;
    let handle = pair
        .client
        .send(Command::Read {
            offset: 1 << 20,
            length: 3 << 20,
        })
        .unwrap();
    pair.pump();
    let request = pair.held.pop().unwrap();
    pair.answer(request);
    let mut chunks = 0;
    while let Some(bytes) = pair.server.poll_output() {
        assert_eq!(
            u32::from_be_bytes(bytes[..4].try_into().unwrap()),
            STRUCTURED_REPLY_MAGIC
        );
        chunks += 1;
        pair.client.handle_input(&bytes);
    }
    assert_eq!(chunks, 3);
    pair.pump();
    assert_eq!(
        pair.take_reply(handle),
        Ok(ReplyPayload::Data(
            pattern(8 << 20, 9)[1 << 20..4 << 20].to_vec()
        ))
    );
}

#[test]
fn the_client_checks_requests_against_the_export() {
    let mut export = ExportInfo::new("", SIZE);
    export.read_only = true;
    export.can_trim = false;
    export.can_fua = false;
    export.block_size = BlockSize {
        minimum: 512,
        preferred: 4096,
        maximum: 1 << 16,
    };
    let mut pair = Pair::new(export, both());
    pair.ready();
    let c = &mut pair.client;
    assert_eq!(
        c.send(Command::Write {
            offset: 0,
            data: vec![0; 512],
            fua: false
        }),
        Err(ClientError::ReadOnly)
    );
    assert_eq!(
        c.send(Command::Trim {
            offset: 0,
            length: 512,
            fua: false
        }),
        Err(ClientError::Unsupported("NBD_CMD_TRIM"))
    );
    assert_eq!(
        c.send(Command::Read {
            offset: SIZE,
            length: 512
        }),
        Err(ClientError::OutOfRange {
            offset: SIZE,
            length: 512,
            size: SIZE
        })
    );
    assert_eq!(
        c.send(Command::Read {
            offset: 1,
            length: 512
        }),
        Err(ClientError::Misaligned {
            offset: 1,
            length: 512,
            minimum: 512
        })
    );
    assert_eq!(
        c.send(Command::Read {
            offset: 0,
            length: 1 << 17
        }),
        Err(ClientError::TooLong {
            length: 1 << 17,
            maximum: 1 << 16
        })
    );
    assert_eq!(
        c.send(Command::Read {
            offset: 0,
            length: 0
        }),
        Err(ClientError::ZeroLength)
    );
    let fua = Command::WriteZeroes {
        offset: 0,
        length: 512,
        fua: true,
        no_hole: false,
        fast_zero: false,
    };
    assert_eq!(
        c.send(fua),
        Err(ClientError::Unsupported("NBD_CMD_FLAG_FUA"))
    );
    c.disconnect();
    assert_eq!(c.send(Command::Flush), Err(ClientError::Closed));
}

#[test]
fn unknown_export_fails_the_client() {
    let mut pair = Pair {
        server: ServerSession::new(vec![ExportInfo::new("a", SIZE)], ServerLimits::default()),
        client: ClientSession::new("b", both()),
        disk: Vec::new(),
        held: Vec::new(),
        hold: false,
        server_events: Vec::new(),
        client_events: Vec::new(),
    };
    pair.pump();
    assert_eq!(
        pair.client_events,
        vec![ClientEvent::Failed(ClientError::UnknownExport("b".into()))]
    );
    assert!(
        !pair.server.is_closed(),
        "NBD_OPT_GO can be refused without closing"
    );
}

#[test]
fn disc_waits_for_in_flight_replies() {
    let mut pair = Pair::new(ExportInfo::new("", SIZE), both());
    pair.hold = true;
    let handle = pair.client.send(Command::Flush).unwrap();
    pair.client.disconnect();
    pair.pump();
    assert!(!pair.server.is_closed());
    assert!(!pair.server.wants_input());
    let request = pair.held.pop().unwrap();
    pair.answer(request);
    assert!(pair.server.is_closed());
    pair.pump();
    assert_eq!(pair.take_reply(handle), Ok(ReplyPayload::None));
    assert_eq!(
        pair.server_events.last(),
        Some(&ServerEvent::Closed(CloseReason::ClientDisconnected))
    );
}

#[test]
fn backpressure_holds_requests_until_replies_free_a_slot() {
    let limits = ServerLimits {
        max_in_flight: 2,
        ..ServerLimits::default()
    };
    let mut pair = Pair::with_limits(ExportInfo::new("", SIZE), both(), limits);
    pair.hold = true;
    let handles: Vec<u64> = (0..5)
        .map(|i| {
            pair.client
                .send(Command::Read {
                    offset: i * 512,
                    length: 512,
                })
                .unwrap()
        })
        .collect();
    pair.pump();
    assert_eq!(pair.held.len(), 2);
    assert!(!pair.server.wants_input());
    for _ in 0..3 {
        let request = pair.held.remove(0);
        pair.answer(request);
        pair.pump();
    }
    assert_eq!(pair.held.len(), 2);
    for request in std::mem::take(&mut pair.held) {
        pair.answer(request);
    }
    pair.pump();
    for handle in handles {
        assert!(pair.take_reply(handle).is_ok());
    }
    assert!(pair.server.wants_input());
}

// ---- The server against raw bytes, for what a well-behaved client never sends. ----

/// A server past the handshake (`structured`, `base:allocation` as asked), fed raw bytes.
fn raw_server(export: ExportInfo, structured: bool, limits: ServerLimits) -> ServerSession {
    let options = ClientOptions {
        structured_replies: structured,
        base_allocation: false,
    };
    let pair = Pair::with_limits(export, options, limits);
    pair.ready();
    pair.server
}

fn request(command: CommandType, flags: u16, handle: u64, offset: u64, length: u32) -> Vec<u8> {
    RequestHeader {
        flags,
        command,
        handle,
        offset,
        length,
    }
    .encode()
    .to_vec()
}

/// The error a single reply in the server's output carries (0: success).
fn reply_error(server: &mut ServerSession) -> Option<u32> {
    let bytes = server.poll_output()?;
    let mut c = Cursor::new(&bytes);
    match c.u32()? {
        SIMPLE_REPLY_MAGIC => c.u32(),
        STRUCTURED_REPLY_MAGIC => {
            let header = ChunkHeader::decode_after_magic(bytes[4..20].try_into().ok()?);
            assert_ne!(header.flags & REPLY_FLAG_DONE, 0);
            if header.reply_type == REPLY_TYPE_ERROR {
                Some(u32::from_be_bytes(bytes[20..24].try_into().ok()?))
            } else {
                Some(0)
            }
        }
        _ => None,
    }
}

#[test]
fn the_server_answers_bad_requests_itself() {
    use CommandType::*;
    const EPERM: u32 = 1;
    const EINVAL: u32 = 22;
    const ENOSPC: u32 = 28;
    const EOVERFLOW: u32 = 75;
    for structured in [false, true] {
        let mut export = ExportInfo::new("", SIZE);
        export.can_trim = false;
        export.block_size.minimum = 512;
        let mut server = raw_server(export, structured, ServerLimits::default());
        let cases: Vec<(Vec<u8>, u32)> = vec![
            (request(Read, 0, 1, SIZE - 512, 1024), EINVAL),
            (request(Read, 0, 2, u64::MAX - 511, 512), EINVAL),
            (
                [request(Write, 0, 3, SIZE, 512), vec![0; 512]].concat(),
                ENOSPC,
            ),
            (request(WriteZeroes, 0, 4, SIZE - 512, 1024), ENOSPC),
            (request(Trim, 0, 5, 0, 512), EINVAL),
            (request(Cache, 0, 6, 0, 512), EINVAL),
            (request(CommandType::Other(99), 0, 7, 0, 0), EINVAL),
            (request(Read, CMD_FLAG_DF, 8, 0, 512), EINVAL),
            (request(Read, 1 << 9, 9, 0, 512), EINVAL),
            (request(BlockStatus, 0, 10, 0, 512), EINVAL),
            (request(Read, 0, 11, 0, 0), EINVAL),
            (request(Read, 0, 12, 1, 512), EINVAL),
            (
                request(Read, 0, 13, 0, (32 << 20) + 512),
                if structured { EOVERFLOW } else { EINVAL },
            ),
            (request(Write, CMD_FLAG_NO_HOLE, 14, 0, 0), EINVAL),
        ];
        for (bytes, errno) in cases {
            server.handle_input(&bytes);
            assert_eq!(
                server.poll_event(),
                None,
                "structured {structured}, errno {errno}"
            );
            assert_eq!(
                reply_error(&mut server),
                Some(errno),
                "structured {structured}"
            );
        }
        assert!(!server.is_closed());
        assert_eq!(server.in_flight(), 0);

        let mut read_only = ExportInfo::new("", SIZE);
        read_only.read_only = true;
        let mut server = raw_server(read_only, structured, ServerLimits::default());
        server.handle_input(&[request(Write, 0, 1, 0, 512), vec![0; 512]].concat());
        server.handle_input(&request(WriteZeroes, 0, 2, 0, 512));
        server.handle_input(&request(Trim, 0, 3, 0, 512));
        for _ in 0..3 {
            assert_eq!(reply_error(&mut server), Some(EPERM));
        }
        server.handle_input(&request(Read, 0, 4, 0, 512));
        assert!(matches!(server.poll_event(), Some(ServerEvent::Request(_))));
    }
}

#[test]
fn the_server_disconnects_on_what_it_cannot_follow() {
    let limits = ServerLimits {
        max_payload: 1 << 16,
        ..ServerLimits::default()
    };
    let mut server = raw_server(ExportInfo::new("", SIZE), true, limits);
    server.handle_input(&request(CommandType::Write, 0, 1, 0, (1 << 16) + 1));
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Closed(CloseReason::PayloadTooLarge {
            length: (1 << 16) + 1
        }))
    );
    assert!(server.is_closed() && !server.wants_input());

    let mut server = raw_server(ExportInfo::new("", SIZE), true, ServerLimits::default());
    server.handle_input(&[0xde, 0xad, 0xbe, 0xef].repeat(7));
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Closed(CloseReason::BadMagic))
    );

    let mut server = raw_server(ExportInfo::new("", SIZE), true, ServerLimits::default());
    server.handle_input(&request(CommandType::Read, 0, 7, 0, 512));
    server.handle_input(&request(CommandType::Read, 0, 7, 512, 512));
    assert!(matches!(server.poll_event(), Some(ServerEvent::Request(_))));
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Closed(CloseReason::DuplicateHandle(7)))
    );
    server.handle_reply(7, Ok(ReplyPayload::Data(vec![0; 512])));
    assert_eq!(
        server.poll_output(),
        None,
        "replies after the close are ignored"
    );
}

// ---- The handshake from raw bytes. ----

/// A server with the greeting read and client flags sent.
fn handshaking_server(limits: ServerLimits) -> ServerSession {
    let mut server = ServerSession::new(
        vec![ExportInfo::new("a", SIZE), ExportInfo::new("b", SIZE)],
        limits,
    );
    let greeting = server.poll_output().unwrap();
    assert_eq!(
        decode_greeting(greeting[..].try_into().unwrap()),
        Some(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
    );
    server.handle_input(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes());
    server
}

fn option_reply(server: &mut ServerSession) -> (u32, OptionReply, Vec<u8>) {
    let bytes = server.poll_output().expect("an option reply");
    let (option, reply, length) =
        decode_option_reply_header(bytes[..20].try_into().unwrap()).unwrap();
    assert_eq!(bytes.len(), 20 + length as usize);
    (option, reply, bytes[20..].to_vec())
}

#[test]
fn option_haggling() {
    let mut server = handshaking_server(ServerLimits::default());
    server.handle_input(&encode_option(OptionCode::List, &[]));
    let mut names = Vec::new();
    loop {
        match option_reply(&mut server) {
            (3, OptionReply::Server, data) => names.push(Cursor::new(&data).string32().unwrap()),
            (3, OptionReply::Ack, _) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(names, ["a", "b"]);
    server.handle_input(&encode_option(OptionCode::Other(77), b"junk"));
    assert_eq!(option_reply(&mut server).1, OptionReply::ErrUnsup);
    server.handle_input(&encode_option(OptionCode::StartTls, &[]));
    assert_eq!(option_reply(&mut server).1, OptionReply::ErrUnsup);
    server.handle_input(&encode_option(OptionCode::SetMetaContext, &[]));
    assert_eq!(
        option_reply(&mut server).1,
        OptionReply::ErrInvalid,
        "structured replies come first"
    );
    server.handle_input(&encode_option(OptionCode::StructuredReply, &[]));
    assert_eq!(option_reply(&mut server).1, OptionReply::Ack);
    server.handle_input(&encode_option(OptionCode::Go, &[0, 0, 0, 9]));
    assert_eq!(option_reply(&mut server).1, OptionReply::ErrInvalid);

    let mut list = Vec::new();
    put_string32(&mut list, "a");
    list.extend_from_slice(&1u32.to_be_bytes());
    put_string32(&mut list, "base:");
    server.handle_input(&encode_option(OptionCode::ListMetaContext, &list));
    let (_, reply, data) = option_reply(&mut server);
    assert_eq!(
        (reply, &data[4..]),
        (OptionReply::MetaContext, BASE_ALLOCATION.as_bytes())
    );
    assert_eq!(option_reply(&mut server).1, OptionReply::Ack);

    // NBD_OPT_EXPORT_NAME: size, flags, no zeroes (NO_ZEROES was agreed), transmission.
    server.handle_input(&encode_option(OptionCode::ExportName, b"b"));
    let answer = server.poll_output().unwrap();
    assert_eq!(answer.len(), 10);
    assert_eq!(u64::from_be_bytes(answer[..8].try_into().unwrap()), SIZE);
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::ExportChosen { name: "b".into() })
    );
    assert_eq!(server.export().unwrap().name, "b");
}

#[test]
fn option_limits_close_the_session() {
    let mut server = handshaking_server(ServerLimits {
        max_options: 2,
        ..ServerLimits::default()
    });
    for _ in 0..2 {
        server.handle_input(&encode_option(OptionCode::Other(50), &[]));
        assert_eq!(option_reply(&mut server).1, OptionReply::ErrUnsup);
    }
    server.handle_input(&encode_option(OptionCode::Other(50), &[]));
    assert_eq!(option_reply(&mut server).1, OptionReply::ErrPolicy);
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Closed(CloseReason::TooManyOptions))
    );

    let mut server = handshaking_server(ServerLimits {
        max_option_length: 64,
        ..ServerLimits::default()
    });
    server.handle_input(&encode_option(OptionCode::Go, &[0; 65])[..16]);
    assert_eq!(option_reply(&mut server).1, OptionReply::ErrTooBig);
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Closed(CloseReason::OptionTooLong {
            length: 65
        }))
    );

    let mut server = handshaking_server(ServerLimits::default());
    server.handle_input(&encode_option(OptionCode::ExportName, b"nope"));
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Closed(CloseReason::UnknownExport(
            "nope".into()
        )))
    );

    let mut server = handshaking_server(ServerLimits::default());
    server.handle_input(&encode_option(OptionCode::Abort, &[]));
    assert_eq!(option_reply(&mut server).1, OptionReply::Ack);
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Closed(CloseReason::ClientAborted))
    );

    let mut server = ServerSession::new(vec![], ServerLimits::default());
    server.handle_input(&[0, 0, 0, 4]);
    assert_eq!(
        server.poll_event(),
        Some(ServerEvent::Closed(CloseReason::UnknownClientFlags(4)))
    );
}

// ---- The client against a scripted server. ----

#[test]
fn the_client_falls_back_to_export_name() {
    let mut client = ClientSession::new("x", both());
    client.handle_input(&encode_greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
    assert_eq!(
        client.poll_output().unwrap(),
        (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes()
    );
    assert_eq!(client.poll_output().unwrap()[8..12], 8u32.to_be_bytes());
    client.handle_input(&encode_option_reply(8, OptionReply::ErrUnsup, &[]));
    let go = client.poll_output().unwrap();
    assert_eq!(
        go[8..12],
        7u32.to_be_bytes(),
        "no meta context without structured replies"
    );
    client.handle_input(&encode_option_reply(7, OptionReply::ErrUnsup, &[]));
    let export_name = client.poll_output().unwrap();
    assert_eq!(export_name[8..12], 1u32.to_be_bytes());
    assert_eq!(&export_name[16..], b"x");
    let mut answer = 4096u64.to_be_bytes().to_vec();
    answer.extend_from_slice(&(FLAG_HAS_FLAGS | FLAG_READ_ONLY).to_be_bytes());
    client.handle_input(&answer);
    let Some(ClientEvent::Ready(info)) = client.poll_event() else {
        panic!()
    };
    assert_eq!(
        (info.name.as_str(), info.size, info.read_only),
        ("x", 4096, true)
    );
    assert!(!client.can_block_status());
}

#[test]
fn the_client_refuses_a_server_that_lies_about_lengths() {
    let mut pair = Pair::new(ExportInfo::new("", SIZE), both());
    let handle = pair
        .client
        .send(Command::Read {
            offset: 0,
            length: 512,
        })
        .unwrap();
    let chunk = encode_chunk(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, handle, &[]);
    let mut header = chunk[..20].to_vec();
    header[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    pair.client.handle_input(&header);
    assert!(matches!(
        pair.client.poll_event(),
        Some(ClientEvent::Failed(ClientError::Protocol(_)))
    ));
    assert_eq!(pair.client.buffered_bytes(), 0);

    let mut pair = Pair::new(ExportInfo::new("", SIZE), both());
    pair.client.handle_input(&encode_simple_reply(0, 999, &[]));
    assert!(matches!(
        pair.client.poll_event(),
        Some(ClientEvent::Failed(ClientError::Protocol(_)))
    ));

    let mut pair = Pair::new(ExportInfo::new("", SIZE), both());
    let handle = pair
        .client
        .send(Command::Read {
            offset: 0,
            length: 512,
        })
        .unwrap();
    // Claims success after 256 of 512 bytes.
    let chunk = encode_chunk(
        REPLY_FLAG_DONE,
        REPLY_TYPE_OFFSET_DATA,
        handle,
        &[&0u64.to_be_bytes(), &[1; 256]],
    );
    pair.client.handle_input(&chunk);
    assert!(matches!(
        pair.client.poll_event(),
        Some(ClientEvent::Failed(ClientError::Protocol(_)))
    ));
}

#[test]
fn the_client_assembles_holes_and_error_chunks() {
    let mut pair = Pair::new(ExportInfo::new("", SIZE), both());
    let handle = pair
        .client
        .send(Command::Read {
            offset: 4096,
            length: 1024,
        })
        .unwrap();
    let data = encode_chunk(
        0,
        REPLY_TYPE_OFFSET_DATA,
        handle,
        &[&4608u64.to_be_bytes(), &[7; 512]],
    );
    let hole = encode_chunk(
        0,
        REPLY_TYPE_OFFSET_HOLE,
        handle,
        &[&4096u64.to_be_bytes(), &512u32.to_be_bytes()],
    );
    let done = encode_chunk(REPLY_FLAG_DONE, REPLY_TYPE_NONE, handle, &[]);
    pair.client.handle_input(&[data, hole, done].concat());
    let mut expected = vec![0; 512];
    expected.extend_from_slice(&[7; 512]);
    assert_eq!(
        pair.client.poll_event(),
        Some(ClientEvent::Reply {
            handle,
            result: Ok(ReplyPayload::Data(expected))
        })
    );

    let handle = pair.client.send(Command::Flush).unwrap();
    let error = encode_chunk(
        0,
        REPLY_TYPE_ERROR_OFFSET,
        handle,
        &[
            &5u32.to_be_bytes(),
            &2u16.to_be_bytes(),
            b"no",
            &0u64.to_be_bytes(),
        ],
    );
    let done = encode_chunk(REPLY_FLAG_DONE, REPLY_TYPE_NONE, handle, &[]);
    pair.client.handle_input(&[error, done].concat());
    assert_eq!(
        pair.client.poll_event(),
        Some(ClientEvent::Reply {
            handle,
            result: Err(super::NbdError::Io)
        })
    );
}
