#!/usr/bin/env python3
"""Writes `tests/fixtures/golden/variants`: config variants of the tiny golden models, run by HF transformers.

    pip install torch transformers safetensors
    python3 tests/hf_variants.py            # rewrites every case; `cargo test` checks rmas against them

Each variant edits one golden model's config the way real checkpoints differ (biases, windows that
slide, head sizes, RoPE scalings, transformers-4 fields without `layer_types`, Gated-DeltaNet shapes),
fills every tensor with seeded random values and saves it in bf16. transformers then loads the files
in float32 and records, for a seeded random prompt, the last prompt position's logits and a greedy
continuation (ids and the chosen tokens' log-probabilities), plus its own float32-vs-float64 noise.
"""
import argparse
import json
import shutil
import sys
import zlib
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests/fixtures/golden/models"


def text(cfg: dict) -> dict:
    return cfg.get("text_config", cfg)


def text_only(cfg: dict, **fields) -> None:
    """Makes a multimodal config its text model's (Gemma3ForCausalLM), with `fields` set."""
    t = text(cfg)
    cfg.clear()
    cfg.update(t, architectures=["Gemma3ForCausalLM"], **fields)


def sliding(layers: int, window_from: int) -> list[str]:
    return ["sliding_attention" if i >= window_from else "full_attention" for i in range(layers)]


