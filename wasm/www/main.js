// The page: boots the wasm module, wires the controls to the Rust `Demo` handle, and draws a
// frame per requestAnimationFrame. All mirror logic lives in Rust (the core's job and
// simulator); this file only asks it questions and paints the answers.

import init, { Demo, chunk_state_names, job_statuses, job_transitions, version } from "./pkg/blockmirror_wasm.js";
import { ChunkGrid } from "./grid.js";
import { PhaseDiagram } from "./phase.js";
import { TimePlot } from "./plots.js";
import { EventLog } from "./log.js";
import { SCENARIOS } from "./scenarios.js";
import { ReadoutsPanel } from "./readouts.js";
import { showControlWords } from "./words.js";
import { measureFps } from "./measure.js";
import { formatBytes, formatRate, sliderToValue, valueToSlider } from "./format.js";

const $ = (id) => document.getElementById(id);
const MiB = 1 << 20;

// Slider ranges (log scale; position 0 means 0 where that makes sense).
const RANGES = {
  // Virtual seconds per real second, 0.07x to 200x: the range is 200^1.5, so a third of
  // the way along (slider position 34, the page's default) is exactly 1x, real time.
  speed: [1 / Math.sqrt(200), 200],
  "write-rate": [256 << 10, 2048 * MiB],
  bandwidth: [4 * MiB, 4096 * MiB],
  "job-speed": [4 * MiB, 4096 * MiB],
};
// Simulator time per frame is capped near this many ms (an event budget adapted to the
// measured cost per event), so drawing keeps its frame rate; when the simulation cannot
// keep up with the chosen speed, the time readout shows the speed actually achieved.
const SIM_MS_PER_FRAME = 8;
// Virtual time between two calls of a scenario's story hook.
const SCENARIO_SLICE_MS = 100;

class App {
  constructor(wasm) {
    this.memory = wasm.memory;
    this.stateNames = chunk_state_names();
    this.grid = new ChunkGrid($("grid"), this.stateNames);
    ChunkGrid.fillLegend($("legend"), this.stateNames);
    // Phones get the diagram turned upright (two columns), so its words stay readable.
    const narrow = window.matchMedia("(max-width: 560px)");
    this.phase = new PhaseDiagram($("phase"), job_statuses(), job_transitions(), narrow.matches ? "tall" : "wide", $("phase-why"));
    narrow.addEventListener("change", (e) => this.phase.build(e.matches ? "tall" : "wide"));
    this.log = new EventLog($("log"));
    this.dirtyPlot = new TimePlot($("plot-dirty"), [{ name: "dirty", color: "#e69f00" }], "bytes");
    this.ratePlot = new TimePlot($("plot-rate"), [
      { name: "copy", color: "#0072b2" },
      { name: "guest", color: "#d55e00" },
      { name: "dirtying", color: "#cc79a7", dash: [5, 4] },
    ], "rate");
    this.guestPlot = new TimePlot($("plot-guest"), [{ name: "latency", color: "#009e73" }], "ms");
    this.readouts = new ReadoutsPanel();
    this.stepIndex = 0;
    this.counts = new Map();
    this.playing = false;
    this.stale = true;
    this.summaryAtMs = -Infinity;
    this.plotsAtMs = -Infinity;
    this.demo = null;
    this.scenarioState = {};
    this.lastStatus = null;
    this.nextSeq = 0;
    this.lastFrameMs = null;
    this.fps = { frames: 0, since: performance.now(), value: 0 };
    this.frameStats = { frames: 0, simMs: 0, drawMs: 0, refreshMs: 0, gridMs: 0 };
    this.eventsPerMs = 5000;
    this.achievedSpeed = 0;
    this.scenario = null;
    $("version").textContent = `blockmirror ${version()}`;
    this.buildScenarioButtons();
    this.wireControls();
    this.showSliderValues();
    showControlWords();
    this.restart();
    requestAnimationFrame((t) => this.frame(t));
  }

