//! blockmirror in the browser: wasm-bindgen bindings over the core's simulator.
//!
//! The page holds one opaque [`WasmDemo`] (`Demo` in JavaScript). All mirror logic is the
//! core's: the demo drives `blockmirror_core::sim::Simulation`, which drives the real
//! `MirrorJob`. JavaScript calls small methods that return numbers and strings, and reads
//! the per-chunk picture straight from wasm memory through `chunk_states_ptr` and
//! `chunk_states_len` (rebuilt by `refresh_chunk_states`, once per frame).
//!
//! The logic lives in plain-Rust modules ([`demo`], [`readouts`], [`settings`],
//! [`event_fields`]) with host tests; this file only converts types at the boundary.

pub mod demo;
pub mod event_fields;
pub mod guest_meter;
pub mod readouts;
pub mod settings;

use blockmirror_core::job::{IoErrorKind, JobStatus, Verb, TRANSITIONS};
use blockmirror_core::sim::ChunkState;
use event_fields::{event_fields, Field};
use js_sys::{Array, Object, Reflect};
use wasm_bindgen::prelude::*;

/// The crate version.
#[wasm_bindgen]
pub fn version() -> String {
    blockmirror_core::VERSION.to_owned()
}

/// The name of each chunk state, indexed by the state byte (the core's `ChunkState` table).
#[wasm_bindgen]
pub fn chunk_state_names() -> Array {
    ChunkState::NAMES.iter().map(|&name| JsValue::from_str(name)).collect()
}

/// The human message for an I/O error name in an event's `error` field (`nospace` gives
/// "No space left on device"); the name itself when it is not one the core knows.
#[wasm_bindgen]
pub fn error_message(name: &str) -> String {
    name.parse::<IoErrorKind>().map_or_else(|_| name.to_owned(), IoErrorKind::message)
}

/// Every job status name, in lifecycle order.
#[wasm_bindgen]
pub fn job_statuses() -> Array {
    JobStatus::ALL.iter().map(|s| JsValue::from_str(s.as_str())).collect()
}

/// The core's table of allowed status changes, as `[from, to, why]` triples (status names
/// and the table's reason for the change).
#[wasm_bindgen]
pub fn job_transitions() -> Array {
    TRANSITIONS
        .iter()
        .map(|(from, to, why)| {
            let triple = Array::new();
            triple.push(&JsValue::from_str(from.as_str()));
            triple.push(&JsValue::from_str(to.as_str()));
            triple.push(&JsValue::from_str(why));
            JsValue::from(triple)
        })
        .collect()
}

fn verb_from_name(name: &str) -> Result<Verb, JsError> {
    Verb::from_name(name).ok_or_else(|| JsError::new(&format!("unknown verb {name:?}")))
}

fn ns_from_ms(ms: f64) -> Result<u64, JsError> {
    if !(ms.is_finite() && ms >= 0.0) {
        return Err(JsError::new(&format!("duration {ms} ms must be a number, 0 or more")));
    }
    Ok((ms * 1e6).min(u64::MAX as f64) as u64)
}

/// A live simulation of one mirror job, for the page.
#[wasm_bindgen(js_name = Demo)]
pub struct WasmDemo {
    inner: demo::Demo,
}

#[wasm_bindgen(js_class = Demo)]
impl WasmDemo {
    /// A fresh simulation; the job is started at virtual time 0 and the guest is idle
    /// until `set_write_rate`. Names: copy mode `background`|`write-blocking`, policies
    /// `report`|`ignore`|`stop`|`enospc`. `target_error_once_at_write` (when given and
    /// above 0): that target write, counting from 1, fails once with an I/O error.
    #[wasm_bindgen(constructor)]
    pub fn new(
        disk_bytes: f64,
        granularity: f64,
        copy_mode: &str,
        on_source_error: &str,
        on_target_error: &str,
        seed: u32,
        target_error_once_at_write: Option<u32>,
    ) -> Result<WasmDemo, JsError> {
        let mut settings =
            settings::DemoSettings::parse(disk_bytes, granularity, copy_mode, on_source_error, on_target_error, seed)?;
        settings.target_error_once_at_write = u64::from(target_error_once_at_write.unwrap_or(0));
        Ok(WasmDemo { inner: demo::Demo::new(settings)? })
    }

