// The guided scenarios. Each is a few short steps; a step says what to look at (`plot`, a
// figure of the page: dirty | rates | guest) and what to press (`button`, an element id),
// and the page keeps those on screen next to its words. A step with `ask` is a prediction:
// the clock waits until the learner has answered, then runs so they can see. A step with
// `until` opens the next step by itself when the moment comes ("ready now: press
// Complete"); a step without one has a Next button.

const MiB = 1 << 20;
const GiB = 1 << 30;

const QUIET = { diskBytes: GiB, granularity: 64 << 10, writeRate: 2 * MiB, pattern: "uniform",
  bandwidth: 200 * MiB, copyMode: "background", sourceFault: "none", targetFault: "none",
  sourcePolicy: "report", targetPolicy: "report", jobSpeed: 0, timeSpeed: 1 };
const BUSY = { ...QUIET, writeRate: 160 * MiB, bandwidth: 100 * MiB };

const ready = (ui) => ui.seen("BLOCK_JOB_READY");
const concluded = (ui, d) => d.status() === "concluded";
const paused = (ui, d) => d.status() === "paused";

// The error-policy scenarios: part-way through, one target write fails once (an I/O
// error), or, after "Run again", the target fills up at 40 % and stays full (no space).
// The one-off error is the target write with this number (about 40 % into a 1 GiB copy).
const ONE_OFF_WRITE = 400;
const fillsAt40 = (ui, demo) => {
  if (ui.scenarioState.fault === "full" && !ui.scenarioState.filled &&
      demo.progress_current() >= 0.4 * demo.disk_bytes()) {
    ui.scenarioState.filled = true;
    ui.setTargetFault("full");
  }
};
const FULL_AGAIN = { id: "full-target", label: "Run again: the target stays full", run: (ui) => ui.rerun({ fault: "full" }) };
const FREE_SPACE = { id: "free-space", label: "Free space and resume", run: (ui) => ui.freeSpaceAndResume() };
const policySettings = (policy) => ({ ...QUIET, targetPolicy: policy, oneOffWrite: ONE_OFF_WRITE });

