"""scikit-learn / PyOD vocabulary: predict() semantics, params, clone, pipelines, probabilities."""
import numpy as np
import pytest
import torch

import anomalykit
from anomalykit.data import make_split
from conftest import tiny_params

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits0():
    return make_split("one-class", "digits", normal_class=0)


def test_threshold_labels_and_predict_follow_the_quantile_rule_for_every_method(installed_methods, digits0):
    """threshold_ is numpy's (1 - contamination) quantile of decision_scores_ (one score per training
    row), labels_ flag the training scores above that quantile and predict() the new rows scoring
    above it; contamination=0.2, not the default 0.1, so a rule that ignores it fails."""
    n = digits0.X_train.shape[0]
    for method in installed_methods:
        det = anomalykit.load_method(method, **tiny_params(method, contamination=0.2)).fit(digits0.X_train, progress=False)
        train = np.asarray(det.decision_scores_, dtype=np.float64)
        assert train.shape == (n,), method  # digits class 0 has fewer rows than any threshold_sample
        q = float(np.quantile(train, 0.8))
        assert det.threshold_ == pytest.approx(q, rel=1e-12, abs=1e-12), method
        np.testing.assert_array_equal(det.labels_, (train > q).astype(np.int64), err_msg=method)
        test_scores = det.score_samples(digits0.X_test)
        np.testing.assert_array_equal(det.predict(digits0.X_test), (test_scores > q).astype(np.int64), err_msg=method)


