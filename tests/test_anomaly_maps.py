"""Anomaly maps (Detector.anomaly_map), pixel metrics (pixel AUROC, AUPRO) and the MVTec-layout reader,
on a synthetic MVTec-layout folder the test writes (textures, plus pasted bright squares with masks)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

import anomalykit
from anomalykit import ConfigError, Detector, Param
from anomalykit.data import load_dataset, make_split
from anomalykit.metrics import aupro, pixel_auroc, pro_curve

from conftest import tiny_params


# -- the metrics on a hand-computed case ----------------------------------------------------------------
def test_aupro_by_hand():
    """One 1x6 image: region A = pixels 0-1, region B = pixel 4, three normal pixels.
    Scores 6 1 5 4 3 2. Going down the thresholds: 6 -> A half found (PRO (0.5 + 0)/2 = 0.25, FPR 0);
    5, 4 -> two false positives (FPR 2/3); 3 -> B found (PRO 0.75); 2 -> FPR 1; 1 -> A complete (PRO 1).
    Up to FPR 0.3 the curve stays at 0.25: area 0.25 x 0.3, normalised 0.25. Up to FPR 1:
    0.25 x 2/3 + 0.75 x 1/3 = 5/12."""
    scores = np.array([[[6, 1, 5, 4, 3, 2]]], dtype=float)
    mask = np.array([[[1, 1, 0, 0, 1, 0]]])
    assert aupro(scores, mask) == pytest.approx(0.25)
    assert aupro(scores, mask, fpr_limit=1.0) == pytest.approx(5 / 12)
    fpr, pro = pro_curve(scores, mask)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(pro, [0, 0.25, 0.25, 0.25, 0.75, 0.75, 1.0])
    assert pixel_auroc(scores, mask) == pytest.approx(roc_auc_score(mask.ravel(), scores.ravel()))


def test_aupro_regions_are_per_image_and_count_once():
    """Two images, one region each of very different sizes: each region weighs 1/2 of the PRO."""
    maps = np.zeros((2, 4, 4))
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :3, :3] = True  # 9 pixels, all found at the top threshold
    maps[0, :3, :3] = 10
    masks[1, 0, 0] = True  # 1 pixel, scored like the background
    _, pro = pro_curve(maps, masks)
    assert pro[1] == pytest.approx(0.5)  # after the first threshold: region 1 complete, region 2 not
    with pytest.raises(anomalykit.InputError, match="both anomalous and normal pixels"):
        aupro(maps, np.zeros_like(masks))


# -- a synthetic MVTec-layout folder ----------------------------------------------------------------------
def write_mvtec(root, n_train=48, n_good=8, n_defect=8, side=32, seed=0, kinds=("scratch",)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side

    def texture():
        phase = rng.uniform(0, 2 * np.pi, 3)
        base = 0.5 + 0.25 * np.stack([np.sin(6 * xx + phase[c]) * np.cos(4 * yy + phase[c]) for c in range(3)], -1)
        return np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)

    def save(a, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(a * 255).astype(np.uint8)).save(path)

    for i in range(n_train):
        save(texture(), root / "train" / "good" / f"{i:03d}.png")
    for i in range(n_good):
        save(texture(), root / "test" / "good" / f"{i:03d}.png")
    masks = []
    for kind, colour in zip(kinds, ([1.0, 1.0, 0.0], [0.0, 0.0, 0.0])):  # a bright yellow, a black patch
        for i in range(n_defect):
            img, mask = texture(), np.zeros((side, side), bool)
            r, c = rng.integers(2, side - 10, 2)
            mask[r:r + 7, c:c + 7] = True
            img[mask] = colour
            save(img, root / "test" / kind / f"{i:03d}.png")
            save(mask.astype(float), root / "ground_truth" / kind / f"{i:03d}_mask.png")
            masks.append(mask)
    return np.array(masks)


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec") / "tiles"
    masks = write_mvtec(root)
    return root, masks


def test_mvtec_layout_reads_images_labels_and_masks(mvtec):
    root, masks = mvtec
    ds = load_dataset(str(root))
    assert ds.classes == ["good", "defect"] and ds.sample_shape == (3, 32, 32) and ds.X_train.dtype == torch.uint8
    assert ds.X_train.shape[0] == 48 and (ds.y_train == 0).all()
    # test/good first (its masks empty), then test/scratch with its masks, files in order
    np.testing.assert_array_equal(ds.y_test, np.r_[np.zeros(8), np.ones(8)])
    np.testing.assert_array_equal(ds.masks_test[8:], masks)
    assert not ds.masks_test[:8].any()
    split = make_split("one-class", str(root))
    np.testing.assert_array_equal(split.masks_test, ds.masks_test)
    with pytest.raises(ConfigError, match="val split has no anomalies"):  # no defect among the training images
        make_split("one-class", str(root), eval_split="val")


def test_mvtec_layout_ignores_hidden_folders_and_files(tmp_path):
    """A notebook's test/.ipynb_checkpoints is no defect type, a hidden file no image."""
    import shutil

    root = tmp_path / "tiles"
    write_mvtec(root, n_train=6, n_good=2, n_defect=2)
    shutil.copytree(root / "test" / "scratch", root / "test" / ".ipynb_checkpoints")
    shutil.copy(root / "train" / "good" / "000.png", root / "train" / "good" / ".000.png")
    ds = load_dataset(str(root))
    assert ds.X_train.shape[0] == 6 and list(ds.defect_types_test) == ["good"] * 2 + ["scratch"] * 2


