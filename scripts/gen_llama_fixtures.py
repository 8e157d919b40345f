"""Generate tests/fixtures/llama/<model>/: random tiny models of the Llama family saved by
transformers (config.json + model.safetensors in bf16) and reference.safetensors, the logits
transformers gives in f32 for a fixed prompt:

* prefill_logits f32 [prompt_len, vocab]: one forward over the prompt, positions from 0;
* step_logits f32 [new, vocab]: row 0 the last prompt position, row i after feeding greedy
  token i-1 with the KV cache;
* greedy_ids i64 [new] (argmax of each step row, ties to the lowest id), tokens i64 [prompt].

Models: `llama` (rope_theta 50000, head_dim 32 != hidden/heads, GQA 4/2, untied lm_head),
`qwen2` (q/k/v bias, tied embeddings, rope_theta 1e6), `mixtral` (4 experts, top-2, GQA 4/2),
`mistral` (sliding_window 4 < the 6-token prompt, so the window masks keys; eager attention).

Also `llama_lora/`: a PEFT LoRA adapter for `llama` (r 4, alpha 8, rsLoRA, q/v/down_proj)
as `save_pretrained` writes it, and `llama/reference_lora.safetensors`, the logits of
peft's `merge_and_unload()` model.

Quantized checkpoints:
* `gptq/<name>.safetensors`: the logits of transformers' Llama with the weights GPTQModel
  dequantized (`expected.safetensors`) for `tests/fixtures/gptq_checkpoints/<name>/` (tiny
  llamas quantized by auto-gptq 0.7.1: 4-bit act-order group 32 sharded, 8-bit) and for
  `gptq/<name>/` (3-bit act-order sharded, 4-bit with v2 zeros; `scripts/gen_llama_gptq.py`,
  run first, in an environment with auto-gptq and GPTQModel, without peft), the checkpoints'
  f16 embeddings, norms and lm_head widened.
* `llama_fp8/`: `llama` with every projection in FP8 E4M3 with 32x32 block scales
  (`weight_scale_inv`, transformers' fine-grained FP8 layout, torch's float8 conversion), and
  the logits of the model with those weights dequantized.
* `llama_hqq_uqff/`: `llama` with every projection quantized by hqq 0.2.8.post1 (4-bit, group
  64, axis 0, its optimizer) in a UQFF 1.2.0 file beside the dense rest, and the logits of the
  model with hqq's dequantized weights.
* `llama_awq/`: `llama` with every projection 4-bit AWQ GEMM, group 32, packed by AutoAWQ 0.2.9
  (`WQLinear_GEMM.from_linear` of min-max RTN scales/zeros), and the logits of the model with
  AutoAWQ's `dequantize_gemm` of those tensors.

Run: python scripts/gen_llama_fixtures.py [--gptq-extra DIR]   (torch, transformers 5, peft, safetensors,
`pip install --no-deps autoawq==0.2.9`; `DISABLE_CUDA=1 pip install --no-deps hqq==0.2.8.post1
termcolor`)
"""

import copy
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

OUT = "tests/fixtures/llama"
TOKENS = [5, 17, 3, 99, 42, 7]
NEW = 5


def common(**kw):
    base = dict(
        vocab_size=128,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
    )
    base.update(kw)
    return base


def build(name):
    if name == "llama":
        cfg = LlamaConfig(**common(intermediate_size=128, head_dim=32, tie_word_embeddings=False))
        cfg.rope_parameters = {"rope_type": "default", "rope_theta": 50000.0}
        return LlamaForCausalLM(cfg)
    if name == "qwen2":
        cfg = Qwen2Config(**common(intermediate_size=128, tie_word_embeddings=True))
        cfg.rope_parameters = {"rope_type": "default", "rope_theta": 1000000.0}
        return Qwen2ForCausalLM(cfg)
    if name == "mistral":
        cfg = MistralConfig(**common(intermediate_size=128, sliding_window=4, tie_word_embeddings=False))
        cfg.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
        cfg._attn_implementation = "eager"
        return MistralForCausalLM(cfg)
    if name == "mixtral":
        cfg = MixtralConfig(
            **common(intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False)
        )
        cfg.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
        return MixtralForCausalLM(cfg)
    raise ValueError(name)


def randomize(model):
    # Larger than the default init so that attention and routing are not near-uniform.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "bias" in n:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (1.0 / p.shape[-1] ** 0.5))


def reference(model):
    ids = torch.tensor([TOKENS])
    with torch.no_grad():
        prefill = model(ids).logits[0].float()
        out = model(ids, use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1].float()
        steps, greedy = [], []
        for i in range(NEW):
            steps.append(logits)
            t = int(torch.argmax(logits))
            greedy.append(t)
            if i + 1 < NEW:
                out = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[0, -1].float()
    return {
        "prefill_logits": prefill.contiguous(),
        "step_logits": torch.stack(steps).contiguous(),
        "greedy_ids": torch.tensor(greedy, dtype=torch.int64),
        "tokens": torch.tensor(TOKENS, dtype=torch.int64),
    }


