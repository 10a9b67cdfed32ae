"""Detector.score_params: a parameter the scores of a fitted detector depend on, changed after fit,
makes the threshold-based outputs refuse in one line until refit (the threshold is a quantile of the
training scores under the old value); score_samples scores with the new value."""
import numpy as np
import pytest
import torch

from anomalykit import Detector, InputError, Param
from anomalykit.contract import check_method_class


class PowerDistance(Detector):
    name = "power-distance"
    summary = "distance to the training mean, raised to a power"
    params = (Param("epochs", 0, "unused", low=0), Param("power", 1.0, "exponent of the distance", low=0.1))
    score_params = frozenset({"power"})

    def _build(self, shape):
        self.nets["m"] = torch.nn.Linear(1, 1)

    def _fit(self, X, y):
        self.center = X.mean(0)

    def _score(self, X):
        return (X - self.center.to(X.device)).flatten(1).norm(dim=1) ** self.hp.power


@pytest.fixture()
def fitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    return PowerDistance().fit(X, progress=False), rng.normal(size=(50, 3)).astype(np.float32) * 2


def test_changed_score_param_makes_threshold_outputs_refuse(fitted):
    det, X = fitted
    labels, base = det.predict(X), det.score_samples(X)
    det.set_params(power=2.0)
    # the scores follow the new value (squared distances) ...
    np.testing.assert_allclose(det.score_samples(X), base**2, rtol=1e-5)
    # ... while a threshold set from the old training scores would flag another fraction of rows
    assert (det.score_samples(X) > det.threshold_).mean() != labels.mean()
    msg = r"power-distance: power=2.0 changes the scores, but threshold_ comes from the training scores with power=1.0; refit before predict\(\)"
    with pytest.raises(InputError, match=msg):
        det.predict(X)
    with pytest.raises(InputError, match="before predict_proba"):
        det.predict_proba(X)
    with pytest.raises(InputError, match="before predict_confidence"):
        det.predict_confidence(X)
    det.set_params(power=1.0)  # set back: the threshold applies again
    np.testing.assert_array_equal(det.predict(X), labels)


def test_refit_with_the_new_value_clears_the_refusal(fitted):
    det, X = fitted
    det.set_params(power=2.0)
    rng = np.random.default_rng(0)
    det.fit(rng.normal(size=(200, 3)).astype(np.float32), progress=False)
    expected = (det.score_samples(X) > np.quantile(det.decision_scores_, 1 - det.hp.contamination)).astype(int)
    np.testing.assert_array_equal(det.predict(X), expected)


def test_other_parameters_do_not_touch_the_threshold(fitted):
    det, X = fitted
    labels = det.predict(X)
    det.set_params(epochs=3, score_batch_size=7)
    np.testing.assert_array_equal(det.predict(X), labels)


@pytest.mark.parametrize("value, reason", [
    ({"power", 3}, "must be a frozenset of parameter names"),
    (frozenset({"powr"}), "names 'powr', which is not one of its parameters"),
])
def test_contract_checks_score_params(value, reason):
    bad = type("Bad", (PowerDistance,), {"score_params": value})
    assert reason in check_method_class(bad)
    assert check_method_class(PowerDistance) is None
