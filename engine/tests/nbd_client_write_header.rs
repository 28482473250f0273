//! `ClientSession::send_write_header`: a write whose payload the session never holds is,
//! on the wire and to the server, the same request as `send(Command::Write)`, refused by
//! the same checks, and answered by handle like any other.

use blockmirror_engine::nbd::{
    ClientEvent, ClientOptions, ClientSession, Command, ExportInfo, ReplyPayload, ServerEvent,
    ServerLimits, ServerSession,
};
use proptest::prelude::*;

const SIZE: u64 = 1 << 20;

/// A client and a server, handshake done, bytes moved in memory.
struct Pair {
    client: ClientSession,
    server: ServerSession,
}

impl Pair {
    fn new(export: ExportInfo) -> Self {
        let mut pair = Self {
            client: ClientSession::new("disk", ClientOptions::default()),
            server: ServerSession::new(vec![export], ServerLimits::default()),
        };
        pair.deliver_to_server(&[]);
        assert!(pair.client.is_ready(), "the handshake ends");
        assert!(matches!(
            pair.client.poll_event(),
            Some(ClientEvent::Ready(_))
        ));
        pair
    }

    /// Hands `extra` (bytes the driver writes itself) to the server after what the
    /// client queued, then moves bytes until nothing moves; returns the requests the
    /// server decoded, unanswered.
    fn deliver_to_server(&mut self, extra: &[u8]) -> Vec<(u64, Command)> {
        let mut extra = Some(extra);
        let mut requests = Vec::new();
        loop {
            let mut moved = false;
            while let Some(bytes) = self.client.poll_output() {
                self.server.handle_input(&bytes);
                moved = true;
            }
            if let Some(bytes) = extra.take().filter(|b| !b.is_empty()) {
                self.server.handle_input(bytes);
                moved = true;
            }
            while let Some(event) = self.server.poll_event() {
                if let ServerEvent::Request(request) = event {
                    requests.push((request.handle, request.command));
                }
                moved = true;
            }
            while let Some(bytes) = self.server.poll_output() {
                self.client.handle_input(&bytes);
                moved = true;
            }
            if !moved {
                return requests;
            }
        }
    }

    /// Answers `handle` successfully and returns the client's event for it.
    fn answer(&mut self, handle: u64) -> ClientEvent {
        self.server.handle_reply(handle, Ok(ReplyPayload::None));
        self.deliver_to_server(&[]);
        self.client
            .poll_event()
            .expect("the reply reaches the client")
    }
}

fn export() -> ExportInfo {
    ExportInfo::new("disk", SIZE)
}

#[test]
fn a_header_and_its_payload_make_the_same_write_as_send() {
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
    let mut by_send = Pair::new(export());
    let mut by_header = Pair::new(export());

    by_send
        .client
        .send(Command::Write {
            offset: 4096,
            data: data.clone(),
            fua: true,
        })
        .expect("valid write");
    let sent: Vec<u8> = std::iter::from_fn(|| by_send.client.poll_output())
        .flatten()
        .collect();

    let (handle, header) = by_header
        .client
        .send_write_header(4096, data.len(), true)
        .expect("valid write");
    assert_eq!(
        by_header.client.in_flight(),
        1,
        "accounted before it is written"
    );
    assert_eq!(
        by_header.client.poll_output(),
        None,
        "the header is the caller's"
    );
    assert_eq!(
        [&header[..], &data].concat(),
        sent,
        "the same bytes on the wire"
    );

    let mut wire = header.to_vec();
    wire.extend_from_slice(&data);
    let requests = by_header.deliver_to_server(&wire);
    assert_eq!(
        requests,
        vec![(
            handle,
            Command::Write {
                offset: 4096,
                data,
                fua: true
            }
        )]
    );
    assert_eq!(
        by_header.answer(handle),
        ClientEvent::Reply {
            handle,
            result: Ok(ReplyPayload::None)
        }
    );
    assert_eq!(by_header.client.in_flight(), 0);
}

#[test]
fn headers_interleave_with_other_requests_and_replies_route_by_handle() {
    let mut pair = Pair::new(export());
    let (first, header) = pair.client.send_write_header(0, 4096, false).unwrap();
    let flush = pair.client.send(Command::Flush).unwrap();
    let mut wire = header.to_vec();
    wire.extend_from_slice(&[9; 4096]);
    // The driver writes the flush it polled after the write it wrote itself.
    pair.server.handle_input(&wire);
    let requests = pair.deliver_to_server(&[]);
    let handles: Vec<u64> = requests.iter().map(|(h, _)| *h).collect();
    assert_eq!(handles, vec![first, flush]);
    assert!(matches!(pair.answer(flush), ClientEvent::Reply { handle, .. } if handle == flush));
    assert!(matches!(pair.answer(first), ClientEvent::Reply { handle, .. } if handle == first));
}

#[test]
fn headers_are_refused_when_not_ready_or_closed() {
    let mut session = ClientSession::new("disk", ClientOptions::default());
    assert!(session.send_write_header(0, 4096, false).is_err());
    let mut pair = Pair::new(export());
    pair.client.disconnect();
    assert!(pair.client.send_write_header(0, 4096, false).is_err());
    assert_eq!(pair.client.in_flight(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every range, length and flag gets the same verdict from both paths, and a refused
    /// header accounts nothing.
    #[test]
    fn send_write_header_checks_exactly_as_send(
        offset in prop_oneof![0u64..SIZE * 2, Just(SIZE - 512), Just(u64::MAX - 511)],
        length in prop_oneof![0usize..70_000, Just(32 << 20), Just((32 << 20) + 512)],
        fua: bool,
        read_only: bool,
        can_fua: bool,
        minimum in prop_oneof![Just(1u32), Just(512), Just(4096)],
    ) {
        let mut info = export();
        info.read_only = read_only;
        info.can_fua = can_fua;
        info.block_size.minimum = minimum;
        info.block_size.preferred = info.block_size.preferred.max(minimum);
        let mut by_send = Pair::new(info.clone());
        let mut by_header = Pair::new(info);
        // Past the maximum payload the owned payload is never allocated: the verdict is
        // the same, computed by the header path alone.
        let header = by_header.client.send_write_header(offset, length, fua);
        if length <= 70_000 {
            let sent = by_send.client.send(Command::Write {
                offset,
                data: vec![0; length],
                fua,
            });
            prop_assert_eq!(sent.clone().err(), header.clone().err());
            prop_assert_eq!(sent.ok(), header.as_ref().ok().map(|(h, _)| *h));
        } else {
            prop_assert!(header.is_err());
        }
        prop_assert_eq!(by_header.client.in_flight(), usize::from(header.is_ok()));
        prop_assert_eq!(by_header.client.poll_output(), None);
    }
}
