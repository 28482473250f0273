// Live mode: the REAL job of a `blockmirror serve --web`, not the simulator. The server
// streams server-sent events from /events (see blockmirror/_web.py and _live_view.py):
// `state`, a snapshot of the job (its dirty bitmap in full, base64 of one bit per chunk:
// chunk k is bit k % 8 of byte k / 8, and its operations in flight as chunk ranges;
// `job: null` when none runs); `delta`, what changed since the message before (runs of
// bitmap bytes, the operations when they changed); `tick`, nothing changed; `qmp`, each job
// event as QMP sends it. Each snapshot and delta is numbered and carries the CRC-32 of the
// whole bitmap: a delta that does not follow the last message, or leaves a bitmap with
// another CRC, makes the page reconnect, and a new stream starts with a snapshot. The grid
// keeps the last job's picture after it ends, so its final (clean) state stays in view.

import { ChunkGrid } from "./grid.js";
import { formatBytes } from "./format.js";
import { LIVE_STATES, LIVE_LABELS, composeStates, crc32, decodeBase64 } from "./live_states.js";

const $ = (id) => document.getElementById(id);

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
    this.grid = new ChunkGrid($("grid"), LIVE_STATES);
    ChunkGrid.fillLegend($("legend"), LIVE_STATES, LIVE_LABELS);
    this.chunks = -1;
    this.bits = null; // the job's dirty bitmap as the last message left it
    this.ops = [];
    this.seq = 0;
    this.resyncs = 0;
    this.source = null;
  }

  connect() {
    const source = new EventSource("events");
    this.source = source;
    source.onopen = () => {
      // Every stream (a resync, or the browser's own reconnect) starts with the server's
      // recent events again: the log is rebuilt from them rather than repeated.
      $("live-log").replaceChildren();
      this.connection("open", "Connected: streaming the server's job.");
    };
    source.onerror = () => this.connection("lost", "Connection to the server lost; retrying…");
    source.addEventListener("state", (m) => this.showSnapshot(JSON.parse(m.data)));
    source.addEventListener("delta", (m) => this.showDelta(JSON.parse(m.data)));
    source.addEventListener("qmp", (m) => this.logEvent(JSON.parse(m.data)));
  }

  /** A new stream, which starts with a snapshot: the page lost track of the bitmap. */
  resync(why) {
    this.resyncs++;
    $("grid-summary").dataset.resyncs = String(this.resyncs);
    console.warn(`live: resync (${why})`);
    this.bits = null;
    this.source.close();
    this.connect();
  }

  connection(state, words) {
    const el = $("live-connection");
    el.dataset.state = state;
    el.textContent = words;
  }

  showSnapshot(s) {
    if (s.job === null) {
      this.bits = null;
      const status = $("live-status");
      status.dataset.status = "none";
      status.textContent = this.chunks >= 0
        ? "No job is running now (the grid shows the last job's end)."
        : "No job is running: start one over QMP (drive-mirror).";
      return;
    }
    this.bits = decodeBase64(s.bits);
    this.ops = s.ops;
    this.show(s);
  }

  showDelta(d) {
    if (this.bits === null || d.seq !== this.seq + 1) {
      this.resync(`delta ${d.seq} after ${this.bits === null ? "no snapshot" : this.seq}`);
      return;
    }
    for (const [start, data] of d.runs) this.bits.set(decodeBase64(data), start);
    if (d.ops) this.ops = d.ops;
    this.show(d);
  }

  show(s) {
    if (crc32(this.bits) !== s.crc) {
      this.resync(`CRC differs after ${s.seq}`);
      return;
    }
    this.seq = s.seq;
    const status = $("live-status");
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
    const states = composeStates(this.bits, this.ops, s.chunks);
    this.grid.draw(states);
    const summary = $("grid-summary");
    const counts = new Array(LIVE_STATES.length).fill(0);
    for (let k = 0; k < states.length; k++) counts[states[k]]++;
    LIVE_STATES.forEach((name, code) => { summary.dataset[name] = String(counts[code]); });
    summary.dataset.chunks = String(s.chunks);
    summary.dataset.seq = String(s.seq);
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
    const log = $("live-log");
    log.append(li);
    log.scrollTop = log.scrollHeight;
  }
}

/** The simulator needs the wasm build, which an installed package does not ship. */
async function linkSimulatorIfBuilt() {
  try {
    const site = await (await fetch("site.json")).json();
    $("simulator-link").hidden = !site.simulator;
  } catch {
    // A server without site.json (a plain file server of wasm/www): leave the link out.
  }
}

// The page's state on `window`, for the console (and the tests, which corrupt its bitmap
// to see it resync).
window.livePage = new LivePage();
window.livePage.connect();
linkSimulatorIfBuilt();
