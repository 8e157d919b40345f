#!/usr/bin/env python3
"""Static cost of the fused GEMV / GEMM entries: SASS instructions per weight in each entry's hot
loop, for sm_90 (ptxas from the pinned nvcc wheel, cuobjdump and nvdisasm from the
`nvidia-cuda-cuobjdump` and `nvidia-cuda-nvdisasm` wheels). No GPU needed; what a GPU then measures is in BENCHMARKS.md.

    .venv-cuda/bin/pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
    .venv-cuda/bin/python ptx/sass_cost.py [--arch sm_90] [ENTRY_SUBSTRING ...]

The hot loop: of the loops in the entry's SASS (a backward branch and its target), the one whose
hot path (head to back-edge through the branches that lead to the most math, HMMA in a GEMM and
FFMA elsewhere, of those the shortest) has the most math; the cost is the instructions along
that path: the column skeleton's fast path (a block of rows in one group), the row skeleton's
chunk loop, the GEMM's k-step. For the group-scaled GEMM the last column is the same loop's
longest path: the k-step that also ends a group (its scales and zero points applied).
The weights one pass of it covers per thread are given per entry below (a rounded-GEMM lane
covers NT * 128 / 32 = 16 weights per k-step, a group-scaled one 8 inputs of NT outputs: 64 at
16 rows, 32 at 32 rows, 64 for AWQ), so the cost is per weight and per pass over the weights, whatever the batch (a
batch-8 entry does 8 multiply-adds per weight in that pass).
"""
import argparse, importlib.util, os, pathlib, re, subprocess, sys, tempfile

HERE = pathlib.Path(__file__).resolve().parent


def pkg_dir(name):
    return pathlib.Path(list(importlib.util.find_spec(name).submodule_search_locations)[0])


def tool(name, env):
    if os.environ.get(env):
        return os.environ[env]
    for d in pkg_dir("nvidia").rglob(name):
        if d.is_file():
            return str(d)
    raise SystemExit(f"{name} not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm, or set {env}")


# Weights a thread covers per pass of the hot loop, by entry name.
def weights_per_pass(name):
    w = weights_per_chunk(name)
    # Batch-1 GEMVs at 4 and 8 bits keep two chunks in flight (Dec::AHEAD, qk_col_depth): their
    # loop is unrolled over both.
    if w is not None and name.endswith("_b1") and re.match(r"(hqq|gptq)_gemv_[48]b_|awq_|fp8_|int8_|int4_", name):
        return 2 * w
    return w


def weights_per_chunk(name):
    m = re.match(r"hqq_gemv_(\d)b_", name)
    if m:
        bits = int(m.group(1))
        per = {8: 8, 4: 16, 3: 20, 2: 32, 1: 64}[bits]  # an 8-byte chunk
        return 2 * per if name.endswith("_b1") else per  # batch 1 takes 16-byte chunks
    m = re.match(r"gptq_gemv_(\d)b_", name)
    if m:
        return {2: 64, 3: 128, 4: 32, 8: 16}[int(m.group(1))]
    if name.startswith("awq_gemv"):  # a 4-row block of one word column
        return 32
    # 8-byte chunks, 16-byte ones at batch 1 (where the segments allow; the hot loop is that one)
    if name.startswith(("fp8_gemv", "int8_gemv")):
        return 16 if name.endswith("_b1") else 8
    if name.startswith("int4_gemv"):
        return 32 if name.endswith("_b1") else 16
    if "_gemm_" in name:
        return 16
    if "_gemmg_" in name:  # a 32-input chunk: 8 codes of each of NT outputs (qk_gemmg_nt; AWQ 8)
        per = 64 if name.startswith("awq") or name.endswith("_m1") else 32
        return 2 * per if name.endswith("_m1") else per  # m1's loop: qk_gemmg_depth = 2 chunks
    if "_gemmw_" in name:  # the wide GEMM's chunk: 8 codes of NT = 4 outputs (AWQ 8), for 64 rows (AWQ 32)
        return 64 if name.startswith("awq") else 32
    return None


LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)([^;]*);")


def parse(sass):
    """{function: [(address, opcode, operands)]}"""
    funcs, cur = {}, None
    for line in sass.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            cur = funcs.setdefault(m.group(1), [])
            continue
        m = LINE.search(line)
        if m and cur is not None:
            # The predicate (if any) leads the operands, so a conditional branch reads "@P0 ...".
            cur.append((int(m.group(1), 16), m.group(3), (m.group(2) or "") + m.group(4)))
    return funcs


