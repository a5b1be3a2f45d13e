"""Prints the README's table of the memory each released RecursiveMAS style needs for its weights at
each precision rmas runs: the agents' tensors, counted one by one from their configs (the shapes of
the checkpoints' tensors), plus the RecursiveLinks, which always stay f32.

    python3 scripts/memory_table.py

Per precision, as rmas stores each tensor (docs/quantization.md):
* f32 / bf16: 4 / 2 bytes per weight (the compute dtype; `--dtype`).
* int8 (`--quantize int8`): layer weights whose input width is a multiple of 32 as Q8_0 blocks
  (34 bytes per 32 weights); embedding and LM head Q8_0; norms, biases, convolutions and the
  Gated DeltaNet's `A_log`/`dt_bias` f32.
* int4 (`--quantize int4`): the same with Q4_1 layer blocks (20 bytes per 32 weights); embedding
  and LM head stay Q8_0.
A tied LM head is the embedding (stored once). Vision towers and multi-token-prediction heads are
not loaded. KV caches and recurrent states are not included (they grow with the prompt and the
batch; `rmas run` sizes its batch to free memory, docs/batching.md).

The configs are the public ones (../shared/docs: recursivemas.md §2.1 and qwen35.md §1.1, which marks
the Qwen3.5-4B/9B columns as coming from secondary sources); the parameter counts they give are
checked below against the published totals (Qwen3.5-2B 1.881 B, 4B ≈ 4.2 B).
"""

Q8_0 = 34 / 32
Q4_1 = 20 / 32
GIB = 1024**3


def dense(h, layers, heads, kv, inter, vocab, tied, head_dim=None, qkv_bias=False, qk_norm=False, norms=2):
    """Llama / Mistral / Qwen2 / Qwen3 / Gemma 3 text models: [(rows, cols, kind)] of every tensor."""
    hd = head_dim or h // heads
    layer = [(heads * hd, h, "linear"), (kv * hd, h, "linear"), (kv * hd, h, "linear"), (h, heads * hd, "linear"),
             (inter, h, "linear"), (inter, h, "linear"), (h, inter, "linear")] + [(1, h, "f32")] * norms
    if qkv_bias:
        layer += [(1, heads * hd, "f32"), (1, kv * hd, "f32"), (1, kv * hd, "f32")]
    if qk_norm:
        layer += [(1, hd, "f32"), (1, hd, "f32")]
    top = [(vocab, h, "vocab"), (1, h, "f32")] + ([] if tied else [(vocab, h, "vocab")])
    return top + layer * layers


def qwen35(h, layers, inter, heads, kv, nk, nv, tied, vocab=248320, hd=256, dk=128, dv=128, conv=4):
    """Qwen3.5 text models: every fourth layer gated attention, the rest Gated DeltaNet."""
    key, value = nk * dk, nv * dv
    mlp = [(inter, h, "linear"), (inter, h, "linear"), (h, inter, "linear"), (1, h, "f32"), (1, h, "f32")]
    attention = [(2 * heads * hd, h, "linear"), (kv * hd, h, "linear"), (kv * hd, h, "linear"),
                 (h, heads * hd, "linear"), (1, hd, "f32"), (1, hd, "f32")]
    delta = [(2 * key + value, h, "linear"), (value, h, "linear"), (nv, h, "linear"), (nv, h, "linear"),
             (2 * key + value, conv, "f32"), (1, nv, "f32"), (1, nv, "f32"), (1, dv, "f32"), (h, value, "linear")]
    tensors = [(vocab, h, "vocab"), (1, h, "f32")] + ([] if tied else [(vocab, h, "vocab")])
    for i in range(layers):
        tensors += mlp + (attention if (i + 1) % 4 == 0 else delta)
    return tensors


