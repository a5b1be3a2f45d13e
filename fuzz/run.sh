#!/usr/bin/env bash
# Fuzzes each parser of untrusted files for a bounded time (default 60 s each; SECURITY.md,
# "Fuzzing"): replays the kept crash inputs (regressions/<target>/) first, then fuzzes from a seed
# corpus made of the test fixtures. Needs the nightly of rust-toolchain.toml and cargo-fuzz
# (`rustup toolchain install nightly-2026-05-20 --profile minimal && cargo install cargo-fuzz --locked`).
# A crash fails the script; its input is in artifacts/<target>/ — keep it in regressions/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
targets=(pt safetensors config chat_template gguf)
fixtures=../tests/fixtures

# Seeds, named by content so a rerun adds nothing twice.
seed() {
  local target=$1 file=$2
  mkdir -p "corpus/$target"
  cp "$file" "corpus/$target/seed-$(sha1sum <"$file" | cut -c1-16)"
}
while IFS= read -r f; do seed pt "$f"; done < <(find -L "$fixtures" -name '*.pt' -size -2M)
while IFS= read -r f; do seed safetensors "$f"; done < <(find -L "$fixtures" \( -name '*.safetensors' -o -name '*.index.json' \) -size -2M)
while IFS= read -r f; do seed config "$f"; done < <(find -L "$fixtures" -name config.json)
# gguf: an empty version-3 header (no tensors, no metadata) to grow from.
mkdir -p corpus/gguf
printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' >corpus/gguf/seed-empty
# chat_template inputs: tokenizer_config.json, a NUL, then chat_template.jinja.
while IFS= read -r config; do
  dir=$(dirname "$config") input=$(mktemp)
  { cat "$config"; if [ -f "$dir/chat_template.jinja" ]; then printf '\0'; cat "$dir/chat_template.jinja"; fi; } >"$input"
  seed chat_template "$input"
  rm -f "$input"
done < <(find -L "$fixtures" -name tokenizer_config.json)

cargo fuzz build --release 2>&1 | tail -n 3
mkdir -p artifacts
for target in "${targets[@]}"; do
  if compgen -G "regressions/$target/*" >/dev/null; then
    echo "== $target: replaying $(ls "regressions/$target" | wc -l) kept input(s)"
    cargo fuzz run --release "$target" regressions/"$target"/* -- -rss_limit_mb=4096 -timeout=30
  fi
  echo "== $target: fuzzing for ${seconds}s from $(ls "corpus/$target" | wc -l) input(s)"
  log="artifacts/$target.log"
  if ! cargo fuzz run --release "$target" "corpus/$target" -- -max_total_time="$seconds" \
    -rss_limit_mb=4096 -timeout=30 -max_len=1048576 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "== $target: CRASH (input in fuzz/artifacts/$target/; keep it in fuzz/regressions/$target/)"
    exit 1
  fi
  grep -E '^#[0-9]+ +DONE|^stat::(number_of_executed_units|peak_rss_mb)' "$log" || tail -n 5 "$log"
done
