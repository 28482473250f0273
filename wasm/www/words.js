// The words under the controls: what the value chosen in each selector does. Plain text
// for the page; nothing here decides anything.

const $ = (id) => document.getElementById(id);

const POLICY_WORDS = {
  report: "report: the first error ends the job (BLOCK_JOB_COMPLETED with the error: a failure).",
  ignore: "ignore: logs the error, keeps the chunk dirty and copies it again later; a lasting fault retries for ever.",
  stop: "stop: pauses the job at any error until you press Resume job; nothing is lost.",
  enospc: "enospc: pauses like stop when the target is full (no space left), fails like report on any other error.",
};
const COPY_MODE_WORDS = {
  background: "Guest writes only mark chunks dirty; the job copies them later. Free for the guest, but a busy guest can outrun the copy.",
  "write-blocking": "A guest write to a copied chunk also goes to the target before the guest hears back: always converges, but guest writes wait for the target.",
};
const PATTERN_WORDS = {
  uniform: "Anywhere on the disk.",
  "hot-spot": "Mostly a small region (90 % of writes to 10 % of the disk).",
  sequential: "Front to back, like a log.",
};
const FAULT_WORDS = {
  none: "", io: "now and then an I/O error (about 2 % of operations)", full: "every write: no space left on device",
};

/** Writes, under each selector, what its chosen value does. */
export function showControlWords() {
  $("copy-mode-words").textContent = COPY_MODE_WORDS[$("copy-mode").value] ?? "";
  $("pattern-words").textContent = PATTERN_WORDS[$("pattern").value] ?? "";
  const faults = [["Source reads", $("source-fault").value], ["Target writes", $("target-fault").value]]
    .filter(([, v]) => v !== "none").map(([side, v]) => `${side} fail ${FAULT_WORDS[v]}.`);
  $("fault-words").textContent = faults.length ? faults.join(" ") : "No faults: every read and write succeeds.";
  $("source-policy-words").textContent = POLICY_WORDS[$("source-policy").value] ?? "";
  $("target-policy-words").textContent = POLICY_WORDS[$("target-policy").value] ?? "";
}