MODELS = {
    "Qwen3-1.7B": dense(2048, 28, 16, 8, 6144, 151936, True, head_dim=128, qk_norm=True),
    "Llama-3.2-1B": dense(2048, 16, 32, 8, 8192, 128256, True),
    "Qwen2.5-Math-1.5B": dense(1536, 28, 12, 2, 8960, 151936, True, qkv_bias=True),
    "gemma-3-4b": dense(2560, 34, 8, 4, 10240, 262208, True, head_dim=256, qk_norm=True, norms=4),
    "Llama-3.2-3B": dense(3072, 28, 24, 8, 8192, 128256, True),
    "Qwen3.5-4B": qwen35(2560, 32, 9216, 16, 4, 16, 32, True),
    "DeepSeek-R1-Distill-Qwen-1.5B": dense(1536, 28, 12, 2, 8960, 151936, False, qkv_bias=True),
    "Qwen2.5-Coder-3B": dense(2048, 36, 16, 2, 11008, 151936, True, qkv_bias=True),
    "BioMistral-7B": dense(4096, 32, 32, 8, 14336, 32000, False),
    "Qwen3.5-2B": qwen35(2048, 24, 6144, 8, 2, 16, 16, True),
    "Qwen3.5-9B": qwen35(4096, 32, 12288, 16, 4, 16, 32, False),
}
HIDDEN = {"Qwen3-1.7B": 2048, "Llama-3.2-1B": 2048, "Qwen2.5-Math-1.5B": 1536, "gemma-3-4b": 2560,
          "Llama-3.2-3B": 3072, "Qwen3.5-4B": 2560, "DeepSeek-R1-Distill-Qwen-1.5B": 1536,
          "Qwen2.5-Coder-3B": 2048, "BioMistral-7B": 4096, "Qwen3.5-2B": 2048, "Qwen3.5-9B": 4096}

# Style → agents (in role order) and outer links (source, target) as indices into the agents.
STYLES = {
    "sequential-light": (["Qwen3-1.7B", "Llama-3.2-1B", "Qwen2.5-Math-1.5B"], [(0, 1), (1, 2), (2, 0)]),
    "sequential-scaled": (["gemma-3-4b", "Llama-3.2-3B", "Qwen3.5-4B"], [(0, 1), (1, 2), (2, 0)]),
    "mixture": (["DeepSeek-R1-Distill-Qwen-1.5B", "Qwen2.5-Coder-3B", "BioMistral-7B", "Qwen3.5-2B"],
                [(0, 3), (1, 3), (2, 3), (3, 0), (3, 1), (3, 2)]),
    "distillation": (["Qwen3.5-9B", "Qwen3.5-4B"], [(0, 1), (1, 0)]),
    "deliberation": (["Qwen3.5-4B", "Qwen3.5-4B"], [(0, 1), (1, 0)]),
}


def params(tensors):
    return sum(r * c for r, c, _ in tensors)


def weight_bytes(tensors, precision):
    total = 0.0
    for rows, cols, kind in tensors:
        n = rows * cols
        if precision in ("f32", "bf16") or kind == "f32":
            total += n * (2 if precision == "bf16" and kind != "f32" else 4)
        elif kind == "vocab" or precision == "int8":
            total += n * Q8_0 if cols % 32 == 0 else n * 4
        else:
            total += n * Q4_1 if cols % 32 == 0 else n * 4
    return total


def link_params(styles_agents, edges):
    """Inner links 2H²+6H per agent; outer links proj1 [2·Dout, Din], proj2 [Dout, 2·Dout],
    residual_proj [Dout, Din] with their biases and two layer norms (recursivemas.md §2.5)."""
    inner = sum(2 * h * h + 6 * h for h in (HIDDEN[m] for m in styles_agents))
    outer = 0
    for s, t in edges:
        din, dout = HIDDEN[styles_agents[s]], HIDDEN[styles_agents[t]]
        outer += 2 * dout * din + 2 * dout + dout * 2 * dout + dout + dout * din + dout + 2 * din + 2 * dout
    return inner + outer


assert abs(params(MODELS["Qwen3.5-2B"]) / 1e9 - 1.881) < 0.002, params(MODELS["Qwen3.5-2B"])
assert abs(params(MODELS["Qwen3.5-4B"]) / 1e9 - 4.2) < 0.05, params(MODELS["Qwen3.5-4B"])

print("| style | agents' parameters | links (f32) | f32 | bf16 | int8 | int4 |")
print("|---|---|---|---|---|---|---|")
for style, (agents, edges) in STYLES.items():
    links = link_params(agents, edges)
    n = sum(params(MODELS[m]) for m in agents)
    sizes = [(sum(weight_bytes(MODELS[m], p) for m in agents) + 4 * links) / GIB for p in ("f32", "bf16", "int8", "int4")]
    cells = " | ".join(f"{s:.1f} GiB" for s in sizes)
    print(f"| `{style}` | {n / 1e9:.2f} B | {links / 1e6:.0f} M | {cells} |")
