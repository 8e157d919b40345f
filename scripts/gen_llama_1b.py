#!/usr/bin/env python3
"""Write a random ~1.1 B-parameter Llama (TinyLlama's shape: hidden 2048, 22 layers, 32 heads,
4 KV heads, intermediate 5632, vocab 32000) for the decode bench of `examples/llama`
(numpy; random weights: the logits mean nothing, the bytes read per token are real).

usage: gen_llama_1b.py DIR --format gptq|bf16 [--layers 22]

* gptq: every projection 4-bit GPTQ, group 128, no act-order, v1 zeros (random codes and zero
  points, small f16 scales); embeddings, norms and lm_head f16.
* bf16: every tensor bf16 (run the example with `--isq hqq4` for HQQ 4-bit g64).

Then: cargo run --release --example llama -- DIR --tokens 1,2,3,4 --new 17 --out /tmp/o.safetensors --threads 2
"""
import argparse
import json
import os
import struct
import sys
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_write import write_shard  # noqa: E402

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("dir")
p.add_argument("--format", choices=["gptq", "bf16"], required=True)
p.add_argument("--layers", type=int, default=22)
a = p.parse_args()
os.makedirs(a.dir, exist_ok=True)
H, I, HEADS, KV, V = 2048, 5632, 32, 4, 32000
HD = H // HEADS
bits, group = 4, 128


rng = np.random.default_rng(0)


def small_floats(n, code):
    """n little-endian values of about +-0.02 (f16 `e`, else bf16: the high half of f32)."""
    v = rng.integers(-128, 128, n, dtype=np.int16).astype(np.float32) / 6400.0
    if code == "e":
        return v.astype("<f2").tobytes()
    return (v.view(np.uint32) >> 16).astype("<u2").tobytes()


def ones(n, code):
    return (struct.pack("<e", 1.0) if code == "e" else struct.pack("<f", 1.0)[2:]) * n


def projection(name, out, inp):
    if a.format == "bf16":
        return [(f"{name}.weight", "BF16", [out, inp], small_floats(out * inp, "b"))]
    groups = inp // group
    g_idx = array("i", [k // group for k in range(inp)]).tobytes()
    return [
        (f"{name}.qweight", "I32", [inp * bits // 32, out], os.urandom(inp * bits // 32 * out * 4)),
        (f"{name}.qzeros", "I32", [groups, out * bits // 32], os.urandom(groups * out * bits // 32 * 4)),
        (f"{name}.scales", "F16", [groups, out], struct.pack("<e", 0.002) * (groups * out)),
        (f"{name}.g_idx", "I32", [inp], g_idx),
    ]


def layer(i):
    p = f"model.layers.{i}"
    code, dt = ("e", "F16") if a.format == "gptq" else ("b", "BF16")
    t = [
        (f"{p}.input_layernorm.weight", dt, [H], ones(H, code)),
        (f"{p}.post_attention_layernorm.weight", dt, [H], ones(H, code)),
    ]
    for n, out, inp in [("self_attn.q_proj", H, H), ("self_attn.k_proj", KV * HD, H), ("self_attn.v_proj", KV * HD, H),
                        ("self_attn.o_proj", H, H), ("mlp.gate_proj", I, H), ("mlp.up_proj", I, H), ("mlp.down_proj", H, I)]:
        t += projection(f"{p}.{n}", out, inp)
    return t


code, dt = ("e", "F16") if a.format == "gptq" else ("b", "BF16")
rest = [  # embeddings, final norm, lm_head: the first shard
    ("model.embed_tokens.weight", dt, [V, H], small_floats(V * H, code)),
    ("model.norm.weight", dt, [H], ones(H, code)),
    ("lm_head.weight", dt, [V, H], small_floats(V * H, code)),
]
weight_map, count = {}, a.layers + 1
for s in range(count):
    tensors = rest if s == 0 else layer(s - 1)
    name = f"model-{s + 1:05d}-of-{count:05d}.safetensors"
    write_shard(os.path.join(a.dir, name), tensors)
    weight_map.update({t[0]: name for t in tensors})
json.dump({"metadata": {}, "weight_map": weight_map}, open(os.path.join(a.dir, "model.safetensors.index.json"), "w"))
config = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
    "num_hidden_layers": a.layers, "num_attention_heads": HEADS, "num_key_value_heads": KV, "vocab_size": V,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "max_position_embeddings": 2048,
}
if a.format == "gptq":
    config["quantization_config"] = {"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": False,
                                     "sym": False, "checkpoint_format": "gptq"}
json.dump(config, open(os.path.join(a.dir, "config.json"), "w"), indent=1)
