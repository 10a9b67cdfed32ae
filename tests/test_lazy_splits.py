"""`run` and `bench` on data read lazily: a ``.npy`` file or an image folder becomes lazy views
that the protocols subset and concatenate without reading a row, and every protocol gives the
rows, labels and split of the same data loaded whole (an ``.npz``); training reads image files
ahead in worker processes and trains the same model as reading them in turn."""
import csv
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_digits

import anomalykit
import anomalykit.lazy_rows as lazy_rows
from anomalykit import InputError
from anomalykit.cli import cli
from anomalykit.data import make_split
from anomalykit.lazy_rows import ConcatRows, ImageFileRows, LazyRows, NpyRows, TensorRows, concat_rows, open_rows


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.images * 15).astype(np.uint8), d.target.astype(np.int64)  # (1797, 8, 8) uint8, labels 0-9


@pytest.fixture(scope="module")
def folder_and_npz(tmp_path_factory, digits):
    """The first 600 digits as an image folder (class sub-folders) and as an .npz of the same
    images in the folder's order (classes sorted, files sorted), with their labels."""
    images, labels = digits[0][:600], digits[1][:600]
    root = tmp_path_factory.mktemp("lazy-splits")
    order = []
    for c in range(10):
        (root / "imgs" / str(c)).mkdir(parents=True)
        for i in np.flatnonzero(labels == c):
            Image.fromarray(images[i]).save(root / "imgs" / str(c) / f"{i:04d}.png")
            order.append(i)
    np.savez(root / "same.npz", X=images[order], y=labels[order])
    other = np.random.default_rng(3).integers(0, 256, (400, 8, 8)).astype(np.uint8)
    np.save(root / "other.npy", other)  # an anomaly source read lazily
    np.savez(root / "other.npz", X=other)  # the same, loaded whole
    return root


