"""What a saved detector holds and gives back (anomalykit.checkpoint), field by field, and every
one-line refusal of a file that is not a usable checkpoint."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import anomalykit
from anomalykit import CheckpointError, Detector, Param
from anomalykit.checkpoint import FORMAT_VERSION, atomic_write_bytes, atomic_write_text, model_file, restore_detector, safe_load, stamp


class Mean(Detector):
    name = "ckpt-mean"
    summary = "distance to the training mean, with extra state"
    params = (Param("epochs", 0, "unused", low=0), Param("power", 2.0, "exponent of the distance", low=1.0))
    supports_labels = False
    score_params = frozenset({"power"})

    def _build(self, input_shape):
        self.nets["m"] = torch.nn.Module()
        self.nets["m"].register_buffer("mean", torch.zeros(input_shape))

    def _fit(self, X, y):
        self.nets["m"].mean.copy_(X.mean(0))
        self.spread_ = float(X.std())

    def _score(self, X):
        return (X - self.nets["m"].mean).abs().pow(self.hp.power).flatten(1).sum(1) / self.spread_

    def _extra_state(self):
        return {"spread": self.spread_}

    def _load_extra_state(self, state):
        self.spread_ = float(state["spread"])


def fitted(**params):
    X = np.random.default_rng(0).integers(0, 256, size=(60, 1, 12, 12)).astype(np.uint8)
    return Mean(**params).fit(X), X


def test_a_saved_detector_comes_back_field_by_field(tmp_path):
    det, X = fitted(patch_size=8, patches_per_image=3, calibration=10, contamination=0.2)
    path = det.save(tmp_path)
    assert path == tmp_path / "model.pt"
    ckpt = safe_load(path, kind="detector")
    assert ckpt["format"] == "anomalykit-detector" and ckpt["format_version"] == FORMAT_VERSION
    assert ckpt["anomalykit_version"] == anomalykit.__version__ and ckpt["method"] == "ckpt-mean"
    assert ckpt["image_shape"] == [1, 12, 12] and ckpt["input_shape"] == [1, 8, 8]
    assert ckpt["fit_input"] == {"shape": [1, 12, 12], "dtype": "uint8"}
    assert ckpt["extra"] == {"spread": det.spread_}
    assert ckpt["decision_scores"].dtype == torch.float64 and ckpt["calibration_scores"].dtype == torch.float64
    again = restore_detector(Mean, ckpt, path=path, overrides={})
    for attr in ("input_shape_", "image_shape_", "fit_input_", "threshold_", "epochs_", "steps_", "threshold_params_"):
        assert getattr(again, attr) == getattr(det, attr), attr
    for attr in ("decision_scores_", "labels_", "calibration_scores_"):
        np.testing.assert_array_equal(getattr(again, attr), getattr(det, attr), err_msg=attr)
    assert again.labels_.dtype == np.int64 and again.spread_ == det.spread_ and again.preprocessor_.kind == "uint8"
    assert not again.nets.training
    np.testing.assert_array_equal(again.score_samples(X[:5]), det.score_samples(X[:5]))
    np.testing.assert_array_equal(again.p_values(X[:5]), det.p_values(X[:5]))


def test_overrides_and_the_saved_threshold(tmp_path):
    det, X = fitted(contamination=0.2)
    ckpt = safe_load(det.save(tmp_path / "m.pt"), kind="detector")
    ckpt["threshold"] = det.threshold_ + 1.0  # the saved value is taken as saved ...
    kept = restore_detector(Mean, ckpt, path=tmp_path, overrides={})
    assert kept.threshold_ == det.threshold_ + 1.0
    np.testing.assert_array_equal(kept.labels_, (det.decision_scores_ > det.threshold_ + 1.0).astype(np.int64))
    # ... unless contamination is overridden: then the threshold follows it
    other = restore_detector(Mean, ckpt, path=tmp_path, overrides={"contamination": 0.5})
    assert other.threshold_ == pytest.approx(np.quantile(det.decision_scores_, 0.5))
    # a score parameter overridden at load: scores follow it, the threshold's parameters stay the saved ones
    powered = restore_detector(Mean, ckpt, path=tmp_path, overrides={"power": 1.0})
    assert powered.threshold_params_ == {"power": 2.0} and powered.hp.power == 1.0
    with pytest.raises(anomalykit.InputError, match="power=1.0 changes the scores"):
        powered.predict(X[:2])


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(method="other"), "holds a 'other' detector, not 'ckpt-mean'"),
    (lambda c: c["params"].update(bogus=1), "parameters this version of 'ckpt-mean' does not know: bogus"),
    (lambda c: c["nets"].update({"m.mean": torch.zeros(3)}), "does not match 'ckpt-mean' networks"),
    (lambda c: c.update(extra={}), "does not match 'ckpt-mean' networks"),
    (lambda c: c.update(fit_input={"shape": [5, 5], "dtype": "uint8"}), "has an invalid fit_input entry"),
    (lambda c: c.update(fit_input={"shape": [1, 12, 12], "dtype": "int16"}), "has an invalid fit_input entry"),
])
def test_a_checkpoint_that_does_not_fit_is_one_line(tmp_path, change, message):
    det, _ = fitted()
    ckpt = safe_load(det.save(tmp_path / "m.pt"), kind="detector")
    change(ckpt)
    with pytest.raises(CheckpointError, match=message) as err:
        restore_detector(Mean, ckpt, path=tmp_path / "m.pt", overrides={})
    assert "\n" not in str(err.value)


def test_checkpoints_from_before_fit_input_and_image_shape_existed_load(tmp_path):
    det, X = fitted()
    ckpt = safe_load(det.save(tmp_path / "m.pt"), kind="detector")
    for key in ("fit_input", "image_shape", "calibration_scores", "epochs_trained"):
        ckpt.pop(key, None)
    old = restore_detector(Mean, ckpt, path=tmp_path, overrides={})
    assert old.fit_input_ == ((1, 12, 12), "float32") and old.image_shape_ is None and old.calibration_scores_ is None
    assert old.epochs_ is None


@pytest.mark.parametrize("content, kind, message", [
    (None, "detector", "does not exist"),
    (b"not a torch file", "detector", "is truncated or not a torch checkpoint"),
    ("list", "detector", "is not an anomalykit detector checkpoint \\(found 'list'\\)"),
    ("train-state", "detector", "is not an anomalykit detector checkpoint \\(found 'anomalykit-train-state'\\)"),
    ("version", "detector", "was written with checkpoint format 99; this anomalykit reads format 1"),
    ("pickle", "detector", "refusing to load .*: it contains Python objects other than tensors and plain data"),
])
def test_safe_load_refuses_in_one_line(tmp_path, content, kind, message):
    path = tmp_path / "f.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "list":
        torch.save([1, 2], path)
    elif content == "train-state":
        torch.save(stamp("train-state", {}), path)
    elif content == "version":
        torch.save({**stamp("detector", {}), "format_version": 99}, path)
    elif content == "pickle":
        torch.save({"format": "anomalykit-detector", "payload": np.random.default_rng(0)}, path)
    with pytest.raises(CheckpointError, match=message) as err:
        safe_load(path, kind=kind)
    assert "\n" not in str(err.value)


def test_atomic_writes_create_folders_and_leave_no_temporary_files(tmp_path):
    target = tmp_path / "a" / "b" / "c.txt"
    atomic_write_text(target, "grüße\n")
    assert target.read_bytes() == "grüße\n".encode("utf-8") and os.listdir(target.parent) == ["c.txt"]
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and os.listdir(target.parent) == ["c.txt"]
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # a failed write keeps the old file and no temporary one
    assert target.read_bytes() == b"new" and os.listdir(target.parent) == ["c.txt"]


def test_model_file_and_stamp(tmp_path):
    assert model_file(tmp_path) == tmp_path / "model.pt" and model_file(tmp_path / "x.pt") == tmp_path / "x.pt"
    assert stamp("detector", {"a": 1}) == {"format": "anomalykit-detector", "format_version": FORMAT_VERSION,
                                           "anomalykit_version": anomalykit.__version__, "a": 1}


def test_the_temporary_file_is_written_beside_the_target(tmp_path, monkeypatch):
    """An atomic rename needs the temporary file on the target's file system: in its folder."""
    renames = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((str(src), str(dst))), real(src, dst)))
    atomic_write_bytes(tmp_path / "sub" / "x.bin", b"1")
    (src, dst), = renames
    assert os.path.dirname(src) == str(tmp_path / "sub") and dst == str(tmp_path / "sub" / "x.bin")


