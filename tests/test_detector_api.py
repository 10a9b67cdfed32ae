import io
import pickle

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import anomalykit
from anomalykit import CheckpointError, ConfigError, Detector, InputError, NotFittedError, Param, PluginError
from anomalykit.checkpoint import FORMAT_VERSION


def fitted(method, X, **params):
    return anomalykit.load_method(method, **params).fit(X)


def test_fit_score_predict_follow_pyod_conventions(pca_method, blobs):
    X, y = blobs
    det = fitted(pca_method, X[:200], n_components=2, contamination=0.1)
    scores = det.score_samples(X)
    assert scores.shape == (220,) and scores.dtype == np.float64
    assert roc_auc_score(y, scores) > 0.99  # higher = more anomalous
    np.testing.assert_array_equal(det.decision_function(X), scores)
    assert det.threshold_ == pytest.approx(np.quantile(det.decision_scores_, 0.9))
    np.testing.assert_array_equal(det.predict(X), (scores > det.threshold_).astype(int))
    assert abs(det.predict(X[:200]).mean() - 0.1) <= 0.01  # flags the contamination share of training data


def test_save_load_round_trip(pca_method, blobs, tmp_path):
    X, _ = blobs
    det = fitted(pca_method, X[:200], n_components=3)
    path = det.save(tmp_path / "m.pt")
    again = anomalykit.load(path)
    assert type(again) is type(det) and again.get_params() == det.get_params()
    np.testing.assert_array_equal(again.score_samples(X), det.score_samples(X))
    assert again.threshold_ == det.threshold_
    det.save(tmp_path)  # a folder gets model.pt
    np.testing.assert_array_equal(anomalykit.load(tmp_path).score_samples(X), det.score_samples(X))


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (np.zeros(5), "1 dimension"),
        (np.zeros((2, 1, 3, 3, 3)), "5 dimension"),
        (np.zeros((0, 6)), "empty (0 rows)"),
        (np.zeros((4, 0)), "empty feature axis"),
        (np.array([[1.0, np.nan] * 3] * 4), "NaN/inf"),
        (np.array([[1.0, np.inf] * 3] * 4), "NaN/inf"),
        (np.array([["a"] * 6] * 4), "dtype"),
        (np.ones((4, 6), dtype=complex), "complex"),
        (np.full((4, 6), 1e300), "beyond float32 range"),
        ([[1, 2], [3]], "could not be read"),
    ],
)
def test_bad_fit_input_is_one_clear_input_error(pca_method, bad, fragment):
    with pytest.raises(InputError) as err:
        anomalykit.load_method(pca_method).fit(bad)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_score_shape_must_match_fit(pca_method, blobs):
    X, _ = blobs
    det = fitted(pca_method, X, n_components=2)
    with pytest.raises(InputError, match=r"sample shape \(5,\) but the detector was fitted on \(6,\)"):
        det.score_samples(X[:, :5])


def test_not_fitted(pca_method):
    det = anomalykit.load_method(pca_method)
    for call in (lambda: det.score_samples(np.zeros((2, 3))), lambda: det.save("x.pt")):
        with pytest.raises(NotFittedError, match="call fit"):
            call()


def test_unknown_param_and_bad_value(pca_method):
    with pytest.raises(ConfigError, match="unknown parameter 'n_comp'.*did you mean 'n_components'"):
        anomalykit.load_method(pca_method, n_comp=3)
    with pytest.raises(ConfigError, match=">= 1e-06"):
        anomalykit.load_method(pca_method, contamination=0.0)


def test_layouts_and_dtypes_give_the_same_scores(pca_method):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(64, 2, 6, 6, generator=g)
    det = fitted(pca_method, X, n_components=4)
    ref = det.score_samples(X)
    np.testing.assert_allclose(det.score_samples(X.to(memory_format=torch.channels_last)), ref, rtol=1e-6)
    np.testing.assert_allclose(det.score_samples(X.transpose(2, 3).transpose(2, 3)), ref, rtol=1e-6)
    np.testing.assert_allclose(det.score_samples(X.double().numpy()), ref, rtol=1e-6)
    wide = torch.randn(64, 12, generator=g)[:, ::2]  # non-contiguous rows
    assert fitted(pca_method, wide, n_components=2).score_samples(wide).shape == (64,)


