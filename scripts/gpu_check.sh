#!/usr/bin/env bash
# The CUDA checks in two steps, for a GPU machine that has the NVIDIA driver but no Rust:
#
#   scripts/gpu_check.sh build   # here: test + bench binaries with --features cuda -> gpu-bin/
#   scripts/gpu_check.sh run     # there: GPU parity tests, then the CUDA benches (CUDA rows
#                                # only, short criterion runs); logs and table.md (the
#                                # BENCHMARKS.md tables, scripts/gpu_table.py) under ${OUT:-gpu-out}/
#
# gpu-bin/ is git-ignored; carry it to the GPU machine with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."

exe() {  # the executable of target $1 among cargo's JSON messages on stdin
    python3 -c 'import json, sys
paths = [m["executable"] for m in map(json.loads, sys.stdin)
         if m.get("executable") and m["target"]["name"] == sys.argv[1]]
print(paths[-1])' "$1"
}

case "${1:-}" in
build)
    mkdir -p gpu-bin
    cp "$(cargo test --release --features cuda --test cuda_parity --no-run --message-format=json | exe cuda_parity)" \
        gpu-bin/cuda_parity
    cp "$(cargo bench --features cuda --bench dequant --no-run --message-format=json | exe dequant)" gpu-bin/dequant
    strip gpu-bin/cuda_parity gpu-bin/dequant
    ls -l gpu-bin
    ;;
run)
    out="${OUT:-gpu-out}"
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,memory.total,clocks.max.memory,driver_version --format=csv | tee "$out/gpu.txt" || true
    # Parity first: a kernel that is wrong is not worth timing. GPU time is scarce, so a
    # failure still lets the benches run (for the kernels that passed) and fails the script after.
    parity=0
    QK_REQUIRE_GPU=1 gpu-bin/cuda_parity --test-threads=1 2>&1 | tee "$out/parity.txt" || parity=$?
    # "cuda" selects the CUDA rows (and the device memcpy baseline) of benches/dequant.rs.
    # Short runs: a kernel call is 5-500 µs, so 1 s gives criterion thousands of iterations.
    gpu-bin/dequant --bench cuda --warm-up-time 0.5 --measurement-time 1 --noplot 2>&1 | tee "$out/bench.txt"
    # The BENCHMARKS.md tables (ratios within this run), where the machine has python3.
    python3 scripts/gpu_table.py "$out/bench.txt" 2>&1 | tee "$out/table.md" || true
    if [ "$parity" -ne 0 ]; then
        echo "GPU parity tests FAILED (exit $parity): see $out/parity.txt; do not report those kernels' times" >&2
        exit "$parity"
    fi
    ;;
*)
    echo "usage: $0 build|run" >&2
    exit 2
    ;;
esac
