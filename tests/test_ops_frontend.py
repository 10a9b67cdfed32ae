"""The ops front-end: ANOMALYKIT_KERNELS, active_kernels, extension_status, the fallback warning."""
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


@pytest.fixture
def spy_reference(monkeypatch):
    """Records which reference functions the front-end calls."""
    calls = []
    for name in ("pair_feature_l1", "simplex_mix", "annulus_sample"):
        original = getattr(ops.reference, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(ops.reference, name, spy)
    return calls


def call_every_op():
    ops.pair_feature_l1(torch.ones(2, 3), torch.zeros(2, 3))
    index, weight = ops.sample_simplex(4, 3)
    ops.simplex_mix(torch.randn(4, 5), index, weight)
    ops.annulus_sample(3, 4, 1.0, 2.0)


@native_cpu
@pytest.mark.parametrize("mode, expected", [("auto", "native"), ("native", "native"), ("reference", "reference")])
def test_env_var_switches_the_path_at_call_time(monkeypatch, spy_reference, mode, expected):
    monkeypatch.setenv("ANOMALYKIT_KERNELS", mode)
    assert ops.active_kernels(torch.device("cpu")) == dict.fromkeys(OP_NAMES, expected)
    call_every_op()
    assert spy_reference == ([] if expected == "native" else ["pair_feature_l1", "simplex_mix", "annulus_sample"])


@native_cpu
def test_status_lists_cpu_backend():
    assert ops.extension_status().startswith("native extension loaded (CPU")


@native_cpu
def test_device_without_native_kernel(monkeypatch):
    meta = (torch.empty(2, 3, device="meta"), torch.empty(2, 3, device="meta"))
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "auto")
    assert ops.active_kernels("meta")["pair_feature_l1"] == "reference"
    assert ops.pair_feature_l1(*meta).shape == (2,)  # reference runs on any device
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "native")
    with pytest.raises(RuntimeError, match="no native kernel for device meta"):
        ops.pair_feature_l1(*meta)


def test_missing_extension_falls_back_with_one_warning(monkeypatch, spy_reference):
    """Simulates an install whose native build failed (works whether or not it is built here)."""
    monkeypatch.setattr(_native, "_C", None)
    monkeypatch.setattr(_native, "KERNELS", frozenset())
    monkeypatch.setattr(_native, "LOAD_ERROR", "ImportError: simulated")
    monkeypatch.setattr(ops, "_fallback_warned", False)
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "auto")
    assert ops.extension_status() == "native extension not built (ImportError: simulated); using reference ops"
    assert ops.active_kernels("cpu") == dict.fromkeys(OP_NAMES, "reference")
    with pytest.warns(RuntimeWarning, match=r"native ops are not built \(ImportError: simulated\)") as record:
        call_every_op()
    assert len(record) == 1, "warn once, not once per call"
    assert spy_reference == ["pair_feature_l1", "simplex_mix", "annulus_sample"]
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "native")
    with pytest.raises(RuntimeError, match="not built .*pip install --no-build-isolation -e"):
        small_call()


ISA_SCRIPT = """
import sys, torch, anomalykit.ops
g = torch.Generator().manual_seed(0)
latents, weight = torch.randn(50, 37, generator=g), torch.rand(40, 3, generator=g)
index = torch.randint(0, 50, (40, 3), generator=g)
grads = torch.ops.anomalykit.simplex_mix_backward(torch.ones(40, 37), latents, index, weight, True, True)
torch.save({
    "capability": torch.backends.cpu.get_cpu_capability(),
    "annulus": torch.ops.anomalykit.annulus_sample(300, 37, 5.0, 6.0, generator=torch.Generator().manual_seed(1),
                                                   dtype=torch.float32, device=torch.device("cpu")),
    "mix": torch.ops.anomalykit.simplex_mix(latents, index, weight), "grads": grads,
}, sys.argv[1])
"""


@native_cpu
def test_cpu_isa_variants_agree(tmp_path):
    """The baseline / AVX2 / AVX-512 copies of the hot loops (csrc/cpu/isa.h) compute the same samples."""
    import os
    import subprocess
    import sys

    runs = {}
    for capability in ("default", "avx2", "avx512"):  # concurrently: each pays torch's import time
        out = tmp_path / f"{capability}.pt"
        env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS="1")
        runs[capability] = (out, subprocess.Popen([sys.executable, "-c", ISA_SCRIPT, str(out)], env=env))
    results = {}
    for capability, (out, process) in runs.items():
        assert process.wait(timeout=120) == 0, capability
        results[capability] = torch.load(out)
    base = results["default"]
    assert base["capability"] == "DEFAULT"
    for capability, other in results.items():
        # Only float rounding may differ (FMA contraction in the AVX2/AVX-512 copies).
        torch.testing.assert_close(other["annulus"], base["annulus"], rtol=1e-5, atol=1e-6, msg=capability)
        torch.testing.assert_close(other["mix"], base["mix"], msg=capability)
        torch.testing.assert_close(other["grads"], base["grads"], msg=capability)
