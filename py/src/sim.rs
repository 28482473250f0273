//! `Simulation` (with its live `.job` view) and `sweep`: the deterministic simulator.

use crate::convert::{int_arg, job_error, opt_int_arg, parse_name, PyEvent};
use crate::errors::invalid_argument;
use crate::job::{ops_list, rates_dict};
use crate::sim_params::{parse, parse_goal, SimParams};
use blockmirror_core::sim::{ChunkState, Command, SimEventKind, SimSummary, Simulation};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use pyo3::exceptions::PyOSError;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// A deterministic simulation of a mirror job: in-memory disks, a guest, faults and
/// scripted commands on a virtual clock. Same options and seed: same run.
#[pyclass(module = "blockmirror", name = "Simulation")]
pub struct PySimulation {
    sim: Simulation,
}

/// A Python dict of the summary (plain values only).
fn summary_dict<'py>(py: Python<'py>, s: &SimSummary, outcome: Option<&str>, counts: &[(&str, u64)]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("outcome", outcome)?;
    d.set_item("time_ns", s.time_ns)?;
    d.set_item("time_to_ready_ns", s.ready_at_ns)?;
    d.set_item("end_time_ns", s.concluded_at_ns)?;
    d.set_item("not_converging_at_ns", s.not_converging_at_ns)?;
    d.set_item("status", s.status.as_str())?;
    d.set_item("current", s.current)?;
    d.set_item("total", s.total)?;
    d.set_item("bytes_copied", s.bytes_copied)?;
    d.set_item("bytes_recopied", s.bytes_recopied)?;
    d.set_item("guest_bytes_written", s.guest_bytes_written)?;
    d.set_item("guest_writes", s.guest_writes)?;
    d.set_item("events", s.events)?;
    let c = PyDict::new(py);
    for (name, n) in counts {
        c.set_item(name, n)?;
    }
    d.set_item("event_counts", c)?;
    d.set_item("ready_events", s.ready_events)?;
    d.set_item("error_events", s.error_events)?;
    d.set_item("ending", s.ending)?;
    d.set_item("error", s.error.map(|e| e.name()))?;
    d.set_item("pivoted", s.pivoted)?;
    d.set_item("converged", s.converged)?;
    d.set_item("equal", s.equal)?;
    d.set_item("equal_at_end", s.equal_at_end)?;
    d.set_item("steps", s.steps)?;
    d.set_item("violations", s.violations)?;
    d.set_item("trace_digest", s.trace_digest)?;
    Ok(d)
}

/// How many job events of each type, in first-seen order.
fn event_counts(sim: &Simulation) -> Vec<(&'static str, u64)> {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for e in sim.events() {
        if let SimEventKind::Job(ev) = &e.kind {
            match counts.iter_mut().find(|(name, _)| *name == ev.type_name()) {
                Some((_, n)) => *n += 1,
                None => counts.push((ev.type_name(), 1)),
            }
        }
    }
    counts
}

impl PySimulation {
    fn command(&mut self, command: Command) -> PyResult<()> {
        self.sim.command(command).map_err(job_error)
    }
}

#[pymethods]
impl PySimulation {
    #[new]
    #[pyo3(signature = (length, **options))]
    fn new(py: Python<'_>, length: &Bound<'_, PyAny>, options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let length = int_arg(length, "length")?;
        let options = options.cloned().unwrap_or_else(|| PyDict::new(py));
        let SimParams { config, .. } = parse(length, &options, false)?;
        let sim = Simulation::new(config).map_err(invalid_argument)?;
        Ok(Self { sim })
    }

    /// Run until `"ready"`, `"concluded"`, `"not_converging"` (the job's first
    /// `BLOCK_JOB_NOT_CONVERGING`) or an absolute virtual time in ns, within the step and
    /// time limits (the `max_steps` / `time_limit_ns` options unless given here).
    /// Returns the outcome: `"reached"`, `"livelock"` (step budget spent), `"stalled"`
    /// (nothing pending), `"time_limit"`, `"unreachable"` (the job ended first) or
    /// `"not_converging"`: a run towards ready or concluded ends at the job's
    /// `BLOCK_JOB_NOT_CONVERGING` unless `stop_at_not_converging=False` or something
    /// configured could still change the rates (`write_blocking_when_not_converging`,
    /// `commands`, `guest_stop_ns`, `fault_window_ns`, `resume_after_stop_ns`).
    /// Releases the GIL while it runs.
    #[pyo3(signature = (goal, max_steps=None, time_limit_ns=None))]
    fn run_until(
        &mut self,
        py: Python<'_>,
        goal: &Bound<'_, PyAny>,
        max_steps: Option<&Bound<'_, PyAny>>,
        time_limit_ns: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<&'static str> {
        let goal = parse_goal(goal)?;
        let limits = self.sim.config().limits;
        let max_steps = opt_int_arg(max_steps, "max_steps")?.unwrap_or(limits.max_steps);
        let max_duration_ns = opt_int_arg(time_limit_ns, "time_limit_ns")?.unwrap_or(limits.max_duration_ns);
        let sim = &mut self.sim;
        let outcome = py.detach(move || sim.run_until_within(goal, max_steps, max_duration_ns));
        Ok(outcome.as_str())
    }

