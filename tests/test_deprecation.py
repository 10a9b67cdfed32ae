"""Deprecated members of the plugin API keep working, each with one warning naming its replacement.

Every expectation is computed by hand (the scaling a legacy override must see, the moving average of
recorded weights, the quantile of the scores a plugin set); the frozen plugins in
tests/test_compat_plugins.py drive the same adapters through the CLI.
"""
from __future__ import annotations

import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
import torch

import anomalykit
from anomalykit import AnomalykitDeprecationWarning, ConfigError, Detector, Param, hookimpl
from anomalykit import deprecation
from anomalykit.deprecation import DEPRECATIONS, RenamedParam, label_use
from anomalykit.registry import Registry, new_plugin_manager


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each deprecation warns once per process; each test starts with none emitted."""
    monkeypatch.setattr(deprecation, "_emitted", set())


def messages(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, AnomalykitDeprecationWarning)]


class Mean(Detector):
    """Squared distance to the training mean (a correct modern method the legacy ones extend)."""

    name = "dep-mean"
    summary = "distance to the training mean"
    params = (Param("epochs", 0, "unused", low=0),)
    supports_labels = False

    def _build(self, input_shape):
        self.nets["mean"] = torch.nn.Module()
        self.nets["mean"].register_buffer("m", torch.zeros(input_shape))

    def _fit(self, X, y):
        self.nets["mean"].m.copy_(X.mean(0))

    def _score(self, X):
        return (X - self.nets["mean"].m).flatten(1).square().sum(1)


def subject(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def uint8_images(n=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 4, 4), dtype=np.uint8)


# -- reconstruct(X) overrides ---------------------------------------------------------------
def test_a_reconstruct_override_becomes_the_reconstruct_hook_in_model_space():
    seen = []
    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        class Halves(Mean):
            name = "dep-halves"

            def reconstruct(self, X):  # 0.1.0 style: the plugin's own public override
                seen.append(X.clone())
                return X * 0.5

    assert messages(caught) == [DEPRECATIONS["reconstruct-override"].message(subject(Halves))]
    assert "reconstruct" not in Halves.__dict__ and Halves.reconstruct is Detector.reconstruct
    X = uint8_images()
    det = Halves().fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning when it is used
        rec = det.reconstruct(X[:5])
    # the override saw the batch in model space (uint8 -> x / 127.5 - 1) with a channel axis ...
    expected_in = torch.from_numpy(X[:5].astype(np.float32) / 127.5 - 1.0).unsqueeze(1)
    assert torch.allclose(seen[-1], expected_in, atol=1e-6)
    # ... and its output was mapped back to the input's units: ((x / 127.5 - 1) / 2 + 1) * 127.5
    expected_out = (expected_in * 0.5 + 1.0) * 127.5
    assert torch.allclose(rec, expected_out, atol=1e-4)
    # the default anomaly map runs on it: squared residual in model space, (x/2)^2 summed over channels
    maps = det.anomaly_map(X[:5], sigma=0)
    assert np.allclose(maps, (expected_in * 0.5).square().sum(1).numpy(), atol=1e-5)


def test_a_reconstruct_override_that_calls_super_keeps_running():
    """A post-processing override (allowed before 0.2.0) is a core-owned override, not the hook:
    converting it would recurse through Detector.reconstruct."""
    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        class Doubled(Mean):
            name = "dep-doubled"

            def _reconstruct(self, x):
                return x * 0.5

            def reconstruct(self, X):
                return super().reconstruct(X) * 2

    assert messages(caught) == [DEPRECATIONS["core-owned-override"].message(subject(Doubled), "reconstruct")]
    X = np.random.default_rng(7).normal(size=(6, 1, 3, 3)).astype(np.float32)
    det = Doubled(preprocess="none").fit(X)
    torch.testing.assert_close(det.reconstruct(X), torch.from_numpy(X))


def test_a_class_with_its_own_reconstruct_hook_keeps_it():
    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        class Both(Mean):
            name = "dep-both"

            def reconstruct(self, X):  # runs as an override of the core's method
                return "the override"

            def _reconstruct(self, x):
                return x * 0

    assert messages(caught) == [DEPRECATIONS["core-owned-override"].message(subject(Both), "reconstruct")]
    det = Both().fit(uint8_images())
    assert det.reconstruct(uint8_images(3)) == "the override"
    np.testing.assert_allclose(det.anomaly_map(uint8_images(3), sigma=0), (uint8_images(3) / 127.5 - 1.0) ** 2, rtol=1e-5, atol=1e-7)


# -- threshold_sample, decision_scores_ set in _fit ------------------------------------------
def test_threshold_sample_is_ignored_with_a_warning_and_every_row_is_scored():
    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        class Sampled(Mean):
            name = "dep-sampled"
            threshold_sample = 10

    assert messages(caught) == [DEPRECATIONS["threshold-sample"].message(subject(Sampled))]
    X = np.random.default_rng(1).normal(size=(50, 3))
    det = Sampled().fit(X)
    assert det.decision_scores_.shape == (50,)
    assert np.allclose(det.decision_scores_, det.score_samples(X))


def test_decision_scores_set_in_fit_become_the_training_scores():
    class OwnScores(Mean):
        name = "dep-own-scores"

        def _fit(self, X, y):
            super()._fit(X, y)
            self.decision_scores_ = np.arange(X.shape[0], dtype=float)  # e.g. leave-one-out scores

    X = np.random.default_rng(2).normal(size=(21, 3))
    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        det = OwnScores(contamination=0.1).fit(X)
    assert messages(caught) == [DEPRECATIONS["decision-scores-in-fit"].message(subject(OwnScores))]
    assert np.array_equal(det.decision_scores_, np.arange(21.0))
    assert det.threshold_ == pytest.approx(18.0)  # the 0.9 quantile of 0..20 (linear), by hand
    assert det.labels_.tolist() == [0] * 19 + [1, 1]


def test_non_finite_decision_scores_are_not_used():
    class NanScores(Mean):
        name = "dep-nan-scores"

        def _fit(self, X, y):
            super()._fit(X, y)
            self.decision_scores_ = np.r_[np.nan, np.zeros(X.shape[0] - 1)]

    X = np.random.default_rng(3).normal(size=(30, 3))
    with pytest.warns(AnomalykitDeprecationWarning):
        det = NanScores(preprocess="none").fit(X)
    assert np.allclose(det.decision_scores_, ((X - X.mean(0)) ** 2).sum(1), rtol=1e-5)


def test_decision_scores_of_another_length_are_not_used():
    class ShortScores(Mean):
        name = "dep-short-scores"

        def _fit(self, X, y):
            super()._fit(X, y)
            self.decision_scores_ = np.zeros(3)  # a threshold sample, not one score per row

    X = np.random.default_rng(3).normal(size=(30, 3))
    with pytest.warns(AnomalykitDeprecationWarning):
        det = ShortScores(preprocess="none").fit(X)
    assert np.allclose(det.decision_scores_, ((X - X.mean(0)) ** 2).sum(1), rtol=1e-5)


# -- labels ------------------------------------------------------------------------------------
def test_a_fit_that_reads_y_without_supports_labels_gets_every_row_and_the_labels():
    got = {}
    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        class ReadsY(Detector):
            name = "dep-reads-y"
            summary = "trains on X[y == 0] as the first guide said"
            params = (Param("epochs", 0, "unused", low=0),)

            def _build(self, input_shape):
                self.nets["mean"] = torch.nn.Module()
                self.nets["mean"].register_buffer("m", torch.zeros(input_shape))

            def _fit(self, X, y):
                got["n"], got["y"] = X.shape[0], y
                if y is not None:
                    X = X[y == 0]
                self.nets["mean"].m.copy_(X.mean(0))

            def _score(self, X):
                return (X - self.nets["mean"].m).flatten(1).square().sum(1)

    assert messages(caught) == [DEPRECATIONS["labels-without-supports-labels"].message(subject(ReadsY))]
    X = np.r_[np.zeros((8, 2)), np.full((2, 2), 50.0)]
    y = np.r_[np.zeros(8, int), np.ones(2, int)]
    det = ReadsY(preprocess="none").fit(X, y)
    assert got["n"] == 10 and got["y"].tolist() == y.tolist()
    assert torch.equal(det.nets["mean"].m, torch.zeros(2))  # the plugin filtered the anomalies itself
    assert det.decision_scores_.shape == (8,)  # training scores: the normal rows only, as always


def test_a_class_that_declares_supports_labels_gets_no_legacy_labels():
    got = {}

    class Declared(Mean):
        name = "dep-declared"
        supports_labels = False

        def _fit(self, X, y):
            got["n"], got["y"] = X.shape[0], y
            super()._fit(X, y)

    X = np.r_[np.zeros((8, 2)), np.full((2, 2), 50.0)]
    Declared(preprocess="none").fit(X, np.r_[np.zeros(8, int), np.ones(2, int)])
    assert got == {"n": 8, "y": None}


def test_label_use_tells_reading_from_forwarding_and_ignoring():
    def direct(self, X, y):
        return X[y == 0]

    def nested(self, X, y):
        return [x for x, label in zip(X, y)]

    def closure(self, X, y):
        return lambda: y

    def forwards(self, X, y):
        return super()._fit(X, y)

    def forwards_by_name(self, X, y):
        return Mean._fit(self, X, y)

    def forwards_and_uses(self, X, y):
        super()._fit(X, y)
        return y is None

    def shadows(self, X, y):
        return [y for y in X]  # a comprehension's own y

    def ignores(self, X, y):
        return X

    assert [label_use(f) for f in (direct, nested, closure, forwards_and_uses)] == ["uses"] * 4
    assert label_use(forwards) == label_use(forwards_by_name) == "forwards"
    assert label_use(ignores) == label_use(shadows) == label_use(lambda self, X: X) == "ignores"


def test_a_subclass_that_forwards_y_keeps_its_parents_choice():
    """A valid 0.2.0 plugin that hands y on to its parent gets no legacy labels and no warning;
    a subclass of a legacy class that forwards y stays legacy (its parent filters the rows)."""
    got = {}

    class Forwards(Mean):  # Mean declares supports_labels = False
        name = "dep-forwards"

        def _fit(self, X, y):
            got["n"] = X.shape[0]
            return super()._fit(X, y)

    assert Forwards._legacy_labels is False and Forwards._deprecated_members == ()
    X = np.r_[np.zeros((8, 2)), np.full((2, 2), 50.0)]
    y = np.r_[np.zeros(8, int), np.ones(2, int)]
    Forwards(preprocess="none").fit(X, y)
    assert got["n"] == 8

    with pytest.warns(AnomalykitDeprecationWarning):
        class Legacy(Detector):
            name, summary, params = "dep-legacy", "filters X[y == 0] itself", (Param("epochs", 0, "unused", low=0),)

            def _build(self, input_shape):
                self.nets["mean"] = torch.nn.Module()
                self.nets["mean"].register_buffer("m", torch.zeros(input_shape))

            def _fit(self, X, y):
                self.nets["mean"].m.copy_((X if y is None else X[y == 0]).mean(0))

            def _score(self, X):
                return (X - self.nets["mean"].m).flatten(1).square().sum(1)

    class Child(Legacy):
        name = "dep-legacy-child"

        def _fit(self, X, y):
            got["child"] = X.shape[0]
            super()._fit(X, y)

    class Ignores(Legacy):
        name = "dep-legacy-ignores"

        def _fit(self, X, y):
            got["ignores"] = X.shape[0]
            self.nets["mean"].m.copy_(X.mean(0))

    assert Child._legacy_labels is True and Ignores._legacy_labels is False
    Child(preprocess="none").fit(X, y)
    Ignores(preprocess="none").fit(X, y)
    assert got["child"] == 10 and got["ignores"] == 8


def test_a_mixins_fit_and_reconstruct_are_adapted_too():
    class LegacyMixin:
        def _fit(self, X, y):
            self.saw_labels = y is not None

        def reconstruct(self, X):
            return X * 0

    class Undeclared(Detector):  # like Mean, but it never declares supports_labels
        name, summary, params = "dep-undeclared", "zero scores", (Param("epochs", 0, "unused", low=0),)

        def _build(self, input_shape):
            pass

        def _score(self, X):
            return X.flatten(1).sum(1) * 0

    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        class Mixed(LegacyMixin, Undeclared):
            name = "dep-mixed-legacy"

    assert [key for key, _ in Mixed._deprecated_members] == ["reconstruct-override", "labels-without-supports-labels"]
    assert len(messages(caught)) == 2
    X = np.r_[np.zeros((8, 2, 2, 2)), np.ones((2, 2, 2, 2))].astype(np.float32)
    det = Mixed(preprocess="none").fit(X, np.r_[np.zeros(8, int), np.ones(2, int)])
    assert det.saw_labels and torch.equal(det.reconstruct(X[:2]), torch.zeros(2, 2, 2, 2))


# -- core-owned overrides ------------------------------------------------------------------------
def test_each_core_owned_override_warns_once_and_still_runs():
    calls = []
    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        class OwnsPredict(Mean):
            name = "dep-owns-predict"

            def predict(self, X):
                calls.append(len(X))
                return super().predict(X)

            def score_samples(self, X):
                return super().score_samples(X)

    assert messages(caught) == [
        DEPRECATIONS["core-owned-override"].message(subject(OwnsPredict), "score_samples"),
        DEPRECATIONS["core-owned-override"].message(subject(OwnsPredict), "predict"),
    ] or messages(caught) == [
        DEPRECATIONS["core-owned-override"].message(subject(OwnsPredict), "predict"),
        DEPRECATIONS["core-owned-override"].message(subject(OwnsPredict), "score_samples"),
    ]
    X = np.random.default_rng(4).normal(size=(20, 2))
    det = OwnsPredict().fit(X)
    assert det.predict(X[:3]).shape == (3,) and calls == [3]


def test_a_mixin_override_of_a_core_owned_method_is_seen():
    class Mixin:
        def predict(self, X):
            return Detector.predict(self, X)

    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        class Mixed(Mixin, Mean):
            name = "dep-mixed"

    assert "overriding Detector.predict" in messages(caught)[0]


# -- weight averaging through the trainer --------------------------------------------------------
def test_trainer_average_loads_the_moving_average_of_the_recorded_weights():
    trajectory = []

    class Averaged(Detector):
        name = "dep-averaged"
        summary = "a linear layer trained on the mean, its weights averaged"
        params = (Param("epochs", 3, "epochs", low=0),)

        def _build(self, input_shape):
            self.nets["lin"] = torch.nn.Linear(int(np.prod(input_shape)), 1)

        def _fit(self, X, y):
            lin = self.nets["lin"]
            trainer = self.trainer(optimizers={"lin": torch.optim.SGD(lin.parameters(), lr=0.1)},
                                   average=("lin",), average_decay=0.75)
            trajectory.append(torch.cat([p.detach().flatten().clone() for p in lin.parameters()]))

            def step(x, ctx):
                ctx.update("lin", lin(x).square().mean())
                trajectory.append(torch.cat([p.detach().flatten().clone() for p in lin.parameters()]))

            trainer.run(X, step)

        def _score(self, X):
            return self.nets["lin"](X).squeeze(1).abs()

    X = np.random.default_rng(5).normal(size=(64, 3))
    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        det = Averaged(batch_size=16).fit(X)
    assert messages(caught) == [DEPRECATIONS["trainer-average"].message(subject(Averaged))]
    average = trajectory[0].double()
    for w in trajectory[1:]:  # avg <- 0.75 avg + 0.25 w after every step, by hand
        average = 0.75 * average + 0.25 * w.double()
    final = torch.cat([p.detach().flatten() for p in det.nets["lin"].parameters()]).double()
    assert len(trajectory) == 1 + 3 * 4
    assert torch.allclose(final, average, atol=1e-6)
    assert not torch.allclose(final, trajectory[-1].double(), atol=1e-4)  # not the last weights


def test_weight_average_and_forward_with_features_still_import_and_run():
    from anomalykit.sdk import MLPCritic

    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        from anomalykit.training import WeightAverage
    assert messages(caught) == [DEPRECATIONS["weight-average"].message("")]
    critic = MLPCritic(4, hidden=(8,), feature_dim=3)
    x = torch.randn(5, 4)
    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        value, f = critic.forward_with_features(x)
    assert messages(caught) == [DEPRECATIONS["forward-with-features"].message("", "MLPCritic")]
    assert torch.equal(f, critic.features(x)) and torch.equal(value, critic(x))
    avg = WeightAverage({"c": critic}, 0.5)
    before = [p.detach().clone() for p in critic.parameters()]
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(1.0)
    avg.update()
    avg.copy_to_modules()
    assert all(torch.allclose(p, b + 0.5) for p, b in zip(critic.parameters(), before))


def test_the_old_lazy_module_reexports_lazy_rows(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(12.0).reshape(4, 3))
    code = ("import warnings, anomalykit\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    from anomalykit.data.lazy import open_rows, NpyRows\n"
            f"rows = open_rows({str(tmp_path / 'x.npy')!r})\n"
            "print(type(rows).__name__, tuple(rows.shape), [str(x.message) for x in w])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"NpyRows (4, 3) {[DEPRECATIONS['data-lazy'].message('')]}"


# -- renamed parameters ---------------------------------------------------------------------------
def test_renamed_parameters_of_the_built_in_methods_map_onto_the_new_names():
    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        det = anomalykit.load_method("mae-simplex", m=2, lambda_gp="5")
    assert (det.hp.simplex_k, det.hp.gp_weight) == (2, 5.0)
    assert messages(caught) == [DEPRECATIONS["renamed-param"].message("mae-simplex", "m -> simplex_k"),
                                DEPRECATIONS["renamed-param"].message("mae-simplex", "lambda_gp -> gp_weight")]
    with pytest.warns(AnomalykitDeprecationWarning):
        assert anomalykit.load_method("ama", lr_decay="true").hp.lr_schedule == "step"
        assert anomalykit.load_method("ama", lr_decay=False).hp.lr_schedule == "constant"
    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        det = anomalykit.load_method("ama", ema=0.99)
    assert "ema" not in det.get_params()
    assert messages(caught)[0].startswith("ama: parameter ema (retired, ignored: ")
    assert messages(caught)[0].endswith("stops working in 0.3.0; drop it (anomalykit show METHOD lists the parameters)")


def test_an_old_and_a_new_name_that_disagree_are_refused():
    with pytest.warns(AnomalykitDeprecationWarning), pytest.raises(ConfigError, match="m=2 .* and simplex_k=3 disagree"):
        anomalykit.load_method("mae-simplex", m=2, simplex_k=3)
    deprecation._emitted.clear()
    with pytest.warns(AnomalykitDeprecationWarning), pytest.raises(ConfigError, match="must be one of"):
        anomalykit.load_method("mae-simplex", m=5)  # the old name is validated by the new schema


def test_a_model_saved_with_old_parameter_names_loads(tmp_path):
    class Renamed(Mean):
        name = "dep-renamed"
        params = (Param("epochs", 0, "unused", low=0), Param("scale", 1.0, "score scale", low=0.0))
        renamed_params = (RenamedParam("factor", "scale", 1.0),)

        def _score(self, X):
            return super()._score(X) * self.hp.scale

    reg = Registry(new_plugin_manager())
    mod = types.SimpleNamespace(anomalykit_register_methods=hookimpl(lambda register: register(Renamed)))
    assert reg.add_plugin(mod, name="renamed-plugin")
    X = np.random.default_rng(6).normal(size=(30, 3))
    det = Renamed(scale=2.0).fit(X)
    path = det.save(tmp_path / "m.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["params"]["factor"] = ckpt["params"].pop("scale")  # as a release that called it factor wrote it
    torch.save(ckpt, path)
    with pytest.warns(AnomalykitDeprecationWarning) as caught:
        again = Renamed.from_checkpoint(torch.load(path, weights_only=True), path=path)
    assert messages(caught) == [DEPRECATIONS["renamed-param"].message("dep-renamed", "factor -> scale")]
    assert again.hp.scale == 2.0 and np.array_equal(again.score_samples(X), det.score_samples(X))


def test_the_contract_checks_renamed_params():
    from anomalykit.contract import check_method_class

    class Dangling(Mean):
        name = "dep-dangling"
        renamed_params = (RenamedParam("old", "nowhere", 0),)

    class Shadowing(Mean):
        name = "dep-shadowing"
        renamed_params = (RenamedParam("epochs", "seed", 0),)

    assert "maps 'old' onto 'nowhere', which is not one of its parameters" in check_method_class(Dangling)
    assert "'epochs' is still one of its parameters" in check_method_class(Shadowing)


# -- the registry isolates each hook and each class ----------------------------------------------
class BrokenClass(Mean):
    name = "Not A Name"


def test_a_broken_method_class_keeps_its_plugins_datasets_and_other_classes(capsys):
    plugin = types.SimpleNamespace(
        anomalykit_register_methods=hookimpl(lambda register: (register(BrokenClass), register(Mean))),
        anomalykit_register_datasets=hookimpl(lambda register: register("dep-data", lambda seed: None, "data")),
    )
    reg = Registry(new_plugin_manager())
    assert not reg.add_plugin(plugin, name="half", distribution="dist-half")
    assert list(reg.methods) == ["dep-mean"] and list(reg.datasets) == ["dep-data"]
    (failure,) = reg.failures
    assert failure.line() == ("plugin 'half' (distribution dist-half) method class BrokenClass skipped: "
                              "BrokenClass.name must be a lowercase string matching ^[a-z][a-z0-9_-]{0,63}$, got 'Not A Name'")
    assert capsys.readouterr().err.strip() == f"anomalykit: warning: {failure.line()}"


def test_a_failing_dataset_hook_keeps_the_methods():
    def datasets(register):
        raise RuntimeError("the data server is down")

    plugin = types.SimpleNamespace(anomalykit_register_methods=hookimpl(lambda register: register(Mean)),
                                   anomalykit_register_datasets=hookimpl(datasets))
    reg = Registry(new_plugin_manager())
    assert not reg.add_plugin(plugin, name="half-data")
    assert list(reg.methods) == ["dep-mean"] and reg.datasets == {}
    assert reg.failures[0].skipped == "hook anomalykit_register_datasets"
    assert reg.failures[0].reason == "raised RuntimeError: the data server is down"


def test_a_raising_method_hook_keeps_the_plugins_datasets():
    """The issue a plugin author met: a refused method class used to take the plugin's datasets along."""
    def methods(register):
        raise ImportError("an optional dependency of the method is missing")

    plugin = types.SimpleNamespace(
        anomalykit_register_methods=hookimpl(methods),
        anomalykit_register_datasets=hookimpl(lambda register: register("dep-data", lambda seed: None, "data")),
    )
    reg = Registry(new_plugin_manager())
    assert not reg.add_plugin(plugin, name="data-survives")
    assert reg.methods == {} and list(reg.datasets) == ["dep-data"]
    assert reg.pm.has_plugin("data-survives")


