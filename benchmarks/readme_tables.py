"""The generated tables of README.md and docs/: rebuilt from the committed files under
benchmarks/results/, and checked against what the documents hold.

    python benchmarks/readme_tables.py            # check: exit 1 naming every block that differs
    python benchmarks/readme_tables.py --write    # rewrite the blocks in place

A generated block in a markdown file looks like this (the first line names its source)::

    <!-- generated: summary benchmarks/results/fmnist-oc-2k -->
    | method | kind | ... |
    <!-- end generated -->

Sources:

- ``summary FOLDER``: the tables of ``anomalykit bench``'s summary, recomputed from
  ``FOLDER/results.csv`` (finished cells) with the bench's own summary code, so a table follows
  the rows, not a copy of summary.md (the check also compares it with ``FOLDER/summary.md``);
- ``speed KIND FILE...``: a table of benchmarks/speed_table.py (KIND: training, quality, demo,
  adgan, annulus) from pytest-benchmark JSONs;
- ``ops FILE``: benchmarks/ops_table.py's table of a pytest-benchmark JSON of the fused ops;
- ``file PATH [LANG]``: a repository file as a fenced code block (the plugin guide includes the
  tested example plugin this way);
- ``contract``: the method contract (:data:`anomalykit.contract.MEMBERS`) as a table;
- ``rows FILE``: a small JSON written by one of our measurement scripts, holding ``columns`` and
  ``rows`` (see e.g. benchmarks/torchrun_throughput.py);
- ``export FILE``: benchmarks/bench_export.py's size and latency table of its ``--json`` file
  (what ``python benchmarks/bench_export.py --table FILE`` prints);
- ``adgan-loop FILE``: the batched latent search against the literal Algorithm 1 loop, from a
  pytest-benchmark JSON of benchmarks/test_bench_adgan_scoring.py (``-k "not fmnist"``): machine,
  command, and one row per implementation with the speed-up over ``reference``;
- ``headline LABEL=FOLDER ...``: one row per method and baseline, one column per folder: the mean
  AUROC over its cells (with the spread over seeds when the folder has several), from each
  folder's results.csv; LABEL uses ``_`` for spaces;
- ``gaps FOLDER [FOLDER...]``: for each method of a one-class folder, its per-class AUROC (mean
  over seeds) minus the best baseline's on that class: the classes where it is behind at all, more
  than 0.03 behind, and the worst gap; several folders are pooled (e.g. a method's folder and the
  baselines' folder of the same splits);
- ``classes LABEL=FOLDER ...``: one row per folder (one per method, ``LABEL: method``, where a
  folder holds several), one column per class of the first folder (mean AUROC over seeds), then
  the mean over those classes, the seeds, and the mean training and scoring seconds per cell (all
  over those classes only): settings run on the same classes side by side (e.g. validation-split
  variants and the baselines); LABEL uses ``_`` for spaces, ``__`` for an underscore, and may
  hold ``=``;
- ``mutation-scores``: the score table of the mutation report (benchmarks/mutation/run.py);
- ``map-types MEASURE FOLDER ...``: the same folders per defect type (bench's
  ``per_defect_type``): MEASURE (image_auroc, pixel_auroc, aupro) of each method, mean over seeds;
- ``compare LABEL=FOLDER ...``: the same cells under several settings (one bench folder each):
  per method the mean AUROC under each, and the mean paired difference to the first ± its
  population standard deviation over the cells;
- ``precision FILE ...``: benchmarks/precision_speed.py's JSONs: fit and score seconds at
  precision=32 and bf16-mixed per method, the speed-ups, the CPU and its bfloat16 hardware;
- ``maps FOLDER ...``: anomaly maps on MVTec-layout folders: per folder, image AUROC, pixel
  AUROC and AUPRO of each method and map baseline, mean ± std over seeds;
- ``settings LABEL=FOLDER ...``: one row per folder holding one method on one class or OOD split
  (several seeds): the AUROC of each seed, mean ± standard deviation, seeds, mean training
  seconds; LABEL as for ``classes``.

tests/test_readme_tables.py runs the check, so a table that no longer follows its file fails CI.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/*.md", "docs/methods/*.md"]
BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def _summary(folder: str) -> str:
    """The summary tables of a bench folder, recomputed from its results.csv."""
    from anomalykit.bench import BenchConfig, read_results, write_summary

    path = ROOT / folder
    rows = read_results(path / "results.csv")
    settings = json.loads((path / "bench.json").read_text()) if (path / "bench.json").exists() else {}
    fields = BenchConfig.__dataclass_fields__
    cfg = BenchConfig(**{k: v for k, v in settings.items() if k in fields and k != "set"}, set=tuple(settings.get("set", ())))
    if not settings:  # a merged folder: the settings the rows themselves record
        first = rows[0]
        cfg.protocol, cfg.data, cfg.budget = first["protocol"], first["dataset"], first["budget"]
    with tempfile.TemporaryDirectory() as tmp:
        write_summary(Path(tmp), rows, cfg)
        text = (Path(tmp) / "summary.md").read_text()
    return _tables(text)


def _tables(summary_md: str) -> str:
    """The table lines of a summary.md (and the captions between tables), without its header."""
    lines = summary_md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    return "\n".join(lines[start:]).strip() + "\n"


def _speed(kind: str, *files: str) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import speed_table

    runs = speed_table.load([str(ROOT / f) for f in files])
    fn = {"training": speed_table.training_rows, "quality": speed_table.quality_rows, "demo": speed_table.demo_rows,
          "adgan": speed_table.adgan_rows, "annulus": speed_table.annulus_rows}[kind]
    return "\n".join(fn(runs)) + "\n"


def _ops(file: str) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ops_table

    data = json.loads((ROOT / file).read_text())
    command = data.get("anomalykit_command") or ops_table.DEFAULT_COMMAND
    text = ops_table.table(data, command)
    if command.endswith(")") and " (" in command:  # a remark such as "(raw timings stripped)" goes after the backticks
        bare, remark = command.rsplit(" (", 1)
        text = text.replace(f"`{command}`", f"`{bare}` ({remark}", 1)
    return text + "\n"


def _rows(file: str) -> str:
    data = json.loads((ROOT / file).read_text())
    cols = data["columns"]
    align = data.get("align", ["---"] * len(cols))
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in data["rows"]]
    return "\n".join(out) + "\n"


def _export(file: str) -> str:
    import contextlib
    import io

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_export

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bench_export.print_table(json.loads((ROOT / file).read_text()))
    return out.getvalue().strip() + "\n"


def _command(data: dict) -> str:
    """The JSON's recorded command in backticks, a trailing remark such as "(raw timings stripped)" after them."""
    command = data.get("anomalykit_command", "?")
    remark = ""
    if command.endswith(")") and " (" in command:
        command, remark = command.rsplit(" (", 1)
        remark = " (" + remark
    return f"`{command}`{remark}"


