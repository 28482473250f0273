#!/usr/bin/env bash
# Idempotent set-up for a fresh machine of this kind (Debian 12, rustup, CPython 3.11).
# Usage: scripts/setup.sh python   # the venv with blockmirror installed (for the demo)
#        scripts/setup.sh all      # + wasm toolchain, Chromium, qemu-utils (for the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
WASM_BINDGEN_VERSION=0.2.130
export CARGO_INCREMENTAL=0

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

apt_updated=0
apt_install() {
    # Installs Debian packages whose command is missing.
    local missing=()
    while [ $# -gt 0 ]; do
        command -v "$1" >/dev/null 2>&1 || missing+=("$2")
        shift 2
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        log "please install: ${missing[*]} (needs root)"; return 1
    fi
    [ $apt_updated = 1 ] || { apt-get update -qq; apt_updated=1; }
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

setup_python() {
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv"
        python3 -m venv .venv
    fi
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    local extras="test"
    [ "$what" = all ] && extras="test,notebooks,browser"
    log "installing blockmirror[$extras] into .venv (builds the Rust extension)"
    .venv/bin/python -m pip install -q ".[$extras]"
}

setup_wasm() {
    rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown
    if ! wasm-bindgen --version 2>/dev/null | grep -q "$WASM_BINDGEN_VERSION"; then
        log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes, once per machine)"
        cargo install -q wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --no-default-features
    fi
}

setup_system() {
    apt_install chromium chromium qemu-img qemu-utils fio fio nbdkit nbdkit nbdinfo libnbd-bin
}

case "$what" in
    python) setup_python ;;
    all) setup_system; setup_wasm; setup_python ;;
    *) echo "usage: $0 python|all" >&2; exit 2 ;;
esac
