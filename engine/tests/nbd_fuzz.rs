//! Both NBD sessions fed random and mutated byte streams in random-sized pieces: they never
//! panic, what they buffer stays bounded, and afterwards they are either closed (with
//! exactly one closing event) or still consistent.

use blockmirror_engine::nbd::{
    ClientEvent, ClientOptions, ClientSession, Command, ExportInfo, Extent, ReplyPayload,
    ServerEvent, ServerLimits, ServerSession,
};
use proptest::prelude::*;

const SIZE: u64 = 1 << 20;

fn limits() -> ServerLimits {
    ServerLimits {
        max_payload: 1 << 16,
        max_option_length: 1024,
        max_options: 16,
        max_in_flight: 4,
        max_buffered_bytes: 1 << 18,
    }
}

fn exports() -> Vec<ExportInfo> {
    vec![ExportInfo::new("", SIZE), ExportInfo::new("disk", SIZE)]
}

/// The commands a scripted client sends once ready.
fn script() -> Vec<Command> {
    vec![
        Command::Write {
            offset: 4096,
            data: vec![5; 4096],
            fua: true,
        },
        Command::Read {
            offset: 0,
            length: 8192,
        },
        Command::Flush,
        Command::Trim {
            offset: 0,
            length: 4096,
            fua: false,
        },
        Command::WriteZeroes {
            offset: 8192,
            length: 4096,
            fua: false,
            no_hole: false,
            fast_zero: false,
        },
        Command::BlockStatus {
            offset: 0,
            length: 65536,
            req_one: false,
        },
        Command::Read {
            offset: 65536,
            length: 4096,
        },
    ]
}

/// The answer a well-behaved driver gives.
fn answer(command: &Command) -> ReplyPayload {
    match command {
        Command::Read { length, .. } => ReplyPayload::Data(vec![1; *length as usize]),
        Command::BlockStatus { length, .. } => ReplyPayload::Extents(vec![Extent {
            length: *length,
            flags: 0,
        }]),
        _ => ReplyPayload::None,
    }
}

/// A valid session, recorded: (what the client sent, what the server sent).
fn recorded_session(options: ClientOptions) -> (Vec<u8>, Vec<u8>) {
    let mut server = ServerSession::new(exports(), limits());
    let mut client = ClientSession::new("disk", options);
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    let mut sent = false;
    for _ in 0..100 {
        while let Some(bytes) = client.poll_output() {
            to_server.extend_from_slice(&bytes);
            server.handle_input(&bytes);
        }
        while let Some(event) = server.poll_event() {
            if let ServerEvent::Request(request) = event {
                let reply = answer(&request.command);
                server.handle_reply(request.handle, Ok(reply));
            }
        }
        while let Some(bytes) = server.poll_output() {
            to_client.extend_from_slice(&bytes);
            client.handle_input(&bytes);
        }
        while let Some(event) = client.poll_event() {
            if let ClientEvent::Ready(_) = event {
                for command in script() {
                    if client.send(command.clone()).is_err() {
                        continue;
                    }
                }
                sent = true;
            }
        }
        if sent && client.in_flight() == 0 {
            client.disconnect();
            sent = false;
        }
    }
    (to_server, to_client)
}

/// Splits `bytes` at the given cut points (taken modulo the length).
fn pieces<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| if bytes.is_empty() { 0 } else { c % bytes.len() })
        .collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..32).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip { at, mask } => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= mask;
                }
            }
            Mutation::Insert { at, bytes: new } => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Delete { at, len: n } => {
                let at = (at % len).min(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Truncate { at } => bytes.truncate(at % len),
        }
    }
    bytes
}