def lora(model, d):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(20)
    config = LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj", "down_proj"])
    peft = get_peft_model(model, config)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_" in n:
                # B starts at zero; both random (bf16-exact) so that the merge changes the logits.
                p.copy_((torch.randn_like(p) * 0.2).to(torch.bfloat16).float())
    adir = os.path.join(OUT, "llama_lora")
    peft.save_pretrained(adir)
    os.remove(os.path.join(adir, "README.md"))  # peft's model card template
    merged = peft.merge_and_unload().float().eval()
    save_file(reference(merged), os.path.join(d, "reference_lora.safetensors"))


def gptq_references(extra=None):
    """Reference logits for the tiny GPTQ Llamas: the two in tests/fixtures/gptq_checkpoints/,
    and those `gen_llama_gptq.py` wrote under `extra` (copied, without their expected weights,
    to gptq/<name>/)."""
    import shutil

    from safetensors.numpy import load_file

    dirs = [os.path.join("tests/fixtures/gptq_checkpoints", n) for n in ["tiny-llama-gptq-4bit", "tiny-llama-gptq-8bit-single"]]
    if extra:
        for name in sorted(os.listdir(extra)):
            dst = os.path.join(OUT, "gptq", name)
            os.makedirs(dst, exist_ok=True)
            for f in os.listdir(os.path.join(extra, name)):
                if f not in ("expected.safetensors", "checks.json"):
                    shutil.copy(os.path.join(extra, name, f), dst)
            dirs.append(os.path.join(extra, name))
    for src in dirs:
        name = os.path.basename(src)
        cfg = json.load(open(os.path.join(src, "config.json")))
        cfg.pop("quantization_config", None)
        model = LlamaForCausalLM(LlamaConfig(**cfg)).float().eval()
        tensors = {}
        for f in sorted(os.listdir(src)):
            if f.startswith("model") and f.endswith(".safetensors"):
                tensors.update(load_file(os.path.join(src, f)))
        expected = load_file(os.path.join(src, "expected.safetensors"))
        state = {}
        for k in model.state_dict():
            if k.endswith("proj.weight"):
                state[k] = torch.from_numpy(expected[k]).t().contiguous().float()  # stored [in, out]
            else:
                state[k] = torch.from_numpy(tensors[k].astype("float32"))
        model.load_state_dict(state)
        os.makedirs(os.path.join(OUT, "gptq"), exist_ok=True)
        save_file(reference(model), os.path.join(OUT, "gptq", f"{name}.safetensors"))


def save_checkpoint(model, d, state, qcfg):
    """`state` as `d/model.safetensors`, the model's config (with `qcfg` as its
    `quantization_config` when given) and the model's reference logits."""
    os.makedirs(d, exist_ok=True)
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    cfg["architectures"] = ["LlamaForCausalLM"]
    if qcfg is not None:
        cfg["quantization_config"] = qcfg
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    save_file(reference(model), os.path.join(d, "reference.safetensors"))


def fp8_block(model, d, block=32):
    """Every projection of `model` to FP8 E4M3 with `block`-square scales, written to `d` as a
    fine-grained FP8 checkpoint; the model's projections replaced by the dequantized weights."""
    state = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("proj.weight"):
                out, inp = p.shape
                rb, cb = -(-out // block), -(-inp // block)
                scale = torch.zeros(rb, cb)
                q = torch.zeros(out, inp, dtype=torch.float8_e4m3fn)
                for i in range(rb):
                    for j in range(cb):
                        blk = p[i * block:(i + 1) * block, j * block:(j + 1) * block]
                        s = blk.abs().max() / 448.0
                        scale[i, j] = s
                        q[i * block:(i + 1) * block, j * block:(j + 1) * block] = (blk / s).to(torch.float8_e4m3fn)
                deq = q.float() * scale.repeat_interleave(block, 0)[:out].repeat_interleave(block, 1)[:, :inp]
                p.copy_(deq)
                state[n] = q
                state[n + "_scale_inv"] = scale
            else:
                state[n] = p.detach().to(torch.bfloat16)
    qcfg = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [block, block]}
    save_checkpoint(model, d, state, qcfg)


