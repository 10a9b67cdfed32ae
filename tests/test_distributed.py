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

from conftest import counting_npy_rows, model_space

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def run(cmd, tmp_path):
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
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
    X = model_space(det, split.X_train)
    r = torch.cat([det.r_scores(X[i : i + 50]) for i in range(0, X.shape[0], 50)]).double()
    assert data["r_mean"] == pytest.approx(float(r.mean()), rel=1e-5)
    assert data["r_std"] == pytest.approx(float(r.std(unbiased=False)), rel=1e-4)


def test_gathered_scores_are_in_input_order(worker):
    out, data = worker
    det = anomalykit.load(out / "model.pt")
    split = make_split("one-class", "digits", normal_class=0)
    np.testing.assert_allclose(data["scores"], det.score_samples(split.X_test), rtol=1e-5, atol=1e-6)


def test_lazy_rows_each_rank_reads_only_its_shard(worker):
    out, data = worker
    reads = [json.loads((out / f"rows-read-{r}.json").read_text()) for r in (0, 1)]
    n = len(data["scores"])
    for r in reads:
        lo, hi = r["shard"]
        assert sorted(r["rows"]) == list(range(lo, hi))  # its shard, each row read once
        np.testing.assert_array_equal(r["lazy_scores"], data["scores"])  # gathered: every rank has all scores
    assert reads[0]["shard"][1] == reads[1]["shard"][0] and reads[1]["shard"][1] == n


def test_training_on_lazy_rows_each_rank_reads_its_own_batches(worker):
    out, _ = worker
    reads = [json.loads((out / f"train-rows-read-{r}.json").read_text()) for r in (0, 1)]
    rows = counting_npy_rows(out / "x_train_u8.npy")
    anomalykit.load_method("ama", epochs=reads[0]["epochs"], batch_size=32, width=8, feature_dim=16, n_critic=2).fit(
        rows, progress=False)
    one_process = np.concatenate(rows.reads)
    for r in reads:
        assert r["same_scores"]  # the lazily trained model is the model trained on the array
        # half the reads of one process (its half of each epoch's batches, its shard of each
        # scoring pass), give or take a row per pass: no rank reads every row
        assert abs(len(r["rows"]) - len(one_process) / 2) <= 2 * r["epochs"] + 2, (len(r["rows"]), len(one_process))
    assert set(reads[0]["rows"]) | set(reads[1]["rows"]) == set(range(reads[0]["n"]))


def test_cli_under_torchrun_writes_one_report(tmp_path):
    """`anomalykit run --nproc 2`: rank 0 alone writes one report, whose scores.npy holds the saved
    model's scores of every test row in input order with the test labels (not one rank's shard, not
    rows scored by another rank's weights), whose metrics are scikit-learn's on those scores, and
    which separates digits class 0 (a sign flip or a scrambled row order would not)."""
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    res = run([sys.executable, "-m", "anomalykit.cli", "run", "ama", "--nproc", "2", "--epochs", "1", "-q",
               "--set", "width=8", "--set", "n_critic=1", "--out", str(tmp_path / "run")], tmp_path)
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert res.stdout.count("report:") == 1  # only rank 0 prints and writes
    assert sorted(p.name for p in out.iterdir()) == sorted(metrics["files"])
    scores, labels = np.load(out / "scores.npy")
    split = make_split("one-class", "digits", normal_class=0)
    np.testing.assert_array_equal(labels, split.y_test)
    det = anomalykit.load(out / "model.pt")  # scored here in one process, one batch
    np.testing.assert_allclose(scores, det.score_samples(split.X_test), rtol=1e-5, atol=1e-6)
    assert metrics["threshold"] == det.threshold_
    assert metrics["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics["aupr"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert metrics["f1"] == pytest.approx(f1_score(labels, scores > det.threshold_), abs=1e-12)
    # measured: 1.0 with these settings, in one process and in two (a trivial floor for a working
    # model on digits class 0; a flipped sign gives ~0, rows scored out of order ~0.5)
    assert metrics["auroc"] > 0.95


@pytest.mark.parametrize("still_held", [False, True])
def test_shutdown_frees_the_group_now_or_warns(tmp_path, still_held):
    """shutdown() frees the process group (joining gloo's threads) before interpreter teardown, where
    a gloo thread dropping a collective's tensors can abort the process; if something still holds
    the group it says so. One in-process rank; the torchrun workers above assert it with two."""
    import torch.distributed as dist
    import torch.distributed.nn.functional  # noqa: F401  (as init_from_env does: its defaults must not hold the group)

    from anomalykit import distributed as D

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        t = torch.ones(3)
        dist.all_reduce(t)
        held = dist.group.WORLD if still_held else None
        if still_held:
            with pytest.warns(RuntimeWarning, match="still referenced"):
                assert D.shutdown() is False
        else:
            assert D.shutdown() is True
        assert not dist.is_initialized()
        del held
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
