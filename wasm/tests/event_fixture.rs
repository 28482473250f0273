//! One simulated run, seen through the page's event formatting, must give the same event
//! names and values as the core's `Event::fields` and as Python's `Event.as_dict()`: both
//! faces are checked against `tests/fixtures/sim_events.json` (Python in
//! `tests/test_simulation.py::test_events_match_the_shared_fixture`).
//!
//! Regenerate the fixture after a deliberate change with
//! `BLOCKMIRROR_BLESS=1 cargo test -p blockmirror-wasm --test event_fixture`.

use blockmirror_core::job::{CopyMode, ErrorPolicy, IoErrorKind, MirrorConfig};
use blockmirror_core::fault::FaultRule;
use blockmirror_core::sim::{Goal, RunOutcome, Side, SimConfig, SimEventKind, Simulation};
use blockmirror_wasm::event_fields::{event_fields, field, Field};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/sim_events.json");

/// The run, as Python's `Simulation(length, **options)` spells it (the JSON the fixture
/// stores); [`config`] builds the same run in Rust.
const LENGTH: u64 = 1 << 20;
const OPTIONS: &str = r#"{"granularity": 65536, "max_io": 131072, "on_source_error": "ignore", "on_target_error": "enospc", "complete_on_ready": true, "resume_after_stop_ns": 1000000, "faults": [{"side": "source", "nth": 2, "error": "io"}, {"side": "target", "nth": 3, "error": "nospace"}, {"side": "source", "nth": 5, "error": 95}]}"#;

fn config() -> SimConfig {
    let mut job = MirrorConfig::new(LENGTH);
    job.granularity = 64 << 10;
    job.max_io = 128 << 10;
    job.copy_mode = CopyMode::Background;
    job.on_source_error = ErrorPolicy::Ignore;
    job.on_target_error = ErrorPolicy::Enospc;
    let mut config = SimConfig::new(job);
    config.complete_on_ready = true;
    config.resume_after_stop_ns = Some(1_000_000);
    config.faults.scripted = vec![
        FaultRule::once(Side::Source, 2, IoErrorKind::Io).unwrap(),
        FaultRule::once(Side::Target, 3, IoErrorKind::NoSpace).unwrap(),
        FaultRule::once(Side::Source, 5, IoErrorKind::Other(95)).unwrap(),
    ];
    config
}

fn json_value(value: &Field) -> String {
    match value {
        Field::Text(t) => format!("{t:?}"),
        Field::Number(n) => {
            assert!(n.fract() == 0.0 && *n < 9e15, "event numbers are exact integers here: {n}");
            format!("{}", *n as u64)
        }
        Field::Flag(b) => b.to_string(),
        Field::Null => "null".into(),
    }
}

/// The fixture text: the run's options and its job events as the page's fields, one event
/// per line (`time_ns` added: the page shows it as `time_ms`).
fn render() -> String {
    let mut sim = Simulation::new(config()).expect("the fixture's configuration is valid");
    assert_eq!(sim.run_until(Goal::Concluded), RunOutcome::Reached);
    let mut lines = Vec::new();
    for event in sim.events() {
        let SimEventKind::Job(job_event) = &event.kind else { continue };
        let page = event_fields(event);
        // The page's fields are `type` and then exactly the core's fields, same names and values.
        let core: Vec<(&str, Field)> = job_event.fields().into_iter().map(|(n, v)| (n, field(v))).collect();
        assert_eq!(page[0], ("type", Field::Text(job_event.type_name().into())));
        assert_eq!(page[1..], core[..], "{job_event:?}");
        let mut parts = vec![format!("\"type\": {}", json_value(&page[0].1)), format!("\"time_ns\": {}", event.time_ns)];
        parts.extend(page[1..].iter().map(|(name, value)| format!("{name:?}: {}", json_value(value))));
        lines.push(format!("    {{{}}}", parts.join(", ")));
    }
    format!("{{\n  \"length\": {LENGTH},\n  \"options\": {OPTIONS},\n  \"events\": [\n{}\n  ]\n}}\n", lines.join(",\n"))
}

#[test]
fn the_pages_events_match_the_core_and_the_shared_fixture() {
    let text = render();
    for needle in ["\"error\": \"nospace\"", "\"error\": \"io\"", "\"error\": \"95\"", "\"error\": null", "BLOCK_JOB_READY"] {
        assert!(text.contains(needle), "the run shows {needle}:\n{text}");
    }
    if std::env::var_os("BLOCKMIRROR_BLESS").is_some() {
        std::fs::write(FIXTURE, &text).expect("writing the fixture");
    }
    let stored = std::fs::read_to_string(FIXTURE).expect("tests/fixtures/sim_events.json (BLOCKMIRROR_BLESS=1 makes it)");
    assert_eq!(stored, text, "the fixture is stale: rerun with BLOCKMIRROR_BLESS=1 if the change is deliberate");
}
