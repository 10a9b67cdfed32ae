"""Patch mode (anomalykit.patches and the core's use of it) and the two map baselines, against
values worked out here: window positions, assembly, image scores, crops, a small method's scores and
maps computed window by window with numpy, save/load, export, and the MVTec-layout defaults."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import anomalykit
from anomalykit import ConfigError, Detector, InputError, Param
from anomalykit import patches

from test_anomaly_maps import write_mvtec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_window_starts_cover_every_pixel_with_the_last_flush():
    assert patches.window_starts(64, 16, 8) == [0, 8, 16, 24, 32, 40, 48]
    assert patches.window_starts(20, 16, 8) == [0, 4]
    assert patches.window_starts(16, 16, 8) == [0]
    assert patches.window_starts(30, 16, 16) == [0, 14]
    assert patches.stride_of(16, None) == 8 and patches.stride_of(5, None) == 2 and patches.stride_of(16, 3) == 3
    assert patches.n_windows((3, 64, 20), 16, 8) == 7 * 2


def test_windows_then_assemble_give_the_image_back_and_average_overlaps():
    x = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).reshape(2, 3, 10, 12)
    w = patches.windows(x, 6, 4)  # rows at 0, 4; columns at 0, 4, 6
    assert w.shape == (2 * 2 * 3, 3, 6, 6)
    assert torch.equal(w[0], x[0, :, 0:6, 0:6]) and torch.equal(w[5], x[0, :, 4:10, 6:12]) and torch.equal(w[6], x[1, :, 0:6, 0:6])
    torch.testing.assert_close(patches.assemble(w, 2, 10, 12, 6, 4), x)
    # constant windows 1..6 of one image: pixel (5, 5) lies in windows (0,0),(0,4),(4,0),(4,4): (1+2+4+5)/4
    ones = torch.arange(1.0, 7.0)[:, None, None].expand(6, 6, 6)
    out = patches.assemble(ones, 1, 10, 12, 6, 4)
    assert out.shape == (1, 10, 12) and float(out[0, 5, 5]) == pytest.approx(3.0)
    assert float(out[0, 0, 0]) == 1.0 and float(out[0, 9, 11]) == 6.0
    assert float(out[0, 9, 6]) == pytest.approx((5 + 6) / 2)  # windows (4,4) and (4,6) overlap there


def test_image_scores_take_the_max_or_the_mean_of_the_top_tenth():
    s = torch.tensor([1.0, 5.0, 3.0, 2.0] + [0.0] * 16 + [9.0, 8.0] + [0.0] * 18)  # 2 images x 20 windows
    assert patches.image_score(s, 2, "max").tolist() == [5.0, 9.0]
    assert patches.image_score(s, 2, "top10").tolist() == [4.0, 8.5]  # the top 2 of 20 each
    assert patches.image_score(torch.arange(13.0), 1, "top10").tolist() == [11.5]  # 10% of 13 rounds up to 2
    assert patches.image_score(torch.arange(9.0), 1, "top10").tolist() == [8.0]  # and 0.9 to 1


def test_random_crops_are_seeded_crops_of_their_own_image():
    X = torch.arange(3 * 1 * 9 * 9, dtype=torch.float32).reshape(3, 1, 9, 9)  # every value unique
    crops = patches.random_crops(X, 4, 5, seed=1)
    assert crops.shape == (15, 1, 4, 4)
    for i, c in enumerate(crops):
        image = X[i // 5, 0]
        y, x = np.argwhere(image.numpy() == float(c[0, 0, 0]))[0]
        assert torch.equal(c[0], image[y : y + 4, x : x + 4])
    assert torch.equal(crops, patches.random_crops(X, 4, 5, seed=1)) and not torch.equal(crops, patches.random_crops(X, 4, 5, seed=2))


class WindowMean(Detector):
    """The squared distance of a window to the mean training window; its map that distance per pixel."""

    name = "patch-mean-test"
    summary = "distance to the mean training crop"
    params = (Param("epochs", 0, "unused", low=0),)
    seen: list = []

    def _build(self, input_shape):
        self.nets["m"] = torch.nn.Module()
        self.nets["m"].register_buffer("mean", torch.zeros(input_shape))

    def _fit(self, X, y):
        type(self).seen.append(tuple(X.shape))
        self.nets["m"].mean.copy_(X.mean(0))

    def _score(self, X):
        return (X - self.nets["m"].mean).square().flatten(1).sum(1)

    def _anomaly_map(self, x):
        return (x - self.nets["m"].mean).square().sum(1)


def by_hand(images: np.ndarray, mean: np.ndarray, size: int, stride: int):
    """Each image's max window score and its overlap-averaged map, with numpy loops."""
    n, _, h, w = images.shape
    ys, xs = patches.window_starts(h, size, stride), patches.window_starts(w, size, stride)
    scores, maps = [], []
    for img in images:
        total, count, best = np.zeros((h, w)), np.zeros((h, w)), -np.inf
        for y in ys:
            for x in xs:
                d = ((img[:, y : y + size, x : x + size] - mean) ** 2)
                best = max(best, d.sum())
                total[y : y + size, x : x + size] += d.sum(0)
                count[y : y + size, x : x + size] += 1
        scores.append(best)
        maps.append(total / count)
    return np.array(scores), np.array(maps)


