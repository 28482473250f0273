//! Every command's round trip, with simple and with structured replies.

use super::*;

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
