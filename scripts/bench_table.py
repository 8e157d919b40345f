#!/usr/bin/env python3
"""Write one BENCHMARKS.md section from criterion's results.

usage:
  cargo bench --bench dequant
  python3 scripts/bench_table.py --title "HQQ dequantization" --command "cargo bench --bench dequant"

  # before/after: bench the old commit into another target dir first
  python3 scripts/bench_table.py --before /tmp/old/criterion --title ... --command ... target/criterion

  # before/after from the printed output of bench binaries run alternately (old, new, old, new):
  # less drift between the two than two whole runs one after the other
  python3 scripts/bench_table.py --logs-before old1.log old2.log --logs-after new1.log new2.log ...

The section has the date, the commit (`git rev-parse --short HEAD`), the machine (CPU model from
/proc/cpuinfo, logical CPUs), the command, and one table per criterion group. Every row is put next
to the group's baseline measured in the same run with the same threading (serial vs serial,
threaded vs threaded): `memcpy` (dequantization) or `read` (GEMV, which only reads). With
`--before`, each row also gives the time of the same bench in the other directory and the ratio
after / before (below 1 is faster). GB/s = (bytes read + bytes written) / mean time, 10^9 bytes.
"""
import argparse, datetime, json, os, pathlib, platform, re, subprocess

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def load_log(path):
    """{bench id: mean ms} from criterion's printed output."""
    times, name = {}, None
    for line in open(path, encoding="utf-8"):
        if line.strip() and not line.startswith((" ", "Benchmarking")) and "/" in line:
            name = line.split()[0]
        m = re.search(r"time:\s+\[[0-9.]+ \S+ ([0-9.]+) (ns|µs|us|ms|s)\b", line)
        if m and name:
            times[name] = float(m.group(1)) * UNITS[m.group(2)]
    return times


def logs_table(before, after):
    """Markdown rows: each bench's mean ms per run, before and after, and the ratio of sums."""
    runs_b, runs_a = [load_log(p) for p in before], [load_log(p) for p in after]
    lines = [
        "| bench | before ms (" + " / ".join(f"run {i + 1}" for i in range(len(before))) + ") | after ms | after / before |",
        "|---|---:|---:|---:|",
    ]
    for name in runs_b[0]:
        b, a = [r.get(name) for r in runs_b], [r.get(name) for r in runs_a]
        if None in b or None in a:
            continue
        fmt = lambda xs: " / ".join(f"{x:.3f}" for x in xs)
        lines.append(f"| {name} | {fmt(b)} | {fmt(a)} | {sum(a) / sum(b):.2f} |")
    return lines


def load(root):
    """{group: {(function, value): (mean ns, bytes or None)}} from a criterion directory."""
    rows = {}
    for bench in pathlib.Path(root).glob("*/*/*/new/benchmark.json"):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        nbytes = (meta.get("throughput") or {}).get("Bytes")
        key = (meta["function_id"], meta.get("value_str") or "")
        rows.setdefault(meta["group_id"], {})[key] = (est["mean"]["point_estimate"], nbytes)
    return rows


def machine():
    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


def commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def order(kv):
    """Baselines first, then by bench name and a numeric parameter (batch 1, 8, 32) by value."""
    (func, label), _ = kv
    return (func not in ("memcpy", "read"), func, (0, int(label), "") if label.isdigit() else (1, 0, label))


def section(args):
    if args.logs_after:
        head = [
            f"## {datetime.date.today().isoformat()} — {args.title}",
            "",
            f"* **Commit**: {commit()}.",
            f"* **Machine**: {machine()}; {args.threads}.",
            f"* **Command**: `{args.command}`, the binaries run alternately.",
            f"* **Before**: {args.before_label}.",
            "",
        ]
        return "\n".join(head + logs_table(args.logs_before, args.logs_after)) + "\n"
    after = load(args.criterion)
    before = load(args.before) if args.before else {}
    lines = [
        f"## {datetime.date.today().isoformat()} — {args.title}",
        "",
        f"* **Commit**: {commit()}.",
        f"* **Machine**: {machine()}; {args.threads}.",
        f"* **Command**: `{args.command}`.",
    ]
    if args.before:
        lines.append(f"* **Before**: `{args.before}` ({args.before_label}).")
    for group in sorted(after):
        g = after[group]
        base_name = next((b for b in ("memcpy", "read") if any(f == b for f, _ in g)), None)
        head = "| bench | threads | time (ms) | GB/s |"
        rule = "|---|---|---:|---:|"
        if base_name:
            head += f" x {base_name} time (same threads) |"
            rule += "---:|"
        if args.before:
            head += " before (ms) | after / before |"
            rule += "---:|---:|"
        lines += ["", f"**{group}**", "", head, rule]
        for (func, label), (ns, nbytes) in sorted(g.items(), key=order):
            gbps = f"{nbytes / ns:.1f}" if nbytes else "-"
            row = f"| {func} | {label} | {ns / 1e6:.3f} | {gbps} |"
            if base_name:
                base = g.get((base_name, label))
                row += f" {ns / base[0]:.2f} |" if base else " - |"
            if args.before:
                old = before.get(group, {}).get((func, label))
                row += f" {old[0] / 1e6:.3f} | {ns / old[0]:.2f} |" if old else " - | - |"
            lines.append(row)
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("criterion", nargs="?", default="target/criterion", help="criterion results (after)")
    p.add_argument("--before", help="criterion results of the baseline commit, same benches")
    p.add_argument("--before-label", default="the previous commit", help="what --before measured")
    p.add_argument("--logs-before", nargs="+", help="printed output of the baseline's runs")
    p.add_argument("--logs-after", nargs="+", help="printed output of the new runs, as many")
    p.add_argument("--title", required=True, help="what the run measured")
    p.add_argument("--command", required=True, help="the command that produced the results")
    p.add_argument("--threads", default="rayon's default pool", help="threads and ISA, as printed by the bench")
    print(section(p.parse_args()))


if __name__ == "__main__":
    main()
