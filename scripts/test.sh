#!/usr/bin/env bash
# Every test: Rust (core, engine, wasm host tests), core built for wasm32, the wasm page in a real
# headless browser, Python (pytest, stubtest) and the notebooks. Does its own set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0 PATH="$HOME/.cargo/bin:$PATH"
# Tests against QEMU's tools (qemu-storage-daemon, qemu-nbd) fail instead of passing without them.
export BLOCKMIRROR_REQUIRE_QEMU=1
log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

scripts/setup.sh all

log "cargo test (core and wasm host tests)"
cargo test --workspace --exclude blockmirror-py --exclude blockmirror-engine

log "cargo test (engine: the file backend, without Python)"
cargo test -p blockmirror-engine

log "engine example: mirror a generated sparse image, then compare"
example_dir=$(mktemp -d)
trap 'rm -rf "$example_dir"' EXIT
# Data, a hole, more data and an odd-sized tail (not a multiple of 4096 bytes).
head -c 3000000 /dev/urandom >"$example_dir/src.img"
truncate -s 8M "$example_dir/src.img"
head -c 100001 /dev/urandom >>"$example_dir/src.img"
cargo run -q --example mirror -p blockmirror-engine "$example_dir/src.img" "$example_dir/dst.img"
cmp "$example_dir/src.img" "$example_dir/dst.img"
if command -v qemu-img >/dev/null; then
    qemu-img compare -q -f raw -F raw "$example_dir/src.img" "$example_dir/dst.img"
fi

log "core builds for wasm32"
cargo build -p blockmirror-core --target wasm32-unknown-unknown

if [ -x scripts/build-wasm.sh ]; then
    log "wasm page build"
    scripts/build-wasm.sh
fi

log "type stubs match the extension (mypy.stubtest)"
.venv/bin/python -m mypy.stubtest blockmirror._native --ignore-missing-stub

log "pytest"
.venv/bin/python -m pytest -q tests
