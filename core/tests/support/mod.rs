//! A small in-memory driver for the job's scenario tests: byte-exact source and target,
//! actions performed when the test says so (in order or out of order), failure injection.
#![allow(dead_code)]

use blockmirror_core::job::*;
use std::collections::HashMap;

/// Decides whether performing an action fails.
pub type FaultFn = Box<dyn FnMut(&Action) -> Option<IoErrorKind>>;

pub struct Harness {
    pub job: MirrorJob,
    pub source: Vec<u8>,
    pub target: Vec<u8>,
    /// Actions polled and not yet completed, in the order polled.
    pub pending: Vec<Action>,
    /// Every action ever polled.
    pub log: Vec<Action>,
    pub events: Vec<Event>,
    buffers: HashMap<OpId, Vec<u8>>,
    guest_data: HashMap<OpId, Vec<u8>>,
    pub quiesced: bool,
    pub pivoted: bool,
    pub now: u64,
    pub fault: FaultFn,
}

impl Harness {
    /// A job over a source with a recognisable pattern and a target full of 0xEE.
    pub fn new(config: MirrorConfig) -> Self {
        let length = config.length as usize;
        let source = (0..length).map(|i| (i * 7 % 251) as u8 + 1).collect();
        let job = MirrorJob::new(config).expect("valid config");
        Self {
            job,
            source,
            target: vec![0xEE; length],
            pending: Vec::new(),
            log: Vec::new(),
            events: Vec::new(),
            buffers: HashMap::new(),
            guest_data: HashMap::new(),
            quiesced: false,
            pivoted: false,
            now: 0,
            fault: Box::new(|_| None),
        }
    }

    pub fn config(length: u64, granularity: u64) -> MirrorConfig {
        let mut config = MirrorConfig::new(length);
        config.granularity = granularity;
        config.max_io = (granularity * 4).max(64 << 10);
        config
    }

    pub fn start(&mut self) {
        self.job.start(Nanos(self.now)).expect("start");
        self.drain();
    }

    /// Drains actions and events (the driver rule).
    pub fn drain(&mut self) {
        while let Some(action) = self.job.poll_action() {
            self.pending.push(action);
            self.log.push(action);
        }
        while let Some(event) = self.job.poll_event() {
            self.events.push(event);
        }
    }

    /// Performs and completes the pending action at `index`.
    pub fn perform(&mut self, index: usize) {
        let action = self.pending.remove(index);
        let range = action.offset as usize..(action.offset + action.length) as usize;
        let result = match (self.fault)(&action) {
            Some(error) => {
                self.buffers.remove(&action.op);
                self.guest_data.remove(&action.op);
                OpResult::Failed(error)
            }
            None => match action.kind {
                ActionKind::Read => {
                    let data = self.source[range].to_vec();
                    let zero = data.iter().all(|&b| b == 0);
                    self.buffers.insert(action.op, data);
                    if zero {
                        OpResult::OkZeroes
                    } else {
                        OpResult::Ok
                    }
                }
                ActionKind::Write => {
                    let data = self
                        .buffers
                        .remove(&action.op)
                        .expect("a write follows its read");
                    self.target[range].copy_from_slice(&data);
                    OpResult::Ok
                }
                ActionKind::WriteZeroes | ActionKind::Discard => {
                    self.buffers.remove(&action.op);
                    self.target[range].fill(0);
                    OpResult::Ok
                }
                ActionKind::GuestWrite => {
                    let data = self.guest_data.remove(&action.op).expect("guest data kept");
                    self.target[range].copy_from_slice(&data);
                    OpResult::Ok
                }
                ActionKind::Quiesce => {
                    self.quiesced = true;
                    OpResult::Ok
                }
                ActionKind::Unquiesce => {
                    self.quiesced = false;
                    OpResult::Ok
                }
                ActionKind::Pivot => {
                    self.pivoted = true;
                    self.quiesced = false;
                    OpResult::Ok
                }
                _ => OpResult::Ok,
            },
        };
        self.job
            .handle_completion(action.op, result)
            .expect("completion accepted");
        self.drain();
    }

    /// Performs pending actions in order until `done` holds or nothing is pending
    /// (at most `limit` actions). Returns whether `done` holds.
    pub fn run_until(&mut self, limit: usize, mut done: impl FnMut(&Self) -> bool) -> bool {
        for _ in 0..limit {
            if done(self) {
                return true;
            }
            if self.pending.is_empty() {
                match self.job.poll_timeout() {
                    Some(at) => self.advance_to(at.0),
                    None => return done(self),
                }
            } else {
                self.perform(0);
            }
        }
        done(self)
    }

    pub fn advance_to(&mut self, now: u64) {
        self.now = self.now.max(now);
        self.job.handle_timeout(Nanos(self.now));
        self.drain();
    }

    pub fn run_to_ready(&mut self) {
        assert!(
            self.run_until(1_000_000, |h| h.job.status() == JobStatus::Ready),
            "never ready: {:?}",
            self.events
        );
    }

    pub fn run_to_end(&mut self) {
        assert!(
            self.run_until(1_000_000, |h| h.job.status() == JobStatus::Concluded),
            "never concluded: status {} events {:?}",
            self.job.status(),
            self.events
        );
    }

    /// The guest writes `data` at `offset` (source first, then the job is told).
    pub fn guest_write(&mut self, offset: u64, data: &[u8]) -> GuestWrite {
        assert!(!self.quiesced, "the guest is held");
        self.source[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        let answer = self
            .job
            .handle_guest_write(offset, data.len() as u64)
            .expect("guest write");
        if let GuestWrite::Mirror(op) = answer {
            self.guest_data.insert(op, data.to_vec());
        }
        self.drain();
        answer
    }

    pub fn statuses(&self) -> Vec<JobStatus> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::StatusChange { status } => Some(*status),
                _ => None,
            })
            .collect()
    }

    pub fn type_names(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.type_name()).collect()
    }

    pub fn errors(&self) -> Vec<(Operation, ErrorAction, IoErrorKind)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Error {
                    operation,
                    action,
                    error,
                    ..
                } => Some((*operation, *action, *error)),
                _ => None,
            })
            .collect()
    }

    pub fn last_end_event(&self) -> Option<&Event> {
        self.events
            .iter()
            .rev()
            .find(|e| matches!(e, Event::Completed { .. } | Event::Cancelled { .. }))
    }

    /// The fields of the last `BLOCK_JOB_COMPLETED`: (current, total, error, pivoted).
    /// Panics (failing the test) when the job did not end with one.
    pub fn completed(&self) -> (u64, u64, Option<IoErrorKind>, bool) {
        match self.last_end_event() {
            Some(Event::Completed {
                current,
                total,
                error,
                pivoted,
            }) => (*current, *total, *error, *pivoted),
            other => panic!(
                "expected BLOCK_JOB_COMPLETED, got {other:?}; events {:?}",
                self.events
            ),
        }
    }

    pub fn count(&self, kind: ActionKind) -> usize {
        self.log.iter().filter(|a| a.kind == kind).count()
    }
}
