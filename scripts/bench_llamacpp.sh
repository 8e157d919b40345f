#!/usr/bin/env bash
# Peer benchmark: llama.cpp's CPU matrix multiply (ggml's CPU backend) on Q4_0 / Q4_K weights.
# Not run by CI: it downloads and builds the peer only when someone runs it.
#
# usage: bash scripts/bench_llamacpp.sh [--build-only] [BENCH OPTIONS...]
#   BENCH OPTIONS go to scripts/peer/ggml_mul_mat.c, e.g. --quick, --types q4_0, --batches 1,8,
#   --shapes 4096x4096, --buffers CPU_REPACK, --threads 2, --min-mib 1024 (see --help).
#        bash scripts/bench_llamacpp.sh --model [THREADS=2]
#   End to end instead: llama.cpp's `llama-bench` (64-token prompt, 32 decoded tokens) on the
#   random 1.1 B Llama of scripts/gen_llama_1b.py written as GGUF (scripts/peer/gen_llama_1b_gguf.py)
#   and quantized with `llama-quantize --pure` to Q4_0 and Q4_K (embeddings and output f16, as
#   examples/llama keeps them); compare with scripts/bench_llama_decode.sh. ~4 GB in QK_PEER_DIR.
# env: QK_PEER_DIR  cache and build dir (default /tmp/qk-peer, ~450 MB after the build)
#      QK_PEER_JOBS build parallelism (default 2)
#
# Steps: (a) `pip download` the pinned llama-cpp-python source package (it vendors llama.cpp under
# vendor/llama.cpp) and check its sha256; (b) get cmake (PATH, else pip into a venv in QK_PEER_DIR,
# else apt-get); (c) patch ggml's AMX tile-config init (compiler barrier, see below); (d) build
# only ggml with the CPU backend, native, Release; (e) build scripts/peer/ggml_mul_mat.c against it
# and run it. JSON records on stdout, progress and a table on stderr.
set -euo pipefail

LCP_VERSION=0.3.36   # llama-cpp-python; vendors llama.cpp 0c1e570 (ggml 0.25.3)
# sha256 of the sdist (update both together)
LCP_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

peer_dir=${QK_PEER_DIR:-/tmp/qk-peer}
jobs=${QK_PEER_JOBS:-2}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "bench_llamacpp: error: $*" >&2; exit 1; }
log() { echo "bench_llamacpp: $*" >&2; }

build_only=0
model=0
args=()
for a in "$@"; do
    case "$a" in
        --build-only) build_only=1 ;;
        --model) model=1 ;;
        *) args+=("$a") ;;
    esac
done

command -v python3 >/dev/null || die "python3 not found (needed for pip)"
python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip does not work; install pip (apt-get install -y python3-pip)"
command -v cc >/dev/null || command -v gcc >/dev/null || die "no C compiler (apt-get install -y build-essential)"
command -v c++ >/dev/null || command -v g++ >/dev/null || die "no C++ compiler (apt-get install -y g++)"
CC=${CC:-$(command -v cc || command -v gcc)}

mkdir -p "$peer_dir"
sdist="$peer_dir/llama_cpp_python-$LCP_VERSION.tar.gz"
src="$peer_dir/llama_cpp_python-$LCP_VERSION"
ggml_src="$src/vendor/llama.cpp/ggml"

# (a) source package. `--no-binary llama-cpp-python` rather than `:all:`: with `:all:` pip also
# builds the sdist's build requirements (cmake, ninja) from source just to read its metadata.
if [ ! -f "$sdist" ]; then
    log "downloading llama-cpp-python==$LCP_VERSION (source package) into $peer_dir"
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$LCP_VERSION" -d "$peer_dir" >&2 \
        || die "pip download of llama-cpp-python==$LCP_VERSION failed (is PyPI reachable?)"
    [ -f "$sdist" ] || die "pip did not leave $sdist (got: $(ls "$peer_dir"))"
fi
got=$(sha256sum "$sdist" | cut -d' ' -f1)
[ "$got" = "$LCP_SHA256" ] || die "sha256 of $sdist is $got, expected $LCP_SHA256 (delete it to re-download)"
if [ ! -f "$ggml_src/CMakeLists.txt" ]; then
    log "unpacking $sdist"
    tar -xzf "$sdist" -C "$peer_dir" || die "could not unpack $sdist"
    [ -f "$ggml_src/CMakeLists.txt" ] || die "$sdist has no vendor/llama.cpp/ggml"