def test_anomaly_maps_localise_pasted_defects(mvtec, pca_method):
    root, masks = mvtec
    split = make_split("one-class", str(root))
    det = anomalykit.load_method(pca_method, n_components=8).fit(split.X_train)
    maps = det.anomaly_map(split.X_test)
    assert maps.shape == (16, 32, 32) and maps.dtype == np.float64
    # independent reference: the residual of the PCA reconstruction, in model space, summed over channels
    raw = det.anomaly_map(split.X_test, sigma=0)
    x = det.preprocessor_.transform(split.X_test.float())
    rec = det.preprocessor_.transform(det.reconstruct(split.X_test))
    np.testing.assert_allclose(raw, (x - rec).square().sum(1).double().numpy(), rtol=1e-4, atol=1e-5)
    assert pixel_auroc(maps, split.masks_test) > 0.9
    assert aupro(maps, split.masks_test) > 0.6


def test_run_reports_pixel_metrics_and_overlays(mvtec, pca_method, tmp_path):
    from anomalykit.cli import cli

    root, _ = mvtec
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["run", pca_method, "--data", str(root), "--set", "n_components=8", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    # the run's numbers are the maps of its saved model on the test split, measured here again:
    # pixel AUROC by scikit-learn on the flattened pixels, AUPRO by the hand-checked aupro()
    split = make_split("one-class", str(root))
    maps = anomalykit.load(out).anomaly_map(split.X_test)
    assert metrics["pixel_auroc"] == pytest.approx(roc_auc_score(split.masks_test.ravel(), maps.ravel()), abs=1e-9)
    assert metrics["aupro"] == pytest.approx(aupro(maps, split.masks_test), abs=1e-9)
    assert metrics["pixel_auroc"] > 0.9
    assert "maps.png" in metrics["files"] and (out / "maps.png").stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir()) == sorted(metrics["files"])