def _adgan_loop(file: str) -> str:
    data = json.loads((ROOT / file).read_text())
    runs = {b["params"]["scoring"]: b for b in data["benchmarks"] if b["name"].startswith("test_score_256_samples")}
    ref = runs["reference"]["stats"]["min"]
    e = runs["reference"]["extra_info"]
    cpu = data.get("machine_info", {}).get("cpu", {}).get("brand_raw") or e.get("machine", "?")
    commit = data.get("commit_info", {}).get("id", "?")[:7]
    lines = [
        f"Machine: {cpu}, {e['cpus']} logical cores, torch {e['torch']}, torch threads: {e['threads']}, "
        f"load average (1 min) {e['load_avg_1min']:.1f} after the reference run  ",
        f"Run: {data.get('datetime', '?')}, commit {commit}  ",
        f"Command: {_command(data)}",
        "",
        f"{e['samples']} samples x n_seed {e['n_seed']} = {e['searches']:,} searches of k = {e['k']} steps, "
        f"one θ copy per {e['theta_copies']}, |θ| = {e['generator_params']:,}; one timed round each",
        "",
        f"| implementation | time for {e['samples']} samples | per sample | speed-up vs reference |",
        "|---|---:|---:|---:|",
    ]
    for impl in ("reference", "vmap", "batched"):
        if impl in runs:
            t = runs[impl]["stats"]["min"]
            lines.append(f"| `{impl}` | {t:.3f} s | {1e3 * t / e['samples']:.2f} ms | {ref / t:.1f}x |")
    again = next((b for b in data["benchmarks"] if b["name"].startswith("test_batched_agrees")), None)
    if again is not None:
        t = again["stats"]["median"]
        lines.append(f"| `batched` again, median of {again['stats']['rounds']} rounds (the benchmark's own check) | "
                     f"{t:.3f} s | {1e3 * t / e['samples']:.2f} ms | {ref / t:.1f}x |")
    return "\n".join(lines) + "\n"


