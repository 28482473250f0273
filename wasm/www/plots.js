// Line plots over virtual time, drawn on a canvas. A plot keeps the whole run: when its
// buffer is full it drops every other sample and from then on keeps samples half as often,
// so memory stays bounded and the first seconds stay on screen however long the run. Both
// axes get ticks at round values with their units.

import { formatDuration } from "./format.js";

/** A round step (1, 2 or 5 times a power of ten) that cuts `span` into about `parts`. */
export function niceStep(span, parts = 4) {
  if (!(span > 0)) return 1;
  const raw = span / parts;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const m = raw / power;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * power;
}

/** Axis units: a value is shown divided by `scale`, with `unit` after it. */
const UNITS = {
  bytes: [[1 << 30, "GiB"], [1 << 20, "MiB"], [1 << 10, "KiB"], [1, "B"]],
  rate: [[1 << 30, "GiB/s"], [1 << 20, "MiB/s"], [1 << 10, "KiB/s"], [1, "B/s"]],
  ms: [[1000, "s"], [1, "ms"], [0.001, "µs"]],
};

function unitFor(kind, max) {
  const table = UNITS[kind];
  for (const [scale, unit] of table) if (max >= scale) return [scale, unit];
  return table[table.length - 1];
}

export class TimePlot {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{name: string, color: string, dash?: number[]}[]} series
   * @param {"bytes" | "rate" | "ms"} kind the unit of every series
   */
  constructor(canvas, series, kind = "bytes", capacity = 800) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.series = series.map((s) => ({ ...s, values: new Float64Array(capacity) }));
    this.times = new Float64Array(capacity);
    this.capacity = capacity;
    this.kind = kind;
    this.clear();
  }

  clear() {
    this.count = 0;
    this.strideMs = 0;
  }

  /** Adds one sample: the virtual time in ms and one value per series (NaN: no value). */
  push(timeMs, values) {
    if (this.count > 0 && timeMs < this.times[this.count - 1] + Math.max(this.strideMs, 1e-9)) return;
    if (this.count === this.capacity) this.halve();
    this.times[this.count] = timeMs;
    this.series.forEach((s, i) => { s.values[this.count] = values[i]; });
    this.count += 1;
  }

  /** Keeps every other sample (the first and the last stay) and samples half as often. */
  halve() {
    let kept = 0;
    for (let k = 0; k < this.count; k += 2) {
      this.times[kept] = this.times[k];
      for (const s of this.series) s.values[kept] = s.values[k];
      kept += 1;
    }
    this.count = kept;
    const span = this.times[kept - 1] - this.times[0];
    this.strideMs = Math.max(this.strideMs * 2, span / kept);
  }

  draw() {
    const { ctx, canvas } = this;
    // Draw at the size the canvas is shown (crisp text at any zoom or screen density).
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(120, canvas.clientWidth), h = Math.max(60, canvas.clientHeight);
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const left = 46, right = 10, top = 16, bottom = 18;
    const plotW = w - left - right, plotH = h - top - bottom;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    ctx.font = "12px system-ui, sans-serif";
    ctx.lineWidth = 1;
    if (this.count === 0) {
      ctx.fillStyle = "#5b5b66";
      ctx.fillText("no data yet", left + 8, top + 16);
      return;
    }
    const t0 = this.times[0];
    const t1 = Math.max(this.times[this.count - 1], t0 + 1000);
    let ymax = 0;
    for (const s of this.series) {
      for (let k = 0; k < this.count; k++) if (s.values[k] > ymax) ymax = s.values[k];
    }
    const [scale, unit] = unitFor(this.kind, ymax || 1);
    // A little headroom over the largest value; ticks at round values below the top.
    const yTop = (ymax || scale) * 1.08;
    const yStep = niceStep(yTop / scale, 4) * scale;
    const xOf = (t) => left + ((t - t0) / (t1 - t0)) * plotW;
    const yOf = (v) => top + plotH - (v / yTop) * plotH;

    // Grid lines and tick labels.
    ctx.strokeStyle = "#e4e4ea";
    ctx.fillStyle = "#4a4a55";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let v = 0; v <= yTop; v += yStep) {
      const y = Math.round(yOf(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + plotW, y); ctx.stroke();
      ctx.fillText(String(+(v / scale).toPrecision(3)), left - 4, y);
    }
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillText(unit, 2, 1);
    const spanS = (t1 - t0) / 1000;
    const xStep = niceStep(spanS, Math.max(2, Math.floor(plotW / 70))) * 1000;
    ctx.textAlign = "center";
    for (let t = Math.ceil(t0 / xStep) * xStep; t <= t1 + 1e-6; t += xStep) {
      const x = Math.round(xOf(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + plotH); ctx.stroke();
      ctx.fillText(`${+(t / 1000).toPrecision(4)} s`, Math.min(Math.max(x, left + 12), w - 16), top + plotH + 3);
    }
    ctx.strokeStyle = "#a8a8b4";
    ctx.strokeRect(left + 0.5, top + 0.5, plotW - 1, plotH - 1);

    // The series (the first drawn last, on top).
    for (const s of [...this.series].reverse()) {
      ctx.beginPath();
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.setLineDash(s.dash || []);
      let drawing = false;
      for (let k = 0; k < this.count; k++) {
        const v = s.values[k];
        if (!Number.isFinite(v)) { drawing = false; continue; }
        const x = xOf(this.times[k]), y = yOf(v);
        if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        drawing = true;
      }
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.textAlign = "left";
    ctx.fillStyle = "#4a4a55";
    ctx.fillText(`whole run: ${formatDuration(this.times[this.count - 1] - t0)}`, left + 4, 1);
  }
}