@pytest.mark.parametrize("method", ["ama", "mae-simplex", "adgan", "csi-aae"])
def test_every_reconstructing_method_gives_maps_on_colour_images(method, mvtec, one_thread):
    root, _ = mvtec
    split = make_split("one-class", str(root))
    det = anomalykit.load_method(method, **tiny_params(method, device="cpu")).fit(split.X_train[:32])
    X = split.X_test[:4]
    maps = det.anomaly_map(X)
    assert maps.shape == (4, 32, 32) and maps.dtype == np.float64
    # the map is the squared residual of the method's reconstruction in model space, summed over the
    # channels, then blurred: the model space computed by hand (PNG pixels: x / 127.5 - 1), the
    # network called directly, the blur by scipy
    assert X.dtype == torch.uint8
    x = X.double().numpy() / 127.5 - 1.0
    with torch.no_grad():
        rec = det._reconstruct(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    raw = ((x - rec) ** 2).sum(1)
    np.testing.assert_allclose(det.anomaly_map(X, sigma=0), raw, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(maps, gaussian_filter(raw, 1.0, mode="mirror", truncate=3.0, axes=(1, 2)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("side", [32, 7])
def test_gaussian_smoothing_equals_scipy(sigma, side):
    """Detector.anomaly_map's blur: scipy's gaussian_filter with the same truncation (3 sigma) and
    edges (mirror; nearest when the image is smaller than the kernel radius)."""
    from anomalykit.detector import gaussian_smooth

    maps = np.random.default_rng(int(sigma * 10) + side).random((3, side, side + 3))
    radius = int(round(3 * sigma))
    mode = "mirror" if min(side, side + 3) > radius else "nearest"
    expected = gaussian_filter(maps, sigma, mode=mode, truncate=3.0, axes=(1, 2))
    np.testing.assert_allclose(gaussian_smooth(torch.from_numpy(maps), sigma).double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_methods_without_maps_and_rows_are_refused_in_one_line(blobs):
    class NoMap(Detector):
        name = "no-map"
        summary = "score without reconstruction"
        params = (Param("epochs", 0, "unused", low=0),)

        def _build(self, input_shape):
            self.nets["m"] = torch.nn.Module()

        def _fit(self, X, y):
            pass

        def _score(self, X):
            return X.flatten(1).sum(1)

    det = NoMap().fit(np.random.default_rng(0).random((8, 1, 6, 6)).astype(np.float32))
    with pytest.raises(ConfigError, match="no-map gives no anomaly map") as err:
        det.anomaly_map(np.zeros((2, 1, 6, 6), np.float32))
    assert "\n" not in str(err.value)
    X, _ = blobs
    rows = anomalykit.load_method("ama", **tiny_params("ama")).fit(X[:64])
    with pytest.raises(ConfigError, match="anomaly maps need images"):
        rows.anomaly_map(X[:3])


def test_bench_on_mvtec_data_measures_maps_per_defect_type_beside_the_map_baselines(pca_method, tmp_path):
    """``bench`` on an MVTec-layout folder: class 0 only, the map baselines beside the method, and
    per defect type the image AUROC, pixel AUROC and AUPRO on the good images plus that type's,
    recomputed here with scikit-learn and the hand-checked aupro from a detector refitted with
    the cell's recorded parameters (patch-knn: no training, so the same maps)."""
    from anomalykit.bench import read_results
    from anomalykit.cli import cli

    root = tmp_path / "two-kinds"
    write_mvtec(root, n_train=24, n_good=6, n_defect=5, kinds=("scratch", "stain"))
    out = tmp_path / "bench"
    res = CliRunner().invoke(cli, ["bench", "--data", str(root), "--methods", pca_method, "--set", "n_components=4",
                                   "--set", "max_steps=3", "--set", "patches_per_image=4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = {r["method"]: r for r in read_results(out / "results.csv")}
    assert sorted(rows) == sorted([pca_method, "patch-ae", "patch-knn"])  # one cell each: class 0, seed 0
    assert {r["normal_class"] for r in rows.values()} == {"0"}
    knn = rows["patch-knn"]
    split = make_split("one-class", str(root))
    det = anomalykit.load_method("patch-knn", **json.loads(knn["params"])).fit(split.X_train)
    scores, maps = det.score_samples(split.X_test), det.anomaly_map(split.X_test)
    types = np.array(["good"] * 6 + ["scratch"] * 5 + ["stain"] * 5)
    per_type = json.loads(knn["per_defect_type"])
    assert sorted(per_type) == ["scratch", "stain"]
    for kind in ("scratch", "stain"):
        rows_k = (types == "good") | (types == kind)
        assert per_type[kind]["images"] == 5
        assert per_type[kind]["image_auroc"] == pytest.approx(roc_auc_score(split.y_test[rows_k], scores[rows_k]), abs=1e-9)
        assert per_type[kind]["pixel_auroc"] == pytest.approx(
            roc_auc_score(split.masks_test[rows_k].ravel(), maps[rows_k].ravel()), abs=1e-9)
        assert per_type[kind]["aupro"] == pytest.approx(aupro(maps[rows_k], split.masks_test[rows_k]), abs=1e-9)
    assert float(knn["pixel_auroc"]) == pytest.approx(roc_auc_score(split.masks_test.ravel(), maps.ravel()), abs=1e-9)
    assert float(knn["aupro"]) == pytest.approx(aupro(maps, split.masks_test), abs=1e-9)
    summary = (out / "summary.md").read_text()
    assert "| pixel_auroc | aupro |" in summary
    assert "| scratch | pixel auroc |" in summary and "| stain | aupro |" in summary
    # without the baselines, the method alone
    out2 = tmp_path / "alone"
    res = CliRunner().invoke(cli, ["bench", "--data", str(root), "--methods", pca_method, "--set", "n_components=4",
                                   "--set", "max_steps=3", "--no-map-baselines", "--out", str(out2)])
    assert res.exit_code == 0, res.output
    assert [r["method"] for r in read_results(out2 / "results.csv")] == [pca_method]