def test_the_registry_records_a_class_s_deprecations_for_list():
    with pytest.warns(AnomalykitDeprecationWarning):
        class Listed(Mean):
            name = "dep-listed"
            threshold_sample = 5

    reg = Registry(new_plugin_manager())
    assert reg.add_plugin(types.SimpleNamespace(anomalykit_register_methods=hookimpl(lambda register: register(Listed))),
                          name="listed")
    assert reg.method("dep-listed").deprecations == (DEPRECATIONS["threshold-sample"].message("Listed"),)
    assert reg.method("dep-listed").deprecations[0].startswith("Listed: threshold_sample is deprecated since")


# -- how the warnings are shown -------------------------------------------------------------------
LEGACY_CLASS = ("import anomalykit\n"
                "class Old(anomalykit.Detector):\n"
                "    name, summary = 'old', 'old'\n"
                "    threshold_sample = 3\n"
                "print('defined')\n")


def test_warnings_are_shown_by_default_once_and_become_errors_under_w_error():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    shown = subprocess.run([sys.executable, "-c", LEGACY_CLASS + LEGACY_CLASS.split("\n", 1)[1]],
                           capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and shown.stdout.count("defined") == 2
    assert shown.stderr.count("AnomalykitDeprecationWarning: __main__.Old: threshold_sample is deprecated") == 1
    strict = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", LEGACY_CLASS],
                            capture_output=True, text=True, env=env)
    assert strict.returncode != 0 and "AnomalykitDeprecationWarning" in strict.stderr and "defined" not in strict.stdout


