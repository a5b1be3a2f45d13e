#!/usr/bin/env bash
# The GPU check (docs/performance.md, "On a GPU"): the conformance suite on CUDA (strict f32) and
# Vulkan, `rmas bench` at Qwen3.5-2B width in bf16 and f32 with the per-token proxies, and with
# int8/int4 weights (the block kernels of kernels/src/quant/cube.rs), one summary.
#
#   scripts/gpu-check.sh build   # here, no GPU needed (~30 min on 2 cores): CUDA builds of `rmas` and
#                                # the suite's test binaries, stripped and packed into
#                                # target/gpu-check/bundle.tar.xz (carry that one path to the GPU machine)
#   scripts/gpu-check.sh run     # on the GPU machine (no network, no Rust needed): under ~8 minutes
#
# `run` needs the NVIDIA driver and NVRTC (cubecl compiles kernels at run time); it prints what it
# could not run instead of failing early, so one run gives every number it can.
set -uo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-check
mode="${1:-run}"

if [ "$mode" = build ]; then
    set -e
    export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-12080}"
    rm -rf "$out/bin" && mkdir -p "$out/bin"
    cargo build --release -p rmas-cli --features cuda,fusion
    cp target/release/rmas "$out/bin/"
    # The conformance suite's test binaries (`run` picks their kernel and model files).
    cargo test --release --features cuda --no-run --message-format=json --test suite --test strict \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])' \
        | while read -r name exe; do cp "$exe" "$out/bin/$name"; done
    strip "$out"/bin/*
    tar -C "$out" -cJf "$out/bundle.tar.xz" bin
    ls -la "$out/bundle.tar.xz"
    exit 0
fi

[ "$mode" = run ] || { echo "usage: $0 build|run" >&2; exit 2; }
[ -d "$out/bin" ] || tar -C "$out" -xJf "$out/bundle.tar.xz"
summary=$out/summary.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

note "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$summary"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
case "$gpu" in
    *H200*) bandwidth=4800 ;;
    *H100*) bandwidth=3350 ;;
    *A100*) bandwidth=2039 ;;
    *) bandwidth= ;;
esac

note "== conformance suite (cuda:: modules run strict f32; wgpu:: is Vulkan on this GPU where a driver exists)"
for t in activations delta_rule models latent_fusion strict_f32 quant gguf_archs sampling; do
    for backend in cuda wgpu; do
        log=$out/$t-$backend.log
        bin=suite && [ "$t" = strict_f32 ] && bin=strict # the files that set strict f32 for the process
        timeout 120 "$out/bin/$bin" "$t::$backend" --test-threads 1 >"$log" 2>&1
        note "$t [$backend]: rc=$? $(grep -E '^test result' "$log" | tail -1)"
    done
done

note "== rmas bench (Qwen3.5-2B width, random weights; bandwidth ${bandwidth:-unknown} GB/s)"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
bw=${bandwidth:+--bandwidth-gbs $bandwidth}
for dtype in bf16 f32; do
    # shellcheck disable=SC2086
    timeout 150 "$out/bin/rmas" bench --size 2b --backend cuda --dtype "$dtype" --json $bw \
        >"$out/bench-$dtype.json" 2>"$out/bench-$dtype.log"
    note "bench 2b $dtype (counted): rc=$? $(cat "$out/bench-$dtype.json")"
done
# shellcheck disable=SC2086
timeout 120 "$out/bin/rmas" bench --size 2b --backend cuda --dtype bf16 --no-counters --json $bw \
    >"$out/bench-bf16-clean.json" 2>&1
note "bench 2b bf16 (no counters): $(cat "$out/bench-bf16-clean.json")"
# Where a step's time goes (#28): every kernel's launches and device time per token (each launch
# timed, so this run's own step times are longer; compare "µs in all" with the ms/token above).
timeout 150 "$out/bin/rmas" bench --size 2b --backend cuda --dtype bf16 --kernel-times --prompt-len 64 \
    --decode-steps 8 >"$out/bench-bf16-kernels.txt" 2>&1
note "bench 2b bf16 --kernel-times: rc=$? $(grep -A13 'kernels per token' "$out/bench-bf16-kernels.txt")"
timeout 60 "$out/bin/rmas" bench --size tiny --backend cuda --dtype f32 --json >"$out/bench-tiny.json" 2>&1
note "bench tiny f32 (the CI proxies on CUDA): $(cat "$out/bench-tiny.json")"
# Batched decode (#31, docs/batching.md): 32 sequences packed per step against one.
timeout 150 "$out/bin/rmas" bench --size 2b --backend cuda --dtype bf16 --no-counters --batch 32 \
    --prompt-len 64 --decode-steps 16 --json >"$out/bench-bf16-b32.json" 2>&1
note "bench 2b bf16 batch 32 (tokens/s of all sequences; compare the batch-1 line above): $(cat "$out/bench-bf16-b32.json")"
timeout 150 "$out/bin/rmas" bench --size 2b --backend cuda --dtype bf16 --kernel-times --batch 32 --prompt-len 64 \
    --decode-steps 4 >"$out/bench-bf16-b32-kernels.txt" 2>&1
note "bench 2b bf16 batch 32 --kernel-times (per token of one sequence): rc=$? $(grep -A13 'kernels per token' "$out/bench-bf16-b32-kernels.txt")"
# Sampled decode (the reference's settings: top-k 50 candidates chosen on the device, docs/batching.md
# "Sampled steps"): compare decode_tokens_per_s with the greedy lines above.
for b in 1 32; do
    timeout 150 "$out/bin/rmas" bench --size 2b --backend cuda --dtype bf16 --no-counters --batch "$b" \
        --prompt-len 64 --decode-steps 16 --temperature 0.6 --top-p 0.95 --json >"$out/bench-bf16-sampled-b$b.json" 2>&1
    note "bench 2b bf16 sampled batch $b: $(cat "$out/bench-bf16-sampled-b$b.json")"
done
# Quantized weights (#33, docs/quantization.md "On the GPU"): fewer bytes per token than bf16's.
for q in int8 int4; do
    # shellcheck disable=SC2086
    timeout 150 "$out/bin/rmas" bench --size 2b --backend cuda --dtype bf16 --no-counters --quantize "$q" --json $bw \
        >"$out/bench-bf16-$q.json" 2>&1
    note "bench 2b bf16 --quantize $q (compare decode_tokens_per_s with bf16 above): $(cat "$out/bench-bf16-$q.json")"
done
# A packed int4 step of 16 takes the rows kernel for every sequence (batch-invariant; docs/quantization.md "Batches").
timeout 150 "$out/bin/rmas" bench --size 2b --backend cuda --dtype bf16 --no-counters --quantize int4 --batch 16 \
    --prompt-len 64 --decode-steps 16 --json >"$out/bench-bf16-int4-b16.json" 2>&1
note "bench 2b bf16 --quantize int4 --batch 16: $(cat "$out/bench-bf16-int4-b16.json")"

echo
echo "summary: $summary"