    /// Virtual time now (ns).
    #[getter]
    fn now_ns(&self) -> u64 {
        self.sim.now_ns()
    }

    /// Events processed so far.
    #[getter]
    fn steps(&self) -> u64 {
        self.sim.steps()
    }

    /// A live, read-mostly view of the job: status, progress, bitmap, rates, ops, and the
    /// verbs (pause, resume, set_speed, set_copy_mode, complete, cancel, dismiss), which act
    /// at the current virtual time. The simulator performs every action itself.
    #[getter]
    fn job(slf: Bound<'_, Self>) -> SimulationJob {
        SimulationJob { sim: slf.unbind() }
    }

    /// The job's events so far, each with `.time_ns`.
    #[getter]
    fn events(&self) -> Vec<PyEvent> {
        self.sim
            .events()
            .iter()
            .filter_map(|e| match &e.kind {
                SimEventKind::Job(ev) => Some(PyEvent::from_core(ev, Some(e.time_ns))),
                _ => None,
            })
            .collect()
    }

    /// Commands given so far: `(time_ns, command, accepted, error message or None)`.
    #[getter]
    fn commands(&self) -> Vec<(u64, String, bool, Option<String>)> {
        self.sim
            .events()
            .iter()
            .filter_map(|e| match &e.kind {
                SimEventKind::Command(c) => Some((e.time_ns, c.to_string(), true, None)),
                SimEventKind::CommandRefused(c, err) => Some((e.time_ns, c.to_string(), false, Some(err.to_string()))),
                _ => None,
            })
            .collect()
    }

    /// The time series as a dict of equal-length lists: `time_ns`, `status`, `dirty_bytes`,
    /// `current`, `total`, `dirty_bytes_per_sec`, `copy_bytes_per_sec`, `guest_bytes`,
    /// `target_bytes` (one entry per `sample_interval_ns`).
    #[getter]
    fn samples<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.sim.samples();
        let d = PyDict::new(py);
        d.set_item("time_ns", s.iter().map(|x| x.time_ns).collect::<Vec<_>>())?;
        d.set_item("status", s.iter().map(|x| x.status.as_str()).collect::<Vec<_>>())?;
        d.set_item("dirty_bytes", s.iter().map(|x| x.dirty_bytes).collect::<Vec<_>>())?;
        d.set_item("current", s.iter().map(|x| x.current).collect::<Vec<_>>())?;
        d.set_item("total", s.iter().map(|x| x.total).collect::<Vec<_>>())?;
        d.set_item("dirty_bytes_per_sec", s.iter().map(|x| x.dirty_bytes_per_sec).collect::<Vec<_>>())?;
        d.set_item("copy_bytes_per_sec", s.iter().map(|x| x.copy_bytes_per_sec).collect::<Vec<_>>())?;
        d.set_item("guest_bytes", s.iter().map(|x| x.guest_bytes).collect::<Vec<_>>())?;
        d.set_item("target_bytes", s.iter().map(|x| x.target_bytes).collect::<Vec<_>>())?;
        Ok(d)
    }

    /// Protocol violations the simulator saw (empty for a correct job).
    #[getter]
    fn violations(&self) -> Vec<String> {
        self.sim.violations().iter().map(|v| format!("{} ns: {}", v.time_ns, v.message)).collect()
    }

    /// Digest of every step so far (equal for equal runs).
    #[getter]
    fn trace_digest(&self) -> u64 {
        self.sim.trace_digest()
    }

    /// Number of chunks.
    #[getter]
    fn chunks(&self) -> u64 {
        self.sim.chunks()
    }

    /// Whether the source and target hold the same bytes now.
    fn source_equals_target(&self) -> bool {
        self.sim.source_equals_target()
    }

    /// One byte per chunk: an index into `CHUNK_STATE_NAMES` (the core's `ChunkState`
    /// table: clean, dirty, reading, writing, failed, guest_written, waiting).
    fn chunk_states<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut out = Vec::new();
        self.sim.chunk_states(&mut out);
        PyBytes::new(py, &out)
    }

    /// Change the guest's write rate from now on (bytes/s; 0 stops the guest).
    fn set_write_rate(&mut self, bytes_per_sec: &Bound<'_, PyAny>) -> PyResult<()> {
        self.sim.set_write_rate(int_arg(bytes_per_sec, "write_rate")?);
        Ok(())
    }

    /// The run so far as a plain dict (the same keys as a `sweep` result, minus the options).
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        summary_dict(py, &self.sim.summary(), None, &event_counts(&self.sim))
    }

    fn __repr__(&self) -> String {
        format!(
            "Simulation(now_ns={}, status={:?}, chunks={})",
            self.sim.now_ns(),
            self.sim.job().status().as_str(),
            self.sim.chunks()
        )
    }
}

