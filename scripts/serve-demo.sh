#!/usr/bin/env bash
# Builds the browser demo and serves it on http://127.0.0.1:PORT/ (default 8000).
# Usage: scripts/serve-demo.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-8000}"
export PATH="$HOME/.cargo/bin:$PATH"
want=$(sed -n 's/^wasm-bindgen = "=\(.*\)"$/\1/p' wasm/Cargo.toml)
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
    echo "installing wasm-bindgen-cli $want (a few minutes, once per machine)" >&2
    cargo install -q wasm-bindgen-cli --version "$want" --no-default-features
fi
scripts/build-wasm.sh
echo "blockmirror demo: open http://127.0.0.1:$port/ (Ctrl-C stops the server)" >&2
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory wasm/www
