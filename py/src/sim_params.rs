//! Simulation parameters from Python keywords (a `Simulation(...)` call or a `sweep` dict).
//!
//! Every key is checked here, with the GIL held, before anything runs: an unknown key or a
//! bad value raises `InvalidArgument` naming it.

use crate::convert::{non_negative, parse_error_kind, parse_name};
use crate::errors::invalid_argument;
use crate::job::mirror_config;
use blockmirror_core::job::{CopyMode, IoErrorKind, MirrorConfig};
use blockmirror_core::sim::{
    Command, DeviceConfig, Goal, Pattern, ReadCapture, ScriptedCommand, Side, SimConfig,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::collections::BTreeSet;

/// Every key a simulation accepts (besides `length`, and `until` in a sweep).
pub const KEYS: &[&str] = &[
    "granularity", "seed", "sync", "copy_mode", "on_source_error", "on_target_error", "speed",
    "buf_size", "max_in_flight", "max_io", "discard_reads_zero", "write_rate", "write_size",
    "write_align", "pattern", "hot_fraction", "hot_share", "queue_depth", "guest_start_ns",
    "guest_stop_ns", "copy_rate", "source_rate", "latency_ns", "source_latency_ns",
    "target_latency_ns", "jitter_ns", "source_jitter_ns", "target_jitter_ns", "faults",
    "source_fault_rate", "target_fault_rate", "fault_error", "fault_window_ns", "commands",
    "complete_on_ready", "resume_after_stop_ns", "data_fraction", "extent_chunks", "declare",
    "sample_interval_ns", "max_samples", "recent_write_window_ns", "max_steps", "time_limit_ns",
    "not_converging_window_ns", "auto_converge", "read_capture",
    "write_blocking_when_not_converging", "stop_at_not_converging",
];

/// Typed access to a dict of options, remembering which keys were read.
struct Options<'py> {
    dict: Bound<'py, PyDict>,
}

impl<'py> Options<'py> {
    fn raw(&self, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        Ok(self.dict.get_item(key)?.filter(|v| !v.is_none()))
    }

    fn u64(&self, key: &str, default: u64) -> PyResult<u64> {
        Ok(self.opt_u64(key)?.unwrap_or(default))
    }

    fn opt_u64(&self, key: &str) -> PyResult<Option<u64>> {
        match self.raw(key)? {
            None => Ok(None),
            Some(v) => {
                let n: i64 = v.extract().map_err(|_| invalid_argument(format!("{key} must be an int")))?;
                Ok(Some(non_negative(n, key)?))
            }
        }
    }

    fn f64(&self, key: &str, default: f64) -> PyResult<f64> {
        match self.raw(key)? {
            None => Ok(default),
            Some(v) => {
                let x: f64 = v.extract().map_err(|_| invalid_argument(format!("{key} must be a number")))?;
                if x.is_finite() {
                    Ok(x)
                } else {
                    Err(invalid_argument(format!("{key} must be finite")))
                }
            }
        }
    }