def test_the_cli_prints_each_deprecation_as_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "anomalykit", "run", "mae-simplex", "--set", "m=2", "--set", "epochs=0",
                          "--max-train", "40", "--out", str(tmp_path / "run"), "-q"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "deprecated" in ln]
    assert lines == ["anomalykit: deprecated: " + DEPRECATIONS["renamed-param"].message("mae-simplex", "m -> simplex_k")]


# -- review follow-ups: resume, registry bookkeeping, names a plugin may have imported -----------
def test_an_averaging_run_resumed_after_its_last_step_keeps_the_average(tmp_path):
    class Averaged(Detector):
        name, summary = "dep-avg-resume", "linear layer, weights averaged"
        params = (Param("epochs", 2, "epochs", low=0),)

        def _build(self, input_shape):
            self.nets["lin"] = torch.nn.Linear(int(np.prod(input_shape)), 1)

        def _fit(self, X, y):
            lin = self.nets["lin"]
            trainer = self.trainer(optimizers={"lin": torch.optim.SGD(lin.parameters(), lr=0.1)},
                                   average=("lin",), average_decay=0.5)
            trainer.run(X, lambda x, ctx: {"loss": ctx.update("lin", lin(x).square().mean())})

        def _score(self, X):
            return self.nets["lin"](X).squeeze(1).abs()

    X = np.random.default_rng(8).normal(size=(64, 3))
    first = Averaged(batch_size=16, preprocess="none").fit(X, checkpoint_dir=tmp_path)
    again = Averaged(batch_size=16, preprocess="none").fit(X, checkpoint_dir=tmp_path, resume=True)
    for a, b in zip(first.nets["lin"].parameters(), again.nets["lin"].parameters()):
        assert torch.equal(a, b)  # the checkpoint's average, not the starting weights