def test_grayscale_images_get_a_channel_axis(pca_method):
    X = np.random.default_rng(0).integers(0, 255, size=(40, 5, 5)).astype(np.uint8)
    det = fitted(pca_method, X, n_components=2)
    assert det.input_shape_ == (1, 5, 5)


# -- checkpoints -------------------------------------------------------------------------------
@pytest.fixture
def saved(pca_method, blobs, tmp_path):
    return fitted(pca_method, blobs[0], n_components=2).save(tmp_path / "m.pt")


def test_truncated_checkpoint(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint"):
        anomalykit.load(saved)


def test_foreign_torch_file(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an anomalykit detector checkpoint"):
        anomalykit.load(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError):
        anomalykit.load(tmp_path / "text.pt")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_tampered_pickle_is_refused(saved, capsys):
    ckpt = torch.load(saved, weights_only=True)
    ckpt["extra"] = {"payload": Evil()}
    torch.save(ckpt, saved)
    with pytest.raises(CheckpointError, match="refusing to load"):
        anomalykit.load(saved)
    assert "pwned" not in capsys.readouterr().out


def test_other_format_version_and_missing_file(saved, tmp_path):
    ckpt = torch.load(saved, weights_only=True)
    ckpt["format_version"] = FORMAT_VERSION + 1
    torch.save(ckpt, saved)
    with pytest.raises(CheckpointError, match="format"):
        anomalykit.load(saved)
    with pytest.raises(CheckpointError, match="does not exist"):
        anomalykit.load(tmp_path / "missing.pt")


def test_checkpoint_of_unknown_method(saved):
    ckpt = torch.load(saved, weights_only=True)
    ckpt["method"] = "not-installed"
    torch.save(ckpt, saved)
    with pytest.raises(ConfigError, match="unknown method 'not-installed'"):
        anomalykit.load(saved)


# -- plugins that break the contract at run time -----------------------------------------------------
class Misbehaving(Detector):
    name = "misbehaving"
    summary = "returns whatever `mode` says"
    params = (Param("mode", "ok", "ok|shape|dtype|nan|raise-fit|raise-score"), Param("epochs", 0, "unused", low=0))

    def _build(self, shape):
        self.nets["lin"] = torch.nn.Linear(1, 1)

    def _fit(self, X, y):
        if self.hp.mode == "raise-fit":
            raise KeyError("missing_key")

    def _score(self, X):
        mode = self.hp.mode
        if mode == "raise-score" and self.threshold_ is not None:
            raise ZeroDivisionError("division by zero")
        if mode == "shape" and self.threshold_ is not None:
            return torch.zeros(X.shape[0], 2)
        if mode == "dtype" and self.threshold_ is not None:
            return torch.zeros(X.shape[0], dtype=torch.int64)
        if mode == "nan" and self.threshold_ is not None:
            return torch.full((X.shape[0],), float("nan"))
        return X.flatten(1).sum(1)


@pytest.mark.parametrize(
    "mode, fragment",
    [
        ("shape", "broke the contract: _score returned (8, 2), expected shape (8,)"),
        ("dtype", "expected floating point"),
        ("nan", "non-finite score"),
        ("raise-score", "failed during score: ZeroDivisionError: division by zero"),
    ],
)
def test_plugin_errors_name_the_plugin_and_the_contract(mode, fragment):
    det = Misbehaving(mode=mode).fit(np.ones((8, 3)))
    with pytest.raises(PluginError) as err:
        det.score_samples(np.ones((8, 3)))
    assert "'misbehaving'" in str(err.value) and fragment in str(err.value)


def test_plugin_raising_in_fit_is_a_plugin_error():
    with pytest.raises(PluginError, match="'misbehaving' failed during fit: KeyError") as err:
        Misbehaving(mode="raise-fit").fit(np.ones((8, 3)))
    assert isinstance(err.value.__cause__, KeyError)  # original kept for debugging
