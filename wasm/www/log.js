// The event log: one line per job event, newest at the bottom, in words.

import { formatBytes, formatDuration, formatRate } from "./format.js";
import { error_message } from "./pkg/blockmirror_wasm.js";

const KEEP = 300;

const CLASS_OF = {
  JOB_STATUS_CHANGE: "status-change",
  BLOCK_JOB_READY: "ready",
  BLOCK_JOB_COMPLETED: "completed",
  BLOCK_JOB_CANCELLED: "cancelled",
  BLOCK_JOB_ERROR: "error",
  BLOCK_JOB_NOT_CONVERGING: "not-converging",
  BLOCK_JOB_AUTO_CONVERGE: "not-converging",
  COMMAND: "command",
  COMMAND_REFUSED: "refused",
};

/** The words after the event type. */
export function describe(e) {
  switch (e.type) {
    case "JOB_STATUS_CHANGE":
      return `status → ${e.status}`;
    case "BLOCK_JOB_READY":
      return `target in sync (${formatBytes(e.current)} copied); Complete or Cancel may now finish`;
    case "BLOCK_JOB_COMPLETED":
      if (e.error) return `failed: ${error_message(e.error)} (policy report ended the job)`;
      return e.pivoted
        ? `switched over: the guest now runs on the target (${formatBytes(e.current)} copied)`
        : `target holds a consistent copy, guest stays on the source (${formatBytes(e.current)} copied)`;
    case "BLOCK_JOB_CANCELLED":
      return `stopped at once; the target may be inconsistent (${formatBytes(e.current)} of ${formatBytes(e.total)})`;
    case "BLOCK_JOB_ERROR":
      return `${e.operation} of ${formatBytes(e.length)} at ${formatBytes(e.offset)} failed: ${error_message(e.error)}; action ${e.action}`;
    case "BLOCK_JOB_NOT_CONVERGING":
      return `dirty ${formatBytes(e.dirty_bytes)}: guest dirties ${formatRate(e.dirty_bytes_per_sec)}, copy only ${formatRate(e.copy_bytes_per_sec)}`;
    case "BLOCK_JOB_AUTO_CONVERGE":
      return `switched to write-blocking (${e.trigger === "dirty_rate" ? "the guest dirties about as fast as the job copies" : "not converging"}): guest writes now reach the target before they complete`;
    case "COMMAND":
      return `you: ${e.command}`;
    case "COMMAND_REFUSED":
      return `you: ${e.command}, refused: ${e.error}`;
    default:
      return e.detail ?? "";
  }
}

export class EventLog {
  /** @param {HTMLOListElement} list */
  constructor(list) {
    this.list = list;
  }

  clear() {
    this.list.replaceChildren();
  }

  /** Appends events (objects from Demo.events_since) and keeps the newest in view. */
  append(events) {
    if (events.length === 0) return;
    const atBottom = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 4;
    for (const e of events) {
      const li = document.createElement("li");
      li.className = CLASS_OF[e.type] ?? "";
      li.dataset.type = e.type;
      if (e.status) li.dataset.status = e.status;
      if (e.action) li.dataset.action = e.action;
      const t = document.createElement("span");
      t.className = "t";
      t.textContent = formatDuration(e.time_ms);
      const type = document.createElement("span");
      type.className = "type";
      type.textContent = e.type;
      li.append(t, type, " ", describe(e));
      this.list.append(li);
    }
    while (this.list.childElementCount > KEEP) this.list.firstElementChild.remove();
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }
}
