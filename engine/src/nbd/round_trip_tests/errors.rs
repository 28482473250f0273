//! Errors and refusals: the driver's errors reaching the client, the client refusing
//! requests the export cannot take and servers that lie, and the server answering or
//! disconnecting on raw bytes a well-behaved client never sends.

use super::*;

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
