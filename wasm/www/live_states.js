// The live page's chunk states: what the server sends (the dirty bitmap and the operations
// in flight, as chunk ranges) turned into one state per chunk for the grid, plus the
// decoding and the CRC-32 the page checks the bitmap with.

/** State names by code (the grid's STATE_STYLE gives each its colour). */
export const LIVE_STATES = ["clean", "dirty", "reading", "writing", "redirtied", "mirroring", "waiting"];
const CODE = Object.fromEntries(LIVE_STATES.map((name, code) => [name, code]));

/** What each state means on the live page (the legend's words). */
export const LIVE_LABELS = {
  clean: "clean: the target has it",
  dirty: "dirty: written since its last copy, to be copied",
  reading: "being copied: reading the source",
  writing: "being copied: writing the target",
  redirtied: "written by the guest while being copied: copied again after",
  mirroring: "guest write being mirrored to the target (write-blocking)",
  waiting: "guest write waiting for the copy of its chunks (write-blocking)",
};

/** Operation kinds (MirrorJob.ops) in the order they are laid over the bitmap: a later one
 *  wins a chunk. A guest write that waits owns nothing, so any owner shows over it. */
const OVERLAY = [
  ["waiting_guest_write", () => CODE.waiting],
  ["guest_landing", () => CODE.mirroring],
  ["guest_writing", () => CODE.mirroring],
  // A copy clears the dirty bits of its run when it reads: a bit set again under a copy
  // in flight is a guest write that landed meanwhile.
  ["reading", (dirty) => (dirty ? CODE.redirtied : CODE.reading)],
  ["writing", (dirty) => (dirty ? CODE.redirtied : CODE.writing)],
];

/** One state code per chunk from the bitmap (bit k % 8 of byte k / 8) and the operations
 *  (`[kind, first_chunk, end_chunk]`). */
export function composeStates(bits, ops, chunks) {
  const states = new Uint8Array(chunks);
  for (let k = 0; k < chunks; k++) states[k] = (bits[k >>> 3] >>> (k & 7)) & 1;
  for (const [kind, stateOf] of OVERLAY) {
    for (const [opKind, first, end] of ops) {
      if (opKind !== kind) continue;
      for (let k = first; k < Math.min(end, chunks); k++) {
        states[k] = stateOf(((bits[k >>> 3] >>> (k & 7)) & 1) === 1);
      }
    }
  }
  return states;
}

export function decodeBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (zlib's, as Python's zlib.crc32) of `bytes`. */
export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 255] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
