#!/usr/bin/env bash
# Prompt and decode tokens/s of examples/llama on a random 1.1 B Llama (TinyLlama's shape):
# GPTQ 4-bit g128, int4 g32 and HQQ 4-bit g64 axis 1 (both load-time) with f32 and with int8
# activations, three runs each, alternating; each run prints its pure-read bound and peak
# memory. The prompt is 64 tokens. llama.cpp on the same model: scripts/bench_llamacpp.sh --model.
# usage: scripts/bench_llama_decode.sh [WORK_DIR=/tmp/llama-1b] [THREADS=2]
# Needs python3 with numpy (scripts/gen_llama_1b.py) and ~3 GB of disk in WORK_DIR.
set -euo pipefail
work=${1:-/tmp/llama-1b}
threads=${2:-2}
cd "$(dirname "$0")/.."
[ -f "$work/gptq/config.json" ] || python3 scripts/gen_llama_1b.py "$work/gptq" --format gptq
[ -f "$work/bf16/config.json" ] || python3 scripts/gen_llama_1b.py "$work/bf16" --format bf16
cargo build --release --example llama
bin=${CARGO_TARGET_DIR:-target}/release/examples/llama
prompt=$(seq -s, 1 64)
for i in 1 2 3; do
    for act in f32 int8; do
        echo "== GPTQ 4-bit g128, $act activations, run $i"
        "$bin" "$work/gptq" --tokens "$prompt" --new 33 --out "$work/out.safetensors" --threads "$threads" \
            --activations "$act" | head -3
        for isq in int4 hqq-4bit-g64-axis1; do
            echo "== --isq $isq, $act activations, run $i"
            "$bin" "$work/bf16" --tokens "$prompt" --new 33 --out "$work/out.safetensors" --threads "$threads" \
                --isq "$isq" --activations "$act" | head -3
        done
    done
done
