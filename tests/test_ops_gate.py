"""The first-use gate of the native kernels (anomalykit.ops.gate), exercised on the CPU with
ANOMALYKIT_KERNEL_GATE=all: a correct kernel passes its check and runs; an injected wrong kernel
fails it, and the op falls back to the reference with one warning; info reports the verdicts."""
from __future__ import annotations

import warnings

import pytest
import torch

from anomalykit import ops
from anomalykit.ops import _native, gate, reference

native_cpu = pytest.mark.native("pair_feature_l1")


@pytest.fixture
def gated(monkeypatch):
    monkeypatch.setenv("ANOMALYKIT_KERNEL_GATE", "all")
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "auto")
    gate.reset()
    yield
    gate.reset()


def inject(monkeypatch, name, wrong):
    plain = _native.op
    monkeypatch.setattr(_native, "op", lambda op: wrong if op == name else plain(op))


@native_cpu
def test_correct_kernels_pass_and_run(gated):
    a, b = torch.randn(4, 10), torch.randn(4, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ops.pair_feature_l1(a, b)
    torch.testing.assert_close(out, (a - b).abs().sum(1))
    assert gate.verdicts() == {("pair_feature_l1", "cpu", "torch.float32"): ""}
    assert ops.active_kernels("cpu")["pair_feature_l1"] == "native"
    assert ops.active_kernels("cpu")["simplex_mix"] == "native (checked at first use)"


@native_cpu
@pytest.mark.parametrize("op, wrong, fragment", [
    ("pair_feature_l1", lambda a, b: torch.ops.anomalykit.pair_feature_l1(a, b) * 1.01, "the forward differs by 1.0e-02"),
    ("pair_feature_l1", lambda a, b: _SignFlip.apply(a, b), "the gradient of a differs"),
    ("simplex_mix", lambda lat, idx, w: torch.ops.anomalykit.simplex_mix(lat, idx.flip(1), w), "the forward differs"),
    ("annulus_sample", lambda n, d, r1, r2, **kw: torch.ops.anomalykit.annulus_sample(n, d, r1, r2 + 0.5, **kw),
     "radii fall outside [2, 3]"),
    ("annulus_sample", lambda n, d, r1, r2, **kw: torch.ops.anomalykit.annulus_sample(n, d, r1, r1 + 0.3, **kw),
     "the mean radius"),
    ("pair_feature_l1", lambda a, b: (_ for _ in ()).throw(RuntimeError("illegal memory access")),
     "it raised RuntimeError: illegal memory access"),
])
def test_a_wrong_kernel_fails_its_check_and_the_reference_runs_with_one_warning(gated, monkeypatch, op, wrong, fragment):
    inject(monkeypatch, op, wrong)
    calls = {
        "pair_feature_l1": lambda: ops.pair_feature_l1(torch.ones(2, 3), torch.zeros(2, 3)),
        "simplex_mix": lambda: ops.simplex_mix(torch.eye(3), torch.tensor([[0, 1]]), torch.tensor([[0.25, 0.75]])),
        "annulus_sample": lambda: ops.annulus_sample(50, 3, 1.0, 2.0, generator=torch.Generator().manual_seed(0)),
    }
    with pytest.warns(RuntimeWarning, match=f"the native {op} kernel failed its first-use check on cpu") as caught:
        first = calls[op]()
    assert len([w for w in caught if "first-use check" in str(w.message)]) == 1
    assert fragment in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        second = calls[op]()
    expected = {
        "pair_feature_l1": lambda: torch.tensor([3.0, 3.0]),
        "simplex_mix": lambda: torch.tensor([[0.25, 0.75, 0.0]]),
        "annulus_sample": lambda: reference.annulus_sample(50, 3, 1.0, 2.0, generator=torch.Generator().manual_seed(0)),
    }[op]()
    torch.testing.assert_close(second, expected)
    torch.testing.assert_close(first, expected)
    assert ops.active_kernels("cpu")[op].startswith("reference (failed its first-use check, float32: ")


class _SignFlip(torch.autograd.Function):
    """A kernel whose forward is right and whose backward has the wrong sign."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return (a - b).abs().sum(1)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        s = -torch.sign(a - b) * grad[:, None]
        return s, -s


@native_cpu
def test_each_dtype_is_checked_on_its_own(gated, monkeypatch):
    plain = _native.op
    inject(monkeypatch, "pair_feature_l1",
           lambda a, b: plain("pair_feature_l1")(a, b) * (1.5 if a.dtype == torch.float64 else 1.0))
    ops.pair_feature_l1(torch.ones(1, 2), torch.zeros(1, 2))
    with pytest.warns(RuntimeWarning, match=r"on cpu \(torch.float64\)"):
        out = ops.pair_feature_l1(torch.ones(1, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64))
    assert out.tolist() == [2.0]
    assert gate.verdicts()[("pair_feature_l1", "cpu", "torch.float32")] == ""


def test_the_cpu_is_not_gated_by_default_and_native_mode_skips_the_gate(monkeypatch):
    monkeypatch.delenv("ANOMALYKIT_KERNEL_GATE", raising=False)
    gate.reset()
    assert not gate.gated(torch.device("cpu")) and gate.gated(torch.device("cuda"))
    monkeypatch.setenv("ANOMALYKIT_KERNEL_GATE", "off")
    assert not gate.gated(torch.device("cuda"))
    monkeypatch.setenv("ANOMALYKIT_KERNEL_GATE", "sometimes")
    from anomalykit import ConfigError

    with pytest.raises(ConfigError, match="ANOMALYKIT_KERNEL_GATE='sometimes' is not one of cuda, all, off"):
        gate.gated(torch.device("cpu"))


def test_a_cached_verdict_is_used_without_checking_again(monkeypatch, tmp_path):
    """A verdict on disk for the same device, driver, torch and build is taken as it is."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("ANOMALYKIT_KERNEL_GATE", "cuda")
    gate.reset()
    key = ("pair_feature_l1", "cuda", "torch.float32")
    gate._store(key, "the forward differs by 1.0e-01 of its largest value")
    assert gate._disk_cache() == {gate._cache_key(key): "the forward differs by 1.0e-01 of its largest value"}
    assert gate._cache_key(key) == f"pair_feature_l1|cuda|torch.float32|torch{torch.__version__}|{gate._build_id()}"
    monkeypatch.setattr(gate, "check", lambda *a: pytest.fail("checked again despite the cached verdict"))
    with pytest.warns(RuntimeWarning, match="the forward differs by 1.0e-01"):
        assert not gate.allows("pair_feature_l1", torch.device("cuda"), torch.float32)
    gate.reset()
