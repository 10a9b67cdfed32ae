import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from anomalykit.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_list_and_show(runner, pca_method):
    res = invoke(runner, "list")
    assert res.exit_code == 0 and "pca-recon" in res.stdout
    data = json.loads(invoke(runner, "list", "--json").stdout)
    assert any(m["name"] == "pca-recon" for m in data["methods"])
    res = invoke(runner, "show", "pca-recon")
    assert "n_components (int, default 8" in res.stdout and "contamination" in res.stdout


@pytest.mark.parametrize("mode", ["reference", pytest.param("native", marks=pytest.mark.native("pair_feature_l1"))])
def test_info_reports_the_kernel_each_op_uses(runner, monkeypatch, mode):
    """ANOMALYKIT_KERNELS=reference|native forces every CPU op onto that path, and `info` says so."""
    monkeypatch.setenv("ANOMALYKIT_KERNELS", mode)
    res = invoke(runner, "info")
    assert res.exit_code == 0
    rows = {tuple(line.split()[:2]): line.split()[2] for line in res.stdout.splitlines() if line.startswith("  cpu ")}
    assert rows == {("cpu", op): mode for op in ("pair_feature_l1", "simplex_mix", "annulus_sample")}
    assert f"ANOMALYKIT_KERNELS={mode}" in res.stdout and "plugin API: " in res.stdout


def test_run_writes_a_complete_report(runner, pca_method, tmp_path):
    out = tmp_path / "run"
    res = invoke(runner, "run", "pca-recon", "--data", "digits", "--normal-class", "1", "--set", "n_components=4", "--out", out, "-q")
    assert res.exit_code == 0, res.stderr
    for name in ("metrics.json", "roc.png", "scores.png", "config.toml", "model.pt", "scores.npy"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("method", "dataset", "protocol", "normal_class", "seed", "auroc", "aupr", "f1", "n_train", "n_test",
                "train_seconds", "score_seconds", "device", "kernels"):
        assert key in metrics, key
    assert metrics["params"]["n_components"] == 4 and metrics["normal_class"] == 1
    assert metrics["epochs_trained"] == 0  # the plugin's epochs (PCA: 0, no training loop)
    assert metrics["steps_trained"] == 0
    scores, labels = np.load(out / "scores.npy")
    assert metrics["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert f"auroc={metrics['auroc']:.4f}" in res.stdout
    # the written config reproduces the run
    again = invoke(runner, "run", "--config", out / "config.toml", "--out", tmp_path / "again", "-q")
    assert again.exit_code == 0
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["auroc"] == metrics["auroc"]
    # and the saved model scores new data from the command line
    res = invoke(runner, "score", out, "digits", "--split", "test", "--out", tmp_path / "s.npy")
    assert res.exit_code == 0
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), scores)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "no-such-method"], "unknown method 'no-such-method'"),
        (["run", "pca-recon", "--data", "cifar"], "unknown dataset 'cifar'"),
        (["run", "pca-recon", "--normal-class", "10"], "--normal-class 10 is not a class of digits"),
        (["run", "pca-recon", "--set", "n_compnents=3"], "unknown parameter 'n_compnents'"),
        (["run", "pca-recon", "--set", "n_components=many"], "expects int"),
        (["run", "pca-recon", "--set", "oops"], "--set expects key=value"),
        (["run", "pca-recon", "--seed", "2", "--set", "seed=1"], "--seed 2 and --set seed=1 both set seed; give it once"),
        (["run", "pca-recon", "--epochs", "-3"], "must be >= 0"),
        (["run", "pca-recon", "--protocol", "ood"], "needs --ood-data"),
        (["run", "pca-recon", "--device", "cuda:7"], "cuda"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_run_folder(runner, pca_method, tmp_path, args, fragment):
    out = tmp_path / "run"
    res = invoke(runner, *args, "--out", out)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "array, fragment",
    [
        (np.zeros((0, 4)), "empty"),
        (np.zeros((20, 2, 2, 2, 2)), "dimension"),
        (np.where(np.eye(20, 4) > 0, np.nan, 1.0), "NaN/inf"),
    ],
)
def test_bad_user_data_files(runner, pca_method, tmp_path, array, fragment):
    path = tmp_path / "data.npz"
    np.savez(path, X=array, y=np.arange(array.shape[0]) % 2)
    res = invoke(runner, "run", "pca-recon", "--data", path, "--out", tmp_path / "run")
    assert res.exit_code == 2 and fragment in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_refuses_to_overwrite_a_finished_run(runner, pca_method, tmp_path):
    out = tmp_path / "run"
    assert invoke(runner, "run", "pca-recon", "--out", out, "-q").exit_code == 0
    res = invoke(runner, "run", "pca-recon", "--out", out, "-q")
    assert res.exit_code == 2 and "already holds a finished run" in res.stderr


@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_score_with_bad_checkpoint(runner, tmp_path, damage):
    path = tmp_path / "model.pt"
    if damage == "truncate":
        path.write_bytes(b"PK\x03\x04 truncated zip")
    else:
        import torch

        torch.save({"weights": torch.zeros(3)}, path)
    res = invoke(runner, "score", path, "digits")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "checkpoint" in res.stderr


def test_python_m_anomalykit_is_the_command():
    """`python -m anomalykit` (what torchrun's -m runs) is the `anomalykit` command."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "anomalykit", "list"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ama " in res.stdout and "mae-simplex" in res.stdout
