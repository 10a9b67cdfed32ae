"""anomalykit.testing.check_method: every installed method passes it, and it catches broken plugins."""
from __future__ import annotations

import pytest
import torch

import anomalykit
from anomalykit import Detector, Param, hookimpl
from anomalykit.testing import check_method

from conftest import tiny_params

#: the kit checks that noise scores above normal rows, which takes a trained model: ADGAN's
#: generator needs a few more epochs on the kit's 200 small images than the other tests use
KIT_PARAMS = {"adgan": dict(epochs=30), "patch-ae": dict(epochs=10, width=8)}


def params_for(method: str) -> dict:
    return tiny_params(method, **KIT_PARAMS.get(method, {}))


def test_every_installed_method_passes(installed_methods, one_thread):
    for method in installed_methods:
        passed = check_method(method, params=params_for(method))
        assert any(p.startswith("export") for p in passed), method
        assert any(p.startswith("save/load") for p in passed), method


def test_adgan_default_score_passes(one_thread):
    """The generic tests run ADGAN with score=loss (the search); its default score, the critic's
    Gaussian, passes the kit too, ONNX export included (a forward pass, no gradient steps)."""
    params = {**params_for("adgan"), "score": "critic-gaussian"}
    passed = check_method("adgan", params=params)
    assert any(p.startswith("export") for p in passed) and any(p.startswith("save/load") for p in passed)
    det = anomalykit.load_method("adgan", **params)
    assert det.score_needs_grad is False and anomalykit.load_method("adgan", score="loss").score_needs_grad is True


class _PCA(Detector):
    """A minimal correct method (the kit's control): squared distance to the training mean."""

    name = "kit-mean"
    summary = "distance to the training mean"
    params = (Param("epochs", 0, "unused", low=0),)

    def _build(self, input_shape):
        self.nets["mean"] = torch.nn.Module()
        self.nets["mean"].register_buffer("m", torch.zeros(input_shape))

    def _fit(self, X, y):
        self.nets["mean"].m.copy_(X.mean(0))

    def _score(self, X):
        return (X - self.nets["mean"].m).flatten(1).square().sum(1)


class _Flipped(_PCA):
    name = "kit-flipped"

    def _score(self, X):
        return -super()._score(X)  # "higher = more normal": the PyOD sign broken


class _Random(_PCA):
    name = "kit-random"

    def _score(self, X):
        return super()._score(X) + torch.rand(X.shape[0], device=X.device)  # not deterministic


class _ShortTrainingScores(_PCA):
    name = "kit-short"

    def _training_scores(self, X):
        return super()._training_scores(X)[:10]  # fewer scores than training rows


class _LosesState(_PCA):
    name = "kit-loses-state"

    def _fit(self, X, y):
        super()._fit(X, y)
        self.offset_ = float(X.mean())  # fitted state that is never saved

    def _score(self, X):
        return super()._score(X) + getattr(self, "offset_", 0.0)


def test_a_correct_minimal_method_passes():
    check_method(_PCA, export=False)


def test_overriding_a_core_owned_method_is_deprecated_not_refused():
    """Overriding fit was allowed until anomalykit 0.2.0: the class still works (the kit passes)
    and its definition warns once, naming the replacement and the release that ends it."""
    from anomalykit import AnomalykitDeprecationWarning

    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        class OwnsFit(_PCA):
            name = "kit-owns-fit"

            def fit(self, X, y=None, **kw):
                return super().fit(X, y, **kw)

    assert [str(w.message) for w in caught] == [
        "test_conformance.test_overriding_a_core_owned_method_is_deprecated_not_refused.<locals>.OwnsFit: overriding "
        "Detector.fit, which the core owns, is deprecated since anomalykit 0.2.0 and stops working in 0.3.0; implement "
        "the underscore hooks instead (_fit, _score, _training_scores, _reconstruct, _anomaly_map)"]
    assert OwnsFit._deprecated_members == (("core-owned-override", "fit"),)
    check_method(OwnsFit, export=False)


@pytest.mark.parametrize("cls, message", [
    (_Flipped, "noise rows do not score higher than normal rows"),
    (_Random, "two fits with the same seed score differently"),
    (_ShortTrainingScores, "_training_scores returned (10,), expected shape (200,)"),
    (_LosesState, "scores after load differ"),
])
def test_broken_plugins_are_caught(cls, message):
    with pytest.raises(AssertionError) as err:
        check_method(cls, export=False)
    assert message in str(err.value)


def test_the_registry_refuses_a_class_that_breaks_the_contract(registry, capsys):
    class BadBudget(_PCA):
        name = "kit-bad-budget"
        budgets = {"small": {"no_such_param": 1}}

    class Plugin:
        @hookimpl
        def anomalykit_register_methods(self, register):
            register(BadBudget)

    assert not registry.add_plugin(Plugin(), name="kit-bad-budget-plugin")
    assert "kit-bad-budget" not in registry.methods
    line = registry.failures[-1].line()
    assert "budgets['small'] sets 'no_such_param'" in line and "\n" not in line
    assert "skipped" in capsys.readouterr().err