def awq_gemm(model, d, group=32, bits=4):
    """Every projection of `model` 4-bit AWQ GEMM packed by AutoAWQ 0.2.9's
    `WQLinear_GEMM.from_linear` from min-max RTN scales/zeros (f16 scales, as AutoAWQ's
    quantizer), written to `d` as an AutoAWQ checkpoint; the model's projections replaced by
    AutoAWQ's `dequantize_gemm` of the packed tensors (f32 scales: exact)."""
    import importlib.util
    import sys
    import types

    if "awq" not in sys.modules:  # awq/__init__ imports the whole model stack
        spec = importlib.util.find_spec("awq")
        mod = types.ModuleType("awq")
        mod.__path__ = list(spec.submodule_search_locations)
        sys.modules["awq"] = mod
    from awq.modules.linear.gemm import WQLinear_GEMM
    from awq.utils.packing_utils import dequantize_gemm

    maxq = 2**bits - 1
    state = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if not n.endswith("proj.weight"):
                state[n] = p.detach().to(torch.bfloat16)
                continue
            out, inp = p.shape
            wg = p.reshape(-1, group)
            mx, mn = wg.amax(dim=1, keepdim=True), wg.amin(dim=1, keepdim=True)
            sc = ((mx - mn).clamp(min=1e-5) / maxq).half().float()
            z = (-torch.round(mn / sc)).clamp(0, maxq)
            fake = ((torch.clamp(torch.round(wg / sc) + z, 0, maxq) - z) * sc).reshape(out, inp)
            lin = torch.nn.Linear(inp, out, bias=False)
            lin.weight.data = fake
            ql = WQLinear_GEMM.from_linear(
                lin, bits, group, init_only=False,
                scales=sc.reshape(out, -1).t().contiguous(), zeros=z.reshape(out, -1).t().contiguous())
            prefix = n[: -len(".weight")]
            state[prefix + ".qweight"] = ql.qweight.contiguous()
            state[prefix + ".qzeros"] = ql.qzeros.contiguous()
            state[prefix + ".scales"] = ql.scales.contiguous()
            p.copy_(dequantize_gemm(ql.qweight, ql.qzeros, ql.scales.float(), bits, group).float().t())
    qcfg = {"quant_method": "awq", "bits": bits, "group_size": group, "zero_point": True, "version": "gemm"}
    save_checkpoint(model, d, state, qcfg)


def hqq_uqff(model, d, group=64):
    """Every projection of `model` quantized by hqq 0.2.8.post1 (`Quantizer.quantize`, 4-bit,
    group 64, axis 0, its optimizer, on the CPU in f32) and written as a UQFF 1.2.0 file in
    mistral.rs's layout (`layers.uqff`) beside the dense rest (`model.safetensors`); the model's
    projections replaced by hqq's `Quantizer.dequantize`."""
    import numpy as np
    from hqq.core.quantize import Quantizer
    from safetensors.numpy import save_file as save_np

    u32 = lambda v: np.array(v, dtype=np.uint32)  # noqa: E731
    u8 = lambda v: np.array(v, dtype=np.uint8)  # noqa: E731
    uqff = {"uqff.version.major": u32(1), "uqff.version.minor": u32(2), "uqff.version.patch": u32(0)}
    dense = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if not n.endswith("proj.weight"):
                dense[n] = p.detach().to(torch.bfloat16)
                continue
            w_q, meta = Quantizer.quantize(p.detach().clone(), nbits=4, group_size=group, axis=0, optimize=True,
                                           round_zero=False, device="cpu")
            uqff[n] = w_q.numpy()
            uqff[n + ".scales"] = meta["scale"].float().numpy()
            uqff[n + ".zeros"] = meta["zero"].float().numpy()
            uqff[n + ".shape"] = np.array(list(p.shape), dtype=np.uint32)
            uqff[n + ".bits"] = u8(4)
            uqff[n + ".group_size"] = u32(group)
            uqff[n + ".axis"] = u8(0)
            uqff[n + ".optimization_steps"] = u32(20)
            uqff[n + ".round_zeros"] = u8(0)
            uqff[n + ".channel_wise"] = u8(1)
            uqff[n + ".format"] = u8(2)  # HQQ
            p.copy_(Quantizer.dequantize(w_q, meta).float())
    os.makedirs(d, exist_ok=True)
    save_np(uqff, os.path.join(d, "layers.uqff"))
    save_checkpoint(model, d, dense, None)


def main():
    for i, name in enumerate(["llama", "qwen2", "mixtral", "mistral"]):
        torch.manual_seed(10 + i)
        model = build(name).float().eval()
        randomize(model)
        # Parameters rounded to bf16 and stored so; the reference runs them widened to f32.
        # (Only parameters: rounding the rotary `inv_freq` buffer too would change the model.)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
        model.config.dtype = "bfloat16"
        model.save_pretrained(d, state_dict=state)
        for f in ["generation_config.json"]:
            p = os.path.join(d, f)
            if os.path.exists(p):
                os.remove(p)
        save_file(reference(model), os.path.join(d, "reference.safetensors"))
        if name == "llama":
            fp8_block(copy.deepcopy(model), os.path.join(OUT, "llama_fp8"))
            awq_gemm(copy.deepcopy(model), os.path.join(OUT, "llama_awq"))
            hqq_uqff(copy.deepcopy(model), os.path.join(OUT, "llama_hqq_uqff"))
            lora(model, d)
        cfg = json.load(open(os.path.join(d, "config.json")))
        print(name, sorted(os.listdir(d)), {k: cfg.get(k) for k in ["rope_parameters", "rope_theta", "head_dim", "dtype"]})


if __name__ == "__main__":
    main()
    # --gptq-extra DIR: the output of gen_llama_gptq.py (3-bit act-order, 4-bit v2 zeros).
    gptq_references(sys.argv[sys.argv.index("--gptq-extra") + 1] if "--gptq-extra" in sys.argv else None)
