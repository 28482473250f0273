//! Mirrors SRC onto DST (created sparse, or an existing one with `--reuse`) and prints how
//! it went: `cargo run --example mirror -p blockmirror-engine SRC DST`.

use blockmirror_engine::{FileMirror, MirrorSetup, WaitOutcome};

fn mirror(source: &str, target: &str, reuse: bool) -> Result<(), Box<dyn std::error::Error>> {
    let mirror = FileMirror::start(source.as_ref(), target.as_ref(), MirrorSetup { reuse, ..MirrorSetup::default() })?;
    // READY: the target has caught up; `complete` then flushes it and ends the job.
    if mirror.wait_ready(None) == WaitOutcome::Reached {
        mirror.verb(|job| job.complete())?;
    }
    mirror.wait_end(None);
    let snap = mirror.snapshot();
    println!("{source} -> {target}: {}, {} of {} bytes copied", snap.status, snap.progress.current, snap.progress.total);
    match (snap.failure, snap.internal_error) {
        (None, None) => Ok(()),
        (failure, internal) => Err(format!("the mirror failed: {failure:?} {}", internal.unwrap_or_default()).into()),
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reuse = args.iter().any(|a| a == "--reuse");
    let paths: Vec<&String> = args.iter().filter(|a| *a != "--reuse").collect();
    let result = match paths[..] {
        [source, target] => mirror(source, target, reuse),
        _ => Err("usage: mirror [--reuse] SRC DST".into()),
    };
    if let Err(e) = result {
        eprintln!("mirror: {e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