def _headline(*pairs: str) -> str:
    from anomalykit.bench import read_results, summarise

    columns = [(label.replace("_", " "), ROOT / folder) for label, folder in (p.split("=", 1) for p in pairs)]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for label, folder in columns:
        for s in summarise([r for r in read_results(folder / "results.csv") if r.get("status", "ok") == "ok"]):
            if s.get("seed_auroc"):
                mean, std, n = s["seed_auroc"]
                text = f"{mean:.3f} ± {std:.3f} ({n} seeds)"
            else:
                text = f"{s['auroc'][0]:.3f} (1 seed)" if s["auroc"] else ""
            cells.setdefault((s["method"], s["kind"]), {})[label] = text
    order = sorted(cells, key=lambda mk: (mk[1] != "method", list(cells).index(mk)))
    out = ["| method | kind | " + " | ".join(label for label, _ in columns) + " |", "|---|---|" + "---|" * len(columns)]
    for method, kind in order:
        out.append(f"| {method} | {kind} | " + " | ".join(cells[(method, kind)].get(label, "") for label, _ in columns) + " |")
    return "\n".join(out) + "\n"


def _gaps(*folders: str) -> str:
    from collections import defaultdict

    from anomalykit.bench import read_results

    per = defaultdict(lambda: defaultdict(list))
    kinds = {}
    for r in (r for folder in folders for r in read_results(ROOT / folder / "results.csv")):
        if r.get("status", "ok") == "ok" and str(r["normal_class"]) != "":
            per[r["method"]][int(r["normal_class"])].append(float(r["auroc"]))
            kinds[r["method"]] = r["kind"]
    mean = {m: {c: sum(v) / len(v) for c, v in by.items()} for m, by in per.items()}
    baselines = [m for m in mean if kinds[m] == "baseline"]
    out = ["| method | classes behind the best baseline | more than 0.03 behind | worst (class: method − best baseline) |",
           "|---|---|---|---|"]
    for m in (m for m in mean if kinds[m] == "method"):
        gaps = {c: a - max(mean[b][c] for b in baselines if c in mean[b]) for c, a in sorted(mean[m].items())}
        behind = [c for c, g in gaps.items() if g < 0]
        far = [c for c, g in gaps.items() if g < -0.03]
        worst = min(gaps, key=gaps.get)
        out.append(f"| {m} | {len(behind)} of {len(gaps)}" + (f" ({', '.join(map(str, behind))})" if behind else "")
                   + f" | {', '.join(map(str, far)) or 'none'} | {worst}: {gaps[worst]:+.3f} |")
    return "\n".join(out) + "\n"


