use super::*;
use serde_json::json;

fn parse(name: &str, arguments: Value) -> Result<Command, String> {
    let Value::Object(map) = arguments else {
        panic!("arguments must be an object")
    };
    match parse_command(name, &map) {
        Ok(Some(command)) => Ok(command),
        Ok(None) => panic!("{name} is not a driver command"),
        Err(error) => Err(error.desc),
    }
}

fn mirror(extra: Value) -> Result<DriveMirrorArgs, String> {
    let mut arguments = json!({"device": "src", "target": "/t.img", "sync": "full"});
    for (k, v) in extra.as_object().unwrap() {
        arguments[k] = v.clone();
    }
    parse("drive-mirror", arguments).map(|c| match c {
        Command::DriveMirror(args) => args,
        other => panic!("{other:?}"),
    })
}

#[test]
fn drive_mirror_defaults_are_qemus() {
    let args = mirror(json!({})).unwrap();
    assert_eq!(
        args,
        DriveMirrorArgs {
            job_id: None,
            device: "src".into(),
            target: "/t.img".into(),
            format: None,
            sync: SyncMode::Full,
            mode: NewImageMode::AbsolutePaths,
            speed: 0,
            granularity: None,
            buf_size: None,
            on_source_error: ErrorPolicy::Report,
            on_target_error: ErrorPolicy::Report,
            copy_mode: CopyMode::Background,
            unmap: true,
            auto_finalize: true,
            auto_dismiss: true,
            resume: false,
            bitmap_min_generation: 0,
        }
    );
}

#[test]
fn drive_mirror_reads_every_parameter() {
    let args = mirror(json!({
        "job-id": "j", "format": "raw", "sync": "top", "mode": "existing", "speed": 1000,
        "granularity": 4096, "buf-size": 65536, "on-source-error": "stop",
        "on-target-error": "enospc", "unmap": false, "copy-mode": "write-blocking",
        "auto-finalize": false, "auto-dismiss": false, "resume": true, "bitmap-min-generation": 7,
    }))
    .unwrap();
    assert!(args.resume);
    assert_eq!(args.bitmap_min_generation, 7);
    assert_eq!(args.job_id.as_deref(), Some("j"));
    assert_eq!(args.format.as_deref(), Some("raw"));
    assert_eq!(
        (args.sync, args.mode, args.speed),
        (SyncMode::Top, NewImageMode::Existing, 1000)
    );
    assert_eq!((args.granularity, args.buf_size), (Some(4096), Some(65536)));
    assert_eq!(
        (args.on_source_error, args.on_target_error),
        (ErrorPolicy::Stop, ErrorPolicy::Enospc)
    );
    assert_eq!(args.copy_mode, CopyMode::WriteBlocking);
    assert!(!args.unmap && !args.auto_finalize && !args.auto_dismiss);
    assert_eq!(
        mirror(json!({"granularity": 0, "buf-size": 0})).map(|a| (a.granularity, a.buf_size)),
        Ok((None, None))
    );
    assert_eq!(
        mirror(json!({"granularity": 1000})).map(|a| a.granularity),
        Ok(Some(1000)),
        "the job's rule"
    );
}

#[test]
fn drive_mirror_refusals_use_qemus_words() {
    let cases = [
        (
            json!({"sync": "bogus"}),
            "Parameter 'sync' does not accept value 'bogus'",
        ),
        (
            json!({"sync": 3}),
            "Invalid parameter type for 'sync', expected: string",
        ),
        (
            json!({"bitmap-min-generation": -1}),
            "Invalid parameter 'bitmap-min-generation'",
        ),
        (
            json!({"speed": "fast"}),
            "Invalid parameter type for 'speed', expected: integer",
        ),
        (
            json!({"speed": 1.5}),
            "Invalid parameter type for 'speed', expected: integer",
        ),
        (
            json!({"speed": null}),
            "Invalid parameter type for 'speed', expected: integer",
        ),
        (
            json!({"speed": 9223372036854775808u64}),
            "Invalid parameter type for 'speed', expected: integer",
        ),
        (
            json!({"speed": -1}),
            "Parameter 'speed' expects a non-negative value",
        ),
        (
            json!({"granularity": -1}),
            "Parameter 'granularity' expects uint32_t",
        ),
        (
            json!({"granularity": 4294967296u64}),
            "Parameter 'granularity' expects uint32_t",
        ),
        (
            json!({"granularity": "x"}),
            "Invalid parameter type for 'granularity', expected: integer",
        ),
        (json!({"buf-size": -1}), "Invalid parameter 'buf-size'"),
        (
            json!({"unmap": "yes"}),
            "Invalid parameter type for 'unmap', expected: boolean",
        ),
        (
            json!({"device": 5}),
            "Invalid parameter type for 'device', expected: string",
        ),
        (
            json!({"mode": "bogus"}),
            "Parameter 'mode' does not accept value 'bogus'",
        ),
        (
            json!({"on-target-error": "bogus"}),
            "Parameter 'on-target-error' does not accept value 'bogus'",
        ),
        (
            json!({"copy-mode": "bogus"}),
            "Parameter 'copy-mode' does not accept value 'bogus'",
        ),
        (json!({"wat": 1}), "Parameter 'wat' is unexpected"),
        (
            json!({"sync": "incremental"}),
            "Sync mode 'incremental' not supported",
        ),
        (
            json!({"sync": "bitmap"}),
            "Sync mode 'bitmap' not supported",
        ),
    ];
    for (extra, desc) in cases {
        assert_eq!(mirror(extra.clone()).unwrap_err(), desc, "{extra}");
    }
    assert!(mirror(json!({"on-source-error": "auto"}))
        .unwrap_err()
        .contains("not supported"));
}