def test_a_method_in_patch_mode_against_numpy(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 2, 20, 18)).astype(np.float32)
    WindowMean.seen.clear()
    det = WindowMean(patch_size=8, patches_per_image=5, patch_stride=5, preprocess="none").fit(X)
    assert WindowMean.seen == [(60, 2, 8, 8)]  # the plugin trained on 12 x 5 crops
    assert det.input_shape_ == (2, 8, 8) and det.image_shape_ == (2, 20, 18)
    crops = patches.random_crops(torch.from_numpy(X), 8, 5, det.hp.seed)
    mean = crops.mean(0).numpy()
    new = rng.normal(size=(4, 2, 20, 18)).astype(np.float32)
    new[0, :, 3:7, 10:14] += 4.0  # a local defect
    scores, maps = by_hand(new, mean, 8, 5)
    np.testing.assert_allclose(det.score_samples(new), scores, rtol=1e-5)
    np.testing.assert_allclose(det.anomaly_map(new, sigma=0), maps, rtol=1e-5)
    train_scores, _ = by_hand(X, mean, 8, 5)
    np.testing.assert_allclose(det.decision_scores_, train_scores, rtol=1e-5)  # one per training image
    assert det.anomaly_map(new, sigma=0)[0, 3:7, 10:14].mean() > 5 * det.anomaly_map(new, sigma=0)[0, 12:, :5].mean()
    again = anomalykit.Detector.from_checkpoint.__func__(WindowMean, torch.load(det.save(tmp_path / "m.pt"), weights_only=True),
                                                         path=tmp_path / "m.pt")
    assert again.image_shape_ == (2, 20, 18) and np.array_equal(again.score_samples(new), det.score_samples(new))
    with pytest.raises(InputError, match=r"sample shape \(2, 8, 8\) but the detector was fitted on \(2, 20, 18\)"):
        det.score_samples(new[:, :, :8, :8])


def test_top10_and_calibration_in_patch_mode():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 1, 16, 16)).astype(np.float32)
    det = WindowMean(patch_size=4, patch_score="top10", calibration=10, preprocess="none").fit(X)
    new = rng.normal(size=(3, 1, 16, 16)).astype(np.float32)
    w = patches.windows(torch.from_numpy(new), 4, 2)
    per_window = (w - det.nets["m"].mean).square().flatten(1).sum(1).reshape(3, -1)
    assert per_window.shape[1] == 49
    expected = per_window.sort(dim=1, descending=True).values[:, :5].mean(1)  # the top 10% of 49: 5 windows
    np.testing.assert_allclose(det.score_samples(new), expected.numpy(), rtol=1e-5)
    assert not np.allclose(det.score_samples(new), per_window.max(1).values.numpy())
    assert len(det.calibration_scores_) == 10 and det.p_values(new).shape == (3,)


def test_patch_mode_refuses_rows_and_patches_larger_than_the_images():
    with pytest.raises(ConfigError, match="patch_size needs images"):
        WindowMean(patch_size=4).fit(np.zeros((10, 5), np.float32))
    with pytest.raises(InputError, match="patch_size=32 is larger than the images \\(16x16\\)"):
        WindowMean(patch_size=32).fit(np.zeros((10, 1, 16, 16), np.float32))


