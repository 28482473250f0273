// The page's measurement mode (used by tests/test_browser.py and docs/PERFORMANCE.md):
// plays a fresh simulation with the page's own frame loop and reports its frame rate.

import { formatBytes } from "./format.js";

const $ = (id) => document.getElementById(id);
const MiB = 1 << 20;

/** Plays a fresh simulation of `diskBytes` on `app`'s page and reports frames per second
 *  over `seconds`, with where each frame's time went. */
export async function measureFps(app, { diskBytes, granularity = 65536, seconds = 5, writeRate = 64 * MiB, bandwidth = 1024 * MiB, timeSpeed = 1 }) {
  const sizes = $("disk-size");
  if (![...sizes.options].some((o) => o.value === String(diskBytes))) {
    sizes.add(new Option(formatBytes(diskBytes), String(diskBytes)));
  }
  sizes.value = String(diskBytes);
  $("granularity").value = String(granularity);
  app.setSlider("write-rate", writeRate);
  app.setSlider("bandwidth", bandwidth);
  app.setSlider("speed", timeSpeed);
  app.restart();
  app.setPlaying(true);
  await new Promise((r) => setTimeout(r, 500)); // let the first frames settle
  app.frameStats = { frames: 0, simMs: 0, drawMs: 0, refreshMs: 0, gridMs: 0 };
  const start = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const elapsed = performance.now() - start;
  const { frames, simMs, drawMs, refreshMs, gridMs } = app.frameStats;
  app.setPlaying(false);
  return {
    time_speed: app.slider("speed"),
    virtual_ms: app.demo.now_ms(),
    chunks: app.demo.chunk_count(),
    frames,
    fps: (frames * 1000) / elapsed,
    sim_ms_per_frame: simMs / Math.max(1, frames),
    draw_ms_per_frame: drawMs / Math.max(1, frames),
    refresh_states_ms_per_frame: refreshMs / Math.max(1, frames),
    grid_ms_per_frame: gridMs / Math.max(1, frames),
    status: app.demo.status(),
  };
}