def test_predict_flags_about_the_contamination_of_new_normal_rows(pca_method):
    """Training scores are what new rows would score, so predict() on held-out rows of the training
    distribution flags close to ``contamination`` of them (PCA reconstruction error on correlated
    Gaussian rows: 2,000 training, 5,000 held-out; measured 0.056, 0.110 and 0.199 for 0.05, 0.1 and
    0.2; binomial sd of the held-out fraction alone 0.003-0.006)."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(10, 10, generator=g)
    rows = torch.randn(7000, 10, generator=g) @ mix * 3.0 + 5.0  # raw units: the robust scaling is fitted
    train, held = rows[:2000], rows[2000:]
    for contamination in (0.05, 0.1, 0.2):
        det = anomalykit.load_method(pca_method, n_components=4, contamination=contamination).fit(train)
        flagged = float(det.predict(held).mean())
        assert abs(flagged - contamination) <= 0.02, f"contamination {contamination}: flagged {flagged:.4f} of held-out rows"


def test_get_set_params_and_sklearn_clone(digits0):
    from sklearn.base import clone

    det = anomalykit.load_method("ama", **tiny_params("ama", seed=3))
    assert det.get_params(deep=True)["seed"] == 3
    assert det.set_params(lr=1e-3) is det and det.hp.lr == 1e-3
    with pytest.raises(anomalykit.ConfigError, match="unknown parameter 'nope'"):
        det.set_params(nope=1)
    copy = clone(det)
    assert type(copy) is type(det) and copy is not det and copy.get_params() == det.get_params()
    det.fit(digits0.X_train, progress=False)
    assert clone(det).threshold_ is None  # an unfitted copy
    # contamination re-derives the threshold of a fitted detector (no refit)
    det.set_params(contamination=0.2)
    assert det.threshold_ == pytest.approx(np.quantile(det.decision_scores_, 0.8))


def test_detector_as_the_last_step_of_a_pipeline(blobs):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = blobs
    X = X.numpy() * 50 + 3
    pipe = make_pipeline(StandardScaler(), anomalykit.load_method("mae-simplex", **tiny_params("mae-simplex", preprocess="none")))
    pipe.fit(X[y == 0])
    scaled = StandardScaler().fit(X[y == 0]).transform(X)
    det = pipe[-1]
    np.testing.assert_allclose(pipe.score_samples(X), det.score_samples(scaled))
    np.testing.assert_array_equal(pipe.predict(X), det.predict(scaled))
    np.testing.assert_allclose(pipe.decision_function(X), det.decision_function(scaled))


def test_probabilities_and_confidence_match_pyod_on_the_same_scores(blobs):
    pytest.importorskip("pyod")
    from pyod.models.base import BaseDetector

    X, _ = blobs
    det = anomalykit.load_method("mae-simplex", **tiny_params("mae-simplex", contamination=0.15))
    det.fit(X[:150], progress=False)
    scores = det.score_samples(X)

    class Fixed(BaseDetector):  # PyOD's own predict_proba / predict_confidence on our scores
        def __init__(self, contamination=0.1):
            super().__init__(contamination=contamination)

        def fit(self, X, y=None):
            return self

        def decision_function(self, X):
            return scores

    ref = Fixed(contamination=0.15)
    ref.decision_scores_ = det.decision_scores_
    ref._set_n_classes(None)
    ref._process_decision_scores()
    assert ref.threshold_ == pytest.approx(det.threshold_)
    np.testing.assert_array_equal(ref.labels_, det.labels_)
    for method in ("linear", "unify"):
        np.testing.assert_allclose(det.predict_proba(X, method=method), ref.predict_proba(X.numpy(), method=method), atol=1e-12)
    np.testing.assert_allclose(det.predict_confidence(X), ref.predict_confidence(X.numpy()), atol=1e-12)
    labels, confidence = det.predict(X, return_confidence=True)
    np.testing.assert_array_equal(labels, ref.predict(X.numpy()))
    np.testing.assert_allclose(confidence, ref.predict_confidence(X.numpy()), atol=1e-12)
    with pytest.raises(anomalykit.ConfigError, match="'linear' or 'unify'"):
        det.predict_proba(X, method="softmax")


def test_fit_with_labels_trains_only_methods_that_use_them_on_anomalies(installed_methods, blobs, monkeypatch):
    """The core's policy: without supports_labels a plugin sees only the y == 0 rows and y=None."""
    X, y = blobs
    images = torch.randn(60, 1, 8, 8)
    y_img = np.r_[np.zeros(50, int), np.ones(10, int)]
    images[50:] += 5.0  # the labelled anomalies are far away: a leak would move the training range
    for method in installed_methods:
        cls = anomalykit.load_method(method).__class__
        seen = {}
        original = cls._fit

        def spy(self, X_, y_, _original=original):
            seen["X"], seen["y"] = X_.clone(), y_
            return _original(self, X_, y_)

        monkeypatch.setattr(cls, "_fit", spy)
        det = anomalykit.load_method(method, **tiny_params(method))
        data, labels = (images, y_img) if method == "csi-aae" else (X, y)
        det.fit(data, labels, progress=False)
        n_normal = int((labels == 0).sum())
        shift, scale = normal_rows_scaling(np.asarray(data, np.float64)[labels == 0])
        as_model = lambda rows: torch.as_tensor((np.asarray(rows, np.float64) - shift) / scale, dtype=torch.float32)  # noqa: E731
        if cls.supports_labels:  # every row, scaled as the normal rows alone say, and the labels
            torch.testing.assert_close(seen["X"], as_model(data), rtol=1e-5, atol=1e-5, msg=method)
            assert seen["y"].tolist() == labels.tolist(), method
        else:  # the normal rows only, and no labels
            assert seen["y"] is None, method
            torch.testing.assert_close(seen["X"], as_model(np.asarray(data)[labels == 0]), rtol=1e-5, atol=1e-5, msg=method)
        assert det.decision_scores_.shape == (n_normal,)  # the threshold comes from the normal rows only
        monkeypatch.undo()


def normal_rows_scaling(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The input scaling the core must fit, computed here with numpy from the normal rows alone:
    images (N, C, H, W) -> the per-channel range onto [-1, 1]; rows (N, F) -> median and IQR per feature."""
    if normal.ndim == 4:
        cols = normal.transpose(1, 0, 2, 3).reshape(normal.shape[1], -1)
        lo, hi = cols.min(1), cols.max(1)
        return ((hi + lo) / 2)[None, :, None, None], ((hi - lo) / 2)[None, :, None, None]
    q1, median, q3 = np.percentile(normal, [25, 50, 75], axis=0)
    return median, q3 - q1
