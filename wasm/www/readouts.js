// The readouts panel: the job's status in words, the verb buttons it accepts, the progress
// bar and the numbers (virtual time, dirty bytes, ETA, rates, what mirroring costs the
// guest). Every value is the core's, as of the frame's `refresh_readouts`; this file only
// words and paints them.

import { formatBytes, formatDuration, formatRate } from "./format.js";

const $ = (id) => document.getElementById(id);

// Each verb button is enabled when the job accepts its verb (`Demo.allowed_verbs`).
const VERB_BUTTONS = [
  ["complete", "complete"], ["cancel", "cancel"], ["force-cancel", "cancel"],
  ["pause-job", "pause"], ["resume-job", "resume"],
];

const STATUS_WORDS = {
  created: "Made, not started yet.",
  running: "Bulk copy: copying every dirty chunk while the guest keeps writing.",
  paused: "Paused: nothing is copied until Resume. Guest writes are still tracked.",
  ready: "In sync: the target follows the source. Complete switches over; Cancel keeps a consistent copy.",
  standby: "Paused while ready: guest writes pile up as dirty chunks until Resume.",
  waiting: "The job body has finished.",
  pending: "Finishing up.",
  aborting: "Winding down after a cancel or an error.",
  concluded: "Ended. The log says how.",
  null: "Dismissed.",
};

// Why the ETA box says "not at this rate", on hover: the core gives no time to ready while
// its BLOCK_JOB_NOT_CONVERGING verdict holds (either of its two rules), nor while the copy
// does not outpace the guest.
const NO_ETA_WORDS = {
  verdict: "BLOCK_JOB_NOT_CONVERGING holds: the dirty bytes reach no new low, or the measured rates put ready too far off.",
  race: "The job copies no faster than the guest dirties.",
};

export class ReadoutsPanel {
  constructor() {
    // The guest's cost last measured in each copy mode, kept across restarts.
    this.costByMode = {};
  }

  /** Shows demo `d`'s readouts (its job in `status`); `speed` is the time speed achieved
   *  while playing, or null. Returns the numbers shown, for the plots. */
  show(d, status, speed) {
    $("status").textContent = status;
    const allowed = new Set(d.allowed_verbs());
    for (const [id, verb] of VERB_BUTTONS) $(id).disabled = !allowed.has(verb);
    $("status-explain").textContent = STATUS_WORDS[status] ?? "";

    const current = d.progress_current(), total = d.progress_total();
    const bar = $("progress");
    bar.max = Math.max(total, 1);
    bar.value = current;
    $("progress-text").textContent = `${formatBytes(current)} of ${formatBytes(total)}` +
      (total > 0 ? ` (${((100 * current) / total).toFixed(1)} %)` : "");

    const nowVirtualMs = d.now_ms();
    const ended = d.ended();
    const dirty = d.dirty_bytes(), copyRate = d.copy_bytes_per_sec(), dirtying = d.dirty_bytes_per_sec();
    const guestRate = d.guest_bytes_per_sec(), latency = d.guest_latency_ms(), asked = d.asked_write_rate();
    $("stat-time").textContent = formatDuration(nowVirtualMs) +
      (speed !== null ? ` · ${speed < 10 ? speed.toFixed(1) : speed.toFixed(0)}×` : "");
    $("stat-dirty").textContent = formatBytes(dirty);
    // An ended job copies nothing and tracks nothing: no rate applies to it.
    $("stat-copy").textContent = ended ? "– (ended)" : formatRate(copyRate);
    $("stat-dirtying").textContent = ended ? "– (ended)" : formatRate(dirtying);
    $("stat-guest").textContent = asked === 0 ? "idle" :
      `${formatRate(guestRate)} of ${formatRate(asked)} asked (${Math.round((100 * guestRate) / asked)} %)`;
    $("stat-latency").textContent = Number.isFinite(latency) ? formatDuration(latency) : "– (no writes)";
    // The core's verdict and the core's ETA, which agree: before ready it gives no finite
    // time while NOT_CONVERGING holds.
    const eta = d.eta_ready_ms();
    const etaBox = $("stat-eta");
    const verdict = status === "running" && d.not_converging();
    const noEta = status === "running" && (verdict || !Number.isFinite(eta));
    etaBox.textContent = status === "ready" ? "ready now" : status !== "running" ? "–" :
      noEta ? "not at this rate" : formatDuration(eta);
    etaBox.classList.toggle("warn", noEta);
    etaBox.title = !noEta ? "" : verdict ? NO_ETA_WORDS.verdict : NO_ETA_WORDS.race;
    const mode = d.copy_mode();
    if (!ended && asked > 0 && nowVirtualMs > 2000 && Number.isFinite(latency)) {
      this.costByMode[mode] = { rate: guestRate, asked, latency };
    }
    $("stat-modes").textContent = ["background", "write-blocking"].map((m) => {
      const c = this.costByMode[m];
      return c ? `${m}: ${formatRate(c.rate)} of ${formatRate(c.asked)}, ${formatDuration(c.latency)} per write` : `${m}: not measured yet`;
    }).join(" · ");
    return { nowVirtualMs, ended, dirty, copyRate, guestRate, dirtying, latency };
  }
}
