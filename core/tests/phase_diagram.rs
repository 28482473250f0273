//! `docs/phase-diagram.md` is rendered from the transition and verb tables; this test keeps
//! the committed file equal to the rendering. Regenerate with
//! `BLOCKMIRROR_WRITE_DOCS=1 cargo test -p blockmirror-core --test phase_diagram`.

use blockmirror_core::job::{render_phase_diagram, JobStatus, Verb, TRANSITIONS};
use std::path::PathBuf;

#[test]
fn phase_diagram_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/phase-diagram.md");
    let rendered = render_phase_diagram();
    if std::env::var_os("BLOCKMIRROR_WRITE_DOCS").is_some() {
        std::fs::write(&path, &rendered).expect("write docs/phase-diagram.md");
    }
    let committed = std::fs::read_to_string(&path).expect("docs/phase-diagram.md exists");
    assert_eq!(committed, rendered, "docs/phase-diagram.md is stale: regenerate it (see this file's doc)");
}

#[test]
fn the_tables_match_the_job_model() {
    // Every status but null is reachable from created; ready has no way back to running.
    for status in JobStatus::ALL {
        if status != JobStatus::Created {
            assert!(TRANSITIONS.iter().any(|(_, to, _)| *to == status), "{status} is unreachable");
        }
    }
    assert!(!JobStatus::Ready.can_become(JobStatus::Running));
    assert!(JobStatus::Paused.can_become(JobStatus::Running));
    assert!(Verb::Complete.allowed_in(JobStatus::Standby));
    assert!(!Verb::Complete.allowed_in(JobStatus::Running));
    assert!(!Verb::Cancel.allowed_in(JobStatus::Concluded));
    assert!(Verb::Dismiss.allowed_in(JobStatus::Concluded));
}