/// The `.job` of a `Simulation`: reads go to the live job, verbs act at the current
/// virtual time. Actions and events stay with the simulator (see `Simulation.events`).
#[pyclass(module = "blockmirror", name = "SimulationJob", frozen)]
pub struct SimulationJob {
    sim: Py<PySimulation>,
}

impl SimulationJob {
    fn verb(&self, py: Python<'_>, command: Command) -> PyResult<()> {
        self.sim.bind(py).borrow_mut().command(command)
    }
}

#[pymethods]
impl SimulationJob {
    /// The status name.
    #[getter]
    fn status(&self, py: Python<'_>) -> &'static str {
        self.sim.bind(py).borrow().sim.job().status().as_str()
    }

    /// `(current, total)` in bytes.
    #[getter]
    fn progress(&self, py: Python<'_>) -> (u64, u64) {
        let p = self.sim.bind(py).borrow().sim.job().progress();
        (p.current, p.total)
    }

    /// Rate estimates, as `MirrorJob.rates`: `eta_ready_ns` is None before ready while the
    /// copy is not faster than the guest dirties and throughout a `BLOCK_JOB_NOT_CONVERGING`
    /// episode.
    #[getter]
    fn rates<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        rates_dict(py, self.sim.bind(py).borrow().sim.job())
    }

    /// The error that failed the job, if any.
    #[getter]
    fn error(&self, py: Python<'_>) -> Option<String> {
        self.sim.bind(py).borrow().sim.job().error().map(|e| e.name())
    }

    /// A copy of the dirty bitmap now.
    #[getter]
    fn bitmap(&self, py: Python<'_>) -> crate::bitmap::PyHBitmap {
        crate::bitmap::PyHBitmap::from(self.sim.bind(py).borrow().sim.job().bitmap().clone())
    }

    /// Operations in flight: `(op, kind, offset, length)`.
    fn ops(&self, py: Python<'_>) -> Vec<(u64, &'static str, u64, u64)> {
        ops_list(self.sim.bind(py).borrow().sim.job())
    }

    /// `pause()` now.
    fn pause(&self, py: Python<'_>) -> PyResult<()> {
        self.verb(py, Command::Pause)
    }

    /// `resume()` now.
    fn resume(&self, py: Python<'_>) -> PyResult<()> {
        self.verb(py, Command::Resume)
    }

    /// `set_speed(bytes_per_sec)` now.
    fn set_speed(&self, py: Python<'_>, bytes_per_sec: &Bound<'_, PyAny>) -> PyResult<()> {
        self.verb(py, Command::SetSpeed(int_arg(bytes_per_sec, "speed")?))
    }

    /// `set_copy_mode(mode)` now.
    fn set_copy_mode(&self, py: Python<'_>, mode: &str) -> PyResult<()> {
        self.verb(py, Command::SetCopyMode(parse_name(mode)?))
    }

    /// `complete()` now.
    fn complete(&self, py: Python<'_>) -> PyResult<()> {
        self.verb(py, Command::Complete)
    }

    /// `cancel(force)` now.
    #[pyo3(signature = (force=false))]
    fn cancel(&self, py: Python<'_>, force: bool) -> PyResult<()> {
        self.verb(py, Command::Cancel { force })
    }

    /// `dismiss()` now.
    fn dismiss(&self, py: Python<'_>) -> PyResult<()> {
        self.verb(py, Command::Dismiss)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let sim = self.sim.bind(py).borrow();
        let p = sim.sim.job().progress();
        format!("SimulationJob(status={:?}, progress=({}, {}))", sim.sim.job().status().as_str(), p.current, p.total)
    }
}

