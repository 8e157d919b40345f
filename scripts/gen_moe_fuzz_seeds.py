"""Writes the `checkpoint_dir` fuzz seeds for MoE experts (fuzz/regressions/checkpoint_dir/moe_*):
stacked FP8 experts stored [in, out] with block scales, stacked BF16 experts stored [out, in],
and Mixtral per-expert layers with expert 1's w3 missing. Small (2 experts, hidden 8, I 4).
Also `uqff_beside_dense`: a dense checkpoint with a 1.2.0 UQFF file (the committed fixture) beside
it, for the UQFF model reader."""
import json
import struct
import sys
from pathlib import Path

SEP = b"\n--\n"
P = "model.layers.0.mlp.experts"


def st_file(tensors):
    header, at, data = {}, 0, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(raw)]}
        at += len(raw)
        data += raw
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def f32(n, base):
    return struct.pack(f"<{n}f", *[((base + i) % 7 - 3) / 8 for i in range(n)])


def bf16(n, base):
    return b"".join(struct.pack("<f", ((base + i) % 5 - 2) / 4)[2:] for i in range(n))


def seed(config, tensors):
    out = SEP.join([json.dumps(config).encode(), b"", b"", b"", st_file(tensors)])
    assert out.count(SEP) == 4, "a shard's bytes contain the separator"
    return out


E, H, I = 2, 8, 4
seeds = {
    "moe_stacked_fp8": seed(
        {"model_type": "qwen3_vl_moe",
         "quantization_config": {"quant_method": "fp8", "weight_block_size": [4, 4]}},
        [
            (f"{P}.gate_up_proj", "F8_E4M3", [E, H, 2 * I], bytes((i * 7) % 0x70 for i in range(E * H * 2 * I))),
            (f"{P}.gate_up_proj.weight_scale_inv", "F32", [E, H // 4, 2 * I // 4], f32(E * 2 * 2, 1)),
            (f"{P}.down_proj", "F8_E4M3", [E, I, H], bytes((i * 5) % 0x70 for i in range(E * I * H))),
            (f"{P}.down_proj.weight_scale_inv", "F32", [E, 1, 2], f32(E * 2, 2)),
        ],
    ),
    "moe_stacked_bf16": seed(
        {"model_type": "qwen3_moe"},
        [
            (f"{P}.gate_up_proj", "BF16", [E, 2 * I, H], bf16(E * 2 * I * H, 3)),
            (f"{P}.down_proj", "BF16", [E, H, I], bf16(E * H * I, 4)),
        ],
    ),
    "moe_mixtral_missing": seed(
        {"model_type": "mixtral"},
        [
            (f"model.layers.0.block_sparse_moe.experts.{e}.{p}.weight", "F32", shape, f32(shape[0] * shape[1], e))
            for e in range(E)
            for p, shape in [("w1", [I, H]), ("w3", [I, H]), ("w2", [H, I])]
            if (e, p) != (1, "w3")
        ],
    ),
}
UQFF = Path(__file__).resolve().parent.parent / "tests/fixtures/uqff_files/v1.2.0/hqq4_g64_ax0_f32_bias.uqff"
uqff = UQFF.read_bytes()
seeds["uqff_beside_dense"] = seeds["moe_stacked_bf16"].replace(b"qwen3_moe", b"llama") + SEP + b"down.uqff" + SEP + uqff
assert seeds["uqff_beside_dense"].count(SEP) == 6, "the UQFF file contains the separator"
out = Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz/regressions/checkpoint_dir")
for name, data in seeds.items():
    (out / name).write_bytes(data)
    print(name, len(data))
