"""Markdown table of a pytest-benchmark JSON written by benchmarks/test_bench_ops.py.

    python benchmarks/ops_table.py bench-results/ops.json [--command "pytest ..."]

One row per benchmark: best and median time, GB/s for pair_feature_l1, and the native speed-up
over every other implementation of the same group (the ratios the targets in docs/ops.md refer to),
computed from the best (min) times, which are the least disturbed by other load on the machine.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

DEFAULT_COMMAND = "pytest benchmarks/test_bench_ops.py --benchmark-only --benchmark-json=bench-results/ops.json"


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def machine_line(info: dict, extra: dict) -> str:
    cpu = info.get("cpu", {}).get("brand_raw") or info.get("processor") or "unknown CPU"
    cores = info.get("cpu", {}).get("count", "?")
    parts = [f"{cpu}, {cores} logical cores, torch threads: {extra.get('threads', '?')}", f"torch {extra.get('torch', '?')}"]
    if extra.get("gpu"):
        parts.append(f"{extra['gpu']} (CUDA {extra.get('cuda')})")
    parts.append(f"python {info.get('python_version', '?')}")
    return "; ".join(parts)


# (op prefix, other implementation, required time(other) / time(native), what it means)
TARGETS = [
    ("pair_feature_l1 4096x8192 fp32", "reference", 8.0, ">= 8x the eager reference"),
    ("pair_feature_l1 4096x8192 fp32", "compiled", 1.0, "at least as fast as torch.compile(reference)"),
    ("pair_feature_l1 4096x8192 fp32", "read", 0.9, "within 10% of a plain read of the same bytes"),
    ("simplex_mix", "reference", 3.0, ">= 3x the eager reference (fwd+bwd)"),
    ("annulus_sample", "reference", 3.0, ">= 3x the eager reference"),
]


def target_lines(groups: dict) -> list[str]:
    """One line per (target, group): the measured ratio of best times and whether it meets the target."""
    lines = ["", "| target | group | measured | met |", "|---|---|---:|:---:|"]
    for prefix, other, required, meaning in TARGETS:
        for group, benches in groups.items():
            by_impl = {b["params"].get("impl"): b["stats"]["min"] for b in benches}
            if not group.startswith(prefix) or "native" not in by_impl or other not in by_impl:
                continue
            ratio = by_impl[other] / by_impl["native"]
            lines.append(f"| {meaning} | {group} | {ratio:.2f}x | {'yes' if ratio >= required else 'NO'} |")
    return lines


def table(data: dict, command: str) -> str:
    groups = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench["group"]].append(bench)
    first_extra = data["benchmarks"][0]["extra_info"] if data["benchmarks"] else {}
    lines = [
        f"Machine: {machine_line(data.get('machine_info', {}), first_extra)}  ",
        f"Run: {data.get('datetime', '?')}  ",
        f"Command: `{command}`",
        "",
        "| group | implementation | best | median | GB/s (best) | native speed-up (best) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for group, benches in groups.items():
        native = next((b for b in benches if b["params"].get("impl") == "native"), None)
        for bench in sorted(benches, key=lambda b: b["stats"]["min"]):
            impl = bench["params"].get("impl", bench["name"])
            stats = bench["stats"]
            gbps = bench["extra_info"].get("GB/s (min)")
            if native is None or bench is native:
                ratio = "" if native is None else "1.00x"
            else:
                ratio = f"{stats['min'] / native['stats']['min']:.2f}x"
            lines.append(
                f"| {group} | {impl} | {fmt_time(stats['min'])} | {fmt_time(stats['median'])} | "
                f"{gbps if gbps is not None else ''} | {ratio} |"
            )
    return "\n".join(lines + target_lines(groups))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file")
    parser.add_argument("--command", default=DEFAULT_COMMAND, help="the command that produced the JSON")
    args = parser.parse_args()
    with open(args.json_file) as fh:
        print(table(json.load(fh), args.command))


if __name__ == "__main__":
    main()
