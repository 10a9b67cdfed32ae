"""Input scaling owned by the core: fitted in fit, saved with the model, applied everywhere."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import anomalykit
from anomalykit import ConfigError
from anomalykit.data import load_dataset
from anomalykit.preprocess import Preprocessor
from conftest import tiny_params

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the maps, against hand-computed values --------------------------------------------------------------
def test_uint8_images_map_onto_minus_one_one():
    X = torch.tensor([0.0, 127.5, 255.0]).reshape(3, 1, 1, 1).expand(3, 1, 4, 4).contiguous()
    prep = Preprocessor.fit(X, "auto", uint8=True)
    assert prep.kind == "uint8"
    assert prep.transform(X)[:, 0, 0, 0].tolist() == [-1.0, 0.0, 1.0]


def test_float_images_map_their_training_range_per_channel():
    X = torch.zeros(2, 2, 4, 4)
    X[0, 0], X[1, 0] = 0.0, 1.0          # channel 0 spans [0, 1]
    X[0, 1], X[1, 1] = 10.0, 250.0       # channel 1 spans [10, 250]
    prep = Preprocessor.fit(X)           # auto, not uint8 -> range
    assert prep.kind == "range"
    out = prep.transform(X)
    assert out[0, :, 0, 0].tolist() == [-1.0, -1.0] and out[1, :, 0, 0].tolist() == [1.0, 1.0]
    # outside the training range: kept, never clipped
    far = torch.full((1, 2, 4, 4), 490.0)
    assert prep.transform(far)[0, 1, 0, 0].item() == pytest.approx(3.0)
    torch.testing.assert_close(prep.inverse_transform(out), X)


def test_rows_are_robustly_standardised_and_constant_columns_handled():
    col = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    X = torch.stack([col, torch.full((5,), 7.0), torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0])], dim=1)
    prep = Preprocessor.fit(X)
    assert prep.kind == "robust"
    out = prep.transform(X)
    q1, med, q3 = np.quantile(col.numpy(), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(out[:, 0].numpy(), (col.numpy() - med) / (q3 - q1), rtol=1e-6)  # 100 stays an outlier
    assert out[:, 1].tolist() == [0.0] * 5                                  # constant column -> 0
    np.testing.assert_allclose(out[:, 2].numpy(), X[:, 2].numpy() / X[:, 2].numpy().std(), rtol=1e-6)  # IQR 0 -> std


def test_none_is_identity_and_bad_kind_is_one_line():
    X = torch.randn(4, 3)
    assert torch.equal(Preprocessor.fit(X, "none").transform(X), X)
    with pytest.raises(ConfigError, match="preprocess must be one of"):
        Preprocessor.fit(X, "zscore")
    with pytest.raises(ConfigError, match="parameter 'preprocess' must be one of"):
        anomalykit.load_method("ama", preprocess="zscore")


def test_state_round_trip():
    X = torch.randn(10, 3) * 5 + 2
    prep = Preprocessor.fit(X)
    again = Preprocessor.from_state(prep.state())
    assert torch.equal(again.transform(X), prep.transform(X))
    assert Preprocessor.from_state(None).kind == "none"  # checkpoints from before preprocessing existed


# -- every method: raw uint8, [0, 1] and [-1, 1] give the same detector --------------------------------------
@pytest.fixture(scope="module")
def digits_uint8():
    ds = load_dataset("digits")
    to_uint8 = lambda X: np.round(X.numpy()[:, 0] * (255 / 16)).astype(np.uint8)  # noqa: E731 -- digits: 0..16
    train = to_uint8(ds.X_train[torch.from_numpy(np.flatnonzero(ds.y_train == 0))])
    return train, to_uint8(ds.X_test), (ds.y_test != 0).astype(int)


def test_every_method_scores_raw_uint8_like_scaled_floats_and_saves_its_scaling(installed_methods, digits_uint8, tmp_path):
    train, test, y = digits_uint8
    encodings = {
        "uint8": (train, test),
        "[0, 1]": (train.astype(np.float32) / 255.0, test.astype(np.float32) / 255.0),
        "[-1, 1]": (train.astype(np.float32) / 127.5 - 1.0, test.astype(np.float32) / 127.5 - 1.0),
    }
    for method in installed_methods:
        auroc = {}
        for name, (X_train, X_test) in encodings.items():
            det = anomalykit.load_method(method, **tiny_params(method)).fit(X_train, progress=False)
            scores = det.score_samples(X_test)
            auroc[name] = roc_auc_score(y, scores)
            if name == "uint8":
                assert det.preprocessor_.kind == "uint8", method
                loaded = anomalykit.load(det.save(tmp_path / f"{method}.pt"))
                assert loaded.preprocessor_.kind == "uint8"
                np.testing.assert_array_equal(loaded.score_samples(X_test), scores, err_msg=method)
        spread = max(auroc.values()) - min(auroc.values())
        assert spread <= 0.02, f"{method}: {auroc}"


@pytest.mark.parametrize("kind", ["uint8", "range", "robust", "none"])
def test_inverse_transform_undoes_transform(kind):
    g = torch.Generator().manual_seed(0)
    if kind == "uint8":
        X = torch.randint(0, 256, (6, 2, 3, 3), generator=g).float()
    elif kind == "robust":
        X = torch.randn(50, 4, generator=g) * torch.tensor([1.0, 10.0, 1e3, 0.1]) + 5.0
    else:
        X = torch.randn(6, 2, 3, 3, generator=g) * 30.0 + 100.0
    prep = Preprocessor.fit(X, kind)
    model = prep.transform(X)
    assert not torch.equal(model, X) or kind == "none"
    torch.testing.assert_close(prep.inverse_transform(model), X, rtol=1e-5, atol=1e-4)
    new = X + 3.0  # rows it was not fitted on come back too
    torch.testing.assert_close(prep.inverse_transform(prep.transform(new)), new, rtol=1e-5, atol=1e-4)


def test_reconstructions_come_back_in_the_input_space(digits_uint8):
    """reconstruct() scales the uint8 inputs by hand's x / 127.5 - 1, runs the network, and maps
    its output back with (r + 1) * 127.5: both maps computed here, the network called directly."""
    train, test, _ = digits_uint8
    det = anomalykit.load_method("ama", **tiny_params("ama")).fit(train, progress=False)
    rec = det.reconstruct(test[:4])
    x_model = torch.from_numpy(test[:4].astype(np.float32) / 127.5 - 1.0).reshape(4, 1, 8, 8)
    with torch.no_grad():
        raw = det._reconstruct(x_model.to(det.device)).cpu()
    assert rec.shape == (4, 1, 8, 8)
    torch.testing.assert_close(rec, (raw + 1.0) * 127.5, rtol=1e-5, atol=1e-3)
    assert float(rec.min()) >= -1e-3 and float(rec.max()) <= 255 + 1e-3  # tanh outputs mapped back to 0..255


# -- each branch against hand values (kills the mutants benchmarks/mutation found surviving) ---------
def test_uint8_scaling_is_bitwise_the_hand_formula_and_stores_its_constants():
    X = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16).expand(2, 3, 16, 16).contiguous()
    prep = Preprocessor.fit(X.to(torch.uint8), "auto", uint8=True)
    assert prep.kind == "uint8"
    assert prep.shift.tolist() == [127.5] * 3 and prep.scale.tolist() == [127.5] * 3  # what exports use
    assert torch.equal(prep.transform(X), X / 127.5 - 1.0)
    assert torch.equal(prep.transform(X.to(torch.uint8)), X / 127.5 - 1.0)
    model = X / 127.5 - 1.0
    assert torch.equal(prep.inverse_transform(model), (model + 1.0) * 127.5)


def test_none_turns_uint8_into_float32_and_round_trips_its_state():
    X = torch.tensor([[0, 7], [255, 3]], dtype=torch.uint8)
    prep = Preprocessor.fit(X.float(), "none")
    out = prep.transform(X)
    assert out.dtype == torch.float32 and out.tolist() == [[0.0, 7.0], [255.0, 3.0]]
    assert prep.state() == {"kind": "none"}
    assert Preprocessor.from_state({"kind": "none"}).kind == "none"
    assert torch.equal(prep.inverse_transform(out), out)


def test_robust_uses_the_std_where_the_iqr_is_zero_and_keeps_a_small_iqr():
    # column 0: IQR 0.5 (kept, though below 1); column 1: IQR 0, std > 0; column 2: one row only below
    X = torch.tensor([[0.0, 5.0], [0.25, 5.0], [0.5, 5.0], [0.75, 5.0], [1.0, 9.0]])
    prep = Preprocessor.fit(X, "robust")
    q1, med, q3 = np.quantile(X[:, 0].numpy(), [0.25, 0.5, 0.75])
    assert (float(prep.shift[0]), float(prep.scale[0])) == (pytest.approx(med), pytest.approx(q3 - q1))
    assert float(prep.scale[1]) == pytest.approx(X[:, 1].numpy().std())
    one = Preprocessor.fit(torch.tensor([[3.0, -2.0]]), "robust")  # a single row: every column constant
    assert one.shift.tolist() == [3.0, -2.0] and one.scale.tolist() == [1.0, 1.0]


def test_quantiles_of_very_long_columns_equal_torch_s():
    from anomalykit.preprocess import _quantiles_numpy

    cols = torch.randn(3, 1001, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.quantile(cols, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=1)
    torch.testing.assert_close(_quantiles_numpy(cols), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind, uint8", [("robust", False), ("range", True), ("auto", True), ("range", False)])
def test_lazy_rows_fit_the_same_scaling_as_the_array(tmp_path, kind, uint8):
    from anomalykit import open_rows

    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, size=(300, 2, 4, 5)).astype(np.uint8) if uint8 else rng.normal(3, 2, size=(300, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", arr)
    lazy = Preprocessor.fit(open_rows(tmp_path / "x.npy"), kind, uint8=uint8)
    whole = Preprocessor.fit(torch.from_numpy(arr).float(), kind, uint8=uint8)
    assert lazy.kind == whole.kind
    torch.testing.assert_close(lazy.shift, whole.shift, rtol=0, atol=0)
    torch.testing.assert_close(lazy.scale, whole.scale, rtol=0, atol=0)
    if kind == "robust":
        q1, med, q3 = np.quantile(arr.astype(np.float64), [0.25, 0.5, 0.75], axis=0)
        np.testing.assert_allclose(lazy.shift.numpy(), med, rtol=1e-6)
        np.testing.assert_allclose(lazy.scale.numpy(), q3 - q1, rtol=1e-6)


@pytest.mark.parametrize("state", [
    {"kind": "auto", "shift": torch.zeros(2), "scale": torch.ones(2)},
    {"kind": "zscore", "shift": torch.zeros(2), "scale": torch.ones(2)},
    {"kind": "range", "shift": torch.zeros(2)},
    {"kind": "robust", "shift": [0.0, 0.0], "scale": torch.ones(2)},
])
def test_an_invalid_saved_preprocessor_is_one_line(state):
    from anomalykit import CheckpointError

    with pytest.raises(CheckpointError, match="the checkpoint's preprocessor state is not valid"):
        Preprocessor.from_state(state)
