#!/usr/bin/env bash
# Browser conformance test: the built-in demo system runs in headless Chromium on WebGPU and must
# produce exactly the token ids of the native CPU run (`rmas run --demo --backend cpu`) with the
# same settings. Leaves a screenshot at target/web-demo.png.
set -euo pipefail
cd "$(dirname "$0")/.."
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
command -v node >/dev/null || { echo "web/test.sh: Node.js (>= 18) is required" >&2; exit 1; }
[ -x "$CHROMIUM" ] || { echo "web/test.sh: Chromium not found at $CHROMIUM (apt-get install chromium, or set CHROMIUM)" >&2; exit 1; }
export CHROMIUM

web/build.sh
# The native reference run, with the binary of the test build (same features: nothing is rebuilt).
cargo test --release --workspace --no-run
target/release/rmas run --demo --backend cpu --json --chat-date "01 Jan 2026" > target/web-expected.json
(cd web && npm install --no-audit --no-fund --loglevel=error)

PORT=${PORT:-8765}
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory web >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
for _ in $(seq 50); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/')" 2>/dev/null && break; sleep 0.2; done
node web/drive.js "http://127.0.0.1:$PORT/index.html?test&date=2026-01-01" target/web-expected.json target/web-demo.png