def test_a_plugin_that_registers_nothing_is_unregistered_and_bad_datasets_skip_alone():
    def methods(register):
        raise RuntimeError("nothing works")

    reg = Registry(new_plugin_manager())
    assert not reg.add_plugin(types.SimpleNamespace(anomalykit_register_methods=hookimpl(methods)), name="nothing")
    assert not reg.pm.has_plugin("nothing")

    def datasets(register):
        register("Bad Name", lambda seed: None, "refused")
        register("good-data", lambda seed: None, "kept")
        register("not-callable", 3, "refused")

    assert not reg.add_plugin(types.SimpleNamespace(anomalykit_register_datasets=hookimpl(datasets)), name="some")
    assert list(reg.datasets) == ["good-data"]
    assert [f.skipped for f in reg.failures[1:]] == ["dataset 'Bad Name'", "dataset 'not-callable'"]


def test_old_names_work_in_bench_set_and_coerced_values_compare():
    from anomalykit.bench.plan import check_assignments

    check_assignments(("m=2", "mae-simplex.lambda_gp=5"), ["mae-simplex"])  # no ConfigError
    with pytest.warns(AnomalykitDeprecationWarning):
        det = anomalykit.load_method("mae-simplex", m="2", simplex_k="2")  # one value, given two ways
    assert det.hp.simplex_k == 2
    with pytest.raises(ConfigError, match="disagree"):
        anomalykit.load_method("mae-simplex", **{"m": 2, "simplex-k": 3})


