import types
from importlib.metadata import EntryPoint

import pytest
import torch

import anomalykit
from anomalykit import ConfigError, Detector, Param, hookimpl
from anomalykit.registry import Registry, new_plugin_manager


def fresh():
    return Registry(new_plugin_manager())


class Mean(Detector):
    name = "mean-distance"
    summary = "distance to the training mean"
    params = (Param("epochs", 0, "unused", low=0),)

    def _build(self, shape):
        self.nets["m"] = torch.nn.Linear(1, 1)

    def _fit(self, X, y):
        self.center = X.mean(0)

    def _score(self, X):
        return (X - self.center.to(X.device)).flatten(1).norm(dim=1)


def plugin_registering(*classes):
    mod = types.SimpleNamespace()

    @hookimpl
    def anomalykit_register_methods(register):
        for c in classes:
            register(c)

    mod.anomalykit_register_methods = anomalykit_register_methods
    return mod


def test_good_plugin_registers_its_method():
    reg = fresh()
    assert reg.add_plugin(plugin_registering(Mean), name="good", distribution="dist-good", version="1.2")
    info = reg.method("mean-distance")
    assert (info.cls, info.plugin, info.distribution, info.version) == (Mean, "good", "dist-good", "1.2")
    assert reg.failures == []


def test_plugin_whose_hook_raises_is_skipped_with_one_warning(capsys):
    bad = types.SimpleNamespace()

    @hookimpl
    def anomalykit_register_methods(register):
        raise RuntimeError("boom\nsecond line")

    bad.anomalykit_register_methods = anomalykit_register_methods
    reg = fresh()
    assert not reg.add_plugin(bad, name="bad", distribution="dist-bad")
    assert reg.add_plugin(plugin_registering(Mean), name="good")
    assert list(reg.methods) == ["mean-distance"]
    (failure,) = reg.failures
    assert (failure.plugin, failure.distribution) == ("bad", "dist-bad")
    assert "RuntimeError: boom" in failure.reason and "second line" not in failure.reason
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["anomalykit: warning: plugin 'bad' (distribution dist-bad) hook anomalykit_register_methods skipped: "
                   "raised RuntimeError: boom"]


class NoScore(Detector):
    name = "no-score"
    summary = "forgets _score"

    def _build(self, shape):
        pass

    def _fit(self, X, y):
        pass


class BadName(Mean):
    name = "Bad Name!"


class TwoLines(Mean):
    name = "two-lines"
    summary = "first\nsecond"


class BadParams(Mean):
    name = "bad-params"
    params = ({"epochs": 3},)


@pytest.mark.parametrize(
    "cls, fragment",
    [
        (int, "subclass of anomalykit.Detector"),
        (NoScore, "does not implement _score"),
        (BadName, "name must be a lowercase string"),
        (TwoLines, "summary must be a one-line string"),
        (BadParams, "params must be a tuple of anomalykit.Param"),
    ],
)
def test_contract_violations_are_reported_and_skipped(cls, fragment, capsys):
    reg = fresh()
    assert not reg.add_plugin(plugin_registering(cls), name="violator")
    assert reg.methods == {}
    assert fragment in reg.failures[0].reason
    assert "violator" in capsys.readouterr().err


def test_hookimpl_with_wrong_signature_is_rejected():
    mod = types.SimpleNamespace()

    @hookimpl
    def anomalykit_register_methods(register, unexpected):
        pass

    mod.anomalykit_register_methods = anomalykit_register_methods
    reg = fresh()
    assert not reg.add_plugin(mod, name="wrongsig")
    assert "hook contract" in reg.failures[0].reason


def test_duplicate_method_name_is_refused():
    reg = fresh()
    assert reg.add_plugin(plugin_registering(Mean), name="first")
    assert not reg.add_plugin(plugin_registering(Mean), name="second")
    assert "already registered by plugin 'first'" in reg.failures[0].reason
    assert reg.method("mean-distance").plugin == "first"


def test_entry_point_that_fails_to_import_does_not_break_others(monkeypatch):
    import anomalykit.registry as registry_module

    eps = [
        EntryPoint("broken", "anomalykit_no_such_module_xyz", "anomalykit.methods"),
        EntryPoint("pca-recon", "anomalykit_pca", "anomalykit.methods"),
    ]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: eps if group == "anomalykit.methods" else [])
    reg = fresh()
    reg.load_entry_points()
    assert "pca-recon" in reg.methods
    (failure,) = reg.failures
    assert failure.plugin == "broken" and "import failed: ModuleNotFoundError" in failure.reason


def test_unknown_method_lists_known_ones():
    reg = fresh()
    reg.add_plugin(plugin_registering(Mean), name="good")
    with pytest.raises(ConfigError, match=r"unknown method 'nope'; known methods: mean-distance"):
        reg.method("nope")


def test_dataset_hook_registers_a_dataset():
    mod = types.SimpleNamespace()

    @hookimpl
    def anomalykit_register_datasets(register):
        register("toy", lambda seed: None, "a toy")

    mod.anomalykit_register_datasets = anomalykit_register_datasets
    reg = fresh()
    assert reg.add_plugin(mod, name="data-plugin")
    assert reg.datasets["toy"].summary == "a toy"


def test_builtin_methods_come_from_entry_points_only(registry):
    # the core never imports plugins by name: every built-in is a registry entry from a distribution
    for info in registry.methods.values():
        assert info.distribution != "local" or info.plugin.endswith("inprocess")
    assert "ama" in anomalykit.list_methods()