def hot_loop(instrs, longest=False):
    """(instructions, math) along the hot path of the entry's hot loop, or None; `longest`: the
    path with the most instructions instead of the fewest (of those with the most math), e.g. the
    group-scaled GEMM's k-step that also ends a group.

    Basic blocks split at branch targets and after branches; a loop is a backward branch and its
    target (the head). Along the loop's forward edges only (a DAG: nested loops are walked once),
    the path from the head to the back-edge with the most math (HMMA in a GEMM, else FFMA; then
    the fewest instructions) is its hot path; of all loops, the one whose hot path has the most
    math."""
    addrs = [a for a, _, _ in instrs]
    index = {a: i for i, a in enumerate(addrs)}

    def target(args):
        t = re.search(r"0x([0-9a-f]+)", args)
        return int(t.group(1), 16) if t else None

    leaders = {0}
    for i, (a, op, args) in enumerate(instrs):
        if op.startswith("BRA"):
            t = target(args)
            if t in index:
                leaders.add(index[t])
            leaders.add(i + 1)
    starts = sorted(l for l in leaders if l < len(instrs))
    block_of = {}
    blocks = []
    for bi, st in enumerate(starts):
        end = starts[bi + 1] if bi + 1 < len(starts) else len(instrs)
        blocks.append((st, end))
        for i in range(st, end):
            block_of[i] = bi

    # Math: the tensor-core MMAs of a GEMM (its FFMAs apply group scales outside the k-step),
    # else the FFMAs.
    math_ops = ("HMMA",) if any(op.startswith("HMMA") for _, op, _ in instrs) else ("FFMA",)

    def cost(bi, sign):  # (math, sign * instructions): the most math, then the fewest (sign -1)
        st, end = blocks[bi]
        ops = [instrs[i][1] for i in range(st, end)]
        return sum(1 for o in ops if o.startswith(math_ops)), sign * len(ops)

    loops = []
    for i, (a, op, args) in enumerate(instrs):
        t = target(args) if op.startswith("BRA") else None
        if t is not None and t <= a and t in index:
            loops.append((block_of[index[t]], block_of[i]))

    def path(head, tail, sign):  # the best (math, sign * count) path head -> tail, forward edges
        # Loops nested in this one are left out: a rare path's loop (the group-scaled GEMM's
        # scaled re-run of a group) is not the hot loop's work.
        inner = {b for h, t in loops if head <= h and t <= tail and (h, t) != (head, tail) for b in range(h, t + 1)}
        dp = {head: cost(head, sign)}
        for bi in range(head, tail + 1):
            if bi not in dp or bi in inner:
                continue
            st, end = blocks[bi]
            last_a, last_op, last_args = instrs[end - 1]
            succ = []
            # BRA.DIV (taken only when the warp has diverged) falls through like a predicated branch.
            uncond = (last_op == "BRA" and not re.match(r"@", last_args or "")) or last_op == "EXIT"
            if last_op.startswith("BRA"):
                tt = target(last_args)
                if tt is not None and tt > last_a and tt in index:
                    succ.append(block_of[index[tt]])
            if not uncond or bi == tail:
                succ.append(bi + 1)
            for sb in succ:
                if sb > tail or sb in inner:
                    continue
                m, n = cost(sb, sign)
                cand = (dp[bi][0] + m, dp[bi][1] + n)
                if sb not in dp or cand > dp[sb]:
                    dp[sb] = cand
        return dp.get(tail)

    best, where = None, None
    for head, tail in loops:
        p = path(head, tail, -1)
        if p is not None and (best is None or p > best):
            best, where = p, (head, tail)
    if best is None:
        return None
    if longest:
        best = path(*where, 1)
    math, n = best
    return abs(n), math


def no_rare_ptx(ptx, tmp):
    """The PTX of ptx's source compiled with QK_COST_NO_RARE (gen_ptx.py's NVRTC and options)."""
    import ctypes
    import gen_ptx

    nv = ctypes.CDLL(str(pkg_dir("nvidia.cuda_nvrtc") / "lib" / "libnvrtc.so.12"))
    gen_ptx.OPTIONS = gen_ptx.OPTIONS + ["-DQK_COST_NO_RARE"] if "-DQK_COST_NO_RARE" not in gen_ptx.OPTIONS else gen_ptx.OPTIONS
    out = pathlib.Path(tmp) / ptx.name
    out.write_bytes(gen_ptx.compile_ptx(nv, ptx.with_suffix(".cu")))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("filters", nargs="*", default=["_gemv_", "_gemm_", "_gemmg_", "_gemmw_"])
    ap.add_argument("--ptx", action="append", help="PTX files to read (default: ptx/*.ptx)")
    ap.add_argument(
        "--no-rare",
        action="store_true",
        help="compile each PTX file's source with QK_COST_NO_RARE (gemm.cuh's QK_RARE branches, x beyond "
        "f16, dropped) instead of reading the committed PTX: the wide GEMM's rare paths hold mma, so the walk "
        "would take them for the hot path",
    )
    args = ap.parse_args()
    ptxas = str(pkg_dir("nvidia.cuda_nvcc") / "bin" / "ptxas")
    cuobjdump = tool("cuobjdump", "CUOBJDUMP")
    print("| entry | SASS in the hot loop | FFMA/HMMA | weights / pass | SASS / weight | k-step ending a group |")
    print("|---|---:|---:|---:|---:|---:|")
    for ptx in sorted(pathlib.Path(p) for p in args.ptx) if args.ptx else sorted(HERE.glob("*.ptx")):
        with tempfile.TemporaryDirectory() as tmp:
            if args.no_rare:
                ptx = no_rare_ptx(ptx, tmp)
            cubin = os.path.join(tmp, "k.cubin")
            subprocess.run([ptxas, f"-arch={args.arch}", str(ptx), "-o", cubin], check=True)
            env = dict(os.environ, PATH=f"{pathlib.Path(cuobjdump).parent}:{os.environ.get('PATH', '')}")
            sass = subprocess.run([cuobjdump, "-sass", cubin], check=True, capture_output=True, text=True, env=env).stdout
        for name, instrs in sorted(parse(sass).items()):
            if not any(f in name for f in args.filters) or not re.search(r"_(b1|b8|m1|m2|m4)$|_gemmw_", name):
                continue
            w = weights_per_pass(name)
            loop = hot_loop(instrs)
            if w is None or loop is None:
                continue
            n, math = loop
            # The group-scaled GEMM applies scales and zero points when a group ends (every
            # group / 32 k-steps): that k-step's longest path.
            end = hot_loop(instrs, longest=True)[0] if "_gemmg_" in name or "_gemmw_" in name else None
            print(f"| {name} | {n} | {math} | {w} | {n / w:.1f} | {end if end is not None else '-'} |")


if __name__ == "__main__":
    main()
