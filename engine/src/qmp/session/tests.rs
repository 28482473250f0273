use super::*;
use crate::qmp::error::ErrorClass;
use blockmirror_core::job::{Event, JobStatus, SyncMode};
use proptest::prelude::*;
use std::time::{Duration, UNIX_EPOCH};

fn greeting() -> Greeting {
    Greeting {
        major: 10,
        minor: 0,
        micro: 2,
        package: "test".into(),
    }
}

/// Every message waiting, parsed; each must be one line ending "\r\n".
fn drain(session: &mut QmpSession) -> Vec<Value> {
    std::iter::from_fn(|| session.poll_output())
        .map(|line| {
            assert!(line.ends_with(b"\r\n"), "{line:?}");
            assert!(
                !line[..line.len() - 2].contains(&b'\n'),
                "one line per message"
            );
            serde_json::from_slice(&line).expect("every message is JSON")
        })
        .collect()
}

/// A session past negotiation, with the greeting and the negotiation reply consumed.
fn negotiated() -> QmpSession {
    let mut session = QmpSession::new(greeting());
    session.handle_input(b"{\"execute\": \"qmp_capabilities\"}\n");
    assert_eq!(drain(&mut session).len(), 2);
    session
}

fn send(session: &mut QmpSession, request: Value) -> Vec<Value> {
    let mut line = serde_json::to_vec(&request).unwrap();
    line.push(b'\n');
    session.handle_input(&line);
    drain(session)
}

fn error_of(reply: &Value) -> (ErrorClass, String) {
    let error = &reply["error"];
    let class = ErrorClass::from_name(error["class"].as_str().expect("an error class"))
        .expect("a known class");
    (class, error["desc"].as_str().unwrap().to_owned())
}

fn event(status: JobStatus) -> QmpEvent {
    crate::qmp::job_events(
        "j",
        &Event::StatusChange { status },
        0,
        UNIX_EPOCH + Duration::from_secs(5),
    )
    .remove(0)
}