def _classes(*pairs: str) -> str:
    from collections import defaultdict

    from anomalykit.bench import read_results

    columns, out = None, []
    for label, folder in (p.rsplit("=", 1) for p in pairs):  # a LABEL may hold "=" (e.g. k=0), a folder not
        if not (ROOT / folder / "results.csv").exists():
            raise SystemExit(f"classes: {folder}/results.csv does not exist")
        cells = defaultdict(list)  # method -> (class, seed, auroc, train s, score s) of its finished cells
        for r in read_results(ROOT / folder / "results.csv"):
            if r.get("status", "ok") == "ok" and str(r["normal_class"]) != "":
                cells[r["method"]].append((int(r["normal_class"]), str(r["seed"]), float(r["auroc"]),
                                           float(r["train_seconds"]), float(r["score_seconds"])))
        if columns is None:
            columns = sorted({c[0] for rows in cells.values() for c in rows})
            out = ["| setting | " + " | ".join(map(str, columns)) + " | mean | seeds | train s | score s |",
                   "|---|" + "---:|" * (len(columns) + 4)]
        name = label.replace("__", "\0").replace("_", " ").replace("\0", "_")
        for m, rows in cells.items():
            rows = [c for c in rows if c[0] in columns]  # the first folder's classes only
            if not rows:
                continue
            by = defaultdict(list)
            for c in rows:
                by[c[0]].append(c[2])
            means = {c: sum(v) / len(v) for c, v in by.items()}
            mean = f"{sum(means.values()) / len(means):.3f}" if len(means) == len(columns) else ""
            train, score = (sum(c[i] for c in rows) / len(rows) for i in (3, 4))
            out.append(f"| {name if len(cells) == 1 else f'{name}: {m}'} | "
                       + " | ".join(f"{means[c]:.3f}" if c in means else "" for c in columns)
                       + f" | {mean} | {len({c[1] for c in rows})} | {train:.1f} | {score:.1f} |")
    return "\n".join(out) + "\n"


def _settings(*pairs: str) -> str:
    """One row per folder of single-cell-per-seed runs (e.g. the OOD protocol, or one class): the
    AUROC of each seed, their mean ± the population standard deviation (as every "±" in the docs),
    and the mean training seconds per cell."""
    import statistics

    from anomalykit.bench import read_results

    out = ["| setting | AUROC per seed | mean ± SD | seeds | train s |", "|---|---|---:|---:|---:|"]
    for label, folder in (p.rsplit("=", 1) for p in pairs):
        if not (ROOT / folder / "results.csv").exists():
            raise SystemExit(f"settings: {folder}/results.csv does not exist")
        rows = sorted((r for r in read_results(ROOT / folder / "results.csv") if r.get("status", "ok") == "ok"),
                      key=lambda r: int(r["seed"]))
        if len({(r["method"], str(r["normal_class"])) for r in rows}) > 1:
            raise SystemExit(f"settings: {folder} holds more than one method or class; use 'classes' or 'headline'")
        aurocs = [float(r["auroc"]) for r in rows]
        spread = f" ± {statistics.pstdev(aurocs):.3f}" if len(aurocs) > 1 else ""
        name = label.replace("__", "\0").replace("_", " ").replace("\0", "_")
        out.append(f"| {name} | " + ", ".join(f"{a:.3f}" for a in aurocs) + f" | {statistics.mean(aurocs):.3f}{spread} | "
                   f"{len(aurocs)} | {statistics.mean(float(r['train_seconds']) for r in rows):.1f} |")
    return "\n".join(out) + "\n"


def _file(path: str, lang: str = "") -> str:
    """A file of the repository as a fenced code block (e.g. the example plugin in the plugin guide,
    so the guide shows the code the test suite installs and runs)."""
    text = (ROOT / path).read_text()
    return f"```{lang}\n{text.rstrip()}\n```\n"


