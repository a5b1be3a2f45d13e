#!/usr/bin/env python3
"""rmas vs llama.cpp on the CPU: the same GGUF file, prompt ids and greedy decode.

    pip install llama-cpp-python==0.3.16 numpy   # builds llama.cpp from source (a few minutes);
                                                 # 0.3.36 crashed in llama_decode on the CI machine
    cargo build --release -p rmas-cli
    python3 benches/llamacpp_compare.py --model SmolLM2-135M-Instruct.Q4_1.gguf
    python3 benches/llamacpp_compare.py --model M.gguf --prompt-len 256 --new-tokens 64 --repeat 5

Runs are interleaved (rmas, llama.cpp, rmas, …; each rmas run a fresh `rmas generate --json
--backend cpu` process, each llama.cpp run a reset context) and medians reported: prompt tokens/s,
decode tokens/s and the rmas/llama.cpp ratios (> 1 means rmas is faster), and each one's peak
resident memory (rmas: as it reports it; llama.cpp: this Python process, the interpreter included). Both
use every core. rmas keeps the file's Q8_0/Q4_0/Q4_1 blocks and decodes them inside its products
(`--rmas-flag=--dequantize` times its f32 path instead). The greedy ids of the two are compared and
their agreement printed: llama.cpp multiplies the blocks by activations it quantizes to 8 bits, rmas
by f32 activations (within f32 noise of the dequantized model), so their greedy paths part after
some tokens.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path

from llama_cpp import Llama

ROOT = Path(__file__).resolve().parent.parent


def run_rmas(binary: Path, model: Path, ids: list[int], new_tokens: int, flags: list[str]) -> dict:
    cmd = [str(binary), "generate", "--model", str(model), "--prompt-ids", ",".join(map(str, ids)),
           "--max-new-tokens", str(new_tokens), "--greedy", "--backend", "cpu", "--json", *flags]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    decoded = len(out["token_ids"]) - 1
    return {"ids": out["token_ids"], "prompt_tps": len(ids) / (out["prefill_ms"] / 1e3),
            "decode_tps": decoded / (out["decode_ms"] / 1e3) if decoded else float("nan"),
            "peak_mib": (out.get("peak_resident_bytes") or float("nan")) / 2**20}


def run_llamacpp(llm: Llama, ids: list[int], new_tokens: int, stop: int) -> dict:
    llm.reset()
    start = time.perf_counter()
    llm.eval(ids)
    first = int(llm.scores[llm.n_tokens - 1].argmax())
    prefill = time.perf_counter() - start
    out, start = [first], time.perf_counter()
    while len(out) < new_tokens and out[-1] != stop:
        llm.eval([out[-1]])
        out.append(int(llm.scores[llm.n_tokens - 1].argmax()))
    decode = time.perf_counter() - start
    return {"ids": out, "prompt_tps": len(ids) / prefill,
            "decode_tps": (len(out) - 1) / decode if len(out) > 1 else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a GGUF file (llama architecture)")
    ap.add_argument("--prompt-len", type=int, default=128, help="prompt tokens (a fixed English passage, tokenized)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rmas", type=Path, default=ROOT / "target/release/rmas")
    ap.add_argument("--rmas-flag", action="append", default=[], help="an extra `rmas generate` flag (repeatable)")
    args = ap.parse_args()

    llm = Llama(model_path=str(args.model), n_ctx=args.prompt_len + args.new_tokens + 8,
                n_threads=os.cpu_count(), n_batch=512, logits_all=True, verbose=False)
    passage = ("The sea is a vast body of salt water that covers most of the surface of the Earth. "
               "It shapes the weather, feeds millions of people and carries most of the world's trade. ") * 40
    ids = llm.tokenize(passage.encode(), add_bos=False)[: args.prompt_len]
    stop = llm.token_eos()
    rmas_runs, cpp_runs = [], []
    for _ in range(args.repeat):
        rmas_runs.append(run_rmas(args.rmas, args.model, ids, args.new_tokens, args.rmas_flag))
        cpp_runs.append(run_llamacpp(llm, ids, args.new_tokens, stop))
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    a, b = rmas_runs[0]["ids"], cpp_runs[0]["ids"]
    agree = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    print(f"{args.model.name}: {len(ids)} prompt tokens, up to {args.new_tokens} new, {os.cpu_count()} threads, "
          f"medians of {args.repeat} interleaved runs")
    print(f"{'':12}{'prompt tok/s':>14}{'decode tok/s':>14}")
    for name, runs in (("rmas", rmas_runs), ("llama.cpp", cpp_runs)):
        print(f"{name:12}{med(runs, 'prompt_tps'):14.1f}{med(runs, 'decode_tps'):14.1f}")
    print(f"{'rmas/llama':12}{med(rmas_runs, 'prompt_tps') / med(cpp_runs, 'prompt_tps'):14.2f}"
          f"{med(rmas_runs, 'decode_tps') / med(cpp_runs, 'decode_tps'):14.2f}")
    print(f"greedy ids agree for the first {agree} of {min(len(a), len(b))} tokens")
    # rmas reports its own peak (`VmHWM`); this process's peak is llama.cpp's plus the interpreter's.
    print(f"peak resident memory: rmas {max(r['peak_mib'] for r in rmas_runs):.0f} MiB, "
          f"llama.cpp {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (with Python)")


if __name__ == "__main__":
    main()
