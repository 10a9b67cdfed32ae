"""Markdown tables of the whole-loop speed benchmarks (eager path vs speed-ups), for the README.

    python benchmarks/speed_table.py benchmarks/results/speed/*.json

Reads any mix of pytest-benchmark JSONs written by benchmarks/test_bench_training.py,
benchmarks/test_bench_adgan_scoring.py (the Fashion-MNIST part) and benchmarks/test_bench_ops.py
(the annulus_sample groups; one file per run) and prints one table per kind, with the targets of
docs/performance.md. Ratios come from the benchmarks' ``extra_info`` (interleaved rounds) or, for
the ops, from the best times of one run, as benchmarks/ops_table.py computes them.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def load(paths: list[str]) -> list[tuple[str, dict]]:
    return [(Path(p).name, json.loads(Path(p).read_text())) for p in paths]


def training_rows(runs) -> list[str]:
    rows = []
    for name, data in runs:
        for b in data["benchmarks"]:
            e = b["extra_info"]
            if b["group"] != "training" or "method" not in e:
                continue
            met = "yes" if min(e["speedup_wall"], e["speedup_cpu"]) >= 1.5 else "**no**"
            rows.append(f"| {e['method']} | {e['rows']} x {e['epochs']} epoch, batch {e['batch_size']} | {e['threads']} | "
                        f"{e['eager_samples_per_s']} | {e['fast_samples_per_s']} | {e['speedup_wall']:.2f}x | {e['speedup_cpu']:.2f}x | "
                        f"{e['warmup_eager_s']:.1f} / {e['warmup_fast_s']:.1f} s | {met} | `{name}` |")
    if not rows:
        return []
    return ["| method | data | threads | eager samples/s | speed-ups samples/s | speed-up (wall) | speed-up (CPU) | first fit eager / fast | >= 1.5x | file |",
            "|---|---|---:|---:|---:|---:|---:|---:|:---:|---|", *rows]


def demo_rows(runs) -> list[str]:
    rows = []
    for name, data in runs:
        for b in data["benchmarks"]:
            e = b["extra_info"]
            if b["name"].startswith("test_digits_demo_not_slower"):
                rows.append(f"| digits demo (ama defaults, fit + score) | {e['threads']} | {e['eager_s']} s | {e['fast_s']} s | {e['speedup_wall']:.2f}x | `{name}` |")
    if not rows:
        return []
    return ["| end to end | threads | eager | speed-ups | ratio | file |", "|---|---:|---:|---:|---:|---|", *rows]


def quality_rows(runs) -> list[str]:
    rows = []
    for name, data in runs:
        for b in data["benchmarks"]:
            e = b["extra_info"]
            if b["group"] != "training-quality":
                continue
            rows.append(f"| {e['method']} | {e['auroc_class0_eager']:.4f} / {e['auroc_class0_fast']:.4f} | "
                        f"{e['auroc_class6_eager']:.4f} / {e['auroc_class6_fast']:.4f} | {e['max_abs_diff']:.4f} | "
                        f"{'yes' if e['max_abs_diff'] <= 0.01 else '**no**'} | `{name}` |")
    if not rows:
        return []
    return ["| method | AUROC class 0, eager / speed-ups | AUROC class 6, eager / speed-ups | max abs diff | <= 0.01 | file |",
            "|---|---:|---:|---:|:---:|---|", *rows]


def adgan_rows(runs) -> list[str]:
    rows = []
    for name, data in runs:
        for b in data["benchmarks"]:
            e = b["extra_info"]
            if b["group"] != "adgan-scoring-fmnist":
                continue
            met = "yes" if min(e["speedup_wall"], e["speedup_cpu"]) >= e["target"] else "**no**"
            rows.append(f"| {e['rows']} images, n_seed {e['n_seed']}, k {e['k']}, d' {e['latent_dim']}, {e['generator_params']:,} generator parameters | "
                        f"{e['threads']} | {e['eager_s_per_1000']} s | {e['fast_s_per_1000']} s | {e['speedup_wall']:.2f}x | "
                        f"{e['speedup_cpu']:.2f}x | {e['spearman']:.6f} | {met} | `{name}` |")
    if not rows:
        return []
    return ["| ADGAN scoring (Fashion-MNIST) | threads | eager per 1,000 images | speed-ups per 1,000 | speed-up (wall) | speed-up (CPU) | Spearman | >= 3x | file |",
            "|---|---:|---:|---:|---:|---:|---:|:---:|---|", *rows]


def annulus_rows(runs) -> list[str]:
    rows = []
    for name, data in runs:
        groups: dict[str, dict[str, float]] = {}
        threads = "?"
        for b in data["benchmarks"]:
            if b["group"].startswith("annulus_sample"):
                groups.setdefault(b["group"], {})[b["params"]["impl"]] = b["stats"]["min"]
                threads = b["extra_info"].get("threads", threads)
        cells = []
        for group in sorted(groups, key=lambda g: int(g.split("d=")[1].split()[0])):
            by = groups[group]
            if "native" in by and "reference" in by:
                ratio = by["reference"] / by["native"]
                cells.append(f"{group.split()[2]}: {by['native'] * 1e3:.1f} vs {by['reference'] * 1e3:.1f} ms = "
                             f"{ratio:.2f}x {'' if ratio >= 3 else '(**< 3x**)'}")
        if cells:
            rows.append(f"| `{name}` | {threads} | {' ; '.join(cells)} |")
    if not rows:
        return []
    return ["| run | threads | annulus_sample n = 65,536, native vs eager reference (best of the run's rounds) |", "|---|---:|---|", *rows]


def main(argv: list[str]) -> None:
    runs = load(argv)
    for title, lines in (("Training throughput", training_rows(runs)), ("Same AUROC", quality_rows(runs)),
                         ("Digits demo", demo_rows(runs)), ("ADGAN scoring", adgan_rows(runs)), ("annulus_sample", annulus_rows(runs))):
        if lines:
            print(f"**{title}**\n")
            print("\n".join(lines))
            print()


if __name__ == "__main__":
    main(sys.argv[1:])