def _contract() -> str:
    """The method contract (anomalykit.contract.MEMBERS) as a table."""
    from anomalykit.contract import MEMBERS

    out = ["| member | kind | required | default | what it is |", "|---|---|:---:|---|---|"]
    for m in MEMBERS:
        out.append(f"| `{m.name}` | {m.kind} | {'yes' if m.required else ''} | {m.default} | {m.doc.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def _calibration(*files: str) -> str:
    """benchmarks/calibration_study.py's results (one JSON per method and dataset): the realised
    false-alarm rate of p <= alpha with its band, the contamination threshold's at the same nominal
    rate, and Benjamini-Hochberg's false discovery rate and power."""
    out = ["| data | method | calibration rows | α = 0.01 | α = 0.05 | α = 0.1 | contamination threshold at 0.01 / 0.05 / 0.1 "
           "| BH q = 0.1: FDR, power |", "|---|---|---:|---|---|---|---|---|"]
    for f in files:
        r = json.loads((ROOT / f).read_text())
        cells = [f"{a['far']:.3f} [{max(a['band'][0], 0):.3f}, {a['band'][1]:.3f}]" + ("" if a["within"] else " **out**")
                 for a in r["alphas"]]
        contamination = " / ".join(f"{a['far_contamination']:.3f}" for a in r["alphas"])
        out.append(f"| {r['data']} (class {r['normal_class']}) | {r['method']} | {r['calibration_rows']} | "
                   + " | ".join(cells) + f" | {contamination} | {r['bh']['fdr']:.3f}, {r['bh']['power']:.3f} |")
    return "\n".join(out) + "\n"


def _map_baselines_last(methods: list[str]) -> list[str]:
    """``methods`` in their order, the registered map baselines (``map_baseline``) moved last."""
    from anomalykit.registry import get_registry

    reg = get_registry().methods
    baselines = [m for m in methods if m in reg and reg[m].cls.map_baseline]
    return [m for m in methods if m not in baselines] + baselines


def _maps(*folders: str) -> str:
    """Anomaly maps on MVTec-layout folders (bench runs with pixel measures): one row per folder
    and measure (image AUROC, pixel AUROC, AUPRO), one column per method (map baselines last),
    mean ± standard deviation over the seeds (ddof=0); the best mean per row in bold."""
    import numpy as np

    from anomalykit.bench import read_results

    tables = {}
    for folder in folders:
        rows = [r for r in read_results(ROOT / folder / "results.csv") if r.get("status", "ok") == "ok"]
        tables[folder] = rows
    methods: list[str] = []
    for rows in tables.values():
        methods += [r["method"] for r in rows if r["method"] not in methods]
    methods = _map_baselines_last(methods)
    out = ["| set | measure | " + " | ".join(methods) + " |", "|---|---|" + "---:|" * len(methods)]
    for folder, rows in tables.items():
        seeds = sorted({r["seed"] for r in rows})
        for key, label in (("auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO")):
            cells = []
            for m in methods:
                vals = np.array([float(r[key]) for r in rows if r["method"] == m and r.get(key) not in ("", None)])
                cells.append((vals.mean(), vals.std(), len(vals)) if len(vals) else None)
            best = max((c[0] for c in cells if c), default=None)

            def shown(c):  # mean ± std over the seeds; one seed has no spread to show
                value = f"{c[0]:.3f}" + (f" ± {c[1]:.3f}" if c[2] > 1 else "")
                return f"**{value}**" if c[0] == best else value

            text = ["" if c is None else shown(c) for c in cells]
            n = f"{len(seeds)} seed" + ("s" if len(seeds) > 1 else "")
            out.append(f"| {Path(folder).name} ({n}) | {label} | " + " | ".join(text) + " |")
    return "\n".join(out) + "\n"


def _mutation_scores() -> str:
    """The mutation report's score table (benchmarks/mutation/run.py's ``report()`` from the
    committed JSONs under benchmarks/results/mutation/)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mutation_run", ROOT / "benchmarks" / "mutation" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    run.RESULTS = ROOT / "benchmarks" / "results" / "mutation"
    lines = run.report().splitlines()
    start = lines.index("| target | mutants | killed | equivalent | survived | score | |")
    end = lines.index("", start)
    return "\n".join(lines[start:end]) + "\n"


def _map_types(measure: str, *folders: str) -> str:
    """Anomaly maps per defect type (bench's ``per_defect_type``): one row per folder and defect
    type, one column per method (map baselines last), ``measure`` (image_auroc, pixel_auroc or
    aupro) of that type against the good images, mean over the seeds; the best per row in bold."""
    import numpy as np

    from anomalykit.bench import read_results

    tables = {f: [r for r in read_results(ROOT / f / "results.csv") if r.get("status", "ok") == "ok"] for f in folders}
    methods = list(dict.fromkeys(r["method"] for rows in tables.values() for r in rows))
    methods = _map_baselines_last(methods)
    out = ["| set | defect type | " + " | ".join(methods) + " |", "|---|---|" + "---:|" * len(methods)]
    for folder, rows in tables.items():
        per = [(r["method"], json.loads(r["per_defect_type"])) for r in rows if r.get("per_defect_type")]
        seeds = len({r["seed"] for r in rows})
        for kind in sorted({k for _, types in per for k in types}):
            means = [np.mean([t[kind][measure] for m2, t in per if m2 == m and kind in t]) if any(m2 == m for m2, _ in per)
                     else None for m in methods]
            best = max(v for v in means if v is not None)
            cells = ["" if v is None else (f"**{v:.3f}**" if v == best else f"{v:.3f}") for v in means]
            n = f"{seeds} seed" + ("s" if seeds > 1 else "")
            out.append(f"| {Path(folder).name} ({n}) | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _compare(*specs: str) -> str:
    """The same cells (method x class x seed) under several settings, one results folder each
    (``LABEL=FOLDER``, LABEL's underscores shown as spaces): per method, the mean AUROC under each
    setting and, from the second on, the mean paired difference to the first with its population
    standard deviation over the cells both hold."""
    import numpy as np

    from anomalykit.bench import read_results

    labels, runs = [], []
    for spec in specs:
        label, folder = spec.split("=", 1)
        labels.append(label.replace("_", " "))
        rows = [r for r in read_results(ROOT / folder / "results.csv") if r.get("status", "ok") == "ok"]
        runs.append({(r["method"], r["normal_class"], r["seed"]): float(r["auroc"]) for r in rows})
    methods = list(dict.fromkeys(k[0] for run in runs for k in run))
    head = ["method", "cells"] + [f"AUROC, {lab}" for lab in labels] + [f"{lab} − {labels[0]}" for lab in labels[1:]]
    out = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for m in methods:
        cells = sorted(set.intersection(*[{k for k in run if k[0] == m} for run in runs]))
        if not cells:
            continue
        vals = [np.array([run[c] for c in cells]) for run in runs]
        means = [f"{v.mean():.3f}" for v in vals]
        diffs = [f"{(v - vals[0]).mean():+.3f} ± {(v - vals[0]).std():.3f}" for v in vals[1:]]
        out.append(f"| {m} | {len(cells)} | " + " | ".join(means + diffs) + " |")
    return "\n".join(out) + "\n"


def _precision(*files: str) -> str:
    """Training and scoring at precision=32 against bf16-mixed (benchmarks/precision_speed.py): one
    row per file and method, with the CPU, its bfloat16 hardware and the ISA ceiling it ran under."""
    out = ["| CPU (bf16 units, ISA ceiling) | method | fit s, 32 / bf16-mixed | training speed-up | "
           "score s, 32 / bf16-mixed | scoring speed-up | file |", "|---|---|---:|---:|---:|---:|---|"]
    for file in files:
        data = json.loads((ROOT / file).read_text())
        cpu = f"{data['cpu']} ({data['bf16_units']}, {data['onednn_max_cpu_isa'] or 'native'})"
        for method, m in data["methods"].items():
            s, up = m["seconds"], m["speedup"]
            out.append(f"| {cpu} | {method} | {s['32']['fit']:.2f} / {s['bf16-mixed']['fit']:.2f} | {up['fit']:.2f}x | "
                       f"{s['32']['score']:.2f} / {s['bf16-mixed']['score']:.2f} | {up['score']:.2f}x | `{Path(file).name}` |")
    return "\n".join(out) + "\n"


def _deprecations() -> str:
    """The deprecated members of the plugin API (anomalykit.deprecation.DEPRECATIONS) as a table."""
    from anomalykit.deprecation import DEPRECATIONS

    out = ["| deprecated | since | stops working in | instead | meanwhile |", "|---|---|---|---|---|"]
    for d in DEPRECATIONS.values():
        cells = [d.title or d.what, d.since, d.removed_in, d.replacement, d.meanwhile]
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(out) + "\n"


def _renamed_params() -> str:
    """Every installed method's renamed parameters (its ``renamed_params``) as a table."""
    import anomalykit
    from anomalykit.registry import get_registry

    out = ["| method | old parameter | now | stops working in |", "|---|---|---|---|"]
    for name in anomalykit.list_methods():
        for r in get_registry().method(name).cls.renamed_params:
            now = "retired, ignored" + (f" ({r.note})" if r.note else "") if r.new is None else f"`{r.new}`" + (
                " (" + ", ".join(f"{k!r} -> {v!r}" for k, v in r.values.items()) + ")" if r.values else "")
            out.append(f"| {name} | `{r.old}` | {now} | {r.removed_in} |")
    return "\n".join(out) + "\n"


SOURCES = {"maps": _maps, "mutation-scores": _mutation_scores, "map-types": _map_types, "precision": _precision, "compare": _compare, "settings": _settings, "contract": _contract, "deprecations": _deprecations, "calibration": _calibration, "renamed-params": _renamed_params, "file": _file, "gaps": _gaps, "summary": _summary, "speed": _speed, "ops": _ops, "rows": _rows, "headline": _headline,
           "classes": _classes,
           "export": _export, "adgan-loop": _adgan_loop}


def render(spec: str) -> str:
    kind, *args = spec.split()
    if kind not in SOURCES:
        raise SystemExit(f"unknown generated-table source {kind!r} (known: {', '.join(SOURCES)})")
    return SOURCES[kind](*args)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def documents() -> list[Path]:
    return sorted({p for pattern in DOCS for p in ROOT.glob(pattern)})


def stale_blocks(write: bool = False) -> list[str]:
    """``(file, source)`` of every generated block whose text differs from its source (rewritten if ``write``)."""
    problems = []
    for doc in documents():
        text = doc.read_text()
        out, pos = [], 0
        for m in BLOCK.finditer(text):
            fresh = render(m.group("spec"))
            if m.group("body") != fresh:
                problems.append(f"{_shown(doc)}: {m.group('spec')}")
            out += [text[pos:m.start("body")], fresh]
            pos = m.end("body")
        if write and problems:
            doc.write_text("".join(out) + text[pos:])
    for doc in documents():  # a summary block's folder must hold the same tables in its summary.md
        for m in BLOCK.finditer(doc.read_text()):
            kind, *args = m.group("spec").split()
            if kind == "summary" and (ROOT / args[0] / "summary.md").exists():
                if _tables((ROOT / args[0] / "summary.md").read_text()) != render(m.group("spec")):
                    problems.append(f"{args[0]}/summary.md does not match its results.csv (rerun the bench or merge_results.py)")
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite stale blocks in place")
    args = ap.parse_args()
    problems = stale_blocks(write=args.write)
    for p in problems:
        print(("rewrote " if args.write else "stale: ") + p)
    if problems and not args.write:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
