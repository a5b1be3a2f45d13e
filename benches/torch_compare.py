#!/usr/bin/env python3
"""rmas vs PyTorch eager (HF transformers) on the CPU: the same checkpoint, prompt ids and greedy decode.

    pip install torch transformers safetensors
    cargo build --release -p rmas-cli
    python3 benches/torch_compare.py                       # tiny Qwen3.5 golden + a small-width Qwen3.5
    python3 benches/torch_compare.py --model DIR --prompt-len 512 --new-tokens 32

For each model it runs `rmas generate --json --backend cpu` and a transformers greedy loop with a KV
cache on the same ids, checks the generated ids agree, and prints prefill/decode times (medians of
--repeat runs: fresh rmas processes, repeated torch calls after a warm-up) and the rmas/PyTorch time
ratios (< 1 means rmas is faster). Both use the machine's cores (torch threads =
os.cpu_count()).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests/fixtures/golden/models/qwen3_5_text/model"
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]


def small_width_model(out: Path) -> Path:
    """A random-weight Qwen3.5 text model at a small but non-trivial width (hidden 512, 8 layers)."""
    cfg = AutoConfig.from_pretrained(TINY)
    cfg.update(dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                    layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 2,
                    num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                    linear_num_key_heads=4, linear_num_value_heads=8, linear_key_head_dim=64, linear_value_head_dim=64))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.save_pretrained(out)
    for f in TOKENIZER_FILES:
        if (TINY / f).exists():
            shutil.copy(TINY / f, out / f)
    return out


def run_rmas(binary: Path, model: Path, ids: list[int], new_tokens: int) -> dict:
    cmd = [str(binary), "generate", "--model", str(model), "--prompt-ids", ",".join(map(str, ids)),
           "--max-new-tokens", str(new_tokens), "--backend", "cpu", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def run_rmas_median(binary: Path, model: Path, ids: list[int], new_tokens: int, repeat: int) -> dict:
    """`repeat` separate runs (each a fresh process): the first run's ids, median times."""
    runs = [run_rmas(binary, model, ids, new_tokens) for _ in range(repeat)]
    return {**runs[0], **{k: statistics.median(r[k] for r in runs) for k in ("prefill_ms", "decode_ms")}}


@torch.no_grad()
def run_torch(model_dir: Path, ids: list[int], new_tokens: int, repeat: int) -> dict:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    x = torch.tensor([ids])
    model(x[:, :8], use_cache=True)  # warm-up
    prefills = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = model(x, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        prefills.append(time.perf_counter() - start)
    prefill = statistics.median(prefills)
    past, gen = out.past_key_values, [int(nxt)]
    start = time.perf_counter()
    for _ in range(new_tokens - 1):
        out = model(nxt, past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        gen.append(int(nxt))
    decode = time.perf_counter() - start
    return {"token_ids": gen, "prefill_ms": prefill * 1e3, "decode_ms": decode * 1e3}


def compare(name: str, binary: Path, model: Path, prompt_len: int, new_tokens: int, repeat: int) -> None:
    vocab = AutoConfig.from_pretrained(model).vocab_size
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(10, min(vocab, 4000), (prompt_len,), generator=gen).tolist()
    ours = run_rmas_median(binary, model, ids, new_tokens, repeat)
    n = len(ours["token_ids"])
    theirs = run_torch(model, ids, n, repeat)
    ours_decode_ms = ours["decode_ms"]
    print(f"\n== {name}: prompt {prompt_len} tokens, {n} generated, median of {repeat} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"   ids identical: {ours['token_ids'] == theirs['token_ids']}")
    print(f"   prefill  rmas {ours['prefill_ms']:9.1f} ms   torch {theirs['prefill_ms']:9.1f} ms   ratio {ours['prefill_ms'] / theirs['prefill_ms']:.2f}")
    if n > 1:
        per_ours, per_theirs = ours_decode_ms / (n - 1), theirs["decode_ms"] / (n - 1)
        print(f"   decode   rmas {per_ours:9.2f} ms/token   torch {per_theirs:9.2f} ms/token   ratio {per_ours / per_theirs:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="checkpoint directory (default: the tiny golden and a small-width Qwen3.5)")
    ap.add_argument("--rmas", type=Path, default=ROOT / "target/release/rmas")
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5, help="runs per side; medians are reported (prefill is noisy)")
    args = ap.parse_args()
    if not args.rmas.exists():
        sys.exit(f"{args.rmas} not found: cargo build --release -p rmas-cli")
    torch.set_num_threads(os.cpu_count() or 1)
    if args.model:
        compare(str(args.model), args.rmas, args.model, args.prompt_len, args.new_tokens, args.repeat)
        return
    compare("tiny Qwen3.5 golden (hidden 64, 4 layers)", args.rmas, TINY, args.prompt_len, args.new_tokens, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        small = small_width_model(Path(tmp))
        compare("small Qwen3.5 (hidden 512, 8 layers, random)", args.rmas, small, args.prompt_len, args.new_tokens, args.repeat)


if __name__ == "__main__":
    main()
