#!/usr/bin/env python3
"""Write a random ~1.1 B-parameter Llama in GGUF (f16), the shape of scripts/gen_llama_1b.py
(TinyLlama's: hidden 2048, 22 layers, 32 heads, 4 KV heads, intermediate 5632, vocab 32000),
for llama.cpp's `llama-bench` next to `examples/llama` (scripts/bench_llamacpp_e2e.sh).

Random weights: the output means nothing, the bytes and FLOPs per token are the real model's.
The vocabulary is a stand-in SentencePiece list (<unk>, <s>, </s>, 256 byte tokens, then
placeholders): llama-bench feeds random token ids and never detokenizes.

usage: PYTHONPATH=LLAMA_CPP/gguf-py gen_llama_1b_gguf.py OUT.gguf [--layers 22]
Needs numpy and llama.cpp's gguf-py (vendored in the llama-cpp-python source package).
"""
import argparse

import numpy as np

import gguf

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--layers", type=int, default=22)
a = p.parse_args()
H, I, HEADS, KV, V = 2048, 5632, 32, 4, 32000
HD = H // HEADS

rng = np.random.default_rng(0)


def weight(rows, cols):
    """[rows, cols] f16 of about +-0.02 (numpy order: GGUF stores it as ne = [cols, rows])."""
    return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)


w = gguf.GGUFWriter(a.out, "llama")
w.add_name("random-llama-1.1b")
w.add_context_length(2048)
w.add_embedding_length(H)
w.add_block_count(a.layers)
w.add_feed_forward_length(I)
w.add_head_count(HEADS)
w.add_head_count_kv(KV)
w.add_rope_dimension_count(HD)
w.add_rope_freq_base(10000.0)
w.add_layer_norm_rms_eps(1e-5)
w.add_vocab_size(V)
w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
tokens += [f"t{i}" for i in range(V - len(tokens))]
types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (V - 259)
w.add_tokenizer_model("llama")
w.add_token_list(tokens)
w.add_token_scores([0.0] * V)
w.add_token_types(types)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_unk_token_id(0)

ones = np.ones(H, dtype=np.float32)
w.add_tensor("token_embd.weight", weight(V, H))
for i in range(a.layers):
    b = f"blk.{i}."
    w.add_tensor(b + "attn_norm.weight", ones)
    w.add_tensor(b + "attn_q.weight", weight(H, H))
    w.add_tensor(b + "attn_k.weight", weight(KV * HD, H))
    w.add_tensor(b + "attn_v.weight", weight(KV * HD, H))
    w.add_tensor(b + "attn_output.weight", weight(H, H))
    w.add_tensor(b + "ffn_norm.weight", ones)
    w.add_tensor(b + "ffn_gate.weight", weight(I, H))
    w.add_tensor(b + "ffn_up.weight", weight(I, H))
    w.add_tensor(b + "ffn_down.weight", weight(H, I))
w.add_tensor("output_norm.weight", ones)
w.add_tensor("output.weight", weight(V, H))

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