    fn string(&self, key: &str, default: &str) -> PyResult<String> {
        match self.raw(key)? {
            None => Ok(default.to_owned()),
            Some(v) => v.extract().map_err(|_| invalid_argument(format!("{key} must be a str"))),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> PyResult<bool> {
        match self.raw(key)? {
            None => Ok(default),
            Some(v) => v.extract().map_err(|_| invalid_argument(format!("{key} must be a bool"))),
        }
    }
}

/// A checked simulation: the configuration, and the goal a sweep runs it to.
#[derive(Debug, Clone)]
pub struct SimParams {
    /// The configuration.
    pub config: SimConfig,
    /// The sweep goal (`until`): defaults to concluded with `complete_on_ready`, else ready.
    pub until: Goal,
}

/// Parse `length` and the options. `allow_until` accepts the sweep-only `until` key.
pub fn parse(length: u64, dict: &Bound<'_, PyDict>, allow_until: bool) -> PyResult<SimParams> {
    let known: BTreeSet<&str> = KEYS.iter().copied().chain(["length", "until"]).collect();
    for key in dict.keys() {
        let key: String = key.extract().map_err(|_| invalid_argument("option names must be str"))?;
        if !known.contains(key.as_str()) || (key == "until" && !allow_until) {
            return Err(invalid_argument(format!("unknown simulation option {key:?}")));
        }
    }
    let o = Options { dict: dict.clone() };
    let d = MirrorConfig::new(length);
    let mut job = mirror_config(
        length,
        o.u64("granularity", d.granularity)?,
        &o.string("sync", d.sync.as_str())?,
        &o.string("copy_mode", d.copy_mode.as_str())?,
        &o.string("on_source_error", d.on_source_error.as_str())?,
        &o.string("on_target_error", d.on_target_error.as_str())?,
        o.u64("speed", d.speed_bytes_per_sec)?,
        o.u64("buf_size", d.buf_size)?,
        o.u64("max_in_flight", d.max_in_flight as u64)?,
        o.u64("max_io", d.max_io)?,
    )?;
    job.discard_reads_zero = o.boolean("discard_reads_zero", false)?;
    if let Some(w) = o.opt_u64("not_converging_window_ns")? {
        job.not_converging_window_ns = w;
    }
    let mut config = SimConfig::new(job);
    config.seed = o.u64("seed", 0)?;

    let g = &mut config.guest;
    g.write_rate_bytes_per_sec = o.u64("write_rate", 0)?;
    g.write_size = o.u64("write_size", 4096)?;
    g.write_align = o.u64("write_align", g.write_size.clamp(1, 4096))?;
    g.pattern = match o.string("pattern", "uniform")?.parse::<Pattern>().map_err(invalid_argument)? {
        Pattern::HotSpot { .. } => {
            Pattern::HotSpot { hot_fraction: o.f64("hot_fraction", 0.1)?, hot_share: o.f64("hot_share", 0.9)? }
        }
        other => other,
    };
    g.queue_depth = u32::try_from(o.u64("queue_depth", 32)?).map_err(|_| invalid_argument("queue_depth is too large"))?;
    g.start_ns = o.u64("guest_start_ns", 0)?;
    g.stop_ns = o.opt_u64("guest_stop_ns")?;

    let latency = o.u64("latency_ns", 100_000)?;
    let jitter = o.u64("jitter_ns", 0)?;
    config.target = DeviceConfig {
        bandwidth_bytes_per_sec: o.u64("copy_rate", 0)?,
        latency_ns: o.u64("target_latency_ns", latency)?,
        jitter_ns: o.u64("target_jitter_ns", jitter)?,
    };
    config.source = DeviceConfig {
        bandwidth_bytes_per_sec: o.u64("source_rate", 0)?,
        latency_ns: o.u64("source_latency_ns", latency)?,
        jitter_ns: o.u64("source_jitter_ns", jitter)?,
    };

    config.faults.source_rate = o.f64("source_fault_rate", 0.0)?;
    config.faults.target_rate = o.f64("target_fault_rate", 0.0)?;
    if let Some(e) = o.raw("fault_error")? {
        config.faults.random_error = Some(parse_error_kind(&e)?);
    }
    if let Some(w) = o.raw("fault_window_ns")? {
        let (from, until): (i64, i64) =
            w.extract().map_err(|_| invalid_argument("fault_window_ns must be a (from_ns, until_ns) pair"))?;
        config.faults.window_ns = Some((non_negative(from, "fault_window_ns")?, non_negative(until, "fault_window_ns")?));
    }
    if let Some(list) = o.raw("faults")? {
        for item in list.try_iter().map_err(|_| invalid_argument("faults must be a list of dicts"))? {
            parse_fault(&item?, &mut config)?;
        }
    }
    if let Some(list) = o.raw("commands")? {
        for item in list.try_iter().map_err(|_| invalid_argument("commands must be a list"))? {
            config.commands.push(parse_command(&item?)?);
        }
    }

    config.read_capture = parse_name_among(&o.string("read_capture", "either")?, "read_capture", &ReadCapture::NAMES)?;
    config.complete_on_ready = o.boolean("complete_on_ready", false)?;
    // The job's auto-converge; `write_blocking_when_not_converging` is its older simulator
    // name (then an operator's reaction to the event, now the job's own switch).
    config.job.auto_converge =
        o.boolean("auto_converge", false)? || o.boolean("write_blocking_when_not_converging", false)?;
    config.resume_after_stop_ns = o.opt_u64("resume_after_stop_ns")?;
    config.layout.data_fraction = o.f64("data_fraction", 1.0)?;
    config.layout.extent_chunks = o.u64("extent_chunks", 16)?;
    config.layout.declare = o.boolean("declare", true)?;
    config.sample_interval_ns = o.u64("sample_interval_ns", 100_000_000)?;
    config.max_samples =
        usize::try_from(o.u64("max_samples", 100_000)?).map_err(|_| invalid_argument("max_samples is too large"))?;
    config.recent_write_window_ns = o.u64("recent_write_window_ns", 200_000_000)?;
    config.limits.max_steps = o.u64("max_steps", config.limits.max_steps)?;
    config.limits.max_duration_ns = o.u64("time_limit_ns", config.limits.max_duration_ns)?;
    config.limits.stop_at_not_converging = o.boolean("stop_at_not_converging", config.limits.stop_at_not_converging)?;
    // The job's rules too (MirrorConfig::validate), so that a sweep reports bad job
    // options before any simulation runs.
    config.validate().map_err(invalid_argument)?;

    let default_until = if config.complete_on_ready { Goal::Concluded } else { Goal::Ready };
    let until = match o.raw("until")? {
        None => default_until,
        Some(v) => parse_goal(&v)?,
    };
    Ok(SimParams { config, until })
}

/// `"ready"`, `"concluded"`, `"not_converging"` or an absolute virtual time in ns.
pub fn parse_goal(value: &Bound<'_, PyAny>) -> PyResult<Goal> {
    if let Ok(t) = value.extract::<i64>() {
        return Ok(Goal::Time(non_negative(t, "time_ns")?));
    }
    match value.extract::<String>().ok().as_deref() {
        Some("ready") => Ok(Goal::Ready),
        Some("concluded") => Ok(Goal::Concluded),
        Some("not_converging") => Ok(Goal::NotConverging),
        _ => Err(invalid_argument(
            "the goal must be \"ready\", \"concluded\", \"not_converging\" or a time in ns",
        )),
    }
}

fn parse_side(name: &str) -> PyResult<Side> {
    parse_name_among(name, "side", &Side::NAMES)
}

/// A simulator name (the core's table), or `InvalidArgument` listing the names it knows.
fn parse_name_among<T: std::str::FromStr>(name: &str, what: &str, known: &[&str]) -> PyResult<T> {
    name.parse().map_err(|_| {
        let known: Vec<String> = known.iter().map(|n| format!("{n:?}")).collect();
        invalid_argument(format!("unknown {what} {name:?}: use {}", known.join(", ")))
    })
}

/// A fault dict: a rule (`{side, op, nth, count, error}`, see `crate::faults`) scripts
/// faults; `{side, rate, error, from_ns, until_ns}` sets that side's random fault rate (and
/// the shared window).
fn parse_fault(item: &Bound<'_, PyAny>, config: &mut SimConfig) -> PyResult<()> {
    let dict = item.cast::<PyDict>().map_err(|_| invalid_argument("each fault must be a dict"))?;
    if !dict.contains("rate")? {
        let (rule, _) = crate::faults::parse_rule(dict, &[])?;
        config.faults.scripted.push(rule);
        return Ok(());
    }
    for key in dict.keys() {
        let key: String = key.extract()?;
        if !["side", "rate", "error", "from_ns", "until_ns"].contains(&key.as_str()) {
            return Err(invalid_argument(format!("unknown random fault key {key:?} (use side, rate, error, from_ns, until_ns)")));
        }
    }
    let o = Options { dict: dict.clone() };
    let side = parse_side(&o.string("side", "target")?)?;
    let error = match o.raw("error")? {
        Some(e) => parse_error_kind(&e)?,
        None => IoErrorKind::Io,
    };
    let rate = o.f64("rate", 0.0)?;
    match side {
        Side::Source => config.faults.source_rate = rate,
        Side::Target => config.faults.target_rate = rate,
    }
    config.faults.random_error = Some(error);
    let (from, until) = (o.opt_u64("from_ns")?, o.opt_u64("until_ns")?);
    if from.is_some() || until.is_some() {
        let window = (from.unwrap_or(0), until.unwrap_or(u64::MAX));
        if config.faults.window_ns.is_some_and(|w| w != window) {
            return Err(invalid_argument("random faults share one window (from_ns, until_ns)"));
        }
        config.faults.window_ns = Some(window);
    }
    Ok(())
}

/// A command: `(time_ns, name)` or `(time_ns, name, argument)`; names `pause`, `resume`,
/// `set_speed` (bytes/s), `set_copy_mode` (mode), `complete`, `cancel` (force: bool),
/// `dismiss`.
fn parse_command(item: &Bound<'_, PyAny>) -> PyResult<ScriptedCommand> {
    let bad = || invalid_argument("each command must be (time_ns, name) or (time_ns, name, argument)");
    let tuple = item.cast::<PyTuple>().map_err(|_| bad())?;
    if !(2..=3).contains(&tuple.len()) {
        return Err(bad());
    }
    let at: i64 = tuple.get_item(0)?.extract().map_err(|_| bad())?;
    let name: String = tuple.get_item(1)?.extract().map_err(|_| bad())?;
    let arg = if tuple.len() == 3 { Some(tuple.get_item(2)?) } else { None };
    let command = match (name.as_str(), arg) {
        ("pause", None) => Command::Pause,
        ("resume", None) => Command::Resume,
        ("complete", None) => Command::Complete,
        ("dismiss", None) => Command::Dismiss,
        ("cancel", None) => Command::Cancel { force: false },
        ("cancel", Some(force)) => Command::Cancel { force: force.extract().map_err(|_| bad())? },
        ("set_speed", Some(bps)) => {
            let bps: i64 = bps.extract().map_err(|_| bad())?;
            Command::SetSpeed(non_negative(bps, "speed")?)
        }
        ("set_copy_mode", Some(mode)) => {
            let mode: String = mode.extract().map_err(|_| bad())?;
            Command::SetCopyMode(parse_name::<CopyMode>(&mode)?)
        }
        _ => return Err(invalid_argument(format!("unknown command {name:?} (or a wrong argument count)"))),
    };
    Ok(ScriptedCommand { at_ns: non_negative(at, "command time")?, command })
}
