"""The quality benchmark: identical splits for every method, resumable, honest summaries."""
import csv
import json

import numpy as np
import pytest

from anomalykit import ConfigError
from anomalykit import bench as B
from anomalykit.bench import runner  # run_bench calls runner.run_cell: patched there to simulate crashes

TINY_AMA = ("ama.epochs=1", "ama.width=8", "ama.feature_dim=16", "ama.n_critic=1")


def config(**kw):
    base = dict(protocol="one-class", data="digits", classes="0,1", methods="ama,pca-recon", baselines="iforest",
                seeds="0", budget="default", set=TINY_AMA + ("pca-recon.n_components=4",))
    base.update(kw)
    return B.BenchConfig(**base)


def rows_of(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    pytest.importorskip("pyod")
    import importlib

    from anomalykit.registry import get_registry

    reg = get_registry()
    added = "pca-recon" not in reg.methods
    if added:
        reg.add_plugin(importlib.import_module("anomalykit_pca"), name="pca-recon-bench")
    out = tmp_path_factory.mktemp("bench") / "full"
    B.run_bench(config(), out, echo=lambda *_: None)
    yield out
    if added:
        reg.remove_plugin("pca-recon-bench")


def test_every_method_sees_the_same_split(finished):
    rows = rows_of(finished / "results.csv")
    assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)  # 3 entries x 2 classes
    for cls in ("0", "1"):
        prints = {r["split_fingerprint"] for r in rows if r["normal_class"] == cls}
        sizes = {(r["n_train"], r["n_test"]) for r in rows if r["normal_class"] == cls}
        assert len(prints) == 1 and len(sizes) == 1
    assert len({r["split_fingerprint"] for r in rows}) == 2
    assert {r["epochs_trained"] for r in rows if r["method"] == "ama"} == {"1"}  # ama.epochs=1, no max_steps
    assert {r["epochs_trained"] for r in rows if r["kind"] == "baseline"} == {""}
    for r in (r for r in rows if r["method"] == "ama"):  # one epoch: every batch of the training rows
        n, bs = int(r["n_train"]), json.loads(r["params"])["batch_size"]
        full, last = divmod(n, bs)
        assert int(r["steps_trained"]) == full + (last >= 2 or (last == 1 and full == 0)), r["n_train"]
    assert {r["steps_trained"] for r in rows if r["kind"] == "baseline"} == {""}


def test_summary_means_equal_a_direct_computation(finished):
    rows = rows_of(finished / "results.csv")
    summary = (finished / "summary.md").read_text()
    for name in ("ama", "pca-recon", "iforest"):
        auroc = np.array([float(r["auroc"]) for r in rows if r["method"] == name])
        line = next(line for line in summary.splitlines() if line.startswith(f"| {name} |"))
        assert f"{auroc.mean():.3f} ± {auroc.std():.3f}" in line
    assert (finished / "auroc.png").stat().st_size > 1000
    best = max(("ama", "pca-recon", "iforest"), key=lambda n: np.mean([float(r["auroc"]) for r in rows if r["method"] == n]))
    assert next(line for line in summary.splitlines() if line.startswith(f"| {best} |")).count("**") >= 2


