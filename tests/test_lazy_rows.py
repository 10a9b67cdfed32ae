"""Lazy rows (anomalykit.lazy_rows): .npy memory-mapped and image folders decoded per batch give
the files' values and the scores of the same arrays in memory, read one batch at a time, and fail
on bad data with one line."""
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import anomalykit
from anomalykit import DatasetError, InputError
from anomalykit.lazy_rows import ImageFileRows, open_rows
from anomalykit.validation import as_input_tensor

from conftest import counting_npy_rows


@pytest.fixture(scope="module")
def digits_u8():
    return (load_digits().images * 15).astype(np.uint8)  # (1797, 8, 8), 0..240


@pytest.fixture(scope="module")
def fitted(digits_u8):
    return anomalykit.load_method("ama", epochs=1, width=8, n_critic=1, score_batch_size=64).fit(digits_u8[:200])


def _folder(tmp_path, images, sub=("a", "b")):
    for i, im in enumerate(images):
        d = tmp_path / "imgs" / sub[i % len(sub)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(d / f"{i:04d}.png")
    return tmp_path / "imgs"


@pytest.mark.parametrize("kind", ["uint8-images", "uint8-channel-last", "float-rows", "float-images"])
def test_npy_rows_hold_the_files_values(tmp_path, kind):
    rng = np.random.default_rng(0)
    arr = {
        "uint8-images": rng.integers(0, 256, (50, 6, 5)).astype(np.uint8),
        "uint8-channel-last": rng.integers(0, 256, (50, 6, 5, 3)).astype(np.uint8),
        "float-rows": rng.normal(size=(50, 7)),
        "float-images": rng.normal(size=(50, 2, 6, 5)).astype(np.float32),
    }[kind]
    # what a detector takes, written out by hand: a channel axis for (N, H, W), channels first
    # for channel-last uint8, uint8 kept, everything else float32
    want = torch.from_numpy({
        "uint8-images": lambda: arr[:, None],
        "uint8-channel-last": lambda: arr.transpose(0, 3, 1, 2).copy(),
        "float-rows": lambda: arr.astype(np.float32),
        "float-images": lambda: arr,
    }[kind]())
    np.save(tmp_path / "x.npy", arr)
    rows = open_rows(tmp_path / "x.npy")
    assert rows.shape == tuple(want.shape) and rows.dtype == want.dtype
    got = rows[0:50]
    assert got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(rows[np.array([7, 3])], want[[7, 3]], rtol=0, atol=0)
    torch.testing.assert_close(rows.materialize(), want, rtol=0, atol=0)
    torch.testing.assert_close(as_input_tensor(arr), want, rtol=0, atol=0)  # the API's own conversion agrees


def test_scores_of_npy_memmap_and_lazy_rows_equal_the_arrays(tmp_path, fitted, digits_u8):
    np.save(tmp_path / "x.npy", digits_u8)
    want = fitted.score_samples(digits_u8)
    np.testing.assert_array_equal(fitted.score_samples(open_rows(tmp_path / "x.npy")), want)
    np.testing.assert_array_equal(fitted.score_samples(np.load(tmp_path / "x.npy", mmap_mode="r")), want)
    np.testing.assert_array_equal(fitted.predict(open_rows(tmp_path / "x.npy")), fitted.predict(digits_u8))
    np.testing.assert_allclose(fitted.anomaly_map(open_rows(tmp_path / "x.npy").subset(np.arange(40))),
                               fitted.anomaly_map(digits_u8[:40]), rtol=0, atol=0)


@pytest.mark.parametrize("workers", ["0", "1"])
def test_image_folder_rows_hold_the_decoded_files(tmp_path, fitted, digits_u8, workers, monkeypatch):
    monkeypatch.setenv("ANOMALYKIT_DATA_WORKERS", workers)
    folder = _folder(tmp_path, digits_u8[:150])
    rows = open_rows(folder)
    assert isinstance(rows, ImageFileRows) and rows.shape == (150, 1, 8, 8)
    # class sub-folders sorted, files sorted within each: image i went to a/ (even i) or b/ (odd i)
    in_folder_order = np.concatenate([digits_u8[:150:2], digits_u8[1:150:2]])
    np.testing.assert_array_equal(rows[:][:, 0].numpy(), in_folder_order)
    np.testing.assert_array_equal(fitted.score_samples(rows), fitted.score_samples(in_folder_order))
    assert rows.labels.tolist() == [0] * 75 + [1] * 75


def test_scoring_reads_one_batch_at_a_time(tmp_path, fitted, digits_u8):
    np.save(tmp_path / "x.npy", digits_u8)
    rows = counting_npy_rows(tmp_path / "x.npy")
    fitted.score_samples(rows)
    reads = [len(r) for r in rows.reads]
    assert sum(reads) == len(digits_u8)
    assert max(reads) <= fitted.hp.score_batch_size


def test_fit_on_lazy_rows_equals_fit_on_the_array(tmp_path, digits_u8):
    np.save(tmp_path / "x.npy", digits_u8[:200])
    a = anomalykit.load_method("ama", epochs=1, width=8, n_critic=1).fit(digits_u8[:200])
    b = anomalykit.load_method("ama", epochs=1, width=8, n_critic=1).fit(open_rows(tmp_path / "x.npy"))
    assert b.fit_input_ == a.fit_input_ == ((8, 8), "uint8")
    np.testing.assert_array_equal(b.score_samples(digits_u8), a.score_samples(digits_u8))


def test_nan_in_a_lazy_npy_names_the_row(tmp_path, fitted, digits_u8):
    bad = digits_u8.astype(np.float64)
    bad[300, 2, 2] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(InputError, match=r"NaN/inf values \(first in row 300\)"):
        fitted.score_samples(open_rows(tmp_path / "bad.npy"))


def test_bad_image_folders_fail_with_one_line(tmp_path, fitted, digits_u8, monkeypatch):
    monkeypatch.setenv("ANOMALYKIT_DATA_WORKERS", "1")
    folder = _folder(tmp_path, digits_u8[:100])
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(folder / "a" / "0099x.png")
    with pytest.raises(DatasetError, match="images have different sizes") as err:
        fitted.score_samples(open_rows(folder))
    assert "\n" not in str(err.value)
    (folder / "a" / "0099x.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="is not a readable image") as err:
        fitted.score_samples(open_rows(folder))
    assert "\n" not in str(err.value)


def test_wrong_sample_shape_and_bad_worker_count_are_one_line_errors(tmp_path, fitted, monkeypatch):
    np.save(tmp_path / "x.npy", np.zeros((5, 9, 9), np.uint8))
    with pytest.raises(InputError, match=r"sample shape \(1, 9, 9\) but the detector was fitted on \(1, 8, 8\)"):
        fitted.score_samples(open_rows(tmp_path / "x.npy"))
    monkeypatch.setenv("ANOMALYKIT_DATA_WORKERS", "two")
    with pytest.raises(InputError, match="ANOMALYKIT_DATA_WORKERS"):
        from anomalykit.lazy_rows import data_workers

        data_workers()


def test_channel_last_uint8_images_mean_the_same_through_every_entry_point(tmp_path):
    """(N, H, W, 3) uint8 (PIL/OpenCV layout): the API, the .npy loader, lazy rows and the CLI
    all read it as (N, 3, H, W), so a model fitted on it scores the file as the API scores the array."""
    from click.testing import CliRunner

    from anomalykit.cli import cli

    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 256, size=(120, 8, 8, 3)).astype(np.uint8)
    chw = np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))
    a = anomalykit.load_method("ama", epochs=1, width=8, n_critic=1).fit(hwc)
    b = anomalykit.load_method("ama", epochs=1, width=8, n_critic=1).fit(chw)
    assert a.input_shape_ == (3, 8, 8) and a.fit_input_ == ((3, 8, 8), "uint8")
    want = b.score_samples(chw)
    np.testing.assert_array_equal(a.score_samples(hwc), want)
    np.save(tmp_path / "hwc.npy", hwc)
    np.testing.assert_array_equal(a.score_samples(open_rows(tmp_path / "hwc.npy")), want)
    a.save(tmp_path / "m.pt")
    res = CliRunner().invoke(cli, ["score", str(tmp_path / "m.pt"), str(tmp_path / "hwc.npy"), "--out", str(tmp_path / "s.npy")])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), want)


