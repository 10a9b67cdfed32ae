"""The ops front-end: ANOMALYKIT_KERNELS, active_kernels, extension_status, the fallback warning."""
import pytest
import torch

from anomalykit import ops
from anomalykit.errors import ConfigError
from anomalykit.ops import _native

native_cpu = pytest.mark.native("pair_feature_l1")
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


def test_reference_mode_routes_every_op_through_the_reference(monkeypatch):
    """ANOMALYKIT_KERNELS=reference: each front-end call lands in anomalykit.ops.reference (a
    recorder stands in for it) with the caller's arguments, and its result is returned."""
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "reference")
    calls = []
    for name in OP_NAMES:
        plain = getattr(ops.reference, name)
        monkeypatch.setattr(ops.reference, name, lambda *a, _plain=plain, _name=name, **k: calls.append(_name) or _plain(*a, **k))
    assert ops.pair_feature_l1(torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, 1.0]])).tolist() == [4.0]
    E = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    mixed = ops.simplex_mix(E, torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    assert mixed.tolist() == [[0.25, 1.5], [3.0, 3.0]]
    z = ops.annulus_sample(5, 3, 1.0, 2.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert z.shape == (5, 3) and bool(((z.norm(dim=1) >= 1.0) & (z.norm(dim=1) <= 2.0)).all())
    assert calls == ["pair_feature_l1", "simplex_mix", "annulus_sample"]


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
import sys, torch, anomalykit._C
g = torch.Generator().manual_seed(0)
# inputs from integers (exact in every ISA; ATen's randn itself differs in rounding between capabilities)
latents = torch.randint(-1000, 1000, (50, 37), generator=g).float() / 97
weight = torch.randint(0, 1000, (40, 3), generator=g).float() / 1000
index = torch.randint(0, 50, (40, 3), generator=g)
grads = torch.ops.anomalykit.simplex_mix_backward(torch.ones(40, 37), latents, index, weight, True, True)
torch.save({
    "capability": torch.backends.cpu.get_cpu_capability(),
    "annulus": torch.ops.anomalykit.annulus_sample(300, 37, 5.0, 6.0, generator=torch.Generator().manual_seed(1),
                                                   dtype=torch.float32, device=torch.device("cpu")),
    "mix": torch.ops.anomalykit.simplex_mix(latents, index, weight), "grads": grads,
    "l1": torch.ops.anomalykit.pair_feature_l1(latents[:40], latents[10:]),
    "inputs": (latents, index, weight),
    "isa": anomalykit._C.cpu_isa(),  # (used, requested, supported)
}, sys.argv[1])
"""
ISA_ORDER = ("default", "avx2", "avx512")
# run name -> (ATEN_CPU_CAPABILITY, ANOMALYKIT_TEST_HIDE_ISA or None); the *-hidden runs pretend the CPU
# lacks the instructions (csrc/cpu/isa.h), so the clamp is tested on any machine.
ISA_RUNS = {
    "default": ("default", None),
    "avx2": ("avx2", None),
    "avx512": ("avx512", None),
    "avx512-hidden": ("avx512", "avx512"),
    "avx2-hidden": ("avx2", "avx2"),
}


@pytest.fixture(scope="module")
def isa_runs(tmp_path_factory):
    """Runs ISA_SCRIPT once per ISA_RUNS entry, concurrently (each child pays torch's import time).

    The children inherit ANOMALYKIT_TEST_HIDE_ISA, so ANOMALYKIT_TEST_HIDE_ISA=avx512 python -m pytest
    runs this module as on a CPU without AVX-512.
    """
    import os
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("isa")
    procs = {}
    for name, (capability, hide) in ISA_RUNS.items():
        env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS="1")
        if hide and env.get("ANOMALYKIT_TEST_HIDE_ISA") != "avx2":  # keep an inherited stronger hiding
            env["ANOMALYKIT_TEST_HIDE_ISA"] = hide
        log = open(folder / f"{name}.log", "w")
        procs[name] = (subprocess.Popen([sys.executable, "-c", ISA_SCRIPT, str(folder / f"{name}.pt")], env=env,
                                        stdout=log, stderr=subprocess.STDOUT), log)
    results = {}
    for name, (process, log) in procs.items():
        rc = process.wait(timeout=120)
        log.close()
        results[name] = {"rc": rc, "log": (folder / f"{name}.log").read_text()[-2000:]}
        if rc == 0:
            results[name].update(torch.load(folder / f"{name}.pt"))
    return results


def cpu_supports(variant: str) -> bool:
    """Whether this CPU can run ``variant`` (as csrc/cpu/isa.h sees it)."""
    supported = _native.cpu_isa()[2]
    return ISA_ORDER.index(variant) <= ISA_ORDER.index(supported)


def assert_same_results(run, base, name):
    """Only float rounding may differ between copies (FMA contraction in the AVX2/AVX-512 copies)."""
    torch.testing.assert_close(run["annulus"], base["annulus"], rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(run["mix"], base["mix"], msg=name)
    torch.testing.assert_close(run["grads"], base["grads"], msg=name)
    torch.testing.assert_close(run["l1"], base["l1"], msg=name)
    latents, index, weight = run["inputs"]
    torch.testing.assert_close(run["mix"], ops.reference.simplex_mix(latents, index, weight), msg=name)
    torch.testing.assert_close(run["l1"], ops.reference.pair_feature_l1(latents[:40], latents[10:]), msg=name)


def finished(run, name):
    assert run["rc"] == 0, f"{name}: exit status {run['rc']}\n{run['log']}"
    return run


@native_cpu
@pytest.mark.parametrize("variant", ["avx2", "avx512"])
def test_cpu_isa_variants_agree(isa_runs, variant):
    """Each copy of the hot loops (csrc/cpu/isa.h) this CPU can run computes what the baseline copy does."""
    base = finished(isa_runs["default"], "default")
    assert base["capability"] == "DEFAULT" and base["isa"][0] == "default"
    if not cpu_supports(variant):
        pytest.skip(f"this CPU cannot run the {variant} copy (it supports up to {_native.cpu_isa()[2]})")
    run = finished(isa_runs[variant], variant)
    assert run["isa"][0] == variant
    assert_same_results(run, base, variant)


@native_cpu
@pytest.mark.parametrize("name", ["avx512-hidden", "avx2-hidden", "avx512"])
def test_forcing_an_isa_the_cpu_lacks_falls_back(isa_runs, name):
    """ATEN_CPU_CAPABILITY asking for instructions the CPU lacks runs the widest copy it has (no SIGILL).

    The *-hidden runs make the support check report a CPU without them (ANOMALYKIT_TEST_HIDE_ISA),
    "avx512" is the real thing on a CPU without AVX-512.
    """
    capability, hide = ISA_RUNS[name]
    if hide is None and cpu_supports(capability):
        pytest.skip(f"this CPU has {capability}, so forcing it is no fallback here; the *-hidden cases simulate a CPU without it")
    supported = _native.cpu_isa()[2]
    if hide is not None:
        supported = min(supported, {"avx512": "avx2", "avx2": "default"}[hide], key=ISA_ORDER.index)
    run = finished(isa_runs[name], name)
    assert run["capability"] == capability.upper()  # ATen still reports what the variable forces
    assert run["isa"] == (supported, capability, supported)
    same_copy = finished(isa_runs[supported], supported)
    for key in ("annulus", "mix", "grads", "l1"):  # the same copy: bit for bit
        torch.testing.assert_close(run[key], same_copy[key], rtol=0, atol=0, msg=f"{name} vs {supported}: {key}")
    assert_same_results(run, finished(isa_runs["default"], "default"), name)


@native_cpu
def test_cpu_isa_status_names_the_variant_used():
    used, requested, supported = _native.cpu_isa()
    assert used == min(requested, supported, key=ISA_ORDER.index)
    assert ops.cpu_isa_status().startswith(used)


def test_kernels_block_overrides_the_variable_and_is_undone(monkeypatch):
    from anomalykit import ops

    monkeypatch.setenv("ANOMALYKIT_KERNELS", "auto")
    with ops.kernels("reference"):
        assert ops.kernels_mode() == "reference"
        monkeypatch.setenv("ANOMALYKIT_KERNELS", "native")  # the block wins over the variable
        assert ops.kernels_mode() == "reference"
    assert ops.kernels_mode() == "native"
    with pytest.raises(ConfigError, match="not one of"):
        with ops.kernels("fast"):
            pass


def test_export_records_the_reference_math_without_touching_the_environment(monkeypatch):
    import os

    from anomalykit import export as E
    from anomalykit import ops
    from anomalykit.speedups import enabled

    monkeypatch.setenv("ANOMALYKIT_KERNELS", "auto")
    before = dict(os.environ)
    with E._reference_kernels():
        assert ops.kernels_mode() == "reference" and not enabled()
        assert dict(os.environ) == before
    assert ops.kernels_mode() == "auto" and enabled()
