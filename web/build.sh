#!/usr/bin/env bash
# Builds the browser package into web/pkg: rmas-web for wasm32, then wasm-bindgen (the CLI comes from
# crates.io at exactly the lockfile's wasm-bindgen version; wasm-pack is not used).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
cargo build -p rmas-web --target wasm32-unknown-unknown --release
WBG=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
if ! { command -v wasm-bindgen >/dev/null && wasm-bindgen --version | grep -q " $WBG\$"; }; then
  cargo install wasm-bindgen-cli --version "=$WBG"   # no --locked: its lockfile pins crates the registry may lack
fi
wasm-bindgen --target web --out-dir web/pkg target/wasm32-unknown-unknown/release/rmas_web.wasm
echo "built web/pkg ($(du -h web/pkg/rmas_web_bg.wasm | cut -f1) wasm); serve with: python3 -m http.server 8000 --bind 127.0.0.1 --directory web"