/// Feeds `input` to a server in pieces, answering requests (sometimes with wrong
/// payloads or stale handles), and checks its bounds and consistency after every piece.
fn drive_server(input: &[u8], cuts: &[usize], answers: &[u8]) {
    let limits = limits();
    let mut server = ServerSession::new(exports(), limits);
    let bound = 28
        + limits.max_payload as usize
        + limits.max_buffered_bytes
        + 2 * limits.max_payload as usize;
    let mut closed_events = 0;
    let mut held = Vec::new();
    let mut answer_bits = answers.iter().cycle();
    let fed: usize = input.len();
    let mut output = 0usize;
    for piece in pieces(input, cuts) {
        server.handle_input(piece);
        while let Some(event) = server.poll_event() {
            match event {
                ServerEvent::Request(request) => held.push(request),
                ServerEvent::Closed(_) => closed_events += 1,
                ServerEvent::ExportChosen { .. } => assert!(server.export().is_some()),
                _ => {}
            }
        }
        assert!(server.in_flight() <= limits.max_in_flight);
        assert!(
            server.buffered_bytes() <= bound,
            "buffered {}",
            server.buffered_bytes()
        );
        // Answer some held requests, in an order and manner the answer bits choose.
        while let Some(&bit) = answer_bits.next().filter(|_| !held.is_empty()) {
            let request = held.remove(bit as usize % held.len());
            let reply = match bit % 4 {
                0 => Err(blockmirror_engine::nbd::NbdError::Io),
                1 => Ok(ReplyPayload::Data(vec![0; 3])),
                _ => Ok(answer(&request.command)),
            };
            server.handle_reply(request.handle, reply);
            server.handle_reply(request.handle ^ 1, Ok(ReplyPayload::None));
            if bit % 3 == 0 {
                break;
            }
        }
        while let Some(bytes) = server.poll_output() {
            output += bytes.len();
        }
        while let Some(event) = server.poll_event() {
            if let ServerEvent::Closed(_) = event {
                closed_events += 1;
            }
        }
    }
    assert!(closed_events <= 1);
    assert_eq!(server.is_closed(), closed_events == 1);
    if server.is_closed() {
        assert!(!server.wants_input());
        assert_eq!(server.in_flight(), 0);
    }
    // Output is bounded by the input: each request or option gets a bounded answer (reads
    // at most their length of data, which a request of 28 bytes may ask up to max_payload).
    let requests = fed / 16 + 1;
    assert!(
        output <= 18 + requests * (limits.max_payload as usize + 1024),
        "output {output} for {fed} bytes"
    );
}

/// Feeds `input` to a client in pieces; once ready it sends the script.
fn drive_client(input: &[u8], cuts: &[usize], options: ClientOptions) {
    let mut client = ClientSession::new("disk", options);
    let mut failed_events = 0;
    let mut fed = 0;
    for piece in pieces(input, cuts) {
        client.handle_input(piece);
        fed += piece.len();
        while client.poll_output().is_some() {}
        while let Some(event) = client.poll_event() {
            match event {
                ClientEvent::Ready(info) => {
                    assert!(
                        info.block_size.maximum <= 32 << 20
                            && info.block_size.minimum.is_power_of_two()
                    );
                    for command in script() {
                        let _ = client.send(command);
                    }
                }
                ClientEvent::Failed(_) => failed_events += 1,
                ClientEvent::Reply {
                    result: Ok(ReplyPayload::Data(data)),
                    ..
                } => assert!(data.len() <= 8192),
                ClientEvent::Reply { .. } => {}
                _ => {}
            }
        }
        assert!(client.buffered_bytes() <= fed);
        assert!(client.in_flight() <= script().len());
    }
    assert!(failed_events <= 1);
    assert_eq!(client.is_failed(), failed_events == 1);
    if client.is_failed() {
        assert_eq!(client.in_flight(), 0);
        assert_eq!(client.buffered_bytes(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn server_survives_random_bytes(
        input in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
        answers in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        drive_server(&input, &cuts, &answers);
    }

    #[test]
    fn server_survives_mutated_valid_streams(
        structured in any::<bool>(),
        mutations in proptest::collection::vec(mutation(), 0..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
        answers in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        let options = ClientOptions { structured_replies: structured, base_allocation: structured };
        let (to_server, _) = recorded_session(options);
        drive_server(&mutate(to_server, &mutations), &cuts, &answers);
    }

    #[test]
    fn client_survives_random_bytes(
        input in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        drive_client(&input, &cuts, ClientOptions::default());
    }

    #[test]
    fn client_survives_mutated_valid_streams(
        structured in any::<bool>(),
        mutations in proptest::collection::vec(mutation(), 0..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let options = ClientOptions { structured_replies: structured, base_allocation: structured };
        let (_, to_client) = recorded_session(options);
        drive_client(&mutate(to_client, &mutations), &cuts, options);
    }
}

#[test]
fn a_recorded_session_replays_cleanly() {
    for structured in [false, true] {
        let options = ClientOptions {
            structured_replies: structured,
            base_allocation: structured,
        };
        let (to_server, to_client) = recorded_session(options);
        assert!(to_server.len() > 4096 && to_client.len() > 8192);
        drive_server(&to_server, &[], &[2]);
        drive_client(&to_client, &[], options);
    }
}
