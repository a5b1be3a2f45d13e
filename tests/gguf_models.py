"""Writes tests/fixtures/gguf/<arch>-<type>.gguf: the golden tiny Llama, Qwen2 and Qwen3 models
(tests/fixtures/golden/models/<arch>/model) converted to GGUF as llama.cpp's converter
(`convert_hf_to_gguf.py`) names and lays them out, with llama.cpp's own Python package: F32 tensors,
and Q8_0 for the 2-D weights (quantized by `gguf.quants.quantize`, llama.cpp's reference). For
Llama, as the converter's `LlamaModel`: query/key rows permuted into llama.cpp's rotary layout, and
Llama 3's rope scaling written as the `rope_freqs` tensor of per-frequency factors. rmas must
load them to the safetensors model's logits (`tests/gguf_archs.rs`).

    python3 -m venv /tmp/v && /tmp/v/bin/pip install gguf==0.19.0 numpy
    /tmp/v/bin/python tests/gguf_models.py

The per-architecture files hold no tokenizer (the vocabulary size is `<arch>.vocab_size`): their
test compares logits. The agents of the golden `sequential-light-r2` system are also written, with
their tokenizers and chat templates, to `tests/fixtures/gguf/sequential-light-r2/<role>.gguf`, as the
converter does it: tokens and token types as its `get_vocab_base` (padding rows `[PAD<i>]`, added
tokens CONTROL or USER_DEFINED), merges, special ids, `add_bos_token` and the chat template from
llama.cpp's own `gguf.SpecialVocab`, and `tokenizer.ggml.pre` as the converter names the real models'
pre-tokenizers (Qwen2.5/Qwen3 `qwen2`, Llama 3.2 `llama-bpe`). A system description naming these
files must run the system to the golden ids (`tests/systems.rs`).
"""

import json
import math
from pathlib import Path

import gguf
import numpy as np


def load_file(path: Path) -> dict:
    """A safetensors file's tensors as float32 (F32, F16 or BF16 stored; numpy has no bfloat16)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        data = raw[8 + n + b : 8 + n + e]
        if info["dtype"] == "BF16":
            t = (np.frombuffer(data, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            t = np.frombuffer(data, {"F32": np.float32, "F16": np.float16}[info["dtype"]]).astype(np.float32)
        out[name] = t.reshape(info["shape"])
    return out

ROOT = Path(__file__).parent
OUT = ROOT / "fixtures" / "gguf"

# HF layer tensor → llama.cpp's (`gguf.constants.TENSOR_NAMES` for these architectures).
LAYER = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
       "lm_head.weight": "output.weight"}


def gguf_name(hf: str) -> str:
    if hf in TOP:
        return TOP[hf]
    _, _, layer, rest = hf.split(".", 3)
    part, suffix = rest.rsplit(".", 1)
    return f"blk.{layer}.{LAYER[part]}.{suffix}"


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """`LlamaModel.permute`: each head's rows from HF's two halves to interleaved pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(config: dict, head_dim: int) -> np.ndarray:
    """`LlamaModel.generate_extra_tensors`: Llama 3's rope scaling as a divisor per frequency."""
    rope = config["rope_parameters"]
    base, factor = rope["rope_theta"], rope["factor"]
    low, high, old = rope["low_freq_factor"], rope["high_freq_factor"], rope["original_max_position_embeddings"]
    factors = []
    for freq in 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


# `tokenizer.ggml.pre` of the real checkpoints each tiny model stands for, as the converter's
# `get_vocab_base_pre` names them.
PRE = {"qwen2": "qwen2", "qwen3": "qwen2", "llama": "llama-bpe"}


def does_token_look_special(token: str) -> bool:
    """The converter's `does_token_look_special`."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
            or (token.startswith("<unused") and token.endswith(">")))


def add_tokenizer(w: gguf.GGUFWriter, model: Path, config: dict) -> None:
    """The converter's `_set_vocab_gpt2`, reading `tokenizer.json` where it asks transformers."""
    tok = json.loads((model / "tokenizer.json").read_text())
    vocab = {i: t for t, i in tok["model"]["vocab"].items()}
    added = {a["id"]: a for a in tok["added_tokens"]}
    tokens, types = [], []
    for i in range(config["vocab_size"]):
        if i in added:
            text = added[i]["content"]
            if added[i]["special"] or does_token_look_special(text):
                types.append(gguf.TokenType.CONTROL)
            else:
                text = text.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        elif i in vocab:
            text = vocab[i]
            types.append(gguf.TokenType.NORMAL)
        else:
            text = f"[PAD{i}]"
            types.append(gguf.TokenType.UNUSED)
        tokens.append(text)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE[config["model_type"]])
    w.add_token_list(tokens)
    w.add_token_types(types)
    gguf.SpecialVocab(model, load_merges=True).add_to_gguf(w)


def convert(model: Path, path: Path, qtype: str, tokenizer: bool = False) -> None:
    config = json.loads((model / "config.json").read_text())
    arch = config["model_type"]
    tensors = load_file(model / "model.safetensors")
    w = gguf.GGUFWriter(str(path), arch)
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(config["num_key_value_heads"])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    w.add_vocab_size(config["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "Q8_0" else gguf.LlamaFileType.ALL_F32)
    if tokenizer:
        add_tokenizer(w, model, config)
    if arch == "llama" and config["rope_parameters"].get("rope_type") == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(config, head_dim))
    for name, t in tensors.items():
        t = t.astype(np.float32)
        if arch == "llama" and name.endswith("q_proj.weight"):
            t = permute(t, heads)
        if arch == "llama" and name.endswith("k_proj.weight"):
            t = permute(t, config["num_key_value_heads"])
        if qtype == "Q8_0" and t.ndim == 2 and t.shape[1] % 32 == 0:
            q = gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gguf_name(name), q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gguf_name(name), t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({path.stat().st_size} bytes)")


for arch in ["llama", "qwen2", "qwen3"]:
    for qtype in ["F32", "Q8_0"]:
        convert(ROOT / "fixtures" / "golden" / "models" / arch / "model", OUT / f"{arch}-{qtype.lower()}.gguf", qtype)

SYSTEM = ROOT / "fixtures" / "golden" / "systems" / "sequential-light-r2" / "hub"
for role, repo in [("planner", "Planner-Qwen3-1.7B"), ("critic", "Critic-Llama3.2-1B"),
                   ("solver", "Solver-Qwen2.5-Math-1.5B")]:
    (snapshot,) = (SYSTEM / f"models--RecursiveMAS--Sequential-Light-{repo}" / "snapshots").iterdir()
    (OUT / "sequential-light-r2").mkdir(exist_ok=True)
    convert(snapshot, OUT / "sequential-light-r2" / f"{role}.gguf", "F32", tokenizer=True)