SMALL = {"ama": dict(epochs=1, width=8, n_critic=1), "mae-simplex": dict(epochs=1, width=8),
         "adgan": dict(epochs=1, n_seed=2, k=1), "csi-aae": dict(epochs=1)}


@pytest.mark.parametrize("method", sorted(SMALL))
def test_fit_on_lazy_rows_trains_the_same_model_for_every_method(tmp_path, digits_u8, method):
    X = digits_u8[:160]
    np.save(tmp_path / "x.npy", X)
    a = anomalykit.load_method(method, **SMALL[method]).fit(X, progress=False)
    b = anomalykit.load_method(method, **SMALL[method]).fit(open_rows(tmp_path / "x.npy"), progress=False)
    np.testing.assert_array_equal(b.decision_scores_, a.decision_scores_)
    np.testing.assert_array_equal(b.score_samples(X), a.score_samples(X))


def test_fit_reads_batches_not_the_whole_file(tmp_path, digits_u8):
    np.save(tmp_path / "x.npy", digits_u8[:600])
    rows = counting_npy_rows(tmp_path / "x.npy")
    det = anomalykit.load_method("ama", epochs=2, width=8, n_critic=1, batch_size=32, score_batch_size=50)
    det.fit(rows, progress=False)
    reads = [len(r) for r in rows.reads]
    assert max(reads) <= 50  # uint8 images: no statistics pass; training batches and the threshold pass
    assert sum(reads) >= 2 * 600  # every row read in each epoch (and again for the threshold)


