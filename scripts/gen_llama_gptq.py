#!/usr/bin/env python3
"""Write two more tiny GPTQ Llamas for the runtime example's tests, through the project's GPTQ
vector generator (`gen_gptq.py` of the project's shared upstream vectors, which calls auto-gptq
0.7.1's GPTQ + v1 packer and GPTQModel 7.7's v1->v2 conversion and dequantization; see its
MANIFEST for the environment):

* `tiny-llama-gptq-3bit/`: 3-bit, group 32, asym, act-order, sharded with an index (v1 zeros);
* `tiny-llama-gptq-4bit-v2/`: 4-bit, group 32, asym, no act-order, single file, zeros stored
  as GPTQModel holds them (`checkpoint_format: "gptq_v2"`).

usage: gen_llama_gptq.py PATH/TO/gen_gptq.py OUT_DIR
Then copy each OUT_DIR/<name>/ (without expected.safetensors and checks.json) to
tests/fixtures/llama/gptq/ and run gen_llama_fixtures.py for their reference logits.
"""
import importlib.util
import json
import os
import sys

spec = importlib.util.spec_from_file_location("gen_gptq", sys.argv[1])
gg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gg)
gg.OUT = sys.argv[2]

gg.gen_tiny("tiny-llama-gptq-3bit", bits=3, group_size=32, sym=False, desc_act=True, sharded=True, seed=13)

v1_tensors = gg.case_tensors


def v2_tensors(*args):
    t, checks = v1_tensors(*args)
    return {**t, "qzeros": t["qzeros_v2"]}, checks


gg.case_tensors = v2_tensors
gg.gen_tiny("tiny-llama-gptq-4bit-v2", bits=4, group_size=32, sym=False, desc_act=False, sharded=False, seed=14)
path = os.path.join(gg.OUT, "tiny-llama-gptq-4bit-v2", "quantize_config.json")
qcfg = json.load(open(path))
qcfg["checkpoint_format"] = "gptq_v2"
json.dump(qcfg, open(path, "w"), indent=2)