    /// Chunks on the disk (the length of the state view).
    pub fn chunk_count(&self) -> f64 {
        self.inner.sim().chunks() as f64
    }

    /// Bytes per chunk.
    pub fn granularity(&self) -> f64 {
        self.inner.settings().granularity as f64
    }

    /// Disk length in bytes.
    pub fn disk_bytes(&self) -> f64 {
        self.inner.settings().disk_bytes as f64
    }

    // ---- the world ----

    /// Guest write rate in bytes per second (0: idle).
    pub fn set_write_rate(&mut self, bytes_per_sec: f64) -> Result<(), JsError> {
        Ok(self.inner.set_write_rate(bytes_per_sec)?)
    }

    /// Guest write pattern: `uniform`, `hot-spot` or `sequential`.
    pub fn set_pattern(&mut self, name: &str) -> Result<(), JsError> {
        Ok(self.inner.set_pattern(name)?)
    }

    /// Target bandwidth in bytes per second (0: unlimited).
    pub fn set_bandwidth(&mut self, bytes_per_sec: f64) -> Result<(), JsError> {
        Ok(self.inner.set_target_bandwidth(bytes_per_sec)?)
    }

    /// Source read faults: `none`, `io` (now and then) or `full`.
    pub fn set_source_fault(&mut self, name: &str) -> Result<(), JsError> {
        Ok(self.inner.set_source_fault(name)?)
    }

    /// Target write faults: `none`, `io` (now and then) or `full` (no space left).
    pub fn set_target_fault(&mut self, name: &str) -> Result<(), JsError> {
        Ok(self.inner.set_target_fault(name)?)
    }

    // ---- time ----

    /// Processes up to `events` simulator events (1 when not given); returns how many ran.
    pub fn step(&mut self, events: Option<u32>) -> u32 {
        self.inner.step(u64::from(events.unwrap_or(1))) as u32
    }

    /// Runs `ms` of virtual time, or until `max_events` events have run (when given: the
    /// page's per-frame budget); returns the events run.
    pub fn run_for(&mut self, ms: f64, max_events: Option<u32>) -> Result<f64, JsError> {
        let ns = ns_from_ms(ms)?;
        let budget = max_events.map_or(u64::MAX, u64::from);
        Ok(self.inner.run_for(ns, budget) as f64)
    }

    // ---- verbs ----

    /// `pause()`.
    pub fn pause(&mut self) -> Result<(), JsError> {
        Ok(self.inner.pause()?)
    }

    /// `resume()`.
    pub fn resume(&mut self) -> Result<(), JsError> {
        Ok(self.inner.resume()?)
    }

    /// `complete()`.
    pub fn complete(&mut self) -> Result<(), JsError> {
        Ok(self.inner.complete()?)
    }

    /// `cancel(force)`.
    pub fn cancel(&mut self, force: bool) -> Result<(), JsError> {
        Ok(self.inner.cancel(force)?)
    }

    /// `set_speed(bytes_per_sec)` of the job (0: unlimited).
    pub fn set_job_speed(&mut self, bytes_per_sec: f64) -> Result<(), JsError> {
        Ok(self.inner.set_job_speed(bytes_per_sec)?)
    }

    /// Switch the copy mode: `background` or `write-blocking`.
    pub fn set_copy_mode(&mut self, name: &str) -> Result<(), JsError> {
        Ok(self.inner.set_copy_mode(name)?)
    }

