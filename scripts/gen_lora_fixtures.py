"""Generate tests/fixtures/lora: tiny base models, PEFT LoRA adapters, and peft's merge.

Each case directory holds
  base/model.safetensors      the base model's linear weights (and biases), f32
  adapter/adapter_config.json adapter/adapter_model.safetensors   as peft's save_pretrained writes them
  merged.safetensors          the same model after peft's merge_and_unload

Cases: `plain` (r 4, alpha 8), `rslora` (use_rslora, rank_pattern, alpha_pattern; the adapter
rewritten in f16 with f16-exact values) and `fan_in_fan_out` (GPT-2 Conv1D weights stored
[in, out]). LoRA B is set to random values (peft initialises it to zero, which would merge
nothing).

Run: python scripts/gen_lora_fixtures.py tests/fixtures/lora   (torch, peft, transformers, safetensors)
"""

import json
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

HIDDEN, KV, INTER = 24, 12, 48


class Llama(nn.Module):
    """One decoder layer's linear modules, named as in a Llama checkpoint."""

    def __init__(self):
        super().__init__()
        attn = nn.Module()
        attn.q_proj = nn.Linear(HIDDEN, HIDDEN, bias=True)
        attn.k_proj = nn.Linear(HIDDEN, KV, bias=False)
        attn.v_proj = nn.Linear(HIDDEN, KV, bias=False)
        attn.o_proj = nn.Linear(HIDDEN, HIDDEN, bias=False)
        mlp = nn.Module()
        mlp.gate_proj = nn.Linear(HIDDEN, INTER, bias=False)
        mlp.up_proj = nn.Linear(HIDDEN, INTER, bias=False)
        mlp.down_proj = nn.Linear(INTER, HIDDEN, bias=False)
        layer = nn.Module()
        layer.self_attn, layer.mlp = attn, mlp
        self.model = nn.Module()
        self.model.layers = nn.ModuleList([layer])


class Gpt2(nn.Module):
    """GPT-2's Conv1D modules (weights [in, out])."""

    def __init__(self):
        super().__init__()
        block = nn.Module()
        block.attn = nn.Module()
        block.attn.c_attn = Conv1D(3 * HIDDEN, HIDDEN)
        block.attn.c_proj = Conv1D(HIDDEN, HIDDEN)
        block.mlp = nn.Module()
        block.mlp.c_fc = Conv1D(INTER, HIDDEN)
        self.transformer = nn.Module()
        self.transformer.h = nn.ModuleList([block])


def state(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def make(out_dir, name, model, config, f16_adapter=False):
    case = os.path.join(out_dir, name)
    os.makedirs(os.path.join(case, "base"), exist_ok=True)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    save_file(state(model), os.path.join(case, "base", "model.safetensors"))
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                v = torch.randn_like(p) * 0.5
                p.copy_(v.half().float() if f16_adapter else v)
    adapter = os.path.join(case, "adapter")
    peft_model.save_pretrained(adapter)
    if f16_adapter:
        path = os.path.join(adapter, "adapter_model.safetensors")
        save_file({k: v.half() for k, v in load_file(path).items()}, path)
    merged = peft_model.merge_and_unload()
    save_file(state(merged), os.path.join(case, "merged.safetensors"))
    # Keep the fixture's config to the fields that matter, sorted, for a readable diff.
    cfg_path = os.path.join(adapter, "adapter_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    keep = ["peft_type", "r", "lora_alpha", "target_modules", "fan_in_fan_out", "use_rslora",
            "rank_pattern", "alpha_pattern", "use_dora", "lora_bias", "bias"]
    with open(cfg_path, "w") as f:
        json.dump({k: cfg[k] for k in keep if k in cfg}, f, indent=2, sort_keys=True)
        f.write("\n")
    for readme in ["README.md"]:
        p = os.path.join(adapter, readme)
        if os.path.exists(p):
            os.remove(p)


def main(out_dir):
    torch.manual_seed(0)
    make(out_dir, "plain", Llama(), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"]))
    make(out_dir, "rslora", Llama(), LoraConfig(
        r=8, lora_alpha=12, use_rslora=True, target_modules=["q_proj", "k_proj", "o_proj", "up_proj", "down_proj"],
        rank_pattern={"down_proj": 4}, alpha_pattern={"model.layers.0.self_attn.o_proj": 5}),
        f16_adapter=True)
    make(out_dir, "fan_in_fan_out", Gpt2(), LoraConfig(
        r=4, lora_alpha=6, fan_in_fan_out=True, target_modules=["c_attn", "c_fc"]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/lora")
