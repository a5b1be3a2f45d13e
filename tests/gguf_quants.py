"""Writes tests/fixtures/gguf/quants.json: random ggml blocks of every type rmas decodes and their
values as llama.cpp's own Python reference (`gguf.quants.dequantize`, pip `gguf`) decodes them; and,
under "quantize", random weights and the Q8_0/Q4_0/Q4_1 blocks its reference quantizer
(`gguf.quants.quantize`) makes of them, which rmas's encoders must reproduce byte for byte.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install gguf==0.19.0 && /tmp/v/bin/python tests/gguf_quants.py

Scale fields (f16/bf16 `d`, `dmin`) are drawn as finite values of a realistic size; every other byte
is uniformly random, so every nibble, high bit and 6-bit scale pattern occurs.
"""

import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

rng = np.random.default_rng(2026)


def f16(n):
    return rng.uniform(-0.05, 0.05, n).astype(np.float16).view(np.uint8)


# name: (type, bytes per block, byte offsets of its f16 scale fields)
LAYOUTS = {
    "Q4_0": (T.Q4_0, 18, [0]),
    "Q4_1": (T.Q4_1, 20, [0, 2]),
    "Q8_0": (T.Q8_0, 34, [0]),
    "Q4_K": (T.Q4_K, 144, [0, 2]),
    "Q5_K": (T.Q5_K, 176, [0, 2]),
    "Q6_K": (T.Q6_K, 210, [208]),
}

out = {}
for name, (qtype, size, scales) in LAYOUTS.items():
    blocks = rng.integers(0, 256, (4, size), dtype=np.uint8)
    for at in scales:
        blocks[:, at : at + 2] = f16(4).reshape(4, 2)
    values = quants.dequantize(blocks.reshape(-1), qtype).astype(np.float32).reshape(-1)
    out[name] = {"bytes": blocks.reshape(-1).tobytes().hex(), "values": [float(v) for v in values]}
halves = rng.uniform(-4, 4, 64).astype(np.float32)
out["F16"] = {"bytes": halves.astype(np.float16).tobytes().hex(), "values": [float(v) for v in quants.dequantize(halves.astype(np.float16).view(np.uint8), T.F16)]}
bf16 = (halves.view(np.uint32) >> 16).astype(np.uint16)
out["BF16"] = {"bytes": bf16.tobytes().hex(), "values": [float(v) for v in quants.dequantize(bf16.view(np.uint8), T.BF16)]}
# Weights of several scales per block, incl. an all-zero block and one of equal values.
weights = (rng.standard_normal((8, 32)) * rng.uniform(0.001, 2.0, (8, 1))).astype(np.float32)
weights[1] = 0.0
weights[2] = 0.25
out["quantize"] = {
    name: {"values": [float(v) for v in weights.reshape(-1)], "bytes": quants.quantize(weights, qtype).tobytes().hex()}
    for name, qtype in [("Q8_0", T.Q8_0), ("Q4_0", T.Q4_0), ("Q4_1", T.Q4_1)]
}
path = Path(__file__).parent / "fixtures" / "gguf" / "quants.json"
path.write_text(json.dumps(out) + "\n")
counts = ", ".join(f"{k} {len(v['values'])}" for k, v in out.items() if k != "quantize")
print(f"wrote {path}: {counts}")
