//! Replies out of order, `NBD_CMD_DISC` waiting for what is in flight, and back-pressure
//! holding requests until replies free a slot.

use super::*;

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
