#!/usr/bin/env python3
"""Print the README's dequant table from criterion's results (target/criterion).

usage: cargo bench --bench dequant && python3 scripts/bench_table.py
Each dequant row is compared with the memcpy of the same group run with the same threading
(serial vs serial, threaded vs threaded); GB/s = (bytes read + bytes written) / mean time.
"""
import json, pathlib, sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
rows = {}
for bench in root.glob("*/*/*/new/benchmark.json"):
    meta = json.loads(bench.read_text())
    est = json.loads((bench.parent / "estimates.json").read_text())
    ns = est["mean"]["point_estimate"]
    nbytes = (meta.get("throughput") or {}).get("Bytes")
    if not nbytes:
        continue
    group, func, label = meta["group_id"], meta["function_id"], meta.get("value_str")
    rows.setdefault(group, {})[(func, label)] = (ns, nbytes / ns)  # bytes/ns == GB/s

for group in sorted(rows):
    g = rows[group]
    print(f"\n**{group}**\n")
    print("| kernel | threads | time (ms) | GB/s | % of memcpy (same threads) |")
    print("|---|---|---:|---:|---:|")
    for (func, label), (ns, gbps) in sorted(g.items(), key=lambda kv: (kv[0][0] != "memcpy", kv[0])):
        base = g.get(("memcpy", label))
        pct = f"{100 * gbps / base[1]:.0f}%" if base and func != "memcpy" else "-"
        print(f"| {func} | {label} | {ns / 1e6:.3f} | {gbps:.1f} | {pct} |")