fi
[ -d "$ggml_src/src/ggml-cpu/amx" ] || die "this llama.cpp has no ggml/src/ggml-cpu/amx"
grep -q ggml_backend_cpu_get_extra_buffer_types "$ggml_src/src/ggml-cpu/ggml-cpu.cpp" \
    || die "this llama.cpp has no CPU extra buffer types"

# (b) cmake
cmake_bin=""
if command -v cmake >/dev/null && cmake --version >/dev/null 2>&1; then
    cmake_bin=$(command -v cmake)
elif [ -x "$peer_dir/venv/bin/cmake" ]; then
    cmake_bin="$peer_dir/venv/bin/cmake"
else
    log "cmake not found: installing it with pip into $peer_dir/venv"
    if python3 -m venv "$peer_dir/venv" >&2 && "$peer_dir/venv/bin/python" -m pip install --quiet "cmake>=3.21,<5" >&2; then
        cmake_bin="$peer_dir/venv/bin/cmake"
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "pip install cmake failed; trying apt-get"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake; } >&2 \
            || die "apt-get install cmake failed"
        cmake_bin=$(command -v cmake)
    else
        die "could not install cmake (pip failed and apt-get is not available as root)"
    fi
fi
"$cmake_bin" --version >/dev/null 2>&1 || die "$cmake_bin does not run"
log "cmake: $cmake_bin ($("$cmake_bin" --version | head -1))"

# (c) With GCC 12, ggml's AMX path crashes at batch > 1: the compiler moves the stores that fill
# the tile config past _tile_loadconfig. A compiler barrier before the load fixes it. Idempotent.
# (Only compiled in when the compiler targets AMX, i.e. -march=native on a CPU that exposes it.)
mmq="$ggml_src/src/ggml-cpu/amx/mmq.cpp"
if ! grep -q 'qk-peer: compiler barrier' "$mmq"; then
    [ "$(grep -c '^[[:space:]]*_tile_loadconfig(&tc);' "$mmq")" = 1 ] \
        || die "AMX patch: expected one '_tile_loadconfig(&tc);' in $mmq"
    sed -i 's|^\([[:space:]]*\)_tile_loadconfig(&tc);|\1__asm__ __volatile__("" ::: "memory"); // qk-peer: compiler barrier (GCC 12)\n\1_tile_loadconfig(\&tc);|' "$mmq"
    grep -q 'qk-peer: compiler barrier' "$mmq" || die "AMX patch did not apply to $mmq"
    log "patched $mmq (compiler barrier before _tile_loadconfig)"
fi

# The common llama.cpp configuration: static, native CPU backend, no GPU backends, no network.
llama_cmake_flags=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF
    -DGGML_NATIVE=ON -DGGML_CPU=ON -DGGML_LLAMAFILE=ON -DGGML_CPU_REPACK=ON
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF -DGGML_SYCL=OFF
    -DGGML_OPENCL=OFF -DGGML_WEBGPU=OFF -DGGML_RPC=OFF -DGGML_BLAS=OFF
    -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DGGML_CCACHE=OFF)

# cmake_build DIR TAG "TARGETS" FLAGS...: configure llama.cpp in DIR once (the common flags, then
# FLAGS), build TARGETS; logs in QK_PEER_DIR/cmake-{configure,build}TAG.log.
cmake_build() {
    local dir=$1 tag=$2 targets=$3 t0
    shift 3
    if [ ! -f "$dir/CMakeCache.txt" ]; then
        log "configuring llama.cpp in $dir"
        "$cmake_bin" -S "$src/vendor/llama.cpp" -B "$dir" "${llama_cmake_flags[@]}" "$@" \
            >"$peer_dir/cmake-configure$tag.log" 2>&1 \
            || { tail -30 "$peer_dir/cmake-configure$tag.log" >&2; rm -f "$dir/CMakeCache.txt"
                 die "cmake configure failed (log: $peer_dir/cmake-configure$tag.log)"; }
    fi
    t0=$(date +%s)
    # shellcheck disable=SC2086 # TARGETS is a list
    "$cmake_bin" --build "$dir" -j "$jobs" --target $targets >"$peer_dir/cmake-build$tag.log" 2>&1 \
        || { tail -30 "$peer_dir/cmake-build$tag.log" >&2; die "build failed (log: $peer_dir/cmake-build$tag.log)"; }
    log "build of $targets: $(( $(date +%s) - t0 )) s"
}

