#!/usr/bin/env bash
# Builds the browser demo: the blockmirror-wasm crate for wasm32, then wasm-bindgen's ES
# module into wasm/www/pkg/ (git-ignored). Needs the wasm32 target and wasm-bindgen-cli of
# exactly the crate's version (scripts/setup.sh all installs both).
# Then `npx wasm-opt -Oz` from the npm package binaryen@132 shrinks it when npx is there
# (BLOCKMIRROR_WASM_OPT=0 skips it). Never Debian's binaryen: its wasm-opt v108 corrupts
# wasm-bindgen modules.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PROFILE=wasm-release
OUT=wasm/www/pkg
WASM=${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$PROFILE/blockmirror_wasm.wasm

want=$(sed -n 's/^wasm-bindgen = "=\(.*\)"$/\1/p' wasm/Cargo.toml)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
    echo "build-wasm: need wasm-bindgen-cli $want (found '${have:-none}'); run scripts/setup.sh all" >&2
    exit 1
fi

cargo build -q -p blockmirror-wasm --target wasm32-unknown-unknown --profile "$PROFILE"
rm -rf "$OUT"
wasm-bindgen --target web --no-typescript --out-dir "$OUT" "$WASM"

if [ "${BLOCKMIRROR_WASM_OPT:-1}" = 1 ] && command -v npx >/dev/null 2>&1; then
    # Shrinks the module by about a third. npx fetches binaryen@132 from npm once; without
    # it the build still works, just larger.
    if npx --yes -p binaryen@132 wasm-opt -Oz \
        --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
        --enable-mutable-globals --enable-reference-types --enable-multivalue \
        -o "$OUT/opt.wasm" "$OUT/blockmirror_wasm_bg.wasm"; then
        mv "$OUT/opt.wasm" "$OUT/blockmirror_wasm_bg.wasm"
    else
        rm -f "$OUT/opt.wasm"
        echo "build-wasm: wasm-opt (npm binaryen@132) unavailable; keeping the unoptimised module" >&2
    fi
fi

size=$(stat -c %s "$OUT/blockmirror_wasm_bg.wasm")
echo "build-wasm: $OUT/blockmirror_wasm_bg.wasm is $size bytes" >&2
