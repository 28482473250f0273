// Small live line plots over virtual time, drawn on a canvas. Each series keeps the last
// `capacity` samples; the y axis scales to the largest value on screen.

import { formatBytes, formatDuration } from "./format.js";

export class TimePlot {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{name: string, color: string, dash?: number[]}[]} series
   * @param {(v: number) => string} formatValue
   */
  constructor(canvas, series, formatValue = formatBytes, capacity = 600) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.series = series.map((s) => ({ ...s, values: new Float64Array(capacity) }));
    this.times = new Float64Array(capacity);
    this.capacity = capacity;
    this.formatValue = formatValue;
    this.clear();
  }

  clear() {
    this.count = 0;
    this.head = 0;
  }

  /** Adds one sample: the virtual time in ms and one value per series. */
  push(timeMs, values) {
    if (this.count > 0) {
      const last = this.times[(this.head - 1 + this.capacity) % this.capacity];
      if (timeMs <= last) return; // paused: nothing new to plot
    }
    this.times[this.head] = timeMs;
    this.series.forEach((s, i) => { s.values[this.head] = values[i]; });
    this.head = (this.head + 1) % this.capacity;
    this.count = Math.min(this.count + 1, this.capacity);
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
    const left = 58, right = 8, top = 8, bottom = 18;
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#5b5b66";
    ctx.strokeStyle = "#c8c8d0";
    ctx.lineWidth = 1;
    ctx.strokeRect(left + 0.5, top + 0.5, w - left - right - 1, h - top - bottom - 1);
    if (this.count === 0) {
      ctx.fillText("no data yet", left + 8, top + 16);
      return;
    }
    const first = (this.head - this.count + this.capacity) % this.capacity;
    const at = (k) => (first + k) % this.capacity;
    const t0 = this.times[at(0)];
    const t1 = Math.max(this.times[at(this.count - 1)], t0 + 1);
    let ymax = 1;
    for (const s of this.series) {
      for (let k = 0; k < this.count; k++) ymax = Math.max(ymax, s.values[at(k)]);
    }
    ctx.textBaseline = "top";
    ctx.fillText(this.formatValue(ymax), 2, top);
    ctx.textBaseline = "bottom";
    ctx.fillText(this.formatValue(0), 2, h - bottom);
    ctx.fillText(formatDuration(t0), left, h - 2);
    const endLabel = formatDuration(t1);
    ctx.fillText(endLabel, w - right - ctx.measureText(endLabel).width, h - 2);
    const plotW = w - left - right - 2, plotH = h - top - bottom - 2;
    for (const s of this.series) {
      ctx.beginPath();
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.setLineDash(s.dash || []);
      for (let k = 0; k < this.count; k++) {
        const x = left + 1 + ((this.times[at(k)] - t0) / (t1 - t0)) * plotW;
        const y = top + 1 + plotH - (s.values[at(k)] / ymax) * plotH;
        if (k === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      }
      ctx.stroke();
    }
    ctx.setLineDash([]);
  }
}