def test_concat_rows_reads_like_torch_cat_in_any_order(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (30, 1, 4, 4)).astype(np.uint8)
    b = rng.normal(size=(20, 1, 4, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    want = torch.cat([torch.from_numpy(a), torch.from_numpy(b)])  # uint8 + float32 -> float32
    rows = concat_rows([NpyRows(tmp_path / "a.npy"), torch.from_numpy(b)])
    assert isinstance(rows, ConcatRows) and rows.shape == tuple(want.shape) and rows.dtype == want.dtype
    idx = rng.permutation(50)[:37]
    torch.testing.assert_close(rows[idx], want[idx], rtol=0, atol=0)
    torch.testing.assert_close(rows.subset(idx)[5:20], want[idx][5:20], rtol=0, atol=0)
    torch.testing.assert_close(rows.materialize(), want, rtol=0, atol=0)
    both_uint8 = concat_rows([NpyRows(tmp_path / "a.npy"), TensorRows(torch.from_numpy(a))])
    assert both_uint8.dtype == torch.uint8
    with pytest.raises(InputError, match="sample shapes"):
        concat_rows([NpyRows(tmp_path / "a.npy"), torch.zeros(3, 1, 5, 5)])


SPLITS = [  # (protocol, eval split, the OOD anomalies read lazily too)
    ("one-class", "test", None), ("one-class", "val", None), ("tabular-topk", "test", None),
    ("ood", "test", True), ("ood", "test", False), ("ood", "val", True), ("ood", "val", False),
]


@pytest.mark.parametrize("protocol, eval_split, ood_lazy", SPLITS)
def test_protocols_on_lazy_data_read_nothing_and_equal_the_loaded_data(folder_and_npz, monkeypatch, protocol,
                                                                        eval_split, ood_lazy):
    ood = None if ood_lazy is None else "other"
    reads = []
    original = lazy_rows.LazyRows.__getitem__
    monkeypatch.setattr(lazy_rows.LazyRows, "__getitem__", lambda self, key: reads.append(1) or original(self, key))
    kw = dict(normal_class=3, seed=1, max_train=40, eval_split=eval_split)
    ood_lazy_name = None if ood is None else str(folder_and_npz / ("other.npy" if ood_lazy else "other.npz"))
    lazy = make_split(protocol, str(folder_and_npz / "imgs"), ood_data=ood_lazy_name, **kw)
    assert isinstance(lazy.X_train, LazyRows) and isinstance(lazy.X_test, LazyRows)
    assert not reads, "building a split read rows"
    monkeypatch.setattr(lazy_rows.LazyRows, "__getitem__", original)
    loaded = make_split(protocol, str(folder_and_npz / "same.npz"),
                        ood_data=None if ood is None else str(folder_and_npz / "other.npz"), **kw)
    assert isinstance(loaded.X_train, torch.Tensor) and isinstance(loaded.X_test, torch.Tensor)
    torch.testing.assert_close(lazy.X_train[:], loaded.X_train, rtol=0, atol=0)
    torch.testing.assert_close(lazy.X_test[:], loaded.X_test, rtol=0, atol=0)
    np.testing.assert_array_equal(lazy.y_test, loaded.y_test)
    assert lazy.info["split_fingerprint"] == loaded.info["split_fingerprint"]


def _run(tmp_path, name, data, *extra):
    out = tmp_path / name
    res = CliRunner().invoke(cli, ["run", "ama", "--data", str(data), "--normal-class", "3", "--max-train", "60",
                                   "--set", "epochs=1", "--set", "width=8", "--set", "n_critic=1", "--out", str(out), "-q",
                                   *extra], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads((out / "metrics.json").read_text()), np.load(out / "scores.npy")


def test_run_on_an_image_folder_equals_the_run_on_the_loaded_array(folder_and_npz, tmp_path, monkeypatch):
    monkeypatch.setenv("ANOMALYKIT_DATA_WORKERS", "1")
    lazy_metrics, lazy_scores = _run(tmp_path, "folder", folder_and_npz / "imgs")
    loaded_metrics, loaded_scores = _run(tmp_path, "npz", folder_and_npz / "same.npz")
    np.testing.assert_array_equal(lazy_scores, loaded_scores)
    assert lazy_metrics["auroc"] == loaded_metrics["auroc"] and lazy_metrics["n_test"] == loaded_metrics["n_test"]


def test_bench_on_an_image_folder_scores_methods_and_baselines(folder_and_npz, tmp_path):
    rows = {}
    for name in ("imgs", "same.npz"):
        out = tmp_path / name
        res = CliRunner().invoke(cli, ["bench", "--data", str(folder_and_npz / name), "--classes", "3", "--max-train", "60",
                                       "--methods", "ama", "--set", "ama.epochs=1", "--set", "ama.width=8",
                                       "--baselines", "iforest", "--seeds", "0", "--out", str(out)],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        with open(out / "results.csv", newline="") as fh:
            rows[name] = {r["method"]: r for r in csv.DictReader(fh)}
    for method in ("ama", "iforest"):
        assert rows["imgs"][method]["status"] == "ok"
        assert rows["imgs"][method]["auroc"] == rows["same.npz"][method]["auroc"], method


def test_training_decodes_image_files_ahead_in_worker_processes(folder_and_npz, tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    decode = lazy_rows.decode_image

    def recording(path, mode=None):
        with open(pids, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return decode(path, mode)

    monkeypatch.setattr(lazy_rows, "decode_image", recording)
    fitted = {}
    for workers in ("0", "1"):
        monkeypatch.setenv("ANOMALYKIT_DATA_WORKERS", workers)
        rows = open_rows(folder_and_npz / "imgs").subset(np.arange(200))
        assert isinstance(rows, ImageFileRows)
        pids.write_text("")
        det = anomalykit.load_method("ama", epochs=2, width=8, n_critic=1, batch_size=32)
        fitted[workers] = det.fit(rows, progress=False)
        readers = {int(p) for p in pids.read_text().split()}
        if workers == "0":
            assert readers == {os.getpid()}
        else:  # the training batches were decoded in a worker process
            assert readers - {os.getpid()}, readers
    probe = np.load(folder_and_npz / "same.npz")["X"][:300]
    np.testing.assert_array_equal(fitted["1"].score_samples(probe), fitted["0"].score_samples(probe))


def test_nan_in_a_lazy_npy_fails_the_run_before_it_writes_a_folder(tmp_path):
    X = np.random.default_rng(0).normal(size=(300, 6))
    X[250, 3] = np.nan
    np.save(tmp_path / "x.npy", X)
    res = CliRunner().invoke(cli, ["run", "ama", "--data", str(tmp_path / "x.npy"), "--protocol", "ood", "--ood-data",
                                   str(tmp_path / "x.npy"), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "NaN/inf" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output
    assert "first in row 250)" in res.stderr  # the row of the file, not of the split
    assert not (tmp_path / "run").exists()