    /// Whether the core's verb table allows the verb (`pause`, `resume`, `complete`,
    /// `cancel`, `set_speed`, `change`, ...) in the current status. The table alone: see
    /// `allowed_verbs` for what the job would accept.
    pub fn verb_allowed(&self, verb: &str) -> Result<bool, JsError> {
        Ok(self.inner.verb_allowed(verb_from_name(verb)?))
    }

    /// The names of the verbs the job would accept now (the verb table and the job's own
    /// extra checks, asked of the core), as of the last `refresh_readouts`. The page
    /// enables a verb button exactly when its verb is listed.
    pub fn allowed_verbs(&self) -> Array {
        self.inner.accepted_verbs().iter().map(|verb| JsValue::from_str(&verb.to_string())).collect()
    }

    // ---- getters ----

    /// Status name.
    pub fn status(&self) -> String {
        self.inner.status().as_str().to_owned()
    }

    /// Progress `current` in bytes.
    pub fn progress_current(&self) -> f64 {
        self.inner.progress().current as f64
    }

    /// Progress `total` in bytes (it grows as the guest dirties chunks again).
    pub fn progress_total(&self) -> f64 {
        self.inner.progress().total as f64
    }

    /// Bytes dirty in the job's bitmap.
    pub fn dirty_bytes(&self) -> f64 {
        self.inner.dirty_bytes() as f64
    }

    /// Takes the rates, the ETA and the allowed verbs at the simulation's clock; call once
    /// per frame, before reading them.
    pub fn refresh_readouts(&mut self) {
        self.inner.refresh_readouts();
    }

    /// Whether the job has ended (concluded or dismissed), so that no rate applies.
    pub fn ended(&self) -> bool {
        self.inner.ended()
    }

    /// The job's copy rate estimate, bytes per second (over the 2 s before the last
    /// `refresh_readouts`).
    pub fn copy_bytes_per_sec(&self) -> f64 {
        self.inner.rates().copy_bytes_per_sec as f64
    }

    /// The job's estimate of the guest's dirtying rate, bytes per second (as of the last
    /// `refresh_readouts`).
    pub fn dirty_bytes_per_sec(&self) -> f64 {
        self.inner.rates().dirty_bytes_per_sec as f64
    }

    /// The job's estimate of the time to ready in ms, or NaN when it has none (as of the
    /// last `refresh_readouts`).
    pub fn eta_ready_ms(&self) -> f64 {
        self.inner.rates().eta_ready_ns.map_or(f64::NAN, |ns| ns as f64 / 1e6)
    }

    /// The guest's achieved write throughput over the last 2 s, bytes per second (as of
    /// the last `refresh_readouts`).
    pub fn guest_bytes_per_sec(&self) -> f64 {
        self.inner.guest_cost().bytes_per_sec
    }

    /// The mean latency of the guest's writes over the last 2 s in ms (queue slot to
    /// acknowledgement), or NaN when none completed (as of the last `refresh_readouts`).
    pub fn guest_latency_ms(&self) -> f64 {
        self.inner.guest_cost().latency_ns.map_or(f64::NAN, |ns| ns / 1e6)
    }

    /// The guest write rate asked for, bytes per second.
    pub fn asked_write_rate(&self) -> f64 {
        self.inner.asked_write_rate() as f64
    }

    /// Whether a `BLOCK_JOB_NOT_CONVERGING` episode is under way, the core's own verdict
    /// (as of the last `refresh_readouts`): from the event while either of its rules holds
    /// (the dirty bytes reach no new low, or the rates forecast ready too far off). Before
    /// ready the ETA then has no finite value (`eta_ready_ms` is NaN).
    pub fn not_converging(&self) -> bool {
        self.inner.not_converging()
    }

    /// The copy mode in force: `background` or `write-blocking`.
    pub fn copy_mode(&self) -> String {
        self.inner.copy_mode().to_string()
    }

    /// Virtual time in ms.
    pub fn now_ms(&self) -> f64 {
        self.inner.now_ns() as f64 / 1e6
    }

