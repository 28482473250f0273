// Live mode: the REAL job of a `blockmirror serve --web`, not the simulator. The server
// streams server-sent events from /events: `state` (the job's status, progress and dirty
// bitmap, base64 of one bit per chunk: chunk k is bit k % 8 of byte k / 8; `job: null`
// when none runs) and `qmp` (each job event as QMP sends it). The grid keeps the last
// job's picture after it ends, so its final (clean) state stays in view.

import { ChunkGrid } from "./grid.js";
import { formatBytes } from "./format.js";

const STATES = ["clean", "dirty"];
const $ = (id) => document.getElementById(id);

/** One byte per chunk (0 clean, 1 dirty) from the bit-per-chunk bitmap. */
function chunkStates(bitsBase64, chunks) {
  const raw = atob(bitsBase64);
  const states = new Uint8Array(chunks);
  for (let k = 0; k < chunks; k++) states[k] = (raw.charCodeAt(k >>> 3) >>> (k & 7)) & 1;
  return states;
}

function eventWords(e) {
  const d = e.data ?? {};
  switch (e.event) {
    case "JOB_STATUS_CHANGE": return `${d.id}: status → ${d.status}`;
    case "BLOCK_JOB_READY": return `${d.device}: ready, target in sync (${formatBytes(d.offset ?? 0)} copied)`;
    case "BLOCK_JOB_COMPLETED":
      return d.error ? `${d.device}: failed: ${d.error}` : `${d.device}: completed (${formatBytes(d.offset ?? 0)} copied)`;
    case "BLOCK_JOB_CANCELLED": return `${d.device}: cancelled`;
    case "BLOCK_JOB_ERROR": return `${d.device}: ${d.operation} error, action ${d.action}`;
    default: return JSON.stringify(d);
  }
}

class LivePage {
  constructor() {
    this.grid = new ChunkGrid($("grid"), STATES);
    ChunkGrid.fillLegend($("legend"), STATES);
    this.chunks = -1;
  }

  connect() {
    const source = new EventSource("events");
    source.onopen = () => this.connection("open", "Connected: streaming the server's job.");
    source.onerror = () => this.connection("lost", "Connection to the server lost; retrying…");
    source.addEventListener("state", (m) => this.showState(JSON.parse(m.data)));
    source.addEventListener("qmp", (m) => this.logEvent(JSON.parse(m.data)));
  }

  connection(state, words) {
    const el = $("live-connection");
    el.dataset.state = state;
    el.textContent = words;
  }

  showState(s) {
    const status = $("live-status");
    if (s.job === null) {
      status.dataset.status = "none";
      status.textContent = this.chunks >= 0
        ? "No job is running now (the grid shows the last job's end)."
        : "No job is running: start one over QMP (drive-mirror).";
      return;
    }
    status.dataset.status = s.status;
    status.dataset.job = s.job;
    const pct = s.total > 0 ? Math.floor((100 * s.current) / s.total) : 100;
    status.textContent = `Job ${s.job}: ${s.status}, ${formatBytes(s.current)} of ${formatBytes(s.total)} (${pct} %), ` +
      `${formatBytes(s.dirty_bytes)} dirty.`;
    if (s.chunks !== this.chunks) {
      const perCell = this.grid.resize(s.chunks);
      this.chunks = s.chunks;
      $("grid-caption").textContent = `${s.chunks.toLocaleString("en")} chunks of ${formatBytes(s.granularity)}` +
        (perCell > 1 ? `; each square is ${perCell} chunks` : "");
    }
    const states = chunkStates(s.bits, s.chunks);
    this.grid.draw(states);
    const summary = $("grid-summary");
    summary.dataset.chunks = String(s.chunks);
    summary.dataset.dirty = String(s.dirty_chunks);
    summary.dataset.clean = String(s.chunks - s.dirty_chunks);
    summary.textContent = this.grid.summary(states);
  }

  logEvent(e) {
    const li = document.createElement("li");
    li.dataset.event = e.event;
    if (e.data?.status) li.dataset.status = e.data.status;
    const time = e.timestamp ? new Date(e.timestamp.seconds * 1000).toLocaleTimeString("en-GB") : "";
    const type = document.createElement("span");
    type.className = "type";
    type.textContent = e.event;
    li.append(`${time} `, type, ` ${eventWords(e)}`);
    $("live-log").append(li);
    li.scrollIntoView({ block: "nearest" });
  }
}

new LivePage().connect();