#[test]
fn greeting_is_queued_at_once() {
    let mut session = QmpSession::new(greeting());
    let out = drain(&mut session);
    assert_eq!(
        out,
        vec![
            json!({"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "test"}, "capabilities": []}})
        ]
    );
    assert!(!session.is_negotiated());
}

#[test]
fn commands_before_negotiation_are_refused_with_the_id_echoed() {
    let mut session = QmpSession::new(greeting());
    drain(&mut session);
    let out = send(
        &mut session,
        json!({"execute": "query-block-jobs", "id": 1}),
    );
    assert_eq!(out[0]["id"], 1);
    assert_eq!(
        error_of(&out[0]),
        (
            ErrorClass::CommandNotFound,
            "Expecting capabilities negotiation with 'qmp_capabilities'".into()
        )
    );
    assert!(session.poll_command().is_none());
    let out = send(
        &mut session,
        json!({"execute": "qmp_capabilities", "id": "neg"}),
    );
    assert_eq!(out, vec![json!({"return": {}, "id": "neg"})]);
    assert!(session.is_negotiated());
    let out = send(&mut session, json!({"execute": "qmp_capabilities"}));
    assert_eq!(
        error_of(&out[0]),
        (
            ErrorClass::CommandNotFound,
            "Capabilities negotiation is already complete, command ignored".into()
        )
    );
}

#[test]
fn capabilities_we_do_not_offer_are_refused() {
    let mut session = QmpSession::new(greeting());
    drain(&mut session);
    let out = send(
        &mut session,
        json!({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}),
    );
    assert_eq!(error_of(&out[0]).1, "Capability 'oob' not available");
    let out = send(
        &mut session,
        json!({"execute": "qmp_capabilities", "arguments": {"enable": ["x"]}}),
    );
    assert_eq!(
        error_of(&out[0]).1,
        "Parameter 'enable[0]' does not accept value 'x'"
    );
    let out = send(
        &mut session,
        json!({"execute": "qmp_capabilities", "arguments": {"x": 1}}),
    );
    assert_eq!(error_of(&out[0]).1, "Parameter 'x' is unexpected");
    assert!(!session.is_negotiated());
    let out = send(
        &mut session,
        json!({"execute": "qmp_capabilities", "arguments": {"enable": []}}),
    );
    assert_eq!(out, vec![json!({"return": {}})]);
}

#[test]
fn malformed_requests_get_qemus_words() {
    let mut session = negotiated();
    let cases = [
        (json!([1, 2]), "QMP input must be a JSON object"),
        (json!("hello"), "QMP input must be a JSON object"),
        (json!({"arguments": {}}), "QMP input lacks member 'execute'"),
        (
            json!({"execute": 5}),
            "QMP input member 'execute' must be a string",
        ),
        (
            json!({"execute": "query-jobs", "arguments": []}),
            "QMP input member 'arguments' must be an object",
        ),
        (
            json!({"execute": "query-jobs", "arguments": null}),
            "QMP input member 'arguments' must be an object",
        ),
        (
            json!({"execute": "query-jobs", "wat": 1}),
            "QMP input member 'wat' is unexpected",
        ),
        (
            json!({"execute": "query-jobs", "exec-oob": "query-jobs"}),
            "QMP input member 'exec-oob' is unexpected",
        ),
    ];
    for (request, desc) in cases {
        let out = send(&mut session, request.clone());
        assert_eq!(out.len(), 1, "{request}");
        assert_eq!(
            error_of(&out[0]),
            (ErrorClass::GenericError, desc.to_owned()),
            "{request}"
        );
    }
    let out = send(
        &mut session,
        json!({"execute": "quit", "id": 9, "control": {}}),
    );
    assert_eq!(
        out[0]["id"], 9,
        "the id is echoed even when the request is refused"
    );
    assert!(session.poll_command().is_none());
}

#[test]
fn unknown_commands_are_not_found() {
    let mut session = negotiated();
    let out = send(
        &mut session,
        json!({"execute": "no-such-thing", "id": [1, 2]}),
    );
    assert_eq!(out[0]["id"], json!([1, 2]));
    assert_eq!(
        error_of(&out[0]),
        (
            ErrorClass::CommandNotFound,
            "The command no-such-thing has not been found".into()
        )
    );
}

#[test]
fn invalid_json_is_an_error_and_the_next_line_works() {
    let mut session = negotiated();
    session.handle_input(b"{\"execute\": nope}\n{\"execute\": \"query-version\"}\n");
    let out = drain(&mut session);
    assert_eq!(out.len(), 2);
    let (class, desc) = error_of(&out[0]);
    assert_eq!(class, ErrorClass::GenericError);
    assert!(desc.starts_with("JSON parse error, "), "{desc}");
    assert_eq!(out[1]["return"]["qemu"]["major"], 10);
}

#[test]
fn query_version_and_query_commands() {
    let mut session = negotiated();
    let out = send(&mut session, json!({"execute": "query-version", "id": "v"}));
    assert_eq!(
        out,
        vec![
            json!({"id": "v", "return": {"qemu": {"major": 10, "minor": 0, "micro": 2}, "package": "test"}})
        ]
    );
    let out = send(
        &mut session,
        json!({"execute": "query-version", "arguments": {"x": 1}}),
    );
    assert_eq!(error_of(&out[0]).1, "Parameter 'x' is unexpected");
    let out = send(&mut session, json!({"execute": "query-commands"}));
    let names: Vec<&str> = out[0]["return"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = commands::command_names().collect();
    assert_eq!(names, expected);
    for name in [
        "qmp_capabilities",
        "query-commands",
        "drive-mirror",
        "block-job-change",
        "job-dismiss",
        "quit",
    ] {
        assert!(names.contains(&name), "{name}");
    }
}

#[test]
fn a_valid_command_goes_to_the_driver_and_its_result_is_the_reply() {
    let mut session = negotiated();
    let out = send(
        &mut session,
        json!({"execute": "drive-mirror", "id": 3, "arguments": {"device": "f", "target": "/t", "sync": "top", "job-id": "j"}}),
    );
    assert!(out.is_empty(), "no reply before the driver answers");
    let pending = session.poll_command().expect("a command");
    assert_eq!(pending.id, Some(json!(3)));
    let Command::DriveMirror(args) = &pending.command else {
        panic!("{pending:?}")
    };
    assert_eq!(
        (args.sync, args.job_id.as_deref()),
        (SyncMode::Top, Some("j"))
    );
    assert!(session.poll_command().is_none(), "handed out once");
    session.handle_result(pending.id, Ok(json!({})));
    assert_eq!(drain(&mut session), vec![json!({"id": 3, "return": {}})]);
    session.handle_result(None, Ok(json!({})));
    assert!(
        drain(&mut session).is_empty(),
        "a result with nothing outstanding is ignored"
    );
}

#[test]
fn driver_errors_become_error_replies() {
    let mut session = negotiated();
    send(
        &mut session,
        json!({"execute": "block-job-complete", "arguments": {"device": "nope"}}),
    );
    let pending = session.poll_command().unwrap();
    session.handle_result(
        pending.id,
        Err(crate::qmp::verbs::block_job_not_found("nope")),
    );
    let out = drain(&mut session);
    assert_eq!(
        error_of(&out[0]),
        (
            ErrorClass::DeviceNotActive,
            "Block job 'nope' not found".into()
        )
    );
    assert!(out[0].get("id").is_none());
}

#[test]
fn replies_keep_request_order_behind_an_outstanding_command() {
    let mut session = negotiated();
    session.handle_input(
        b"{\"execute\": \"query-jobs\", \"id\": 1}\n{\"execute\": \"bogus\", \"id\": 2}\n{\"execute\": \"query-block-jobs\", \"id\": 3}\n{\"execute\": \"query-version\", \"id\": 4}\n",
    );
    assert!(
        drain(&mut session).is_empty(),
        "the unknown command waits behind query-jobs"
    );
    let first = session.poll_command().unwrap();
    assert_eq!(first.command, Command::QueryJobs);
    session.handle_result(first.id, Ok(json!([])));
    let out = drain(&mut session);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        (out[0]["id"].clone(), out[1]["id"].clone()),
        (json!(1), json!(2))
    );
    let third = session.poll_command().unwrap();
    assert_eq!(third.command, Command::QueryBlockJobs);
    session.handle_result(third.id, Ok(json!([])));
    let ids: Vec<Value> = drain(&mut session)
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, [json!(3), json!(4)]);
}

#[test]
fn argument_errors_are_answered_without_the_driver() {
    let mut session = negotiated();
    let cases = [
        (
            json!({"device": "f", "target": "/t", "sync": "bogus"}),
            "Parameter 'sync' does not accept value 'bogus'",
        ),
        (
            json!({"device": "f", "target": "/t", "sync": "full", "speed": "x"}),
            "Invalid parameter type for 'speed', expected: integer",
        ),
        (
            json!({"device": "f", "target": "/t", "sync": "full", "wat": 1}),
            "Parameter 'wat' is unexpected",
        ),
        (
            json!({"device": "f", "target": "/t"}),
            "Parameter 'sync' is missing",
        ),
    ];
    for (arguments, desc) in cases {
        let out = send(
            &mut session,
            json!({"execute": "drive-mirror", "arguments": arguments}),
        );
        assert_eq!(error_of(&out[0]), (ErrorClass::GenericError, desc.into()));
        assert!(session.poll_command().is_none());
    }
    let out = send(&mut session, json!({"execute": "block-job-complete"}));
    assert_eq!(error_of(&out[0]).1, "Parameter 'device' is missing");
}

#[test]
fn events_only_in_command_mode() {
    let mut session = QmpSession::new(greeting());
    drain(&mut session);
    session.send_event(event(JobStatus::Running));
    assert!(drain(&mut session).is_empty(), "dropped before negotiation");
    session.handle_input(b"{\"execute\": \"qmp_capabilities\"}");
    drain(&mut session);
    session.send_event(event(JobStatus::Ready));
    assert_eq!(
        drain(&mut session),
        vec![
            json!({"timestamp": {"seconds": 5, "microseconds": 0}, "event": "JOB_STATUS_CHANGE", "data": {"id": "j", "status": "ready"}})
        ]
    );
}

#[test]
fn events_interleave_with_a_pending_reply() {
    let mut session = negotiated();
    send(
        &mut session,
        json!({"execute": "job-complete", "arguments": {"id": "j"}}),
    );
    let pending = session.poll_command().unwrap();
    session.send_event(event(JobStatus::Waiting));
    session.handle_result(pending.id, Ok(json!({})));
    let out = drain(&mut session);
    assert_eq!(out[0]["event"], "JOB_STATUS_CHANGE");
    assert_eq!(out[1], json!({"return": {}}));
}

#[test]
fn quit_ends_the_session_after_its_reply() {
    let mut session = negotiated();
    session.handle_input(b"{\"execute\": \"quit\"}\n{\"execute\": \"query-version\"}\n");
    let pending = session.poll_command().unwrap();
    assert_eq!(pending.command, Command::Quit);
    assert!(!session.wants_quit());
    session.handle_result(pending.id, Ok(json!({})));
    assert!(session.wants_quit());
    assert_eq!(
        drain(&mut session),
        vec![json!({"return": {}})],
        "nothing is answered after quit"
    );
    session.send_event(event(JobStatus::Null));
    session.handle_input(b"{\"execute\": \"query-version\"}\n");
    assert!(drain(&mut session).is_empty());
}

#[test]
fn unread_output_bounds_events_and_holds_requests() {
    let mut session = negotiated();
    for _ in 0..MAX_QUEUED_OUTPUT + 10 {
        session.send_event(event(JobStatus::Running));
    }
    assert_eq!(session.events_dropped(), 10);
    // Requests wait unparsed while the output is full; the backlog of input is bounded.
    let request = b"{\"execute\": \"query-version\"}\n";
    for _ in 0..(2 * MAX_BACKLOG_BYTES / request.len()) {
        session.handle_input(request);
    }
    assert!(session.framer.buffered() <= MAX_BACKLOG_BYTES + MAX_MESSAGE_BYTES);
    let out = drain(&mut session);
    let replies: Vec<&Value> = out.iter().filter(|m| m.get("event").is_none()).collect();
    assert!(
        replies.len() > 1000,
        "the buffered requests were answered once output was read"
    );
    let last = replies.last().unwrap();
    assert_eq!(
        error_of(last).1,
        "Input dropped: too many requests were waiting for answers"
    );
}

#[test]
fn a_huge_request_is_refused_and_the_session_recovers() {
    let mut session = negotiated();
    let mut huge = b"{\"execute\": \"".to_vec();
    huge.resize(3 * MAX_MESSAGE_BYTES, b'a');
    session.handle_input(&huge);
    session.handle_input(b"\"}\n{\"execute\": \"query-version\", \"id\": 1}\n");
    let out = drain(&mut session);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        error_of(&out[0]),
        (
            ErrorClass::GenericError,
            "JSON token size limit exceeded".into()
        )
    );
    assert_eq!(out[1]["id"], 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic_and_output_stays_bounded(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..512), 0..16)) {
        let mut session = negotiated();
        let mut input = 0usize;
        for chunk in &chunks {
            session.handle_input(chunk);
            input += chunk.len();
            while let Some(pending) = session.poll_command() {
                session.handle_result(pending.id, Ok(json!({})));
            }
        }
        let out: usize = std::iter::from_fn(|| session.poll_output()).map(|line| line.len()).sum();
        // Each reply is at most a few hundred bytes plus what it echoes (its id).
        prop_assert!(out <= 256 * (input + 1) + 2 * input, "{out} bytes out for {input} in");
    }

    #[test]
    fn random_requests_get_one_reply_each(requests in prop::collection::vec(request_strategy(), 0..24)) {
        let mut session = negotiated();
        let mut replies = 0;
        for request in &requests {
            let mut line = serde_json::to_vec(request).unwrap();
            line.extend_from_slice(b"\r\n");
            session.handle_input(&line);
            while let Some(pending) = session.poll_command() {
                session.handle_result(pending.id, Ok(json!({})));
            }
            while let Some(line) = session.poll_output() {
                let message: Value = serde_json::from_slice(&line).unwrap();
                prop_assert!(message.get("return").is_some() || message.get("error").is_some());
                replies += 1;
            }
            if session.wants_quit() {
                return Ok(());
            }
        }
        prop_assert_eq!(replies, requests.len());
    }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(vec![
            "full",
            "top",
            "none",
            "bogus",
            "mirror",
            "f",
            "j",
            "write-blocking",
            "report",
            ""
        ])
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(argument_name(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn argument_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "device",
        "target",
        "sync",
        "speed",
        "job-id",
        "id",
        "type",
        "copy-mode",
        "force",
        "granularity",
        "buf-size",
        "mode",
        "unmap",
        "wat",
    ])
    .prop_map(String::from)
}

fn request_strategy() -> impl Strategy<Value = Value> {
    let names: Vec<&'static str> = commands::command_names().chain(["bogus"]).collect();
    prop_oneof![
        json_value(),
        (prop::sample::select(names), prop::collection::btree_map(argument_name(), json_value(), 0..6), any::<Option<u8>>())
            .prop_map(|(name, arguments, id)| {
                let mut request = json!({"execute": name, "arguments": Value::Object(arguments.into_iter().collect())});
                if let Some(id) = id {
                    request["id"] = json!(id);
                }
                request
            }),
    ]
}
