#!/usr/bin/env bash
# Decode tokens/s of examples/llama on a random 1.1 B Llama (TinyLlama's shape), GPTQ 4-bit
# and HQQ 4-bit (load-time), three runs each, alternating; each run prints its pure-read bound.
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
for i in 1 2 3; do
    echo "== GPTQ 4-bit g128, run $i"
    "$bin" "$work/gptq" --tokens 1,2,3,4 --new 33 --out "$work/out.safetensors" --threads "$threads" | head -2
    echo "== HQQ 4-bit g64 (--isq hqq4), run $i"
    "$bin" "$work/bf16" --tokens 1,2,3,4 --new 33 --out "$work/out.safetensors" --threads "$threads" --isq hqq4 | head -2
done