def test_killed_benchmark_resumes_to_the_same_results(finished, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    real_run_cell = B.run_cell
    calls = []

    def dying(cell, cfg, cache, progress=False, **checkpointing):
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed in the middle of the fifth cell
        calls.append(cell)
        return real_run_cell(cell, cfg, cache, progress, **checkpointing)

    monkeypatch.setattr(runner, "run_cell", dying)
    with pytest.raises(KeyboardInterrupt):
        B.run_bench(config(), out, echo=lambda *_: None)
    assert len(rows_of(out / "results.csv")) == 4
    monkeypatch.setattr(runner, "run_cell", real_run_cell)
    redone = []
    B.run_bench(config(), out, echo=redone.append)
    assert "4 already done" in redone[0]

    def comparable(path):
        keep = [c for c in B.COLUMNS if not c.endswith("seconds")]
        return sorted(tuple(r[c] for c in keep) for r in rows_of(path))

    assert comparable(out / "results.csv") == comparable(finished / "results.csv")


def test_a_cell_killed_in_training_continues_from_its_checkpoint(tmp_path, monkeypatch):
    """Killed after its first epoch's checkpoint, an AMA cell resumes there on the rerun and ends
    with the uninterrupted run's result (bitwise on the CPU); its checkpoints go once it has one."""
    from anomalykit.training import Trainer

    cfg = config(methods="ama", baselines="", classes="0", set=TINY_AMA + ("ama.epochs=3",))
    reference = tmp_path / "reference"
    B.run_bench(cfg, reference, echo=lambda *_: None)
    out = tmp_path / "killed"
    real_save = Trainer.save_checkpoint

    def save_then_die(self, *args):
        real_save(self, *args)
        raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        B.run_bench(cfg, out, echo=lambda *_: None)
    ckdir = out / "checkpoints" / "ama-class0-seed0"
    assert (ckdir / "train_state-train.pt").is_file() and not (out / "results.csv").exists()
    monkeypatch.setattr(Trainer, "save_checkpoint", real_save)
    steps_run = []
    real_run = Trainer.run

    def run(self, X, step_fn, *args, **kw):
        def counted(batch, ctx):
            steps_run.append(ctx.step)
            return step_fn(batch, ctx)
        return real_run(self, X, counted, *args, **kw)

    monkeypatch.setattr(Trainer, "run", run)
    B.run_bench(cfg, out, echo=lambda *_: None)
    (row,), (ref,) = rows_of(out / "results.csv"), rows_of(reference / "results.csv")
    total = int(ref["steps_trained"])
    assert steps_run == list(range(total // 3, total))  # epochs 2 and 3 only
    assert row["resumed"] == "yes" and ref["resumed"] == ""
    for column in ("auroc", "aupr", "f1", "epochs_trained", "steps_trained", "params"):
        assert row[column] == ref[column], column
    assert not ckdir.exists() and (out / "checkpoints" / ".gitignore").read_text().splitlines()[-1] == "*"


def test_no_checkpoints_writes_none(tmp_path):
    out = tmp_path / "plain"
    B.run_bench(config(methods="ama", baselines="", classes="0", set=TINY_AMA), out, echo=lambda *_: None, checkpoints=False)
    assert rows_of(out / "results.csv")[0]["status"] == "ok" and not (out / "checkpoints").exists()


def test_changed_settings_need_a_new_folder(finished):
    with pytest.raises(ConfigError, match=r"other settings \(budget, classes\)"):
        B.run_bench(config(classes="2", budget="small"), finished, echo=lambda *_: None)


def test_seeds_can_be_added_to_a_finished_folder(finished, tmp_path):
    """A seed's cells do not depend on the other seeds: a later run adds seeds to the folder."""
    import shutil

    out = tmp_path / "more-seeds"
    shutil.copytree(finished, out)
    before = rows_of(out / "results.csv")
    B.run_bench(config(methods="pca-recon", seeds="1"), out, echo=lambda *_: None)
    rows = rows_of(out / "results.csv")
    assert rows[: len(before)] == before  # the seed-0 cells are kept as they were
    assert sorted((r["method"], r["normal_class"], r["seed"]) for r in rows[len(before):]) == [
        (m, c, "1") for m in ("iforest", "pca-recon") for c in ("0", "1")]
    assert json.loads((out / "bench.json").read_text())["seeds"] == "0,1"


def test_bad_names_fail_before_running(tmp_path):
    with pytest.raises(ConfigError, match="unknown baseline"):
        B.run_bench(config(methods="ama", baselines="lof2"), tmp_path / "x", echo=lambda *_: None)
    with pytest.raises(ConfigError, match="unknown method"):
        B.run_bench(config(methods="nope"), tmp_path / "y", echo=lambda *_: None)
    assert B.parse_classes("0-2,5") == [0, 1, 2, 5]
    with pytest.raises(ConfigError):
        B.parse_classes("a-b")


def test_methods_can_be_added_to_a_finished_folder(finished, tmp_path):
    import shutil

    out = tmp_path / "grow"
    shutil.copytree(finished, out)
    B.run_bench(config(methods="pca-recon", baselines="pca"), out, echo=lambda *_: None)
    rows = rows_of(out / "results.csv")
    assert len(rows) == 8 and {r["method"] for r in rows} == {"ama", "pca-recon", "iforest", "pca"}
    assert '"baselines": "iforest,pca"' in (out / "bench.json").read_text()


def test_seed_column_is_the_spread_of_per_seed_class_means():
    rows = [{"method": "m", "kind": "method", "normal_class": c, "seed": s, "auroc": a}
            for (c, s, a) in [(0, 0, 0.8), (1, 0, 1.0), (0, 1, 0.7), (1, 1, 0.9)]]
    stats = B.summarise(rows)
    mean, std, n = stats[0]["seed_auroc"]
    assert (mean, n) == (pytest.approx(0.85), 2) and std == pytest.approx(0.05)  # seed means 0.9 and 0.8


def test_resumed_rows_give_one_summary_column_per_class(tmp_path):
    """After a resume the summary mixes rows read from results.csv (strings) with this run's (ints)."""
    rows = [{"method": "m", "kind": "method", "normal_class": c, "seed": "0", "auroc": a, "status": "ok"}
            for c, a in [("0", "0.8"), ("1", "0.6"), (1, 1.0), (2, 0.9)]]
    B.write_summary(tmp_path, rows, config(classes="0-2", methods="m", baselines=""))
    text = (tmp_path / "summary.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| method | 0"))
    assert header == "| method | 0 | 1 | 2 |"
    assert "| m | **0.800** | **0.800** | **0.900** |" in text  # class 1: mean of 0.6 and 1.0


# -- nothing silent: unknown --set keys, failed cells, merged folders with other parameters ------------------
@pytest.mark.parametrize("assignment, message", [
    ("ama.no_such_param=1", r"ama has no parameter 'no_such_param'; its parameters: .*\bepochs\b"),
    ("no_such_param=1", r"no benchmarked method has a parameter 'no_such_param'"),
    ("mae-simplx.epochs=1", r"no installed method is called 'mae-simplx'"),
])
def test_unknown_set_keys_are_one_line_errors_before_anything_runs(tmp_path, assignment, message):
    out = tmp_path / "x"
    with pytest.raises(ConfigError, match=message) as err:
        B.run_bench(config(methods="ama", baselines="", set=TINY_AMA + (assignment,)), out, echo=lambda *_: None)
    assert "\n" not in str(err.value) and not out.exists()


def test_the_issue_command_with_an_unknown_key_exits_2(tmp_path):
    from click.testing import CliRunner

    from anomalykit.cli import cli

    res = CliRunner().invoke(cli, ["bench", "--data", "digits", "--classes", "0", "--methods", "ama", "--baselines", "",
                                   "--set", "ama.no_such_param=1", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "ama has no parameter 'no_such_param'" in res.output


def test_failed_cells_are_listed_in_the_summary_and_fail_the_command(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from anomalykit.cli import cli

    real = B.run_cell

    def breaks_on_class_1(cell, cfg, cache, progress=False, **checkpointing):
        if cell.normal_class == 1:
            raise RuntimeError("the network went to pieces\nsecond line")
        return real(cell, cfg, cache, progress, **checkpointing)

    monkeypatch.setattr(runner, "run_cell", breaks_on_class_1)
    res = CliRunner().invoke(cli, ["bench", "--data", "digits", "--classes", "0,1", "--methods", "ama", "--budget", "default",
                                   *[a for kv in TINY_AMA for a in ("--set", kv)], "--out", str(tmp_path / "b")])
    assert res.exit_code == 1 and "1 cell(s) failed" in res.output
    summary = (tmp_path / "b" / "summary.md").read_text()
    assert "| ama | 1 | 0 | RuntimeError: the network went to pieces |" in summary and "second line" not in summary
    assert "| ama | method | 1 |" in summary  # the mean is over the one finished cell
    # a rerun retries the failed cell; once it succeeds the list is gone and the command succeeds
    monkeypatch.setattr(runner, "run_cell", real)
    res = CliRunner().invoke(cli, ["bench", "--data", "digits", "--classes", "0,1", "--methods", "ama", "--budget", "default",
                                   *[a for kv in TINY_AMA for a in ("--set", kv)], "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "Failed cells" not in (tmp_path / "b" / "summary.md").read_text()


def test_merge_refuses_folders_whose_params_differ(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "merge_results.py"
    folders = []
    for name, score in (("a", "a-features"), ("b", "r")):
        folder = tmp_path / name
        B.run_bench(config(methods="ama", baselines="", seeds="0" if name == "a" else "1", classes="0",
                           set=TINY_AMA + (f"ama.score={score}",)), folder, echo=lambda *_: None)
        folders.append(folder)
        settings = json.loads((folder / "bench.json").read_text())
        settings["set"] = []  # as if the folders had been run under different defaults
        (folder / "bench.json").write_text(json.dumps(settings))
    res = subprocess.run([sys.executable, str(script), *map(str, folders), "--out", str(tmp_path / "m")],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "ama ran with different parameters" in res.stderr and "score: 'a-features' vs 'r'" in res.stderr
    assert not (tmp_path / "m").exists()


def test_merge_counts_a_parameter_a_row_lacks_at_its_current_default(tmp_path):
    """A folder run before a parameter existed merges with one run at that parameter's default,
    and is refused next to one run at another value."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "merge_results.py"
    folders = []
    for name, seed in (("old", "0"), ("new", "1")):
        folder = tmp_path / name
        B.run_bench(config(methods="ama", baselines="", seeds=seed, classes="0", set=TINY_AMA), folder, echo=lambda *_: None)
        folders.append(folder)

    def rewrite_params(folder, change):
        rows = rows_of(folder / "results.csv")
        for r in rows:
            params = json.loads(r["params"])
            change(params)
            r["params"] = json.dumps(params, sort_keys=True)
        B.write_results(folder / "results.csv", rows)

    rewrite_params(folders[0], lambda p: p.pop("feature_layers"))  # as if run before feature_layers existed
    merge = [sys.executable, str(script), *map(str, folders), "--out"]
    res = subprocess.run(merge + [str(tmp_path / "m1")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert len(rows_of(tmp_path / "m1" / "results.csv")) == 2
    rewrite_params(folders[1], lambda p: p.update(feature_layers="all"))
    res = subprocess.run(merge + [str(tmp_path / "m2")], capture_output=True, text=True)
    assert res.returncode != 0 and "feature_layers: 'last' vs 'all'" in res.stderr
