// Human-readable numbers for the page: bytes, rates and durations.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** Bytes as "12.3 MiB" (binary units, like disk sizes). */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "–";
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 || Number.isInteger(value) ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** Bytes per second as "12.3 MiB/s". */
export function formatRate(bytesPerSec) {
  return `${formatBytes(bytesPerSec)}/s`;
}

/** Milliseconds as "850 ms", "12.4 s" or "3 min 05 s". */
export function formatDuration(ms) {
  if (!Number.isFinite(ms)) return "–";
  if (ms > 0 && ms < 9.95) return `${ms.toPrecision(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 120) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${String(Math.round(seconds - minutes * 60)).padStart(2, "0")} s`;
}

/** A log-scale slider position (0..100) to a value in [min, max]; position 0 gives 0. */
export function sliderToValue(position, min, max) {
  if (position <= 0) return 0;
  const fraction = (position - 1) / 99;
  return min * Math.pow(max / min, fraction);
}

/** The inverse of sliderToValue (nearest position). */
export function valueToSlider(value, min, max) {
  if (value <= 0) return 0;
  const fraction = Math.log(value / min) / Math.log(max / min);
  return Math.min(100, Math.max(1, Math.round(1 + fraction * 99)));
}