    /// Events from sequence number `seq` on, as objects `{seq, time_ms, type, ...fields}`.
    pub fn events_since(&self, seq: f64) -> Array {
        let first = if seq.is_finite() && seq > 0.0 { seq as u64 } else { 0 };
        self.inner
            .events_since(first)
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let object = Object::new();
                set(&object, "seq", &JsValue::from_f64((first + i as u64) as f64));
                set(&object, "time_ms", &JsValue::from_f64(event.time_ns as f64 / 1e6));
                for (name, value) in event_fields(event) {
                    let value = match value {
                        Field::Text(t) => JsValue::from_str(&t),
                        Field::Number(n) => JsValue::from_f64(n),
                        Field::Flag(b) => JsValue::from_bool(b),
                        Field::Null => JsValue::NULL,
                    };
                    set(&object, name, &value);
                }
                JsValue::from(object)
            })
            .collect()
    }

    // ---- the per-chunk picture ----

    /// Rebuilds the per-chunk state bytes; call once per frame before reading them.
    pub fn refresh_chunk_states(&mut self) {
        self.inner.refresh_chunk_states();
    }

    /// Address of the state bytes in wasm memory (stable for the demo's lifetime; views
    /// must still be rebuilt each frame because memory growth detaches them).
    pub fn chunk_states_ptr(&self) -> usize {
        self.inner.chunk_states().as_ptr() as usize
    }

    /// Number of state bytes (one per chunk).
    pub fn chunk_states_len(&self) -> usize {
        self.inner.chunk_states().len()
    }
}

fn set(object: &Object, name: &str, value: &JsValue) {
    Reflect::set(object, &JsValue::from_str(name), value).expect("setting a property on a plain new Object cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page (`www/grid.js`) keys its colours and legend on these exact strings, and
    /// reads the core's state bytes: a renamed state, a reordered table or a changed byte
    /// value in the core must fail here, not turn cells magenta in the browser.
    #[test]
    fn chunk_state_names_are_the_pages_names_at_the_cores_bytes() {
        let expected = [
            (ChunkState::Clean, 0u8, "clean"),
            (ChunkState::Dirty, 1, "dirty"),
            (ChunkState::Reading, 2, "reading"),
            (ChunkState::Writing, 3, "writing"),
            (ChunkState::Failed, 4, "failed"),
            (ChunkState::GuestWritten, 5, "guest_written"),
            (ChunkState::Waiting, 6, "waiting"),
        ];
        assert_eq!(ChunkState::ALL.len(), expected.len());
        for (index, (&state, (want, byte, name))) in ChunkState::ALL.iter().zip(expected).enumerate() {
            assert_eq!(state, want, "table order at {index}");
            assert_eq!((state as u8, index as u8), (byte, byte), "{state:?}: the core's byte is the index");
            assert_eq!(ChunkState::NAMES[index], name, "{state:?}");
        }
    }

    /// The status and verb names the page shows and sends are the shared names (the core's
    /// tables), written out here so that a change in the core's `Display` fails this test.
    #[test]
    fn status_and_verb_names_are_the_shared_names() {
        let statuses: Vec<String> = JobStatus::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            statuses,
            ["created", "running", "paused", "ready", "standby", "waiting", "pending", "aborting", "concluded", "null"]
        );
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::from_name(&status.to_string()), Some(status));
        }
        let verbs: Vec<String> = Verb::ALL.iter().map(|v| v.to_string()).collect();
        assert_eq!(verbs, ["start", "pause", "resume", "set_speed", "complete", "cancel", "dismiss", "change"]);
        for verb in Verb::ALL {
            assert_eq!(verb_from_name(&verb.to_string()).ok(), Some(verb), "the page's verb parser");
        }
        for (from, to, why) in TRANSITIONS {
            assert!(statuses.contains(&from.to_string()) && statuses.contains(&to.to_string()));
            assert!(!why.is_empty());
        }
    }
}
