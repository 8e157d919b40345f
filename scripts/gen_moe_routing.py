"""Generate tests/fixtures/moe/routing.safetensors: router logits [33, 8] and the experts and
weights transformers' Mixtral (softmax in f32, top-2, renormalised) and Qwen2-MoE (top-4,
`norm_topk_prob` off and on) routing gives them, through the same torch ops.

Run: python scripts/gen_moe_routing.py   (torch, safetensors)
"""

import torch
from safetensors.torch import save_file

torch.manual_seed(1)
logits = (torch.randn(33, 8) * 2).contiguous()
out = {"logits": logits}
for name, renorm, k in [("mixtral", True, 2), ("qwen_plain", False, 4), ("qwen_norm", True, 4)]:
    w = torch.softmax(logits, dim=1, dtype=torch.float)
    w, ids = torch.topk(w, k, dim=-1)
    if renorm:
        w = w / w.sum(dim=-1, keepdim=True)
    out[f"{name}.ids"] = ids.to(torch.int64).contiguous()
    out[f"{name}.weights"] = w.contiguous()
save_file(out, "tests/fixtures/moe/routing.safetensors")
