// The job status diagram. Nodes and edges come from the core's transition table (exported
// by the wasm module); only the positions on screen are chosen here. Wide screens get the
// statuses in two rows, narrow (phone) screens the same picture turned into two columns.
// Every arrow's reason is shown in words next to the diagram: for the change last taken,
// and for any arrow focused with the keyboard, tapped or pointed at.

const SVG_NS = "http://www.w3.org/2000/svg";
const NODE_W = 104, NODE_H = 30;

// Position along the happy path and lane of each status: the happy path is lane 0.
const LAYOUT = {
  created: [0, 0], running: [1, 0], ready: [2, 0], waiting: [3, 0], pending: [4, 0],
  null: [0, 1], paused: [1, 1], standby: [2, 1], aborting: [3, 1], concluded: [4, 1],
};

const GEOMETRY = {
  // Lanes are rows; positions run left to right.
  wide: { viewBox: "0 0 600 190", centre: (pos, lane) => [56 + pos * 122, [54, 132][lane]], arc: [0, -82, 82] },
  // Lanes are columns; positions run top to bottom.
  tall: { viewBox: "0 0 290 350", centre: (pos, lane) => [[72, 218][lane], 28 + pos * 74], arc: [1, -120, 120] },
};

function place(status) {
  return LAYOUT[status] ?? [5, 1];
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
   * @param {"wide" | "tall"} shape
   * @param {HTMLElement | null} why where the reasons are written
   */
  constructor(svg, statuses, transitions, shape = "wide", why = null) {
    this.svg = svg;
    this.why = why;
    this.lastChange = "";
    this.statuses = statuses;
    this.transitions = transitions;
    this.build(shape);
  }

  centre(status) {
    const [pos, lane] = place(status);
    return this.geometry.centre(pos, lane);
  }

  /** (Re)draws the diagram in `shape`, keeping the trail and the current status. */
  build(shape) {
    const svg = this.svg;
    const current = this.current;
    const visited = this.visited ?? new Set();
    const taken = this.taken ?? new Set();
    this.geometry = GEOMETRY[shape];
    this.shape = shape;
    svg.setAttribute("viewBox", this.geometry.viewBox);
    for (const child of [...svg.children]) if (child.tagName !== "title") child.remove();
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
    for (const [from, to, why] of this.transitions) {
      if (from === to) continue; // self-loops carry no information in the picture
      // Changes only QEMU makes (this job never does) are drawn dashed.
      const qemuOnly = why.startsWith("(QEMU only)");
      const path = el("path", { class: qemuOnly ? "edge qemu-only" : "edge", d: this.edgePath(from, to),
        "marker-end": "url(#arrow)" });
      const words = `${from} → ${to}: ${why}`;
      // A wide invisible twin takes focus, taps and the pointer: the drawn line is too thin
      // to hit with a finger, and SVG titles only show on hover.
      const hit = el("path", { class: "hit", d: path.getAttribute("d"), tabindex: "0", role: "button",
        "aria-label": words, "data-edge": `${from}>${to}` });
      const title = el("title", {});
      title.textContent = words;
      hit.append(title);
      const explain = () => { path.classList.add("explained"); this.say(words); };
      const restore = () => { path.classList.remove("explained"); this.say(this.lastChange); };
      hit.addEventListener("focus", explain);
      hit.addEventListener("blur", restore);
      hit.addEventListener("pointerenter", explain);
      hit.addEventListener("pointerleave", () => { if (document.activeElement !== hit) restore(); });
      hit.addEventListener("click", () => { hit.focus(); explain(); });
      edgeLayer.append(path, hit);
      this.edges.set(`${from}>${to}`, path);
      this.reasons ??= new Map();
      this.reasons.set(`${from}>${to}`, why);
    }
    for (const status of this.statuses) {
      const [x, y] = this.centre(status);
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
    this.visited = visited;
    this.taken = taken;
    for (const status of visited) this.nodes.get(status)?.classList.add("visited");
    for (const key of taken) this.edges.get(key)?.classList.add("taken");
    this.current = null;
    if (current) this.mark(current);
  }

  /** A gently curved edge, bent to the left of its direction so that a ⇄ pair stays apart;
   *  an edge along a lane past other nodes arcs outside the diagram instead. */
  edgePath(from, to) {
    const [x1, y1] = this.centre(from), [x2, y2] = this.centre(to);
    const dx = x2 - x1, dy = y2 - y1, len = Math.hypot(dx, dy) || 1;
    let cx, cy;
    const [p1, lane1] = place(from), [p2, lane2] = place(to);
    if (lane1 === lane2 && Math.abs(p2 - p1) >= 2) {
      const [axis, outsideLane0, outsideLane1] = this.geometry.arc;
      const offset = lane1 === 0 ? outsideLane0 : outsideLane1;
      cx = (x1 + x2) / 2 + (axis === 1 ? offset : 0);
      cy = (y1 + y2) / 2 + (axis === 0 ? offset : 0);
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
    this.visited = new Set();
    this.taken = new Set();
    this.lastChange = "";
    this.say("");
  }

  say(text) {
    if (this.why) this.why.textContent = text || "–";
  }

  /** Marks `status` as current and the edge that led there as taken. The trail (statuses
   *  left and edges taken since the last reset) is kept here, not only in the drawing, so
   *  `build` redraws it in the new shape. */
  show(status) {
    if (status === this.current) return;
    if (this.current) {
      this.visited.add(this.current);
      this.taken.add(`${this.current}>${status}`);
      this.nodes.get(this.current)?.classList.replace("current", "visited");
      this.edges.get(`${this.current}>${status}`)?.classList.add("taken");
      const why = this.reasons?.get(`${this.current}>${status}`);
      this.lastChange = `Last change, ${this.current} → ${status}: ${why ?? "(not in the table)"}`;
      if (!this.svg.contains(document.activeElement)) this.say(this.lastChange);
    }
    this.mark(status);
  }

  /** Outlines `status` as the current one and moves the dot there. */
  mark(status) {
    const node = this.nodes.get(status);
    node?.classList.add("current");
    const [x, y] = this.centre(status);
    this.dot.setAttribute("cx", x - NODE_W / 2);
    this.dot.setAttribute("cy", y - NODE_H / 2);
    this.current = status;
  }
}
