// The job status diagram. Nodes and edges come from the core's transition table (exported
// by the wasm module); only the positions on screen are chosen here.

const SVG_NS = "http://www.w3.org/2000/svg";
const NODE_W = 98, NODE_H = 30;

// Column and row of each status: the happy path runs along the top row.
const LAYOUT = {
  created: [0, 0], running: [1, 0], ready: [2, 0], waiting: [3, 0], pending: [4, 0],
  null: [0, 1], paused: [1, 1], standby: [2, 1], aborting: [3, 1], concluded: [4, 1],
};
const ROW_Y = [52, 128];

function place(status) {
  return LAYOUT[status] ?? [5, 1];
}

function centre(status) {
  const [col, row] = place(status);
  return [52 + col * 114, ROW_Y[row]];
}

function el(name, attrs) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

export class PhaseDiagram {
  /**
   * @param {SVGSVGElement} svg
   * @param {string[]} statuses every status name
   * @param {[string, string, string][]} transitions allowed status changes and why, from the core
   */
  constructor(svg, statuses, transitions) {
    this.svg = svg;
    this.nodes = new Map();
    this.edges = new Map();
    const defs = el("defs", {});
    const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5",
      markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
    marker.append(el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#6b6b78" }));
    defs.append(marker);
    svg.append(defs);
    const edgeLayer = el("g", {});
    const nodeLayer = el("g", {});
    svg.append(edgeLayer, nodeLayer);
    for (const [from, to, why] of transitions) {
      if (from === to) continue; // self-loops carry no information in the picture
      // Changes only QEMU makes (this job never does) are drawn dashed.
      const qemuOnly = why.startsWith("(QEMU only)");
      const path = el("path", { class: qemuOnly ? "edge qemu-only" : "edge", d: this.edgePath(from, to),
        "marker-end": "url(#arrow)" });
      const title = el("title", {});
      title.textContent = `${from} → ${to}: ${why}`;
      path.append(title);
      edgeLayer.append(path);
      this.edges.set(`${from}>${to}`, path);
    }
    for (const status of statuses) {
      const [x, y] = centre(status);
      const g = el("g", { class: "node", "data-status": status });
      g.append(el("rect", { x: x - NODE_W / 2, y: y - NODE_H / 2, width: NODE_W, height: NODE_H, rx: 6 }));
      const text = el("text", { x, y });
      text.textContent = status;
      g.append(text);
      nodeLayer.append(g);
      this.nodes.set(status, g);
    }
    this.dot = el("circle", { class: "dot", r: 6, cx: -20, cy: -20 });
    nodeLayer.append(this.dot);
    this.current = null;
  }

  /** A gently curved edge, bent to the left of its direction so that a ⇄ pair stays apart. */
  edgePath(from, to) {
    const [x1, y1] = centre(from), [x2, y2] = centre(to);
    const dx = x2 - x1, dy = y2 - y1, len = Math.hypot(dx, dy) || 1;
    let cx, cy;
    const [c1, r1] = place(from), [c2, r2] = place(to);
    if (r1 === r2 && Math.abs(c2 - c1) >= 2) {
      // Along a row past other nodes: arc outside the diagram (above the top row, below the bottom one).
      cx = (x1 + x2) / 2;
      cy = y1 + (r1 === 0 ? -80 : 80);
    } else {
      const nx = -dy / len, ny = dx / len;
      const bend = Math.min(40, 0.18 * len);
      cx = (x1 + x2) / 2 + nx * bend;
      cy = (y1 + y2) / 2 + ny * bend;
    }
    // Start and end on the node borders (clip the segment against each node's box).
    const clip = (px, py, qx, qy) => {
      const ex = qx - px, ey = qy - py;
      const sx = ex === 0 ? Infinity : (NODE_W / 2 + 2) / Math.abs(ex);
      const sy = ey === 0 ? Infinity : (NODE_H / 2 + 2) / Math.abs(ey);
      const s = Math.min(sx, sy);
      return [px + ex * s, py + ey * s];
    };
    const [sx, sy] = clip(x1, y1, cx, cy);
    const [ex, ey] = clip(x2, y2, cx, cy);
    return `M${sx.toFixed(1)},${sy.toFixed(1)} Q${cx.toFixed(1)},${cy.toFixed(1)} ${ex.toFixed(1)},${ey.toFixed(1)}`;
  }

  /** Clears the trail of visited statuses (a new job). */
  reset() {
    for (const g of this.nodes.values()) g.classList.remove("visited", "current");
    for (const p of this.edges.values()) p.classList.remove("taken");
    this.current = null;
  }

  /** Marks `status` as current and the edge that led there as taken. */
  show(status) {
    if (status === this.current) return;
    if (this.current) {
      this.nodes.get(this.current)?.classList.replace("current", "visited");
      this.edges.get(`${this.current}>${status}`)?.classList.add("taken");
    }
    const node = this.nodes.get(status);
    node?.classList.add("current");
    const [x, y] = centre(status);
    this.dot.setAttribute("cx", x - NODE_W / 2);
    this.dot.setAttribute("cy", y - NODE_H / 2);
    this.current = status;
  }
}
