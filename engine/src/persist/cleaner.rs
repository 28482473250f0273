//! The cleaning thread of a mirror with a bitmap file: every interval it clears the chunks
//! the job has made equal (see the rule in the module above). The switch-over itself
//! removes the file, before the guest moves to the target (the pivot action's dispatch);
//! this thread stops when it sees the switch, and removes the file then only if it is
//! still there.
//!
//! One round: take the candidates (marked, outside the activity window, under no guest
//! write); under the job's lock remove every chunk the job holds dirty or has a copy or a
//! guest write in flight on; flush the target (the copies that made the rest clean are
//! durable then); clear what is left and write the file. A mark during the round removes
//! its chunks from the candidates, so nothing written after the observation is cleared.
//! Rounds run only while the job tracks guest writes (not once it ends or is ending):
//! afterwards its bitmap no longer says what the guest changed.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::intent::dirty_runs;
use super::WriteIntent;
use crate::shared::Shared;

/// One cleaning round; false when the job no longer allows one.
fn clean_once(shared: &Shared, intent: &WriteIntent) -> bool {
    if !intent.begin_round() {
        return true;
    }
    let excluded = {
        let st = shared.lock();
        if st.ending() || st.gate.pivoted {
            drop(st);
            intent.abandon_round();
            return false;
        }
        let mut ranges: Vec<_> = dirty_runs(st.job.bitmap()).collect();
        ranges.extend(st.job.ops().map(|op| op.offset..op.offset + op.length));
        ranges
    };
    intent.exclude(excluded);
    // Nothing to clear: no flush (a guest at the target's rate would feel every one).
    if intent.round_is_empty() {
        intent.abandon_round();
        return true;
    }
    if shared.files.target.flush().is_err() {
        intent.abandon_round();
        return true;
    }
    // A failed write leaves the file as it was (still correct): the next round retries.
    let _ = intent.finish_round();
    true
}

/// Runs cleaning rounds every `interval` until the mirror finishes, or until the guest is
/// switched over to the target: then the file is removed (nothing is left to resume).
pub(crate) fn spawn_cleaner(
    shared: &Arc<Shared>,
    intent: Arc<WriteIntent>,
    interval: Duration,
) -> std::io::Result<JoinHandle<()>> {
    let shared = Arc::clone(shared);
    std::thread::Builder::new().name("blockmirror-bitmap".into()).spawn(move || {
        crate::shared::guarded(&shared, "bitmap cleaner", || {
            let mut rounds_allowed = true;
            loop {
                let deadline = Instant::now() + interval;
                let mut st = shared.lock();
                while !st.finished() && !st.gate.pivoted {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    st = shared.wait_changed(st, deadline - now);
                }
                // Once the guest uses the target, nothing may ever be copied onto it from
                // the source again: the file goes at once (a resume then has nothing).
                if st.gate.pivoted {
                    drop(st);
                    let _ = intent.remove_file();
                    return;
                }
                if st.finished() {
                    return;
                }
                drop(st);
                if rounds_allowed {
                    rounds_allowed = clean_once(&shared, &intent);
                }
            }
        })
    })
}
