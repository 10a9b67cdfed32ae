"""Data-parallel training with torchrun: 2 CPU processes, gloo backend."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import anomalykit
from anomalykit.data import make_split

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def run(cmd, tmp_path):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    run([*TORCHRUN, str(Path(__file__).parent / "distributed_worker.py"), str(out)], out)
    return out, json.loads((out / "worker.json").read_text())


def test_weights_identical_across_ranks(worker):
    assert worker[1]["identical_weights"]


def test_a_score_statistics_cover_the_whole_training_set(worker):
    out, data = worker
    det = anomalykit.load(out / "model.pt")
    split = make_split("one-class", "digits", normal_class=0)
    r = torch.cat([det.r_scores(split.X_train[i : i + 50]) for i in range(0, split.X_train.shape[0], 50)]).double()
    assert data["r_mean"] == pytest.approx(float(r.mean()), rel=1e-5)
    assert data["r_std"] == pytest.approx(float(r.std(unbiased=False)), rel=1e-4)


def test_gathered_scores_are_in_input_order(worker):
    out, data = worker
    det = anomalykit.load(out / "model.pt")
    split = make_split("one-class", "digits", normal_class=0)
    np.testing.assert_allclose(data["scores"], det.score_samples(split.X_test), rtol=1e-5, atol=1e-6)


def test_cli_under_torchrun_writes_one_report(tmp_path):
    res = run([sys.executable, "-m", "anomalykit.cli", "run", "ama", "--nproc", "2", "--epochs", "1", "-q",
               "--set", "width=8", "--set", "n_critic=1", "--out", str(tmp_path / "run")], tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and 0.0 <= metrics["auroc"] <= 1.0
    assert res.stdout.count("report:") == 1  # only rank 0 prints and writes
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(metrics["files"])
