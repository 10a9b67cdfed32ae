"""The ops front-end: ANOMALYKIT_KERNELS, active_kernels, extension_status, the fallback warning."""
import warnings

import pytest
import torch

from anomalykit import ops
from anomalykit.errors import ConfigError
from anomalykit.ops import _native

built = _native.has_kernel("pair_feature_l1", "cpu")
native_cpu = pytest.mark.skipif(not built, reason=f"native extension not built: {_native.LOAD_ERROR}")
OP_NAMES = {"pair_feature_l1", "simplex_mix", "annulus_sample"}


def small_call():
    return ops.pair_feature_l1(torch.ones(2, 3), torch.zeros(2, 3))


def test_reference_mode_reports_and_runs_reference(monkeypatch):
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "reference")
    assert ops.active_kernels(torch.device("cpu")) == dict.fromkeys(OP_NAMES, "reference")
    assert small_call().tolist() == [3.0, 3.0]


def test_unknown_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "fastest")
    with pytest.raises(ConfigError, match="ANOMALYKIT_KERNELS='fastest' is not one of auto, native, reference"):
        small_call()


def test_reference_namespace_has_the_same_functions():
    for name in OP_NAMES | {"sample_simplex"}:
        assert callable(getattr(ops.reference, name))
    assert ops.sample_simplex is ops.reference.sample_simplex


def test_extension_status_is_one_line():
    status = ops.extension_status()
    assert "\n" not in status
    assert status.startswith("native extension loaded" if _native.loaded() else "native extension not built")


@pytest.mark.skipif(built, reason="checks the behaviour without the native extension")
def test_without_extension_auto_warns_once_and_native_raises(monkeypatch):
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "auto")
    monkeypatch.setattr(ops, "_fallback_warned", False)
    with pytest.warns(RuntimeWarning, match="not built"):
        small_call()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small_call()  # second use: silent
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "native")
    with pytest.raises(RuntimeError, match="pip install --no-build-isolation"):
        small_call()
    assert ops.active_kernels("cpu") == dict.fromkeys(OP_NAMES, "unavailable")
