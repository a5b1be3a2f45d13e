"""Writes tests/fixtures/gguf/<arch>-<type>.gguf: the golden tiny Llama, Qwen2, Qwen3, Gemma 3 and Qwen3.5 models
(tests/fixtures/golden/models/<arch>/model) converted to GGUF as llama.cpp's converter
(`convert_hf_to_gguf.py`) names and lays them out, with llama.cpp's own Python package: F32 tensors,
and Q8_0 for the 2-D weights (quantized by `gguf.quants.quantize`, llama.cpp's reference). For
Llama, as the converter's `LlamaModel`: query/key rows permuted into llama.cpp's rotary layout, and
Llama 3's rope scaling written as the `rope_freqs` tensor of per-frequency factors; for Gemma 3, as
`Gemma3Model`: the language model of the multimodal checkpoint, 1 added to every norm weight, the
global layers' linear rope scaling and the sliding window in the metadata; for Qwen3.5, as
`Qwen3_5TextModel` (with `--no-mtp`: the golden checkpoint has no MTP layer): `A_log` stored as
`−exp(A_log)`, 1 added to every norm but the delta rule's own, the conv weight squeezed, and the
value heads reordered from grouped by key head to tiled (`_LinearAttentionVReorderBase`). rmas must
load them to the safetensors model's logits (`tests/gguf_archs.rs`).

    python3 -m venv /tmp/v && /tmp/v/bin/pip install gguf==0.19.0 numpy
    /tmp/v/bin/python tests/gguf_models.py

`--check-llama-cpp` (with `pip install llama-cpp-python==0.3.36`, the first of the two versions
tried here that knows `qwen35`; 0.3.16 reads the others alike) then has llama.cpp itself run each
architecture's F32 conversion to the golden logits, so the files are llama.cpp's reading of the
models and not only rmas's.

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
import sys
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


# Gemma 3's norms around the attention and the MLP (`gguf.constants`: ATTN_POST_NORM, FFN_PRE_NORM,
# FFN_POST_NORM).
GEMMA3_LAYER = {**LAYER, "post_attention_layernorm": "post_attention_norm",
                "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm"}


# Qwen3.5's (`gguf.constants`: ATTN_QKV, ATTN_GATE, SSM_*; the norm before the MLP is ATTN_POST_NORM).
QWEN35_LAYER = {**LAYER, "post_attention_layernorm": "post_attention_norm",
                "linear_attn.in_proj_qkv": "attn_qkv", "linear_attn.in_proj_z": "attn_gate",
                "linear_attn.in_proj_a": "ssm_alpha", "linear_attn.in_proj_b": "ssm_beta",
                "linear_attn.conv1d": "ssm_conv1d", "linear_attn.norm": "ssm_norm", "linear_attn.out_proj": "ssm_out"}
# Qwen3.5's parameters without a `.weight` (`Qwen3NextModel.modify_tensors` renames `dt_bias`).
QWEN35_PARAMS = {"linear_attn.A_log": "ssm_a", "linear_attn.dt_bias": "ssm_dt.bias"}


def gguf_name(hf: str, arch: str) -> str:
    if hf in TOP:
        return TOP[hf]
    _, _, layer, rest = hf.split(".", 3)
    if arch == "qwen35" and rest in QWEN35_PARAMS:
        return f"blk.{layer}.{QWEN35_PARAMS[rest]}"
    part, suffix = rest.rsplit(".", 1)
    table = {"gemma3": GEMMA3_LAYER, "qwen35": QWEN35_LAYER}.get(arch, LAYER)
    return f"blk.{layer}.{table[part]}.{suffix}"


def tile_value_heads(t: np.ndarray, axis: int, config: dict, head_dim: int) -> np.ndarray:
    """`_LinearAttentionVReorderBase._reorder_v_heads`: value heads along `axis` from grouped by key
    head (`[K0v0, K0v1, …, K1v0, …]`) to tiled (`[K0v0, K1v0, …, K0v1, …]`)."""
    k_heads = config["linear_num_key_heads"]
    per_key = config["linear_num_value_heads"] // k_heads
    t = np.moveaxis(t, axis, 0)
    rest = t.shape[1:]
    t = t.reshape(k_heads, per_key, head_dim, *rest).swapaxes(0, 1).reshape(-1, *rest)
    return np.moveaxis(t, 0, axis)


def qwen35_tensor(name: str, t: np.ndarray, config: dict) -> np.ndarray:
    """What `Qwen3_5TextModel` does to a tensor (the value-head reorder where key heads are fewer than
    value heads, then `Qwen3NextModel.modify_tensors`)."""
    k_heads, v_heads = config["linear_num_key_heads"], config["linear_num_value_heads"]
    dv, qk = config["linear_value_head_dim"], 2 * config["linear_key_head_dim"] * k_heads
    if k_heads != v_heads and "linear_attn." in name:
        if ".in_proj_qkv." in name or ".conv1d." in name:
            t = np.concatenate([t[:qk], tile_value_heads(t[qk:], 0, config, dv)])
        elif ".in_proj_z." in name:
            t = tile_value_heads(t, 0, config, dv)
        elif ".in_proj_a." in name or ".in_proj_b." in name or name.endswith((".A_log", ".dt_bias")):
            t = tile_value_heads(t, 0, config, 1)
        elif ".out_proj." in name:
            t = tile_value_heads(t, 1, config, dv)
    if name.endswith(".A_log"):
        t = -np.exp(t)
    elif ".conv1d." in name:
        t = t.reshape(t.shape[0], -1)  # `squeeze()`: [channels, 1, kernel] → [channels, kernel]
    elif name.endswith("norm.weight") and not name.endswith("linear_attn.norm.weight"):
        t = t + 1
    return t


def add_qwen35_metadata(w: gguf.GGUFWriter, config: dict, head_dim: int) -> None:
    """`Qwen3NextModel.set_gguf_parameters` and the MRoPE sections (`TextModel`)."""
    w.add_ssm_conv_kernel(config["linear_conv_kernel_dim"])
    w.add_ssm_state_size(config["linear_key_head_dim"])
    w.add_ssm_group_count(config["linear_num_key_heads"])
    w.add_ssm_time_step_rank(config["linear_num_value_heads"])
    w.add_ssm_inner_size(config["linear_value_head_dim"] * config["linear_num_value_heads"])
    w.add_array("qwen35.attention.recurrent_layers", [t == "linear_attention" for t in config["layer_types"]])
    w.add_full_attention_interval(config.get("full_attention_interval", 4))
    rope = config["rope_parameters"]
    w.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 0.25)))
    w.add_rope_dimension_sections((list(rope["mrope_section"]) + [0] * 4)[:4])


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


def k_quant(t: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """Rows of 256 weights as Q4_K, Q5_K or Q6_K super-blocks in llama.cpp's byte layout
    (`block_q4_K`, `block_q5_K`, `block_q6_K`; gguf-py has their decoders only). The scales are
    plain min/max fits, not ggml's searched ones (`make_qkx2_quants`): any valid blocks serve a test
    of the decoders and products. Checked here against gguf-py's `dequantize`."""
    f32, n = np.float32, t.size // 256
    x = t.reshape(n, 256).astype(f32)
    nonzero = lambda a: np.where(a == 0, f32(1), a).astype(f32)
    if qtype == gguf.GGMLQuantizationType.Q6_K:
        sub = x.reshape(n, 16, 16)
        step = np.abs(sub).max(-1) / 31
        d = (step.max(-1) / 127).astype(np.float16)
        sc = np.clip(np.round(step / nonzero(d.astype(f32))[:, None]), -128, 127).astype(np.int8)
        q = np.clip(np.round(sub / nonzero(d.astype(f32)[:, None] * sc)[..., None]), -32, 31) + 32
        q = q.astype(np.uint8).reshape(n, 2, 4, 32)  # half, run of 32, weight
        ql = np.concatenate([q[:, :, 0] & 0xF | (q[:, :, 2] & 0xF) << 4,
                             q[:, :, 1] & 0xF | (q[:, :, 3] & 0xF) << 4], axis=2).reshape(n, 128)
        qh = (q[:, :, 0] >> 4 | (q[:, :, 1] >> 4) << 2 | (q[:, :, 2] >> 4) << 4 | (q[:, :, 3] >> 4) << 6)
        blocks = np.concatenate([ql, qh.reshape(n, 64), sc.view(np.uint8), d.view(np.uint8).reshape(n, 2)], axis=1)
    else:
        levels = 31 if qtype == gguf.GGMLQuantizationType.Q5_K else 15
        sub = x.reshape(n, 8, 32)
        low = np.minimum(sub.min(-1), 0)
        step = (sub.max(-1) - low) / levels
        d, dmin = (step.max(-1) / 63).astype(np.float16), ((-low).max(-1) / 63).astype(np.float16)
        sc = np.clip(np.round(step / nonzero(d.astype(f32))[:, None]), 0, 63).astype(np.uint8)
        m = np.clip(np.round(-low / nonzero(dmin.astype(f32))[:, None]), 0, 63).astype(np.uint8)
        scale, mins = d.astype(f32)[:, None] * sc, dmin.astype(f32)[:, None] * m
        q = np.clip(np.round((sub + mins[..., None]) / nonzero(scale)[..., None]), 0, levels).astype(np.uint8)
        packed = np.concatenate([sc[:, :4] | (sc[:, 4:] >> 4) << 6, m[:, :4] | (m[:, 4:] >> 4) << 6,
                                 sc[:, 4:] & 0xF | (m[:, 4:] & 0xF) << 4], axis=1)
        pairs = q.reshape(n, 4, 2, 32)  # bytes 32j..32j + 32 hold sub-blocks 2j (low) and 2j + 1 (high)
        ql = (pairs[:, :, 0] & 0xF | (pairs[:, :, 1] & 0xF) << 4).reshape(n, 128)
        parts = [d.view(np.uint8).reshape(n, 2), dmin.view(np.uint8).reshape(n, 2), packed]
        if levels == 31:
            parts.append(np.bitwise_or.reduce([((q[:, j] >> 4) & 1) << j for j in range(8)], axis=0))
        blocks = np.concatenate(parts + [ql], axis=1)
    blocks = blocks.reshape(t.shape[0], -1)
    back = gguf.quants.dequantize(blocks, qtype).reshape(n, 256)
    steps = {gguf.GGMLQuantizationType.Q4_K: 8, gguf.GGMLQuantizationType.Q5_K: 16, gguf.GGMLQuantizationType.Q6_K: 16}
    assert np.abs(back - x).max() <= np.abs(x).max() / steps[qtype], f"{qtype.name}: llama.cpp decodes other weights"
    return blocks


