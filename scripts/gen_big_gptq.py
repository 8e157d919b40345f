#!/usr/bin/env python3
"""Write a synthetic GPTQ checkpoint (stdlib only) for memory/throughput measurements.

usage: gen_big_gptq.py DIR [--layers 34] [--k 4096] [--n 14336] [--shards 2]

4-bit, group 128, act-order off, v1 zeros; random codes and zero points, small f16 scales.
34 layers of 4096x14336 is about 1 GiB. Used for the README's peak-memory figure:
    /usr/bin/time -v target/release/qk dequantize DIR --out out.safetensors --dtype f16
"""
import argparse, json, os, struct, sys
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_write import write_shard  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("dir")
p.add_argument("--layers", type=int, default=34)
p.add_argument("--k", type=int, default=4096)
p.add_argument("--n", type=int, default=14336)
p.add_argument("--shards", type=int, default=2)
a = p.parse_args()
os.makedirs(a.dir, exist_ok=True)
bits, group = 4, 128
groups = a.k // group


def layer_tensors(i):
    pre = f"model.layers.{i}.mlp.down_proj"
    g_idx = array("i", [k // group for k in range(a.k)]).tobytes()
    scale = struct.pack("<e", 0.002) * (groups * a.n)
    return [
        (f"{pre}.qweight", "I32", [a.k * bits // 32, a.n], os.urandom(a.k * bits // 32 * a.n * 4)),
        (f"{pre}.qzeros", "I32", [groups, a.n * bits // 32], os.urandom(groups * a.n * bits // 32 * 4)),
        (f"{pre}.scales", "F16", [groups, a.n], scale),
        (f"{pre}.g_idx", "I32", [a.k], g_idx),
    ]


weight_map, per = {}, -(-a.layers // a.shards)
for s in range(a.shards):
    name = f"model-{s + 1:05d}-of-{a.shards:05d}.safetensors"
    tensors = [t for i in range(s * per, min(a.layers, (s + 1) * per)) for t in layer_tensors(i)]
    write_shard(os.path.join(a.dir, name), tensors)
    weight_map.update({t[0]: name for t in tensors})
json.dump({"metadata": {}, "weight_map": weight_map}, open(os.path.join(a.dir, "model.safetensors.index.json"), "w"))
json.dump({"model_type": "llama", "quantization_config": {"quant_method": "gptq", "bits": bits, "group_size": group,
           "desc_act": False, "sym": False, "checkpoint_format": "gptq"}}, open(os.path.join(a.dir, "config.json"), "w"))