# name -> (base model, prompt length, edit of the config dict)
VARIANTS = {
    "llama-biases-gqa1": ("llama", 40, lambda c: c.update(
        attention_bias=True, mlp_bias=True, tie_word_embeddings=False, num_key_value_heads=1, head_dim=24,
        num_hidden_layers=3)),
    "llama-linear-rope": ("llama", 40, lambda c: c.update(
        rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 1000.0})),
    "llama-legacy-rope": ("llama", 40, lambda c: (c.pop("rope_parameters"), c.update(
        rope_theta=20000.0, rope_scaling={"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}))),
    # Both layouts: a non-empty `rope_scaling` replaces `rope_parameters` (θ then from the top level).
    "llama-both-rope-fields": ("llama", 40, lambda c: c.update(
        rope_theta=30000.0, rope_scaling={"rope_type": "linear", "factor": 3.0})),
    # YaRN: explicit original context; transformers-4 layout with a top-level original context, mscales and no truncation.
    "qwen3-yarn": ("qwen3", 40, lambda c: c.update(rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": 64})),
    "llama-legacy-yarn": ("llama", 40, lambda c: (c.pop("rope_parameters"), c.update(
        rope_theta=50000.0, original_max_position_embeddings=256, rope_scaling={
            "type": "yarn", "factor": 8.0, "beta_fast": 16.0, "beta_slow": 2.0, "mscale": 0.9, "mscale_all_dim": 0.5,
            "truncate": False}))),
    "qwen2-sliding": ("qwen2", 40, lambda c: c.update(
        use_sliding_window=True, sliding_window=7, max_window_layers=1, num_hidden_layers=3,
        layer_types=sliding(3, 1), tie_word_embeddings=True)),
    "qwen3-bias-sliding": ("qwen3", 40, lambda c: c.update(
        attention_bias=True, use_sliding_window=True, sliding_window=9, max_window_layers=1, num_hidden_layers=3,
        layer_types=sliding(3, 1), tie_word_embeddings=False)),
    "mistral-window": ("mistral", 40, lambda c: c.update(
        sliding_window=6, num_attention_heads=8, num_key_value_heads=2, head_dim=8)),
    "mistral-no-window": ("mistral", 30, lambda c: c.update(sliding_window=None, tie_word_embeddings=True)),
    "gemma3-pattern": ("gemma3", 40, lambda c: text(c).update(
        num_hidden_layers=4, layer_types=["sliding_attention", "full_attention"] * 2, sliding_window=5,
        query_pre_attn_scalar=24, head_dim=16,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1000.0},
                         "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0}})),
    # Per-type YaRN: the context comes from max_position_embeddings and `truncate` is read from the outer object.
    "gemma3-yarn": ("gemma3", 40, lambda c: text(c)["rope_parameters"].update(full_attention={
        "rope_type": "yarn", "factor": 4.0, "rope_theta": 100000.0, "truncate": False, "beta_fast": 8.0})),
    # transformers 5 caps the logits of Gemma3ForCausalLM only, and Gemma 3 attention never reads its cap.
    "gemma3_text-softcaps": ("gemma3", 40, lambda c: text_only(c, final_logit_softcapping=2.0, attn_logit_softcapping=1.0)),
    "gemma3-softcaps": ("gemma3", 40, lambda c: text(c).update(final_logit_softcapping=2.0, attn_logit_softcapping=1.0)),
    "gemma3-bias-wide-heads": ("gemma3", 24, lambda c: text(c).update(attention_bias=True, head_dim=32, num_key_value_heads=1)),
    "qwen3_5-shapes": ("qwen3_5_text", 150, lambda c: text(c).update(
        layer_types=["full_attention", "linear_attention", "linear_attention", "full_attention"],
        linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=8, linear_value_head_dim=24,
        linear_conv_kernel_dim=3, tie_word_embeddings=False,
        rope_parameters={**text(c)["rope_parameters"], "partial_rotary_factor": 0.5})),
    "qwen3_5-yarn-partial": ("qwen3_5_text", 70, lambda c: text(c)["rope_parameters"].update(
        rope_type="yarn", factor=2.0, original_max_position_embeddings=48, attention_factor=1.3)),
    "qwen3_5-vl-gqa": ("qwen3_5", 80, lambda c: text(c).update(
        num_attention_heads=8, num_key_value_heads=1, head_dim=16, linear_num_key_heads=1, linear_num_value_heads=3)),
    # transformers builds Qwen3.5's output gate whatever `attn_output_gate` says.
    "qwen3_5-bias-nogate": ("qwen3_5_text", 70, lambda c: text(c).update(attention_bias=True, attn_output_gate=False)),
    # transformers-4 style configs without `layer_types`: the layer pattern comes from the other fields.
    "qwen2-legacy-sliding": ("qwen2", 40, lambda c: (c.pop("layer_types"), c.update(
        use_sliding_window=True, sliding_window=6, max_window_layers=1, num_hidden_layers=3))),
    "qwen3-legacy-window-off": ("qwen3", 40, lambda c: (c.pop("layer_types"), c.update(
        use_sliding_window=False, sliding_window=5))),
    "gemma3-legacy-pattern": ("gemma3", 40, lambda c: (text(c).pop("layer_types"), text(c).pop("rope_parameters"),
        text(c).pop("_sliding_window_pattern"), text(c).update(
            num_hidden_layers=5, sliding_window_pattern=3, sliding_window=4, rope_local_base_freq=500.0,
            rope_scaling={"rope_type": "linear", "factor": 4.0}))),
    "qwen3_5-legacy-interval": ("qwen3_5_text", 90, lambda c: (text(c).pop("layer_types"), text(c).update(
        num_hidden_layers=6, full_attention_interval=3))),
    # Fields left out: transformers' config-class defaults apply (head_dim 128/256, 8 kv heads, Gemma 3's
    # query scale 256 and tanh GELU, Qwen3.5's partial rotary 0.25, top-level RoPE θ).
    "qwen3-absent-fields": ("qwen3", 40, lambda c: (c.pop("head_dim"), c.pop("rope_parameters"),
        c.pop("max_position_embeddings"), c.update(rope_theta=20000.0))),
    "mistral-absent-fields": ("mistral", 40, lambda c: (c.pop("num_key_value_heads"), c.pop("sliding_window"),
        c.update(num_attention_heads=16, head_dim=8))),
    "gemma3-absent-fields": ("gemma3", 40, lambda c: [text(c).pop(k) for k in (
        "query_pre_attn_scalar", "hidden_activation", "rope_parameters", "sliding_window")] and text(c).update(
        rope_theta=200000.0, rope_local_base_freq=500.0)),
    "qwen3_5-absent-fields": ("qwen3_5_text", 70, lambda c: (text(c).pop("head_dim"),
        text(c)["rope_parameters"].pop("partial_rotary_factor"))),
}


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> None:
    """Seeded values that keep activations and logits O(1); rounded to bf16 so the bf16 file holds them exactly."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() == 1:
            scale = 0.5 if name.endswith("bias") and "dt_bias" not in name else 0.1
            p.add_(torch.randn(p.shape, generator=g) * scale)
        else:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
        p.copy_(p.to(torch.bfloat16).float())


def build(name: str, out: Path) -> tuple[torch.nn.Module, int]:
    base, prompt_len, edit = VARIANTS[name]
    src = MODELS / base / "model"
    cfg = json.loads((src / "config.json").read_text())
    edit(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    config = AutoConfig.from_pretrained(out)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager").eval()
    randomize(model, seed=zlib.crc32(name.encode()))
    model.to(torch.bfloat16).save_pretrained(out)
    # The config as written (save_pretrained writes transformers' normalised fields instead).
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    # Reloaded in f32 from the files rmas reads (the bf16 cast above also rounded RoPE buffers).
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    return model, prompt_len


@torch.no_grad()
def hf_greedy(model, ids: list[int], n: int) -> tuple[torch.Tensor, list[int], list[float], list[float]]:
    """The last prompt position's logits, then `n` greedy ids, their log-probabilities and top-2 gaps."""
    x, past = torch.tensor([ids]), None
    first, gen, lps, gaps = None, [], [], []
    for _ in range(n):
        out = model(input_ids=x, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1].float()
        if first is None:
            first = logits
        top = logits.log_softmax(-1).topk(2)
        nxt = int(top.indices[0])
        gen.append(nxt)
        lps.append(float(top.values[0]))
        gaps.append(float(top.values[0] - top.values[1]))
        x = torch.tensor([[nxt]])
    return first, gen, lps, gaps


def write_case(name: str, out: Path, new_tokens: int) -> str:
    model, prompt_len = build(name, out / "model")
    vocab = text(json.loads((out / "model/config.json").read_text()))["vocab_size"]
    ids = torch.randint(0, vocab, (prompt_len,), generator=torch.Generator().manual_seed(7)).tolist()
    logits, gen, logprobs, gaps = hf_greedy(model, ids, new_tokens)
    with torch.no_grad():
        model64 = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float64, attn_implementation="eager")
        logits64 = model64(input_ids=torch.tensor([ids])).logits[0, -1]
    noise = float((logits.double() - logits64).abs().max())
    save_file({"prompt_ids": torch.tensor(ids, dtype=torch.int64), "new_ids": torch.tensor(gen, dtype=torch.int64),
               "logprobs": torch.tensor(logprobs, dtype=torch.float32), "last_logits": logits.contiguous()},
              out / "golden.safetensors")
    (out / "golden.json").write_text(json.dumps({
        "variant": name, "base": VARIANTS[name][0], "transformers": transformers.__version__,
        "torch": torch.__version__, "model_class_loaded": type(model).__name__,
        "max_abs_logits_float32_vs_float64": noise, "min_greedy_top2_gap": min(gaps),
    }, indent=1) + "\n")
    return f"{name:24} {type(model).__name__:32} f32/f64 noise {noise:.1e}  min top-2 gap {min(gaps):.3f}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only")
    ap.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/golden/variants")
    ap.add_argument("--new-tokens", type=int, default=8)
    args = ap.parse_args()
    for name in VARIANTS:
        if args.only and args.only != name:
            continue
        shutil.rmtree(args.out / name, ignore_errors=True)
        print(write_case(name, args.out / name, args.new_tokens), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