  // ---- settings and the Demo handle ----

  slider(id) {
    const [min, max] = RANGES[id];
    return sliderToValue(Number($(id).value), min, max);
  }

  setSlider(id, value) {
    const [min, max] = RANGES[id];
    $(id).value = String(valueToSlider(value, min, max));
  }

  restart() {
    let demo;
    try {
      demo = new Demo(Number($("disk-size").value), Number($("granularity").value),
        $("copy-mode").value, $("source-policy").value, $("target-policy").value, 1,
        this.scenarioState.fault === "full" ? 0 : (this.scenario?.settings.oneOffWrite ?? 0));
    } catch (e) {
      // A choice the core refuses (a typed error): keep the running demo and say why.
      this.notice(`Cannot restart: ${e.message ?? e}`);
      return;
    }
    this.demo?.free();
    this.demo = demo;
    this.nextSeq = 0;
    this.lastStatus = null;
    this.counts = new Map();
    this.log.clear();
    this.dirtyPlot.clear();
    this.ratePlot.clear();
    this.guestPlot.clear();
    this.phase.reset();
    this.applyLiveSettings();
    const perCell = this.grid.resize(demo.chunk_count());
    $("grid-caption").textContent = `${demo.chunk_count().toLocaleString("en")} chunks of ${formatBytes(demo.granularity())}` +
      (perCell > 1 ? `, ${perCell} per square` : "");
    this.notice("");
    this.render();
  }

  applyLiveSettings() {
    const d = this.demo;
    d.set_write_rate(this.slider("write-rate"));
    d.set_pattern($("pattern").value);
    d.set_bandwidth(this.slider("bandwidth"));
    d.set_source_fault($("source-fault").value);
    d.set_target_fault($("target-fault").value);
    const jobSpeed = this.slider("job-speed");
    if (jobSpeed > 0) this.verb(() => d.set_job_speed(jobSpeed));
  }

  /** Runs a verb; a refusal from the core (a typed error) is shown, not thrown. */
  verb(fn) {
    this.invalidate();
    try {
      fn();
      this.notice("");
      return true;
    } catch (e) {
      this.notice(String(e.message ?? e));
      return false;
    }
  }

  notice(text) {
    $("notice").textContent = text;
  }

  // ---- controls ----

  wireControls() {
    $("play").addEventListener("click", () => this.setPlaying(!this.playing));
    $("step").addEventListener("click", () => this.stepOne());
    $("restart").addEventListener("click", () => this.restart());
    $("complete").addEventListener("click", () => this.verb(() => this.demo.complete()));
    $("cancel").addEventListener("click", () => this.verb(() => this.demo.cancel(false)));
    $("force-cancel").addEventListener("click", () => this.verb(() => this.demo.cancel(true)));
    $("pause-job").addEventListener("click", () => this.verb(() => this.demo.pause()));
    $("resume-job").addEventListener("click", () => this.verb(() => this.demo.resume()));
    $("copy-mode").addEventListener("change", () => {
      this.verb(() => this.demo.set_copy_mode($("copy-mode").value));
      showControlWords();
    });
    $("pattern").addEventListener("change", () => { this.demo.set_pattern($("pattern").value); showControlWords(); });
    $("source-fault").addEventListener("change", () => { this.demo.set_source_fault($("source-fault").value); showControlWords(); });
    $("target-fault").addEventListener("change", () => { this.demo.set_target_fault($("target-fault").value); showControlWords(); });
    for (const id of ["speed", "write-rate", "bandwidth", "job-speed"]) {
      $(id).addEventListener("input", () => {
        this.showSliderValues();
        if (id === "write-rate") this.demo.set_write_rate(this.slider(id));
        if (id === "bandwidth") this.demo.set_bandwidth(this.slider(id));
        if (id === "job-speed") this.verb(() => this.demo.set_job_speed(this.slider(id)));
      });
    }
    for (const id of ["disk-size", "granularity", "source-policy", "target-policy"]) {
      $(id).addEventListener("change", () => {
        showControlWords();
        this.notice("This applies at the next start: press Restart (R). The running job keeps its settings.");
      });
    }
    document.addEventListener("keydown", (e) => this.onKey(e));
    window.addEventListener("resize", () => this.invalidate());
  }

  onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = e.target?.tagName;
    const typing = tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA";
    const onButton = tag === "BUTTON";
    if (e.key === " " && !typing && !onButton) {
      e.preventDefault();
      this.setPlaying(!this.playing);
      return;
    }
    if (typing) return;
    const key = e.key.toLowerCase();
    if (key === "s") this.stepOne();
    else if (key === "r") this.restart();
    else if (key === "c") this.verb(() => this.demo.complete());
    else if (key === "x") this.verb(() => this.demo.cancel(false));
    else if (/^[1-9]$/.test(key) && SCENARIOS.some((s) => s.id === Number(key))) this.startScenario(Number(key));
  }


  showSliderValues() {
    const speed = this.slider("speed");
    $("speed-out").textContent = `${speed < 0.995 ? speed.toFixed(2) : speed.toFixed(speed < 9.95 ? 1 : 0)}×`;
    $("write-rate-out").textContent = this.slider("write-rate") === 0 ? "idle" : formatRate(this.slider("write-rate"));
    $("bandwidth-out").textContent = formatRate(this.slider("bandwidth"));
    $("job-speed-out").textContent = this.slider("job-speed") === 0 ? "unlimited" : formatRate(this.slider("job-speed"));
  }

  setPlaying(on) {
    this.playing = on;
    this.achievedSpeed = 0;
    $("play").setAttribute("aria-pressed", String(on));
    $("play").textContent = on ? "Pause" : "Run";
    this.lastFrameMs = null;
    // One more frame after the clock stops: the readouts then describe the final state.
    this.invalidate();
  }

  stepOne() {
    this.setPlaying(false);
    this.demo.step(1);
    this.render();
  }

  setTargetFault(kind) {
    $("target-fault").value = kind;
    this.demo.set_target_fault(kind);
    showControlWords();
  }

  /** Clears a full target; resumes the job when an error has paused it. */
  freeSpaceAndResume() {
    this.setTargetFault("none");
    this.demo.refresh_readouts();
    if (this.demo.allowed_verbs().includes("resume")) this.verb(() => this.demo.resume());
    this.invalidate();
  }

  /** Whether an event of `type` has happened in this run; how many. */
  seen(type) {
    return this.counts.has(type);
  }

  count(type) {
    return this.counts.get(type) ?? 0;
  }

  // ---- scenarios ----

  buildScenarioButtons() {
    const box = $("scenarios");
    for (const s of SCENARIOS) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "scenario";
      b.id = `scenario-${s.id}`;
      b.textContent = s.title;
      b.title = `key ${s.id}`;
      b.addEventListener("click", () => this.startScenario(s.id));
      box.append(b);
    }
  }

  /** Sets the controls to a scenario's settings. */
  applyScenarioSettings(v) {
    $("disk-size").value = String(v.diskBytes);
    $("granularity").value = String(v.granularity);
    this.setSlider("write-rate", v.writeRate);
    $("pattern").value = v.pattern;
    this.setSlider("bandwidth", v.bandwidth);
    $("copy-mode").value = v.copyMode;
    $("source-fault").value = v.sourceFault;
    $("target-fault").value = v.targetFault;
    $("source-policy").value = v.sourcePolicy;
    $("target-policy").value = v.targetPolicy;
    this.setSlider("job-speed", v.jobSpeed);
    this.setSlider("speed", v.timeSpeed);
    this.showSliderValues();
    showControlWords();
  }

  startScenario(id) {
    const s = SCENARIOS.find((x) => x.id === id);
    for (const b of document.querySelectorAll("button.scenario")) {
      b.setAttribute("aria-current", String(b.id === `scenario-${id}`));
    }
    this.scenario = s;
    this.scenarioState = { answers: {} };
    this.applyScenarioSettings(s.settings);
    this.restart();
    this.showStep(0);
  }

  /** Starts the current scenario again with `state` (e.g. a target that stays full), at
   *  step `step` (the next one by default); the answers given so far are kept. */
  rerun(state, step = this.stepIndex + 1) {
    const s = this.scenario;
    this.scenarioState = { answers: this.scenarioState.answers ?? {}, ...state };
    this.applyScenarioSettings(s.settings);
    this.restart();
    this.showStep(step);
  }

  /** Shows step `index` of the current scenario: its words, its question or prompt, and
   *  the plot and button it names, all brought into view together. */
  showStep(index) {
    const s = this.scenario;
    if (!s) return;
    this.stepIndex = Math.max(0, Math.min(index, s.steps.length - 1));
    const step = s.steps[this.stepIndex];
    const box = $("scenario-text");
    const h = document.createElement("h3");
    const title = document.createElement("span");
    title.textContent = s.title;
    const no = document.createElement("span");
    no.className = "step-no";
    no.textContent = `step ${this.stepIndex + 1} of ${s.steps.length}`;
    h.append(title, no);
    const parts = [h];
    const para = (text, cls) => {
      const p = document.createElement("p");
      if (cls) p.className = cls;
      p.textContent = text;
      parts.push(p);
      return p;
    };
    // The answer to the previous step's question, now that it can be seen.
    const previous = s.steps[this.stepIndex - 1];
    const answer = this.scenarioState.answers?.[this.stepIndex - 1];
    if (previous?.ask && answer) {
      para(`You predicted “${answer.label}”: ${answer.right ? "right." : "not this time — see why below."}`, "verdict");
    }
    if (step.prompt) para(step.prompt, "prompt");
    const text = typeof step.text === "function" ? step.text(this) : step.text;
    if (step.ask) para(step.ask.question, "prompt");
    if (text) para(text);
    const answered = this.scenarioState.answers?.[this.stepIndex];
    if (step.ask) {
      const row = document.createElement("div");
      row.className = "choices";
      row.setAttribute("role", "group");
      row.setAttribute("aria-label", "Your prediction");
      for (const choice of step.ask.choices) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = choice.label;
        b.setAttribute("aria-pressed", String(answered?.label === choice.label));
        b.addEventListener("click", () => this.answer(choice));
        row.append(b);
      }
      parts.push(row);
      if (!answered) para("Predict first: the clock starts when you answer.", "hint");
    }
    const nav = document.createElement("div");
    nav.className = "nav";
    const wanted = new Set([step.button, ...(step.also ?? [])]);
    for (const a of [...(s.actions ?? []).filter((a) => wanted.has(a.id)), ...(step.actions ?? [])]) {
      const b = document.createElement("button");
      b.type = "button";
      b.id = a.id;
      b.textContent = a.label;
      b.addEventListener("click", () => a.run(this));
      nav.append(b);
    }
    if (this.stepIndex > 0) {
      const back = document.createElement("button");
      back.type = "button";
      back.textContent = "‹ Back";
      back.addEventListener("click", () => this.showStep(this.stepIndex - 1));
      nav.append(back);
    }
    // No Next where the step's own action (e.g. "Run again") leads on.
    const actionLeads = (s.actions ?? []).some((a) => a.id === step.button) || (step.actions ?? []).length > 0;
    if (!step.until && !step.ask && !actionLeads && this.stepIndex < s.steps.length - 1) {
      const next = document.createElement("button");
      next.type = "button";
      next.id = "step-next";
      next.textContent = "Next ›";
      next.addEventListener("click", () => this.showStep(this.stepIndex + 1));
      nav.append(next);
    }
    if (nav.childElementCount) parts.push(nav);
    box.replaceChildren(...parts);
    // Highlight what the step is about.
    for (const f of document.querySelectorAll(".charts figure")) f.classList.toggle("named", f.dataset.plot === step.plot);
    for (const b of document.querySelectorAll(".named")) if (b.tagName !== "FIGURE") b.classList.remove("named");
    if (step.button) $(step.button)?.classList.add("named");
    // A question holds the clock; otherwise the scenario runs (until the job has ended).
    this.setPlaying(!(step.ask && !answered) && !this.demo.ended());
    this.bringStepIntoView();
  }

  answer(choice) {
    this.scenarioState.answers[this.stepIndex] = choice;
    this.showStep(this.stepIndex);
  }

  /** Scrolls so that the step, the disk, the named plot and the named button show together
   *  (they do without scrolling on a desktop screen; on a phone the step goes to the top). */
  bringStepIntoView() {
    const step = this.scenario?.steps[this.stepIndex];
    if (!step) return;
    const named = [$("scenario-text"), $("grid"), document.querySelector(".charts figure.named"), step.button && $(step.button)];
    const inView = (el) => {
      if (!el) return true;
      const r = el.getBoundingClientRect();
      return r.top >= 0 && r.bottom <= window.innerHeight;
    };
    if (!named.every(inView)) {
      const top = $("scenario-text").getBoundingClientRect().top + window.scrollY - 4;
      window.scrollTo({ top, behavior: "instant" });
    }
  }

  /** Opens the next step when the current one's moment has come. */
  followStory() {
    const step = this.scenario?.steps[this.stepIndex];
    if (!step?.until) return;
    if (step.ask && !this.scenarioState.answers?.[this.stepIndex]) return;
    if (step.until(this, this.demo)) this.showStep(this.stepIndex + 1);
  }

  // ---- the frame loop ----

  frame(nowMs) {
    const realDtMs = this.lastFrameMs === null ? 0 : Math.min(100, nowMs - this.lastFrameMs);
    this.lastFrameMs = nowMs;
    let simMs = 0;
    if (this.playing && realDtMs > 0) {
      const t0 = performance.now();
      const virtualBefore = this.demo.now_ms();
      const budget = Math.max(500, Math.round(this.eventsPerMs * SIM_MS_PER_FRAME));
      const events = this.advance(realDtMs * this.slider("speed"), budget);
      simMs = performance.now() - t0;
      if (simMs >= 1) {
        this.eventsPerMs = 0.8 * this.eventsPerMs + 0.2 * (events / simMs);
      } else if (events >= budget) {
        // The budget ran out in under a timer tick: events are cheaper than estimated (the
        // estimate may have been dragged down by a frame the OS descheduled).
        this.eventsPerMs *= 1.5;
      }
      this.eventsPerMs = Math.min(Math.max(this.eventsPerMs, 50), 1e6);
      const speed = (this.demo.now_ms() - virtualBefore) / realDtMs;
      this.achievedSpeed = 0.9 * this.achievedSpeed + 0.1 * speed;
    }
    // While paused nothing moves: draw only after something changed (a verb, a step, a
    // resize), so an idle page costs no CPU.
    if (this.playing || this.stale) {
      const t1 = performance.now();
      this.render();
      const drawMs = performance.now() - t1;
      this.frameStats.frames += 1;
      this.frameStats.simMs += simMs;
      this.frameStats.drawMs += drawMs;
      this.fps.frames += 1;
    }
    if (nowMs - this.fps.since >= 1000) {
      this.fps.value = (this.fps.frames * 1000) / (nowMs - this.fps.since);
      this.fps.frames = 0;
      this.fps.since = nowMs;
      $("stat-fps").textContent = this.playing ? this.fps.value.toFixed(0) : "–";
    }
    requestAnimationFrame((t) => this.frame(t));
  }

  /** Runs `virtualMs` of simulation within `budget` events; returns the events run. A
   *  scenario's story hook (e.g. "the target fills at 40 %") runs after every slice of at
   *  most SCENARIO_SLICE_MS, so it fires at the same point of the run at any speed and
   *  frame rate, not a whole frame's worth of virtual time late. */
  advance(virtualMs, budget) {
    const hook = this.scenario?.onFrame;
    if (!hook) return this.demo.run_for(virtualMs, budget);
    let events = 0;
    for (let left = virtualMs; left > 0 && events < budget; left -= SCENARIO_SLICE_MS) {
      events += this.demo.run_for(Math.min(left, SCENARIO_SLICE_MS), budget - events);
      hook(this, this.demo);
    }
    return events;
  }

  /** Asks for one more frame while paused. */
  invalidate() {
    this.stale = true;
  }

  render() {
    this.stale = false;
    const d = this.demo;
    const t0 = performance.now();
    d.refresh_chunk_states();
    // Rates, ETA and allowed verbs at the simulation's clock: the job's own clock stands
    // still while it is paused or has ended.
    d.refresh_readouts();
    const t1 = performance.now();
    // A fresh view every frame: memory growth detaches old views of wasm memory.
    const states = new Uint8Array(this.memory.buffer, d.chunk_states_ptr(), d.chunk_states_len());
    this.grid.draw(states);
    this.frameStats.refreshMs += t1 - t0;
    this.frameStats.gridMs += performance.now() - t1;

    // Every status change is an event: the diagram's trail takes them from the log, so a
    // status that lasted less than a frame (waiting, pending) still leaves its mark.
    const events = d.events_since(this.nextSeq);
    for (const e of events) {
      if (e.type === "JOB_STATUS_CHANGE") this.phase.show(e.status);
      this.counts.set(e.type, (this.counts.get(e.type) ?? 0) + 1);
    }

    const status = d.status();
    const statusChanged = status !== this.lastStatus;
    if (statusChanged) {
      // The job has ended: stop the clock so the final picture stays on screen.
      if (status === "concluded" && this.lastStatus !== null) this.setPlaying(false);
      this.lastStatus = status;
    }
    // The words under the grid are counted at most 4 times a second while playing, and
    // always when the status changes or the clock stops, so the last picture is described.
    if (!this.playing || statusChanged || t0 - this.summaryAtMs >= 250) {
      this.summaryAtMs = t0;
      $("grid-summary").textContent = this.grid.summary(states);
    }
    this.phase.show(status);
    const { nowVirtualMs, ended, dirty, copyRate, guestRate, dirtying, latency } =
      this.readouts.show(d, status, this.playing ? this.achievedSpeed : null);

    if (!ended) {
      this.dirtyPlot.push(nowVirtualMs, [dirty]);
      this.ratePlot.push(nowVirtualMs, [copyRate, guestRate, dirtying]);
      this.guestPlot.push(nowVirtualMs, [latency]);
    }
    // Plots are redrawn ten times a second while running (a line moving by a pixel needs
    // no more), and always once the clock stops.
    if (!this.playing || t0 - this.plotsAtMs >= 100) {
      this.plotsAtMs = t0;
      this.dirtyPlot.draw();
      this.ratePlot.draw();
      this.guestPlot.draw();
    }

    if (events.length > 0) {
      this.log.append(events);
      this.nextSeq = events[events.length - 1].seq + 1;
    }
    this.followStory();
  }

  // ---- measurement mode (used by tests/test_browser.py and docs/PERFORMANCE.md) ----

  /** Frames per second while playing a fresh simulation (see measure.js). */
  measureFps(options) {
    return measureFps(this, options);
  }
}

async function boot() {
  try {
    const wasm = await init();
    const app = new App(wasm);
    window.blockmirror = app;
    $("boot").textContent = "";
    document.body.dataset.ready = "true";
  } catch (e) {
    $("boot").textContent = `The simulator could not start: ${e.message ?? e}`;
    $("boot").classList.add("error");
    throw e;
  }
}

boot();
