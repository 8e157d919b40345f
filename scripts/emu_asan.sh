#!/usr/bin/env bash
# The emulated CUDA kernels (cuda-emu tests) under AddressSanitizer and UBSan's alignment check:
# any out-of-bounds read or write by a kernel on the tests' buffers, or a vector access off its
# alignment, aborts with a report. Rebuilds only the cuda-emu crate
# (QK_EMU_ASAN, see cuda-emu/build.rs); a plain `cargo test` afterwards rebuilds it without.
#
#   scripts/emu_asan.sh [CARGO TEST ARGS]   # e.g. --all-features: the feature set of the
#                                           # `cargo test` run before it, so nothing else rebuilds
set -euo pipefail
cd "$(dirname "$0")/.."
asan="$(gcc -print-file-name=libasan.so)"
if [ ! -e "$asan" ]; then
    echo "libasan not found (Debian: apt-get install libasan8)" >&2
    exit 1
fi
# The whole workspace's test build (as `cargo test` resolves its features, so nothing but
# cuda-emu rebuilds), then cuda-emu's test executables from it.
exes="$(QK_EMU_ASAN=1 cargo test "$@" --no-run --message-format=json | python3 -c '
import json, sys
for m in map(json.loads, sys.stdin):
    if m.get("executable") and m["profile"]["test"] and "/cuda-emu/" in m["target"]["src_path"]:
        print(m["executable"])')"
for exe in $exes; do
    echo "== $(basename "$exe")"
    # The runtime must be loaded first (the test binaries are Rust executables linked with -lasan).
    LD_PRELOAD="$asan" ASAN_OPTIONS=detect_leaks=0 "$exe" -q
done