def test_names_the_contract_module_published_still_import():
    from anomalykit.contract import CORE_OWNED
    from anomalykit.detector import CORE_OWNED as owned

    assert CORE_OWNED is owned and "reconstruct" in CORE_OWNED
    with pytest.warns(AnomalykitDeprecationWarning, match="anomalykit.contract.RETIRED is deprecated"):
        from anomalykit.contract import RETIRED
    assert list(RETIRED) == ["threshold_sample"]


def test_list_prints_skipped_parts_and_deprecations(monkeypatch):
    from click.testing import CliRunner

    import anomalykit.registry as registry_module
    from anomalykit.cli import cli

    with pytest.warns(AnomalykitDeprecationWarning):
        class Listed(Mean):
            name = "dep-cli-listed"
            threshold_sample = 5

    reg = Registry(new_plugin_manager())
    plugin = types.SimpleNamespace(
        anomalykit_register_methods=hookimpl(lambda register: (register(Listed), register(BrokenClass))))
    reg.add_plugin(plugin, name="cli-plugin", distribution="dist-cli", version="9.9")
    monkeypatch.setattr(registry_module, "get_registry", lambda reload=False: reg)
    out = CliRunner().invoke(cli, ["list"]).stdout.splitlines()
    assert out[0].startswith("dep-cli-listed  distance to the training mean  [dist-cli 9.9]")
    assert out[1].strip() == "deprecated: " + DEPRECATIONS["threshold-sample"].message("Listed")
    assert out[2] == reg.failures[0].line() and "method class BrokenClass skipped" in out[2]
    assert out[3] == f"(plugin API {anomalykit.PLUGIN_API_VERSION}, anomalykit {anomalykit.__version__})"
