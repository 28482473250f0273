// The five guided scenarios: each sets the controls, starts a fresh simulation, and says in
// two or three sentences what to watch. `actions` add scenario-specific buttons.

const MiB = 1 << 20;
const GiB = 1 << 30;

export const SCENARIOS = [
  {
    id: 1,
    title: "1. A quiet disk",
    settings: { diskBytes: GiB, granularity: 64 << 10, writeRate: 2 * MiB, pattern: "uniform",
      bandwidth: 200 * MiB, copyMode: "background", sourceFault: "none", targetFault: "none",
      sourcePolicy: "report", targetPolicy: "report", jobSpeed: 0, timeSpeed: 1 },
    text: [
      "The guest hardly writes. Watch the orange dirty chunks turn pale as the job copies them in bulk (blue: in flight); the pink dots are guest writes, and a chunk written after its copy turns dirty again.",
      "When nothing is dirty the job emits BLOCK_JOB_READY and the status becomes ready: the target is kept in sync from now on. Press Complete to switch the guest over to the target.",
    ],
  },
  {
    id: 2,
    title: "2. A busy disk that never converges",
    settings: { diskBytes: GiB, granularity: 64 << 10, writeRate: 160 * MiB, pattern: "uniform",
      bandwidth: 100 * MiB, copyMode: "background", sourceFault: "none", targetFault: "none",
      sourcePolicy: "report", targetPolicy: "report", jobSpeed: 0, timeSpeed: 1 },
    text: [
      "The guest dirties chunks faster than the target can take them. Watch the dirty-bytes plot: it stops shrinking, the job logs BLOCK_JOB_NOT_CONVERGING, and it never becomes ready.",
      "This is why mirroring a busy virtual machine can run forever in the default background mode.",
    ],
  },
  {
    id: 3,
    title: "3. Write-blocking rescues it",
    settings: { diskBytes: GiB, granularity: 64 << 10, writeRate: 160 * MiB, pattern: "uniform",
      bandwidth: 100 * MiB, copyMode: "write-blocking", sourceFault: "none", targetFault: "none",
      sourcePolicy: "report", targetPolicy: "report", jobSpeed: 0, timeSpeed: 1 },
    text: [
      "Same guest, same target, but in write-blocking (active) mode a guest write to an already copied chunk goes to the target too before the guest hears back. Copied chunks stay clean, so dirty bytes only shrink and the job reaches ready.",
      "The price: the guest's writes now wait for the slower target. You can also switch a running scenario 2 with the Copy mode control.",
    ],
  },
  {
    id: 4,
    title: "4. Target full: stop then resume",
    settings: { diskBytes: GiB, granularity: 64 << 10, writeRate: 2 * MiB, pattern: "uniform",
      bandwidth: 200 * MiB, copyMode: "background", sourceFault: "none", targetFault: "none",
      sourcePolicy: "report", targetPolicy: "enospc", jobSpeed: 0, timeSpeed: 1 },
    // The story: the target fills up once 40 % of the disk has been copied.
    onFrame: (ui, demo) => {
      if (!ui.scenarioState.filled && demo.progress_current() >= 0.4 * demo.disk_bytes()) {
        ui.scenarioState.filled = true;
        ui.setTargetFault("full");
      }
    },
    text: [
      "Part-way through, the target runs out of space. With the enospc policy the job logs BLOCK_JOB_ERROR with action stop and pauses: the failed chunks (black) stay dirty, so nothing is lost.",
      "Press \u201cFree space and resume\u201d: the fault is cleared, the job resumes, copies what is left and becomes ready.",
    ],
    actions: [{ id: "free-space", label: "Free space and resume", run: (ui) => ui.freeSpaceAndResume() }],
  },
  {
    id: 5,
    title: "5. Cancel after ready keeps a consistent copy",
    settings: { diskBytes: GiB, granularity: 64 << 10, writeRate: 20 * MiB, pattern: "hot-spot",
      bandwidth: 200 * MiB, copyMode: "background", sourceFault: "none", targetFault: "none",
      sourcePolicy: "report", targetPolicy: "report", jobSpeed: 0, timeSpeed: 1 },
    text: [
      "Let the job reach ready, then press Cancel. Because the target was in sync, the job drains what is still dirty, flushes, and ends with BLOCK_JOB_COMPLETED without switching over: the target is a consistent point-in-time copy and the guest stays on the source.",
      "Force cancel instead stops at once with BLOCK_JOB_CANCELLED, and the target may be inconsistent.",
    ],
  },
];
