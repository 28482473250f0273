// The event log: one line per job event, newest at the bottom, in words. A run of identical
// lines (same type and words, e.g. a refused verb pressed again, or an error retried) is
// one line with a count, so a retry loop does not push everything else out of view. Errors
// count as the same line when only the failing range differs (a full target fails chunk
// after chunk; the count and the last range say it).

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
      const words = describe(e);
      const key = e.type === "BLOCK_JOB_ERROR" ? `${e.type}|${e.operation}|${e.error}|${e.action}` : `${e.type}|${words}`;
      const last = this.list.lastElementChild;
      if (last?.dataset.key === key) {
        this.repeat(last, e);
        continue;
      }
      const li = document.createElement("li");
      li.dataset.key = key;
      // A job that ended with an error failed, whatever its event is called.
      li.className = e.type === "BLOCK_JOB_COMPLETED" && e.error ? "failed" : CLASS_OF[e.type] ?? "";
      li.dataset.type = e.type;
      if (e.status) li.dataset.status = e.status;
      if (e.action) li.dataset.action = e.action;
      const t = document.createElement("span");
      t.className = "t";
      t.textContent = formatDuration(e.time_ms);
      const type = document.createElement("span");
      type.className = "type";
      type.textContent = e.type;
      li.append(t, type, " ", words);
      this.list.append(li);
    }
    while (this.list.childElementCount > KEEP) this.list.firstElementChild.remove();
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  /** Counts one more occurrence of the line `li` (event `e`), with the time of the last. */
  repeat(li, e) {
    const count = Number(li.dataset.count ?? 1) + 1;
    li.dataset.count = String(count);
    let badge = li.querySelector(".count");
    if (!badge) {
      badge = document.createElement("span");
      badge.className = "count";
      li.append(" ", badge);
    }
    const where = e.type === "BLOCK_JOB_ERROR" ? ` (${formatBytes(e.length)} at ${formatBytes(e.offset)})` : "";
    badge.textContent = `×${count}, last at ${formatDuration(e.time_ms)}${where}`;
  }
}
