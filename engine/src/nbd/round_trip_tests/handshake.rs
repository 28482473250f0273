//! The handshake: option haggling from raw bytes, the server's option limits, the
//! client's fallback to `NBD_OPT_EXPORT_NAME` and an unknown export.

use super::*;

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