def write(config: dict, tensors: dict, path: Path, qtype_of, file_type, tokenizer: Path | None = None) -> None:
    """`tensors` (HF names, float32) as llama.cpp's converter writes them; `qtype_of(gguf_name, t)`
    picks each tensor's ggml type (None: F32)."""
    arch = {"gemma3_text": "gemma3", "qwen3_5_text": "qwen35"}.get(config["model_type"], config["model_type"])
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
    # `TextModel.set_gguf_parameters`: the global layers' rope (Gemma 3's local rope is llama.cpp's constant).
    rope = config["rope_parameters"].get("full_attention", config["rope_parameters"])
    w.add_rope_freq_base(rope["rope_theta"])
    if rope.get("rope_type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    if arch == "gemma3":
        w.add_sliding_window(config["sliding_window"])
    if arch == "qwen35":
        add_qwen35_metadata(w, config, head_dim)
    w.add_vocab_size(config["vocab_size"])
    w.add_file_type(file_type)
    if tokenizer:
        add_tokenizer(w, tokenizer, config)
    if arch == "llama" and config["rope_parameters"].get("rope_type") == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(config, head_dim))
    for name, t in tensors.items():
        t = t.astype(np.float32)
        if arch == "llama" and name.endswith("q_proj.weight"):
            t = permute(t, heads)
        if arch == "llama" and name.endswith("k_proj.weight"):
            t = permute(t, config["num_key_value_heads"])
        if arch == "gemma3" and name.endswith("norm.weight"):
            t = t + 1  # `Gemma3Model.norm_shift`: ggml multiplies by the stored weight
        if arch == "qwen35":
            t = qwen35_tensor(name, t, config)
        qtype = qtype_of(gguf_name(name, arch), t)
        if qtype is None:
            w.add_tensor(gguf_name(name, arch), t)
            continue
        q = gguf.quants.quantize(t, qtype) if qtype == gguf.GGMLQuantizationType.Q8_0 else k_quant(t, qtype)
        w.add_tensor(gguf_name(name, arch), q, raw_shape=q.shape, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def convert(model: Path, path: Path, qtype: str, tokenizer: bool = False) -> None:
    """A golden model directory: F32, or Q8_0 for the 2-D weights of whole blocks."""
    config = json.loads((model / "config.json").read_text())
    tensors = load_file(model / "model.safetensors")
    if "text_config" in config:
        # A multimodal checkpoint (Gemma 3): its language model, as `Gemma3Model` converts it.
        config = config["text_config"]
        tensors = {k.removeprefix("language_model."): t for k, t in tensors.items() if k.startswith("language_model.")}
    # Qwen3.5's text model nests its tensors one level down.
    tensors = {k.replace("model.language_model.", "model.", 1): t for k, t in tensors.items()}
    q8 = lambda name, t: gguf.GGMLQuantizationType.Q8_0 if t.ndim == 2 and t.shape[1] % 32 == 0 else None
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "Q8_0" else gguf.LlamaFileType.ALL_F32
    write(config, tensors, path, q8 if qtype == "Q8_0" else lambda *_: None,
          file_type, model if tokenizer else None)


def k_quant_llama(path: Path) -> None:
    """A random Llama with rows of whole super-blocks (hidden 256), in Q4_K_M's mix of types: Q4_K
    matrices, Q6_K values, down projections and output, and one layer's in Q5_K as Q5_K_M has them."""
    config = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320, "rms_norm_eps": 1e-5,
              "max_position_embeddings": 256, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}}
    rng = np.random.default_rng(2604)
    h, i, kv = 256, 512, 128
    shapes = {"model.embed_tokens.weight": (320, h), "model.norm.weight": (h,), "lm_head.weight": (320, h)}
    for layer in range(2):
        for part, shape in [("self_attn.q_proj", (h, h)), ("self_attn.k_proj", (kv, h)),
                            ("self_attn.v_proj", (kv, h)), ("self_attn.o_proj", (h, h)),
                            ("mlp.gate_proj", (i, h)), ("mlp.up_proj", (i, h)), ("mlp.down_proj", (h, i)),
                            ("input_layernorm", (h,)), ("post_attention_layernorm", (h,))]:
            shapes[f"model.layers.{layer}.{part}.weight"] = shape
    tensors = {name: (1 + 0.1 * rng.standard_normal(shape) if len(shape) == 1
                      else 0.06 * rng.standard_normal(shape)).astype(np.float32) for name, shape in shapes.items()}
    Q = gguf.GGMLQuantizationType

    def qtype_of(name: str, t: np.ndarray):
        if t.ndim == 1:
            return None
        if name.startswith("blk.1.") and name.split(".")[2] in ("attn_v", "ffn_down"):
            return Q.Q5_K
        return Q.Q6_K if name.split(".")[-2] in ("attn_v", "ffn_down", "output") else Q.Q4_K

    write(config, tensors, path, qtype_of, gguf.LlamaFileType.MOSTLY_Q4_K_M)