#[test]
fn problems_are_reported_in_schema_order_then_unexpected() {
    let e = |a: Value| parse("drive-mirror", a).unwrap_err();
    assert_eq!(
        e(json!({"device": "f", "target": "t"})),
        "Parameter 'sync' is missing"
    );
    assert_eq!(
        e(json!({"device": "f", "sync": "full"})),
        "Parameter 'target' is missing"
    );
    assert_eq!(
        e(json!({"target": "t", "sync": "full", "wat": 1})),
        "Parameter 'device' is missing"
    );
    // sync comes before speed in the schema; an unknown member only after all fields.
    assert_eq!(
        e(json!({"speed": "x", "sync": "bogus", "device": "f", "target": "t"})),
        "Parameter 'sync' does not accept value 'bogus'"
    );
    assert_eq!(
        e(json!({"speed": "x", "wat": 1, "device": "f", "target": "t"})),
        "Parameter 'sync' is missing"
    );
    // Value rules come after the unknown-member check.
    assert_eq!(
        e(json!({"speed": -1, "wat": 1, "device": "f", "target": "t", "sync": "full"})),
        "Parameter 'wat' is unexpected"
    );
}

#[test]
fn job_commands_parse() {
    let d = || "j".to_string();
    let cases = [
        ("query-block-jobs", json!({}), Command::QueryBlockJobs),
        ("query-jobs", json!({}), Command::QueryJobs),
        ("quit", json!({}), Command::Quit),
        (
            "block-job-complete",
            json!({"device": "j"}),
            Command::BlockJobComplete { device: d() },
        ),
        (
            "block-job-cancel",
            json!({"device": "j"}),
            Command::BlockJobCancel {
                device: d(),
                force: false,
            },
        ),
        (
            "block-job-cancel",
            json!({"device": "j", "force": true}),
            Command::BlockJobCancel {
                device: d(),
                force: true,
            },
        ),
        (
            "block-job-pause",
            json!({"device": "j"}),
            Command::BlockJobPause { device: d() },
        ),
        (
            "block-job-resume",
            json!({"device": "j"}),
            Command::BlockJobResume { device: d() },
        ),
        (
            "block-job-set-speed",
            json!({"device": "j", "speed": 5}),
            Command::BlockJobSetSpeed {
                device: d(),
                speed: 5,
            },
        ),
        (
            "block-job-change",
            json!({"id": "j", "type": "mirror", "copy-mode": "write-blocking"}),
            Command::BlockJobChange {
                id: d(),
                copy_mode: CopyMode::WriteBlocking,
            },
        ),
        (
            "job-dismiss",
            json!({"id": "j"}),
            Command::JobDismiss { id: d() },
        ),
        (
            "block-job-dismiss",
            json!({"id": "j"}),
            Command::JobDismiss { id: d() },
        ),
        (
            "job-pause",
            json!({"id": "j"}),
            Command::JobPause { id: d() },
        ),
        (
            "job-resume",
            json!({"id": "j"}),
            Command::JobResume { id: d() },
        ),
        (
            "job-cancel",
            json!({"id": "j"}),
            Command::JobCancel { id: d() },
        ),
        (
            "job-complete",
            json!({"id": "j"}),
            Command::JobComplete { id: d() },
        ),
    ];
    for (name, arguments, expected) in cases {
        assert_eq!(parse(name, arguments), Ok(expected), "{name}");
    }
}

#[test]
fn job_command_refusals() {
    let cases = [
        (
            "block-job-complete",
            json!({}),
            "Parameter 'device' is missing",
        ),
        (
            "block-job-complete",
            json!({"device": 1}),
            "Invalid parameter type for 'device', expected: string",
        ),
        (
            "block-job-cancel",
            json!({"device": "j", "force": 1}),
            "Invalid parameter type for 'force', expected: boolean",
        ),
        (
            "block-job-set-speed",
            json!({"device": "j"}),
            "Parameter 'speed' is missing",
        ),
        (
            "block-job-set-speed",
            json!({"device": "j", "speed": -5}),
            "Parameter 'speed' expects a non-negative value",
        ),
        (
            "block-job-change",
            json!({"id": "j"}),
            "Parameter 'type' is missing",
        ),
        (
            "block-job-change",
            json!({"id": "j", "type": "mirror"}),
            "Parameter 'copy-mode' is missing",
        ),
        (
            "block-job-change",
            json!({"id": "j", "type": "bogus"}),
            "Parameter 'type' does not accept value 'bogus'",
        ),
        (
            "block-job-change",
            json!({"id": "j", "type": "commit", "copy-mode": "background"}),
            "Parameter 'copy-mode' is unexpected",
        ),
        (
            "block-job-change",
            json!({"id": "j", "type": "commit"}),
            "Job type does not match specified type",
        ),
        ("job-pause", json!({}), "Parameter 'id' is missing"),
        (
            "job-dismiss",
            json!({"id": "j", "force": true}),
            "Parameter 'force' is unexpected",
        ),
        ("query-jobs", json!({"a": 1}), "Parameter 'a' is unexpected"),
        (
            "quit",
            json!({"now": true}),
            "Parameter 'now' is unexpected",
        ),
    ];
    for (name, arguments, desc) in cases {
        assert_eq!(
            parse(name, arguments.clone()).unwrap_err(),
            desc,
            "{name} {arguments}"
        );
    }
}

#[test]
fn session_commands_and_unknown_names_are_not_driver_commands() {
    let empty = Map::new();
    for name in [
        "qmp_capabilities",
        "query-version",
        "query-commands",
        "no-such-command",
    ] {
        assert_eq!(parse_command(name, &empty), Ok(None), "{name}");
    }
    let names: Vec<_> = command_names().collect();
    assert!(names.contains(&"drive-mirror") && names.contains(&"quit"));
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "each name once");
}
