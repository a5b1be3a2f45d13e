#!/usr/bin/env bash
# Browser conformance tests in headless Chromium on WebGPU; screenshots under target/.
#  1. The built-in demo system must produce exactly the token ids of the native CPU run
#     (`rmas run --demo --backend cpu`) with the same settings.
#  2. A released system downloaded over HTTP from a Hub mirror (the golden sequential-light fixture
#     laid out as `<repo>/resolve/main/<file>`) must produce the reference pipeline's token ids; a
#     second visit must load every file from the browser cache.
#  3. With 4-bit weights (`&weights=int4`: quantized while loading, blocks on the GPU only), the demo
#     and the released system must produce the token ids of the native CPU runs with `--quantize int4`.
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
target/release/rmas run --demo --backend cpu --json --chat-date "01 Jan 2026" --quantize int4 --no-quantize-cache \
  > target/web-expected-int4.json
(cd web && npm install --no-audit --no-fund --loglevel=error)

# The hub mirror and the reference ids and settings of the golden case's first question.
CASE=tests/fixtures/golden/systems/sequential-light-r2
rm -rf target/web-hub
for repo in "$CASE"/hub/models--*; do
  id=$(basename "$repo" | sed 's/^models--//; s/--/\//')
  mkdir -p "target/web-hub/$id/resolve"
  ln -s "$(realpath "$repo/snapshots/$(cat "$repo/refs/main")")" "target/web-hub/$id/resolve/main"
done
HUB_QUERY=$(python3 - "$CASE/expected.json" target/web-expected-hub.json target/web-hub-args <<'PY'
import datetime, json, sys, urllib.parse
e = json.load(open(sys.argv[1]))
s = e["settings"]
calls = [x["returned_ids"] for x in e["events"] if x["event"] == "generate" and x["call_index_in_stage"] == 0]
json.dump({"token_ids": calls[-1]}, open(sys.argv[2], "w"))
# The same run for the native CLI, one argument a line.
args = ["--style", s["style"].replace("_", "-"), "--task", s["task"], "--dataset", s["dataset_arg"],
        "--latent-steps", s["latent_steps"], "--rounds", s["num_recursive_rounds"], "--max-new-tokens", s["max_new_tokens"],
        "--chat-date", s["chat_template_date"], "--question", e["questions"][0],
        "--greedy" if not s["do_sample"] else "--temperature=0.6", "--answer-retry" if s["ans_retry"] else "--no-answer-retry"]
open(sys.argv[3], "w").write("".join(f"{a}\n" for a in args))
date = datetime.datetime.strptime(s["chat_template_date"], "%d %b %Y").strftime("%Y-%m-%d")
print(urllib.parse.urlencode({"style": s["style"].replace("_", "-"), "task": s["task"], "dataset": s["dataset_arg"], "dtype": "f32",
      "latentSteps": s["latent_steps"], "rounds": s["num_recursive_rounds"], "maxNewTokens": s["max_new_tokens"],
      "date": date, "question": e["questions"][0],
      # The reference ran greedy without its answer retry (a released system's defaults sample and retry).
      "temperature": 0 if not s["do_sample"] else 0.6, "answerRetry": int(s["ans_retry"])}))
PY
)

PORT=${PORT:-8765}
python3 -m http.server "$PORT" --bind 127.0.0.1 >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
for _ in $(seq 50); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/web/')" 2>/dev/null && break; sleep 0.2; done
PAGE="http://127.0.0.1:$PORT/web/index.html"
node web/drive.js "$PAGE?test&date=2026-01-01" target/web-expected.json target/web-demo.png
HUB="hub=http://127.0.0.1:$PORT/target/web-hub&$HUB_QUERY"
node web/drive.js "$PAGE?test&$HUB" target/web-expected-hub.json target/web-hub.png "$PAGE?test&loadOnly&$HUB"

mapfile -t HUB_ARGS < target/web-hub-args
HF_HUB_CACHE="$CASE/hub" HF_HUB_OFFLINE=1 target/release/rmas run "${HUB_ARGS[@]}" --backend cpu --json \
  --quantize int4 --no-quantize-cache > target/web-expected-hub-int4.json
node web/drive.js "$PAGE?test&weights=int4&date=2026-01-01" target/web-expected-int4.json target/web-demo-int4.png
node web/drive.js "$PAGE?test&weights=int4&$HUB" target/web-expected-hub-int4.json target/web-hub-int4.png