def test_streamed_range_statistics_find_extremes_in_the_last_row_and_at_batch_boundaries(tmp_path):
    """The streamed pass reads batches of 4,096 rows: the extremes sit where an off-by-one loses
    them (the last row, the last row of a batch, the first row of the next), and the expected
    range is computed by hand from where they were put."""
    from anomalykit.preprocess import Preprocessor

    X = np.random.default_rng(3).uniform(-1.0, 1.0, size=(9000, 3, 2, 2)).astype(np.float32)
    X[8999, 0, 1, 1] = -7.0   # channel 0: minimum in the very last row
    X[4095, 0, 0, 0] = 5.0    # channel 0: maximum in the last row of the first batch
    X[4096, 1, 0, 1] = -3.0   # channel 1: minimum in the first row of the second batch
    X[8191, 1, 1, 0] = 9.0    # channel 1: maximum in the last row of the second batch
    X[0, 2, 0, 0] = 4.0       # channel 2: maximum in the first row
    X[8192, 2, 1, 1] = -6.0   # channel 2: minimum in the first row of the last batch
    np.save(tmp_path / "x.npy", X)
    streamed = Preprocessor.fit(open_rows(tmp_path / "x.npy"), "auto")
    lo, hi = np.array([-7.0, -3.0, -6.0]), np.array([5.0, 9.0, 4.0])
    assert streamed.kind == "range"
    np.testing.assert_array_equal(streamed.shift.numpy(), ((hi + lo) / 2).astype(np.float32))
    np.testing.assert_array_equal(streamed.scale.numpy(), ((hi - lo) / 2).astype(np.float32))


def test_semi_supervised_fit_on_lazy_rows_equals_the_array(tmp_path, digits_u8):
    X = digits_u8[:200]
    y = np.zeros(200, int)
    y[::10] = 1
    np.save(tmp_path / "x.npy", X)
    a = anomalykit.load_method("ama", **SMALL["ama"]).fit(X, y, progress=False)
    b = anomalykit.load_method("ama", **SMALL["ama"]).fit(open_rows(tmp_path / "x.npy"), y, progress=False)
    np.testing.assert_array_equal(b.score_samples(X), a.score_samples(X))


def test_nan_in_lazy_training_rows_fails_before_training(tmp_path, digits_u8, monkeypatch):
    bad = digits_u8[:200].astype(np.float32)
    bad[150, 0, 0] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    det = anomalykit.load_method("ama", **SMALL["ama"])

    def training_started(*args, **kwargs):
        raise AssertionError("training started on rows with inf")

    monkeypatch.setattr(type(det), "_fit", training_started)
    with pytest.raises(InputError, match=r"first in row 150"):
        det.fit(open_rows(tmp_path / "bad.npy"), progress=False)
