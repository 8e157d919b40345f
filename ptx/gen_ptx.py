#!/usr/bin/env python3
"""Compile ptx/*.cu to ptx/*.ptx with NVRTC from the PyPI wheels (no CUDA toolkit needed).

Pinned so the committed PTX is `.version 8.4` (loads on drivers >= R550) for `compute_80`
(sm_80 and newer JIT it):
    python3 -m venv .venv-cuda
    .venv-cuda/bin/pip install nvidia-cuda-nvrtc-cu12==12.4.127 nvidia-cuda-runtime-cu12==12.4.127 \
        nvidia-cuda-nvcc-cu12==12.4.131
usage:
    .venv-cuda/bin/python ptx/gen_ptx.py            # regenerate every ptx/*.ptx
    .venv-cuda/bin/python ptx/gen_ptx.py --check    # exit 1 if a committed .ptx is stale
                                                    # (then run ptxas on each for sm_80, sm_90)
"""
import argparse, ctypes, importlib.util, os, pathlib, subprocess, sys, tempfile

ARCH = "compute_80"
OPTIONS = ["--std=c++17", "-default-device", "--fmad=false"]
HERE = pathlib.Path(__file__).resolve().parent


def pkg_dir(name):  # nvidia.* are namespace packages: use the search path, not __file__
    return pathlib.Path(list(importlib.util.find_spec(name).submodule_search_locations)[0])


def compile_ptx(nv, src: pathlib.Path) -> bytes:
    inc = pkg_dir("nvidia.cuda_runtime") / "include"
    prog = ctypes.c_void_p()
    check(nv, nv.nvrtcCreateProgram(ctypes.byref(prog), src.read_bytes(), src.name.encode(), 0, None, None), "create")
    opts = [f"--gpu-architecture={ARCH}", f"-I{inc}", f"-I{HERE}"] + OPTIONS
    copts = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = nv.nvrtcCompileProgram(prog, len(opts), copts)
    n = ctypes.c_size_t()
    nv.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value)
    nv.nvrtcGetProgramLog(prog, log)
    if log.value.strip():
        sys.stderr.write(f"{src.name}: {log.value.decode()}\n")
    check(nv, rc, f"compile {src.name}")
    check(nv, nv.nvrtcGetPTXSize(prog, ctypes.byref(n)), "ptx size")
    buf = ctypes.create_string_buffer(n.value)
    check(nv, nv.nvrtcGetPTX(prog, buf), "get ptx")
    nv.nvrtcDestroyProgram(ctypes.byref(prog))
    return buf.value


def check(nv, rc, what):
    if rc != 0:
        nv.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise SystemExit(f"NVRTC {what}: {nv.nvrtcGetErrorString(rc).decode()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="compare with the committed PTX and run ptxas")
    args = ap.parse_args()
    nv = ctypes.CDLL(str(pkg_dir("nvidia.cuda_nvrtc") / "lib" / "libnvrtc.so.12"))
    major, minor = ctypes.c_int(), ctypes.c_int()
    check(nv, nv.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "version")
    if (major.value, minor.value) != (12, 4):
        raise SystemExit(f"NVRTC {major.value}.{minor.value} found; pin 12.4 (see the docstring)")
    stale = []
    for src in sorted(HERE.glob("*.cu")):
        ptx = compile_ptx(nv, src)
        dst = src.with_suffix(".ptx")
        if args.check:
            if not dst.exists() or dst.read_bytes() != ptx:
                stale.append(dst.name)
            ptxas = pkg_dir("nvidia.cuda_nvcc") / "bin" / "ptxas"
            for sm in ("sm_80", "sm_90"):
                with tempfile.TemporaryDirectory() as tmp:
                    subprocess.run([str(ptxas), f"-arch={sm}", str(dst), "-o", os.path.join(tmp, "o.cubin")], check=True)
            print(f"{dst.name}: ptxas ok for sm_80, sm_90")
        else:
            dst.write_bytes(ptx)
            print(f"NVRTC {major.value}.{minor.value}: wrote {dst.name} ({len(ptx)} bytes) for {ARCH}")
    if stale:
        raise SystemExit(f"stale PTX (run ptx/gen_ptx.py): {', '.join(stale)}")


if __name__ == "__main__":
    main()