class First(Detector):
    """Scores rows by their first value: training scores the user can set by hand."""

    name = "ckpt-first"
    summary = "first feature as the score"
    params = (Param("epochs", 0, "unused", low=0), Param("gain", 1.0, "score factor", low=0.0))
    renamed_params = ()

    def _build(self, input_shape):
        self.nets["m"] = torch.nn.Module()

    def _fit(self, X, y):
        pass

    def _score(self, X):
        return X[:, 0] * self.hp.gain


def test_loaded_labels_flag_only_training_scores_above_a_threshold_they_touch(tmp_path):
    """Training scores 0..10, contamination 0.1: the 0.9 quantile is 9.0, a training score itself;
    labels_ flag scores strictly above it (as predict does), before and after a reload."""
    X = np.c_[np.arange(11.0), np.zeros(11)].astype(np.float32)
    det = First(preprocess="none", contamination=0.1).fit(X)
    assert det.threshold_ == 9.0
    np.testing.assert_array_equal(det.labels_, [0] * 10 + [1])
    det.save(tmp_path / "m.pt")
    back = restore_detector(First, safe_load(tmp_path / "m.pt", kind="detector"), path=tmp_path, overrides={})
    np.testing.assert_array_equal(back.labels_, [0] * 10 + [1])
    np.testing.assert_array_equal(back.predict(X), [0] * 10 + [1])


def test_an_override_on_load_may_use_a_renamed_parameter(tmp_path, monkeypatch):
    from anomalykit import deprecation
    from anomalykit.deprecation import RenamedParam

    monkeypatch.setattr(deprecation, "_emitted", set())  # each warning shows once per process: not already shown
    monkeypatch.setattr(First, "renamed_params", (RenamedParam("factor", "gain", 1.0),))
    X = np.c_[np.arange(11.0), np.zeros(11)].astype(np.float32)
    First(preprocess="none").fit(X).save(tmp_path / "m.pt")
    with pytest.warns(anomalykit.AnomalykitDeprecationWarning, match="factor"):
        back = restore_detector(First, safe_load(tmp_path / "m.pt", kind="detector"), path=tmp_path, overrides={"factor": 2.0})
    assert back.hp.gain == 2.0
    np.testing.assert_allclose(back.score_samples(X[:3]), [0.0, 2.0, 4.0])