export const SCENARIOS = [
  {
    id: 1, title: "1 A quiet disk", settings: QUIET,
    steps: [
      { plot: "dirty", ask: { question: "The guest writes 2 MiB/s; the target takes 200 MiB/s. Will the copy catch up (status ready)?",
          choices: [{ label: "Yes, in seconds", right: true }, { label: "No, never" }] },
        text: "Orange squares are dirty chunks still to copy, blue ones are in flight, pink ones the guest just wrote.",
        until: ready },
      { plot: "dirty", button: "complete", prompt: "Ready now — press Complete.",
        text: "Nothing is dirty: the target is in sync and the job keeps it so. Complete switches the guest over.",
        until: concluded },
      { plot: "dirty", text: "BLOCK_JOB_COMPLETED: the guest now runs on the target. Next, a busy disk (scenario 2)." },
    ],
  },
  {
    id: 2, title: "2 A busy disk", settings: BUSY,
    steps: [
      { plot: "dirty", ask: { question: "The guest writes 160 MiB/s; the target takes only 100 MiB/s. Will the dirty bytes reach zero?",
          choices: [{ label: "Yes, eventually" }, { label: "No, they stop shrinking", right: true }] },
        text: "Watch the dirty-bytes plot.", until: (ui) => ui.seen("BLOCK_JOB_NOT_CONVERGING") },
      { plot: "rates", prompt: "BLOCK_JOB_NOT_CONVERGING: the backlog shrinks too slowly.",
        text: "Said when the measured rates put ready too far off, or the dirty bytes stop reaching new lows; then the ETA says “not at this rate”. Newly dirtied stays below the guest's writes: a write to an already dirty chunk adds nothing to copy." },
      { plot: "dirty", button: "copy-mode", ask: { question: "Switch Copy mode to write-blocking. Will it get ready then?",
          choices: [{ label: "Yes", right: true }, { label: "No" }] },
        until: ready },
      { plot: "guest", button: "complete", prompt: "Ready now — press Complete.",
        text: "The price is in the latency plot: every guest write now waits for the slower target. Scenario 3 measures it.",
        until: concluded },
      { plot: "guest", text: "Switched over. Write-blocking converges under any load, at the guest's expense." },
    ],
  },
  {
    id: 3, title: "3 Write-blocking's price", settings: { ...BUSY, copyMode: "write-blocking" },
    steps: [
      { plot: "rates", ask: { question: "Same load in write-blocking mode. How much of its 160 MiB/s will the guest get?",
          choices: [{ label: "All of it" }, { label: "At most the target's 100 MiB/s", right: true }] },
        text: "Watch guest writes (red) in the rates plot.", until: ready },
      { plot: "guest", prompt: "Ready: the dirty bytes only shrank.",
        text: "Read the cost: Guest writes and Guest write latency in the readouts, and the latency plot." },
      { plot: "guest", button: "copy-mode", prompt: "Now switch Copy mode to background.",
        text: "Latency falls and the guest gets its rate back, but the dirty bytes grow again. “Guest cost by copy mode” keeps both." },
    ],
  },
  {
    id: 4, title: "4 Policy report", settings: policySettings("report"), onFrame: fillsAt40, actions: [FULL_AGAIN],
    steps: [
      { plot: "dirty", ask: { question: "on_target_error=report. One target write fails once (I/O error). What happens?",
          choices: [{ label: "The job fails", right: true }, { label: "It retries and finishes" }] },
        text: "The error comes about 40 % of the way through.", until: concluded },
      { plot: "dirty", button: "full-target", prompt: "The job failed.",
        text: "BLOCK_JOB_COMPLETED with an error is a failure, not a success: the target is unusable. Now a target that stays full." },
      { plot: "dirty", ask: { question: "The target fills up at 40 % and stays full. What does report do?",
          choices: [{ label: "Fails the same way", right: true }, { label: "Waits for space" }] }, until: concluded },
      { plot: "dirty", text: "Failed at the first error: report never waits. For a disk that may fill up, see enospc (7)." },
    ],
  },
  {
    id: 5, title: "5 Policy ignore", settings: policySettings("ignore"), onFrame: fillsAt40, actions: [FULL_AGAIN, FREE_SPACE],
    steps: [
      { plot: "dirty", ask: { question: "on_target_error=ignore. One target write fails once. What happens?",
          choices: [{ label: "It logs it, copies the chunk again, finishes", right: true }, { label: "The job fails" }] },
        until: ready },
      { plot: "dirty", button: "full-target", prompt: "Ready.",
        text: "ignore logged BLOCK_JOB_ERROR (action ignore), kept the chunk dirty and copied it again later. Now a target that stays full." },
      { plot: "dirty", ask: { question: "The target fills at 40 % and stays full. What does ignore do?",
          choices: [{ label: "Retries for ever, never ready", right: true }, { label: "Pauses" }] },
        until: (ui) => ui.count("BLOCK_JOB_ERROR") >= 40 },
      { plot: "dirty", button: "free-space", prompt: "A retry loop.",
        text: "The error line counts up, the black chunks stay, it never gets ready. Free space to let it finish.",
        until: ready },
      { plot: "dirty", text: "Ready once space came back. ignore hides a lasting fault: watch the error count." },
    ],
  },
  {
    id: 6, title: "6 Policy stop", settings: policySettings("stop"), onFrame: fillsAt40, actions: [FULL_AGAIN, FREE_SPACE],
    steps: [
      { plot: "dirty", ask: { question: "on_target_error=stop. One target write fails once. What happens?",
          choices: [{ label: "It pauses until I resume", right: true }, { label: "The job fails" }] },
        until: paused },
      { plot: "dirty", button: "resume-job", prompt: "Paused by the error (action stop) — press Resume job.",
        text: "The failed chunk (black) stays dirty: nothing is lost.", until: ready },
      { plot: "dirty", button: "full-target", prompt: "Ready.", text: "Resume copied the chunk again. Now a target that stays full." },
      { plot: "dirty", ask: { question: "The target fills at 40 % and stays full. What will Resume do?",
          choices: [{ label: "Pause again at once", right: true }, { label: "Finish the copy" }] },
        until: paused },
      { plot: "dirty", button: "resume-job", also: ["free-space"], prompt: "Paused — press Resume job while the target is still full.",
        text: "It stops again. Then press “Free space and resume”.", until: ready },
      { plot: "dirty", text: "Ready once there was space. stop waits for you at every error, lasting or not." },
    ],
  },
  {
    id: 7, title: "7 Policy enospc", settings: policySettings("enospc"), onFrame: fillsAt40, actions: [FULL_AGAIN, FREE_SPACE],
    steps: [
      { plot: "dirty", ask: { question: "on_target_error=enospc. One write fails once with an I/O error (not “no space”). What happens?",
          choices: [{ label: "Fails, like report", right: true }, { label: "Pauses, like stop" }] },
        until: concluded },
      { plot: "dirty", button: "full-target", prompt: "The job failed.",
        text: "enospc waits only for “no space left”; any other error is reported. Now the target fills up." },
      { plot: "dirty", ask: { question: "The target fills at 40 % (no space left). What does enospc do?",
          choices: [{ label: "Pauses until space is freed", right: true }, { label: "Fails" }] },
        until: paused },
      { plot: "dirty", button: "free-space", prompt: "Paused on ENOSPC — press “Free space and resume”.",
        text: "Action stop: the failed chunks stay dirty, nothing is lost.", until: ready },
      { plot: "dirty", text: "Ready. enospc is the policy for a target that may fill up." },
    ],
  },
  {
    id: 8, title: "8 Cancel vs force", settings: { ...QUIET, writeRate: 20 * MiB, pattern: "hot-spot" },
    steps: [
      { plot: "dirty", ask: { question: "After ready, Cancel stops the job. Will the target then hold a usable copy?",
          choices: [{ label: "Yes, a consistent one", right: true }, { label: "No" }] },
        until: ready },
      { plot: "dirty", button: "cancel", prompt: "Ready now — press Cancel.",
        text: "Cancel and Force cancel sit side by side. Cancel drains what is dirty, then ends without switching over.",
        until: concluded },
      { plot: "dirty", text: (ui) => ui.seen("BLOCK_JOB_CANCELLED")
        ? "BLOCK_JOB_CANCELLED: force cancel stopped at once; the target may be inconsistent."
        : "BLOCK_JOB_COMPLETED, no switch-over: a consistent point-in-time copy; the guest stays on the source.",
        actions: [{ id: "force-again", label: "Run again and force cancel", run: (ui) => ui.rerun({}, 3) }] },
      { plot: "dirty", button: "force-cancel", prompt: "Now press Force cancel.",
        text: "It stops at once, whatever is still dirty.", until: concluded },
      { plot: "dirty", text: "BLOCK_JOB_CANCELLED: the copy stopped part-way, and the target may be inconsistent." },
    ],
  },
];