# --model: llama.cpp's own tools on a whole model, then exit.
if [ "$model" = 1 ]; then
    threads=${args[0]:-2}
    build="$peer_dir/build-llama"
    log "building llama-bench and llama-quantize (-j$jobs; ~5 min on 2 cores the first time)"
    cmake_build "$build" -llama "llama-bench llama-quantize" -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON
    bench_bin=$(find "$build" -name llama-bench -type f -perm -u+x -print -quit)
    quant_bin=$(find "$build" -name llama-quantize -type f -perm -u+x -print -quit)
    [ -n "$bench_bin" ] && [ -n "$quant_bin" ] || die "llama-bench / llama-quantize not found under $build"
    [ "$build_only" = 1 ] && { log "built $bench_bin"; exit 0; }
    py=python3
    if ! python3 -c 'import numpy' 2>/dev/null; then
        [ -x "$peer_dir/venv/bin/python" ] || python3 -m venv "$peer_dir/venv" >&2
        "$peer_dir/venv/bin/python" -c 'import numpy' 2>/dev/null \
            || "$peer_dir/venv/bin/python" -m pip install --quiet numpy >&2 || die "pip install numpy failed"
        py="$peer_dir/venv/bin/python"
    fi
    gguf_dir="$peer_dir/llama-1b"
    mkdir -p "$gguf_dir"
    if [ ! -f "$gguf_dir/f16.gguf" ]; then
        log "writing the random 1.1 B Llama (f16 GGUF)"
        PYTHONPATH="$src/vendor/llama.cpp/gguf-py" "$py" "$repo/scripts/peer/gen_llama_1b_gguf.py" \
            "$gguf_dir/f16.gguf.part" >&2 || die "gen_llama_1b_gguf.py failed"
        mv "$gguf_dir/f16.gguf.part" "$gguf_dir/f16.gguf"
    fi
    for t in Q4_0 Q4_K; do
        if [ ! -f "$gguf_dir/$t.gguf" ]; then
            log "llama-quantize --pure $t"
            "$quant_bin" --pure --output-tensor-type f16 --token-embedding-type f16 \
                "$gguf_dir/f16.gguf" "$gguf_dir/$t.gguf.part" "$t" >"$gguf_dir/quantize-$t.log" 2>&1 \
                || { tail -20 "$gguf_dir/quantize-$t.log" >&2; die "llama-quantize $t failed"; }
            mv "$gguf_dir/$t.gguf.part" "$gguf_dir/$t.gguf"
        fi
    done
    if read -r l1 _ < /proc/loadavg 2>/dev/null; then log "load average before the run: $l1"; fi
    exec "$bench_bin" -m "$gguf_dir/Q4_0.gguf,$gguf_dir/Q4_K.gguf" -t "$threads" -p 64 -n 32 -r 5 -o md
fi

# (d) ggml only, CPU backend only, static, native. Configured from llama.cpp's top level (the sdist
# lacks ggml/ggml.pc.in, which a standalone ggml configure needs) with everything llama-side off,
# and only the ggml targets built. GGML_LLAMAFILE=ON is llama.cpp's default; OpenMP as by default.
build="$peer_dir/build-ggml"
log "building ggml (-j$jobs)"
cmake_build "$build" "" "ggml ggml-cpu ggml-base" -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TOOLS=OFF

libs=()
for l in ggml ggml-cpu ggml-base; do
    f=$(find "$build" -name "lib$l.a" -print -quit)
    [ -n "$f" ] || die "lib$l.a not found under $build"
    libs+=("$f")
done
openmp=()
grep -q '^GGML_OPENMP:BOOL=ON' "$build/CMakeCache.txt" && openmp=(-fopenmp)

# (e) our bench program
bench="$peer_dir/ggml_mul_mat"
bench_src="$repo/scripts/peer/ggml_mul_mat.c"
stale=0
[ -x "$bench" ] || stale=1
for f in "$bench_src" "${libs[@]}"; do [ "$f" -nt "$bench" ] && stale=1; done
if [ "$stale" = 1 ]; then
    log "compiling $bench_src"
    "$CC" -O2 -march=native -std=c11 -Wall -Wextra -Wno-unused-parameter \
        -I "$ggml_src/include" "$bench_src" -o "$bench" \
        "${libs[@]}" "${openmp[@]+"${openmp[@]}"}" -lstdc++ -lm -lpthread \
        || die "compiling $bench_src failed"
fi
[ "$build_only" = 1 ] && { log "built $bench"; exit 0; }

if read -r l1 _ < /proc/loadavg 2>/dev/null; then
    log "load average before the run: $l1 (the run uses its own threads; other load skews the numbers)"
fi
exec "$bench" --version "llama-cpp-python $LCP_VERSION" "${args[@]+"${args[@]}"}"
