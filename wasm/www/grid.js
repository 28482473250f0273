// The chunk grid: per-chunk state bytes (read straight from wasm memory) to canvas pixels.
// Above MAX_CELLS chunks, each cell stands for several neighbouring chunks and shows the
// most telling state among them (a failure beats a chunk written during its copy beats a
// copy in flight beats dirty beats clean), so a single failed chunk stays visible in a
// 1 M-chunk disk.

const MAX_CELLS = 512 * 512;

/** Colour and meaning of each chunk state, keyed by the state names the Rust side exports. */
export const STATE_STYLE = {
  clean:   { color: "#e9e9ee", rank: 0, label: "clean: the target has it" },
  dirty:   { color: "#e69f00", rank: 1, label: "dirty: must be copied (again)" },
  guest_written: { color: "#cc79a7", rank: 2, label: "just written by the guest" },
  waiting: { color: "#f0e442", rank: 3, label: "guest write waiting its turn (write-blocking)" },
  reading: { color: "#56b4e9", rank: 4, label: "being read from the source" },
  writing: { color: "#0072b2", rank: 5, label: "being written to the target" },
  // The live page's: a chunk the guest wrote while its copy was in flight.
  redirtied: { color: "#cc79a7", rank: 6, label: "written again while being copied" },
  mirroring: { color: "#009e73", rank: 5, label: "guest write being mirrored (write-blocking)" },
  failed:  { color: "#1b1b1b", rank: 7, label: "copy failed (stays dirty)" },
};
const BACKGROUND = "#ffffff";

function rgbaWord(hex) {
  // ImageData is RGBA bytes; a little-endian Uint32Array view reads them as ABGR.
  const n = parseInt(hex.slice(1), 16);
  const r = (n >> 16) & 255, g = (n >> 8) & 255, b = n & 255;
  return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
}

export class ChunkGrid {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {string[]} stateNames state name for each state code, from the Rust side
   */
  constructor(canvas, stateNames) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { alpha: false });
    this.colorOf = new Uint32Array(256).fill(rgbaWord("#ff00ff"));
    this.rankOf = new Uint8Array(256);
    stateNames.forEach((name, code) => {
      const style = STATE_STYLE[name];
      if (!style) throw new Error(`no style for chunk state ${name}`);
      this.colorOf[code] = rgbaWord(style.color);
      this.rankOf[code] = style.rank;
    });
    this.background = rgbaWord(BACKGROUND);
    this.stateNames = stateNames;
    this.chunkCount = 0;
  }

  /** Lays the grid out for `chunkCount` chunks; returns chunks per cell. */
  resize(chunkCount) {
    this.chunkCount = chunkCount;
    this.chunksPerCell = Math.max(1, Math.ceil(chunkCount / MAX_CELLS));
    const cells = Math.max(1, Math.ceil(chunkCount / this.chunksPerCell));
    this.cols = Math.ceil(Math.sqrt(cells));
    this.rows = Math.ceil(cells / this.cols);
    this.cells = cells;
    this.canvas.width = this.cols;
    this.canvas.height = this.rows;
    this.image = this.ctx.createImageData(this.cols, this.rows);
    this.pixels = new Uint32Array(this.image.data.buffer);
    this.pixels.fill(this.background);
    return this.chunksPerCell;
  }

  /** Draws from `states` (one byte per chunk; the view is only valid during this call). */
  draw(states) {
    const { pixels, colorOf, chunksPerCell } = this;
    const n = Math.min(states.length, this.chunkCount);
    if (chunksPerCell === 1) {
      for (let i = 0; i < n; i++) pixels[i] = colorOf[states[i]];
    } else if (chunksPerCell % 4 === 0 && states.byteOffset % 4 === 0) {
      this.drawByWords(states, n);
    } else {
      for (let start = 0, cell = 0; start < n; start += chunksPerCell, cell++) {
        pixels[cell] = colorOf[this.telling(states, start, Math.min(n, start + chunksPerCell))];
      }
    }
    this.ctx.putImageData(this.image, 0, 0);
  }

  /** The most telling state among states[start..end). */
  telling(states, start, end) {
    const rankOf = this.rankOf;
    let best = states[start];
    for (let i = start + 1; i < end; i++) {
      if (rankOf[states[i]] > rankOf[best]) best = states[i];
    }
    return best;
  }

  /** Down-sampling four chunks at a time: most cells are uniform (all dirty, all clean),
   *  which one 32-bit compare per four chunks detects. */
  drawByWords(states, n) {
    const { pixels, colorOf, chunksPerCell } = this;
    const words = new Uint32Array(states.buffer, states.byteOffset, n >>> 2);
    const wordsPerCell = chunksPerCell >>> 2;
    const fullCells = Math.floor(n / chunksPerCell);
    for (let cell = 0, w = 0; cell < fullCells; cell++, w += wordsPerCell) {
      const first = words[w];
      const byte = first & 255;
      let uniform = first === Math.imul(byte, 0x01010101) >>> 0;
      for (let k = 1; uniform && k < wordsPerCell; k++) uniform = words[w + k] === first;
      pixels[cell] = colorOf[uniform ? byte : this.telling(states, cell * chunksPerCell, (cell + 1) * chunksPerCell)];
    }
    if (fullCells * chunksPerCell < n) {
      pixels[fullCells] = colorOf[this.telling(states, fullCells * chunksPerCell, n)];
    }
  }

  /** The chunks in each state, in words (the grid's text alternative). */
  summary(states) {
    const counts = new Uint32Array(256);
    const n = Math.min(states.length, this.chunkCount);
    for (let i = 0; i < n; i++) counts[states[i]]++;
    const parts = [];
    this.stateNames.forEach((name, code) => {
      if (counts[code] > 0) parts.push(`${counts[code].toLocaleString("en")} ${name}`);
    });
    return `Chunks now: ${parts.join(", ")}.`;
  }

  /** Fills the legend list with a swatch and words for each state (`labels[name]`, else
   *  the state's own label). */
  static fillLegend(list, stateNames, labels = {}) {
    list.replaceChildren(...stateNames.map((name) => {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "sw";
      sw.style.background = STATE_STYLE[name].color;
      sw.setAttribute("aria-hidden", "true");
      li.dataset.state = name;
      li.append(sw, labels[name] ?? STATE_STYLE[name].label);
      return li;
    }));
  }
}