def test_a_stride_larger_than_the_patch_is_refused_at_fit_and_at_scoring():
    X = np.random.default_rng(5).normal(size=(6, 1, 16, 16)).astype(np.float32)
    with pytest.raises(ConfigError, match="^patch_stride=5 is larger than patch_size=4, so some pixels would lie in no window; "
                                          "use patch_stride <= 4$"):
        WindowMean(patch_size=4, patch_stride=5).fit(X)
    det = WindowMean(patch_size=4, patch_stride=4, preprocess="none").fit(X)  # equal: windows tile the image
    assert np.isfinite(det.anomaly_map(X, sigma=0)).all()
    det.set_params(patch_stride=6)
    with pytest.raises(ConfigError, match="patch_stride=6 is larger than patch_size=4"):
        det.score_samples(X)


def load_window_mean(path, **overrides):
    return WindowMean.from_checkpoint(torch.load(path, weights_only=True), path=path, **overrides)


def test_patch_stride_and_score_are_score_params_of_a_patch_mode_model(tmp_path):
    """Changing them changes the image scores, so the threshold and the calibration scores no
    longer match: predict, p_values and export refuse, score_samples works."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(20, 1, 12, 12)).astype(np.float32)
    det = WindowMean(patch_size=4, calibration=5, preprocess="none").fit(X)
    assert det.threshold_params_ == {"patch_score": "max", "patch_stride": None}
    assert WindowMean(preprocess="none").fit(X).threshold_params_ == {}  # whole images: nothing to check
    for key, value in (("patch_stride", 1), ("patch_score", "top10")):
        det.set_params(**{key: value})
        assert det.score_samples(X).shape == (20,)
        for call in (lambda: det.predict(X), lambda: det.p_values(X), lambda: det.export(tmp_path / "m.onnx")):
            with pytest.raises(InputError, match=f"{key}={value!r} changes the scores, but threshold_ comes from the training "
                                                 f"scores with {key}="):
                call()
        det.set_params(patch_stride=None, patch_score="max")
        assert det.predict(X).shape == (20,)
    path = det.save(tmp_path / "m.pt")
    with pytest.raises(InputError, match="patch_score='top10' changes the scores"):
        load_window_mean(path, patch_score="top10").predict(X)
    assert load_window_mean(path, patch_stride=None).predict(X).shape == (20,)


def test_the_patch_size_is_fixed_at_fit(tmp_path):
    """Set later, it takes effect at the next fit (scikit-learn's rule): scoring keeps the crops
    the networks were built for; load refuses to change it in one line."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(10, 1, 12, 12)).astype(np.float32)
    det = WindowMean(patch_size=4, preprocess="none").fit(X)
    before = det.score_samples(X)
    det.set_params(patch_size=6)
    np.testing.assert_array_equal(det.score_samples(X), before)
    assert det.anomaly_map(X, sigma=0).shape == (10, 12, 12)
    det.set_params(patch_size=4)
    path = det.save(tmp_path / "m.pt")
    for other in (6, None):
        with pytest.raises(anomalykit.CheckpointError, match="patch_size is fixed when the model is trained \\(this one: 4\\); "
                                                             "drop the patch_size override, or fit a new model$"):
            load_window_mean(path, patch_size=other)
    whole = WindowMean(preprocess="none").fit(X).save(tmp_path / "w.pt")
    with pytest.raises(anomalykit.CheckpointError, match="this one: None"):
        load_window_mean(whole, patch_size=4)
    np.testing.assert_array_equal(load_window_mean(path, patch_size=4).score_samples(X), before)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_patch_mode_exports_with_parity(fmt, tmp_path):
    from anomalykit.export import load_scorer

    rng = np.random.default_rng(2)
    X = (rng.uniform(size=(20, 3, 24, 24)) * 255).astype(np.uint8)
    det = WindowMean(patch_size=8, patches_per_image=4).fit(X)
    scorer = load_scorer(det.export(tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")))
    new = (rng.uniform(size=(5, 3, 24, 24)) * 255).astype(np.uint8)
    np.testing.assert_allclose(scorer.score_samples(new), det.score_samples(new), rtol=1e-4)


# -- the baselines ------------------------------------------------------------------------------------
def test_patch_knn_is_the_distance_to_the_nearest_training_row():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 1, 4, 4)).astype(np.float32)
    det = anomalykit.load_method("patch-knn", preprocess="none").fit(X)
    new = rng.normal(size=(5, 1, 4, 4)).astype(np.float32)
    d = ((new.reshape(5, 1, -1) - X.reshape(1, 30, -1)) ** 2).sum(-1)
    np.testing.assert_allclose(det.score_samples(new), d.min(1), rtol=1e-5)
    nearest = X[d.argmin(1)]
    np.testing.assert_allclose(det.anomaly_map(new, sigma=0), ((new - nearest) ** 2).sum(1), rtol=1e-5)
    small = anomalykit.load_method("patch-knn", preprocess="none", bank_size=7).fit(X)
    assert small.bank_.shape == (7, 16)
    assert all(any(np.array_equal(row, x) for x in X.reshape(30, -1)) for row in small.bank_.numpy())


def test_patch_knn_training_scores_leave_the_row_itself_out():
    """In-sample every training row finds itself (score 0, threshold 0, every new row flagged):
    a kept row scores against the nearest other bank row, a row left out of the bank against the
    nearest bank row, by hand with numpy."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(25, 1, 3, 3)).astype(np.float32)
    flat = X.reshape(25, -1).astype(np.float64)
    d = ((flat[:, None] - flat[None]) ** 2).sum(-1)
    det = anomalykit.load_method("patch-knn", preprocess="none", score_batch_size=4).fit(X)
    np.testing.assert_allclose(det.decision_scores_, np.where(np.eye(25, dtype=bool), np.inf, d).min(1), rtol=1e-4)
    assert det.threshold_ > 0 and det.predict(rng.normal(size=(40, 1, 3, 3)).astype(np.float32)).mean() < 0.5
    small = anomalykit.load_method("patch-knn", preprocess="none", bank_size=10, score_batch_size=4).fit(X)
    kept = [int(np.flatnonzero((flat == row).all(1))[0]) for row in small.bank_.numpy().astype(np.float64)]
    to_bank = d[:, kept]
    to_bank[kept, np.arange(10)] = np.inf
    np.testing.assert_allclose(small.decision_scores_, to_bank.min(1), rtol=1e-4)


def test_patch_ae_learns_to_reconstruct():
    rng = np.random.default_rng(4)
    base = np.sin(np.linspace(0, 6, 16))[None, :] * np.cos(np.linspace(0, 4, 16))[:, None]
    X = (base[None, None] + 0.05 * rng.normal(size=(64, 1, 16, 16))).astype(np.float32)
    det = anomalykit.load_method("patch-ae", epochs=30, batch_size=16, width=8).fit(X)
    losses = [h["loss"] for h in det.history_]
    assert losses[-1] < 0.3 * losses[0]
    noise = rng.uniform(-1, 1, size=(8, 1, 16, 16)).astype(np.float32)
    assert det.score_samples(noise).min() > det.score_samples(X[:8]).max()


# -- what run and bench choose for an MVTec-layout folder ---------------------------------------------
def test_mvtec_folders_get_patch_mode_unless_the_user_sets_it(tmp_path):
    from anomalykit.pipeline import data_defaults

    root = tmp_path / "mvtec"
    write_mvtec(root, n_train=12, n_good=2, n_defect=2)
    assert data_defaults(str(root), {}) == patches.mvtec_defaults()
    assert "patch_size" not in data_defaults(str(root), {"patch-size": None}) and data_defaults("digits", {}) == {}
    from click.testing import CliRunner

    from anomalykit.cli import cli

    res = CliRunner().invoke(cli, ["run", "patch-knn", "--data", str(root), "--set", "max_steps=5", "--out", str(tmp_path / "r"), "-q"])
    assert res.exit_code == 0, res.output
    params = json.loads((tmp_path / "r" / "metrics.json").read_text())["params"]
    assert params["patch_size"] == 16 and params["patches_per_image"] == 64 and params["max_steps"] == 5
    res = CliRunner().invoke(cli, ["run", "patch-knn", "--data", str(root), "--set", "patch_size=none", "--out",
                                   str(tmp_path / "whole"), "-q"])
    assert res.exit_code == 0 and json.loads((tmp_path / "whole" / "metrics.json").read_text())["params"]["patch_size"] is None
