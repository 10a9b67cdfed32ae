"""Same model, same rows, same answers through every entry point.

For every installed method (the example third-party plugin too) and three kinds of user data --
uint8 images (N, H, W), float images (N, C, H, W) and raw tabular rows (N, F) -- the scores of
``score_samples`` are compared with

- ``anomalykit score model.pt FILE`` on ``.npy``, ``.npz``, ``.csv`` (rows) and a folder of PNG
  files (uint8 images), in the file's row order;
- the exported ONNX graph run by onnxruntime alone, and the TorchScript graph run by
  ``torch.jit.load`` alone, each fed the rows as ``fit`` took them (shape and dtype);

to 1e-5 of the largest score, and ``predict``'s flags with the CLI's and the exported scorers'
(rows whose score lies within that tolerance of the threshold excepted). The input scaling has
one owner, the fitted preprocessor, so any entry point that scaled on its own would fail here
(the uint8 case by a factor of 127.5).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import anomalykit
from anomalykit.cli import cli
from anomalykit.export import load_scorer

from conftest import tiny_params

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

RTOL = 1e-5
#: ADGAN's score takes gradient steps: TorchScript only (an ONNX graph cannot hold them).
TORCHSCRIPT_ONLY = {"adgan"}


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def uint8_images():
    """(N, 8, 8) uint8, values 0..254: digits as a camera would give them."""
    images, target = _digits()
    X = np.round(images * 15.875).astype(np.uint8)
    return X[target == 0][:96], X[target != 0][:40]


def float_images():
    """(N, 1, 8, 8) float32, values 0..16 (scikit-learn's own)."""
    images, target = _digits()
    X = images.astype(np.float32)[:, None]
    return X[target == 0][:96], X[target != 0][:40]


def tabular_rows():
    """(N, 30) float64 raw features (breast cancer, benign rows as normal)."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return d.data[d.target == 1][:150], np.concatenate([d.data[d.target == 1][150:170], d.data[d.target == 0][:20]])


DATA = {"uint8-images": uint8_images, "float-images": float_images, "rows": tabular_rows}


def close(got, ref, what):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} vs {ref.shape}"
    worst = float(np.abs(got - ref).max()) / max(float(np.abs(ref).max()), 1e-12)
    assert worst <= RTOL, f"{what}: scores differ from score_samples by {worst:.2e} of the largest score (allowed {RTOL:g})"


def same_flags(flags, ref_flags, scores, threshold, what):
    clear = np.abs(scores - threshold) > RTOL * max(float(np.abs(scores).max()), 1e-12)
    np.testing.assert_array_equal(np.asarray(flags)[clear], np.asarray(ref_flags)[clear], err_msg=what)


def cli_scores(model, data) -> tuple[np.ndarray, np.ndarray]:
    out = data.parent / f"{data.name}.scores.csv"
    result = CliRunner().invoke(cli, ["score", str(model), str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2)
    return table[:, 0], table[:, 1].astype(int)


def write_files(X: np.ndarray, folder) -> list:
    """X as every file kind ``anomalykit score`` reads that can hold it."""
    files = [folder / "rows.npy", folder / "rows.npz"]
    np.save(files[0], X)
    np.savez(files[1], X=X)
    if X.ndim == 2:
        files.append(folder / "rows.csv")
        np.savetxt(files[-1], X, delimiter=",", fmt="%.17g")
    if X.dtype == np.uint8:
        from PIL import Image

        images = folder / "images" / "all"
        images.mkdir(parents=True)
        for i, img in enumerate(X.reshape(X.shape[0], *X.shape[-2:])):
            Image.fromarray(img).save(images / f"{i:04d}.png")
        files.append(folder / "images")
    return files


@pytest.mark.parametrize("kind", sorted(DATA))
def test_every_entry_point_gives_the_api_scores(kind, installed_methods, tmp_path, one_thread):
    X_train, X = DATA[kind]()
    for method in installed_methods:
        folder = tmp_path / method
        folder.mkdir()
        det = anomalykit.load_method(method, **tiny_params(method, device="cpu"))
        try:
            det.fit(X_train)
        except anomalykit.InputError as exc:  # a method for images only (csi-aae) refuses rows in one line
            assert X_train.ndim == 2 and "\n" not in str(exc), exc
            continue
        ref, ref_flags = det.score_samples(X), det.predict(X)
        assert det.fit_input_ == (X_train.shape[1:], "uint8" if X_train.dtype == np.uint8 else "float32")
        model = det.save(folder / "model.pt")
        where = f"{method}, {kind}"

        for data in write_files(X, folder):
            scores, flags = cli_scores(model, data)
            close(scores, ref, f"{where}: anomalykit score on {data.name}")
            same_flags(flags, ref_flags, ref, det.threshold_, f"{where}: anomalykit score flags on {data.name}")

        formats = ["torchscript"] if method in TORCHSCRIPT_ONLY else ["onnx", "torchscript"]
        for fmt in formats:
            path = det.export(folder / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt"), format=fmt)
            if fmt == "onnx":  # onnxruntime alone, fed what fit took
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                feed = X if X.dtype == np.uint8 else X.astype(np.float32)
                assert session.get_inputs()[0].type == ("tensor(uint8)" if X.dtype == np.uint8 else "tensor(float)")
                got = session.run(None, {"x": feed})[0]
            else:  # torch.jit.load alone
                module = torch.jit.load(str(path))
                with torch.no_grad():
                    got = module(torch.from_numpy(X if X.dtype == np.uint8 else X.astype(np.float32))).numpy()
            close(got, ref, f"{where}: {fmt} graph")
            scorer = load_scorer(path)
            same_flags(scorer.predict(X), ref_flags, ref, det.threshold_, f"{where}: {fmt} scorer flags")
            scores, flags = cli_scores(path, folder / "rows.npy")
            close(scores, ref, f"{where}: anomalykit score with the {fmt} file")


def test_uint8_file_scores_like_the_api_not_rescaled_twice(tmp_path, one_thread):
    """The reported bug: a uint8 .npy scored through the CLI was scaled by the loader and again by
    the model's preprocessor (scores off by thousands, every row flagged)."""
    X_train, X = uint8_images()
    det = anomalykit.load_method("ama", **tiny_params("ama", device="cpu")).fit(X_train)
    np.save(tmp_path / "X.npy", X)
    scores, flags = cli_scores(det.save(tmp_path / "m.pt"), tmp_path / "X.npy")
    close(scores, det.score_samples(X), "ama: anomalykit score on a uint8 .npy")
    assert flags.mean() == pytest.approx(det.predict(X).mean())


def test_csi_aae_nearest_training_index_scales_user_rows_like_score_samples(one_thread):
    """csi-aae's nearest-neighbour look-up takes user rows as ``score_samples`` does: uint8 rows
    and the same values as float rows find the same neighbours, and they are the ones the score
    used (each training row's nearest training row is itself)."""
    X_train, X = uint8_images()
    det = anomalykit.load_method("csi-aae", **tiny_params("csi-aae", device="cpu")).fit(X_train)
    idx = det.nearest_training_index(X)
    assert torch.equal(idx, det.nearest_training_index(X.astype(np.float32)))
    assert torch.equal(det.nearest_training_index(X_train[:20]), torch.arange(20))
    with pytest.raises(anomalykit.InputError, match="sample shape"):
        det.nearest_training_index(X[:, :4])