# The golden model directories converted (`tests/fixtures/golden/models/<arch>`).
ARCHS = ["llama", "qwen2", "qwen3", "gemma3", "qwen3_5_text"]


def read_golden(path: Path) -> dict:
    """A golden `.safetensors` of int64 ids and float32 outputs."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    out = {}
    for name, info in json.loads(raw[8 : 8 + n]).items():
        if name != "__metadata__":
            b, e = info["data_offsets"]
            dtype = {"I64": np.int64, "F32": np.float32}[info["dtype"]]
            out[name] = np.frombuffer(raw[8 + n + b : 8 + n + e], dtype).reshape(info["shape"])
    return out


def check_with_llama_cpp() -> None:
    """llama.cpp itself (llama-cpp-python) runs each architecture's F32 conversion, with a
    `no_vocab` tokenizer so that it takes token ids, to the golden (transformers) logits: the
    conversion is llama.cpp's reading of the model, not only rmas's."""
    import tempfile

    import llama_cpp

    plain_init = gguf.GGUFWriter.__init__

    def no_vocab_init(self, *args, **kwargs):
        plain_init(self, *args, **kwargs)
        self.add_tokenizer_model("no_vocab")

    gguf.GGUFWriter.__init__ = no_vocab_init
    try:
        for arch in ARCHS:
            golden = ROOT / "fixtures" / "golden" / "models" / arch
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{arch}.gguf"
                convert(golden / "model", path, "F32")
                g = read_golden(golden / "golden.safetensors")
                ids = [int(i) for i in g["input_ids"]]
                # f32 KV cache (type 0), so the differences left are ggml's own arithmetic.
                llm = llama_cpp.Llama(str(path), n_ctx=len(ids), n_batch=len(ids), logits_all=True,
                                      type_k=0, type_v=0, verbose=False)
                llm.eval(ids)
                got, want = np.array(llm.scores[: len(ids)]), g["logits"]
                error = float(np.abs(got - want).max() / np.abs(want).max())
                agree = int((got.argmax(1) == want.argmax(1)).sum())
                print(f"llama.cpp {llama_cpp.__version__} on {arch}: max |Δlogit| / max |logit| {error:.1e}, "
                      f"argmax {agree}/{len(ids)}")
                if error > 2e-3 or agree < len(ids) * 0.97:
                    raise SystemExit(f"llama.cpp reads the {arch} conversion differently from transformers")
    finally:
        gguf.GGUFWriter.__init__ = plain_init


def main() -> None:
    for arch in ARCHS:
        for qtype in ["F32", "Q8_0"]:
            convert(ROOT / "fixtures" / "golden" / "models" / arch / "model", OUT / f"{arch}-{qtype.lower()}.gguf", qtype)

    SYSTEM = ROOT / "fixtures" / "golden" / "systems" / "sequential-light-r2" / "hub"
    for role, repo in [("planner", "Planner-Qwen3-1.7B"), ("critic", "Critic-Llama3.2-1B"),
                       ("solver", "Solver-Qwen2.5-Math-1.5B")]:
        (snapshot,) = (SYSTEM / f"models--RecursiveMAS--Sequential-Light-{repo}" / "snapshots").iterdir()
        (OUT / "sequential-light-r2").mkdir(exist_ok=True)
        convert(snapshot, OUT / "sequential-light-r2" / f"{role}.gguf", "F32", tokenizer=True)

    k_quant_llama(OUT / "llama-q4_k_m.gguf")

    if "--check-llama-cpp" in sys.argv:
        check_with_llama_cpp()


if __name__ == "__main__":
    main()
