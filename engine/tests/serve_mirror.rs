//! The served disk end to end, in Rust alone: the engine's own NBD client as several guests
//! writing through the export while a job started over the QMP command path mirrors it,
//! the switch-over under their writes, and what each side holds afterwards.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blockmirror_engine::nbd::NbdUri;
use blockmirror_engine::net::NbdClient;
use blockmirror_engine::qmp::commands::parse_command;
use blockmirror_engine::qmp::QmpEvent;
use blockmirror_engine::serve::jobs::JobHost;
use blockmirror_engine::serve::{ListenAddress, ServeConfig, Server};
use serde_json::{json, Value};

const SIZE: usize = 16 << 20;

mod common;

/// This suite's temporary directory.
struct Dir(common::TestDir);

impl Dir {
    fn new(name: &str) -> Self {
        Dir(common::TestDir::new("serve", name))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn start(dir: &Dir, source: &Path) -> Server {
    std::fs::write(source, pattern(1, SIZE)).unwrap();
    let config = ServeConfig::new(
        source.to_owned(),
        "disk".into(),
        ListenAddress::Unix(dir.path("nbd.sock")),
    );
    Server::start(config).unwrap()
}

fn run(jobs: &Arc<JobHost>, name: &str, arguments: Value) -> Value {
    let Value::Object(arguments) = arguments else {
        panic!("arguments must be an object")
    };
    let command = parse_command(name, &arguments)
        .unwrap()
        .expect("a driver command");
    jobs.execute(command)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

/// The next event called `name`, skipping others (bounded by the job's own progress).
fn next_event(events: &crossbeam_channel::Receiver<QmpEvent>, name: &str) -> QmpEvent {
    loop {
        let event = events
            .recv_timeout(Duration::from_secs(120))
            .expect("an event");
        if event.name == name {
            return event;
        }
    }
}

fn guests_write_through_a_switch_over(copy_mode: &str) {
    let dir = Dir::new(copy_mode);
    let (source, target) = (dir.path("src.img"), dir.path("dst.img"));
    let server = start(&dir, &source);
    let uri = NbdUri::parse(&server.uri()).unwrap();
    let events = server.jobs().subscribe();
    run(
        server.jobs(),
        "drive-mirror",
        json!({"job-id": "j", "device": "disk", "target": target.to_str().unwrap(), "sync": "full",
               "copy-mode": copy_mode, "speed": 32 << 20}),
    );
    // Each guest owns a 1 MiB stripe and writes it over and over with a growing seed, so the
    // last write of each 4 KiB block is known and any lost or reordered write shows.
    let stop = Arc::new(AtomicBool::new(false));
    let guests: Vec<_> = (0..4u8)
        .map(|g| {
            let (uri, stop) = (uri.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let client = NbdClient::connect(&uri).unwrap();
                let mut round = 0u8;
                let base = u64::from(g) * (4 << 20);
                loop {
                    for block in 0..256u64 {
                        client
                            .write(base + block * 4096, &pattern(round ^ g, 4096), false)
                            .unwrap();
                    }
                    client.flush().unwrap();
                    round = round.wrapping_add(1);
                    if stop.load(Ordering::SeqCst) && round > 2 {
                        return round.wrapping_sub(1) ^ g;
                    }
                }
            })
        })
        .collect();
    next_event(&events, "BLOCK_JOB_READY");
    run(server.jobs(), "block-job-complete", json!({"device": "j"}));
    let done = next_event(&events, "BLOCK_JOB_COMPLETED");
    assert!(done.data.get("error").is_none(), "{:?}", done.data);
    assert_eq!(run(server.jobs(), "query-block-jobs", json!({})), json!([]));
    stop.store(true, Ordering::SeqCst);
    let last: Vec<u8> = guests.into_iter().map(|g| g.join().unwrap()).collect();
    // After the switch the export serves the target: what a client reads is the target's.
    let reader = NbdClient::connect(&uri).unwrap();
    let mut served = vec![0u8; SIZE];
    for (i, piece) in served.chunks_mut(1 << 20).enumerate() {
        reader.read(i as u64 * (1 << 20), piece).unwrap();
    }
    drop(reader);
    server.shutdown().unwrap();
    drop(server);
    let on_target = std::fs::read(&target).unwrap();
    assert!(
        served == on_target,
        "the export did not serve the target after the switch-over"
    );
    for (g, seed) in last.iter().enumerate() {
        let base = g * (4 << 20);
        for block in 0..256 {
            let at = base + block * 4096;
            assert!(
                on_target[at..at + 4096] == pattern(*seed, 4096)[..],
                "guest {g} block {block} lost its last write"
            );
        }
    }
    // Ranges no guest wrote still hold the source's original data.
    let original = pattern(1, SIZE);
    assert!(on_target[(1 << 20)..(4 << 20)] == original[(1 << 20)..(4 << 20)]);
}

#[test]
fn guests_keep_writing_across_a_background_switch_over() {
    guests_write_through_a_switch_over("background");
}

#[test]
fn guests_keep_writing_across_a_write_blocking_switch_over() {
    guests_write_through_a_switch_over("write-blocking");
}

#[test]
fn a_read_only_export_answers_writes_with_eperm_and_stops_cleanly() {
    let dir = Dir::new("ro");
    let source = dir.path("src.img");
    std::fs::write(&source, pattern(5, 1 << 20)).unwrap();
    let mut config = ServeConfig::new(
        source.clone(),
        "disk".into(),
        ListenAddress::Unix(dir.path("ro.sock")),
    );
    config.read_only = true;
    let server = Server::start(config).unwrap();
    let client = NbdClient::connect(&NbdUri::parse(&server.uri()).unwrap()).unwrap();
    assert!(client.info().read_only);
    let mut buf = vec![0u8; 4096];
    client.read(0, &mut buf).unwrap();
    assert_eq!(buf, pattern(5, 1 << 20)[..4096]);
    assert!(client.write(0, &[0u8; 512], false).is_err());
    server.shutdown().unwrap();
    // The client sees the end promptly once the server is gone.
    assert!(client.read(0, &mut buf).is_err());
}