/// What one simulation of a sweep produced (built without the GIL).
struct SweepRow {
    summary: SimSummary,
    outcome: &'static str,
    counts: Vec<(&'static str, u64)>,
}

/// Most threads a sweep may use. Each runs one simulation at a time, so more threads than
/// cores only cost memory; a count above this is a mistake, refused before any is started.
pub const MAX_SWEEP_THREADS: usize = 1024;

/// How a sweep reports each finished point (always from the calling thread, GIL held).
enum Progress<'py> {
    Silent,
    /// `progress(done, total)`.
    Callback(Bound<'py, PyAny>),
    /// A `tqdm` bar on stderr.
    Bar(Bound<'py, PyAny>),
    /// No tqdm: one `\r`-rewritten line on stderr.
    Line(Bound<'py, PyAny>),
}

impl<'py> Progress<'py> {
    fn new(py: Python<'py>, progress: Option<&Bound<'py, PyAny>>, total: usize) -> PyResult<Self> {
        let Some(progress) = progress.filter(|p| !p.is_none()) else {
            return Ok(Progress::Silent);
        };
        if let Ok(on) = progress.cast::<pyo3::types::PyBool>() {
            if !on.is_true() {
                return Ok(Progress::Silent);
            }
            let stderr = py.import("sys")?.getattr("stderr")?;
            return Ok(match py.import("tqdm") {
                Ok(tqdm) => {
                    let kwargs = PyDict::new(py);
                    kwargs.set_item("total", total)?;
                    kwargs.set_item("desc", "sweep")?;
                    kwargs.set_item("unit", "run")?;
                    kwargs.set_item("file", stderr)?;
                    Progress::Bar(tqdm.getattr("tqdm")?.call((), Some(&kwargs))?)
                }
                Err(_) => Progress::Line(stderr),
            });
        }
        if progress.is_callable() {
            return Ok(Progress::Callback(progress.clone()));
        }
        Err(invalid_argument("progress must be a bool or a callable progress(done, total)"))
    }

    /// Point number `done` of `total` finished.
    fn point_done(&self, done: usize, total: usize) -> PyResult<()> {
        match self {
            Progress::Silent => Ok(()),
            Progress::Callback(f) => f.call1((done, total)).map(drop),
            Progress::Bar(bar) => bar.call_method1("update", (1,)).map(drop),
            Progress::Line(stderr) => stderr.call_method1("write", (format!("\rsweep: {done}/{total} runs"),)).map(drop),
        }
    }

    fn finish(&self, total: usize) -> PyResult<()> {
        match self {
            Progress::Bar(bar) => bar.call_method0("close").map(drop),
            Progress::Line(stderr) if total > 0 => stderr.call_method1("write", ("\n",)).map(drop),
            _ => Ok(()),
        }
    }
}

/// Run many simulations in parallel (rayon, GIL released) and return one plain dict per
/// parameter dict, in order: the parameters, plus the `Simulation.result()` keys and
/// `outcome`. Each dict holds `Simulation` options plus `length` and optionally `until`
/// (`"ready"`, `"concluded"`, `"not_converging"` or a time in ns; default `"ready"`, or
/// `"concluded"` with `complete_on_ready`). A point that cannot converge ends at the job's
/// `BLOCK_JOB_NOT_CONVERGING` with outcome `"not_converging"` (see `Simulation.run_until`).
/// Every dict is checked before any simulation runs.
///
/// `threads`: at most `MAX_SWEEP_THREADS` (default: one per core); a failure to start
/// them is an `OSError`. `progress`: `True` shows a bar on stderr (tqdm), a callable is
/// called as `progress(done, total)` once per finished point, in the calling thread; an
/// exception it raises (or Ctrl-C) stops the sweep: no new point starts, and it propagates.
#[pyfunction]
#[pyo3(signature = (params, threads=None, progress=None))]
pub fn sweep<'py>(
    py: Python<'py>,
    params: &Bound<'py, PyAny>,
    threads: Option<&Bound<'py, PyAny>>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let mut dicts = Vec::new();
    let mut parsed = Vec::new();
    for (i, item) in params.try_iter().map_err(|_| invalid_argument("sweep takes a list of dicts"))?.enumerate() {
        let item = item?;
        let dict = item.cast::<PyDict>().map_err(|_| invalid_argument(format!("sweep item {i} is not a dict")))?;
        let length = match dict.get_item("length")? {
            Some(v) => int_arg(&v, "length").map_err(|e| invalid_argument(format!("sweep item {i}: {}", e.value(py))))?,
            None => return Err(invalid_argument(format!("sweep item {i} has no length"))),
        };
        let p = parse(length, dict, true).map_err(|e| invalid_argument(format!("sweep item {i}: {}", e.value(py))))?;
        parsed.push(p);
        dicts.push(dict.clone());
    }
    let threads = match opt_int_arg(threads, "threads")? {
        None => 0, // rayon's default: one per core
        Some(n) if (1..=MAX_SWEEP_THREADS as u64).contains(&n) => n as usize,
        Some(n) => {
            return Err(invalid_argument(format!("threads must be between 1 and {MAX_SWEEP_THREADS}, got {n}")))
        }
    };
    let total = parsed.len();
    let reporter = Progress::new(py, progress, total)?;
    let pool = sweep_pool(threads)?;
    let stop = AtomicBool::new(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>();
    let run_one = |p: &SimParams| -> Result<Option<SweepRow>, String> {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut sim = Simulation::new(p.config.clone()).map_err(|e| e.to_string())?;
        let outcome = sim.run_until(p.until).as_str();
        let row = SweepRow { summary: sim.summary(), outcome, counts: event_counts(&sim) };
        // The receiver outlives the workers; a failed send only means nobody listens.
        let _ = done_tx.send(());
        Ok(Some(row))
    };
    let (rows, interrupted) = std::thread::scope(|scope| -> PyResult<_> {
        let (pool, parsed, run_one) = (&*pool, &parsed, &run_one);
        let worker = std::thread::Builder::new()
            .name("blockmirror-sweep".into())
            .spawn_scoped(scope, move || pool.install(|| parsed.par_iter().map(run_one).collect::<Result<Vec<_>, _>>()))
            .map_err(|e| PyOSError::new_err(format!("could not start the sweep's thread: {e}")))?;
        // Report each finished point, waiting without the GIL. Every point that finishes
        // sends once before the worker ends, so once the worker is seen finished, an empty
        // channel means every report was made.
        let mut done = 0;
        let mut interrupted: Option<PyErr> = None;
        loop {
            let finished = worker.is_finished();
            let wait = if finished { Duration::ZERO } else { Duration::from_millis(100) };
            let (received, rx) = py.detach(move || (done_rx.recv_timeout(wait), done_rx));
            done_rx = rx;
            let reported = match received {
                Ok(()) => {
                    done += 1;
                    match interrupted {
                        None => reporter.point_done(done, total),
                        Some(_) => Ok(()),
                    }
                }
                Err(_) if finished => break,
                Err(_) => py.check_signals(),
            };
            if let Err(e) = reported {
                stop.store(true, Ordering::Relaxed);
                interrupted.get_or_insert(e);
            }
        }
        let rows = worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok((rows, interrupted))
    })?;
    if let Some(e) = interrupted {
        return Err(e);
    }
    let rows = rows.map_err(invalid_argument)?;
    reporter.finish(total)?;
    let out = PyList::empty(py);
    for (dict, row) in dicts.iter().zip(rows) {
        let row = row.expect("no point is skipped unless the sweep was interrupted");
        let merged = dict.copy()?;
        merged.update(summary_dict(py, &row.summary, Some(row.outcome), &row.counts)?.as_mapping())?;
        out.append(merged)?;
    }
    Ok(out)
}

/// Adds `Simulation`, `SimulationJob`, `sweep` and `CHUNK_STATE_NAMES` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySimulation>()?;
    m.add_class::<SimulationJob>()?;
    m.add_function(wrap_pyfunction!(sweep, m)?)?;
    m.add("CHUNK_STATE_NAMES", pyo3::types::PyTuple::new(m.py(), ChunkState::NAMES)?)?;
    Ok(())
}

/// The sweep's thread pool for `threads` (0: one per core). The last one built is kept and
/// reused while calls ask for the same count (a notebook sweeps many times; starting the
/// threads each time cost more than a small sweep); another count replaces it, so at most
/// one idle pool stays alive. A pool built before a `fork` (a `ProcessPoolExecutor` worker
/// on Linux) has no threads in the child: the child builds its own, and leaks the stale one
/// rather than dropping it (dropping would signal threads that do not exist there).
fn sweep_pool(threads: usize) -> PyResult<Arc<rayon::ThreadPool>> {
    static LAST: Mutex<Option<(u32, usize, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let pid = std::process::id();
    if let Some((built_in, count, pool)) = last.as_ref() {
        if *built_in == pid && *count == threads {
            return Ok(Arc::clone(pool));
        }
    }
    if let Some((built_in, _, stale)) = last.take() {
        if built_in != pid {
            std::mem::forget(stale);
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("blockmirror-sweep-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| PyOSError::new_err(format!("could not start the sweep's threads: {e}")))?;
    *last = Some((pid, threads, Arc::clone(&pool)));
    Ok(pool)
}
