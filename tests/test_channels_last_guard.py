"""The channels-last guard (``anomalykit.nn.channels_last_safe`` / ``channels_last_``).

oneDNN corrupts the heap on AVX2 CPUs in the backward pass of channels-last strided 1x1
convolutions with input channels not a multiple of 8 (benchmarks/results/avx2-channels-last/).
These tests check that the guard's rule covers every shape that failed in the committed grid,
that guarded convolutions of those shapes run clean on the AVX2 code path in a subprocess (a
crash fails the test instead of killing pytest), and that no built-in network puts a convolution
on the unsafe path while it trains and scores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import anomalykit
from anomalykit.nn import channels_last_, channels_last_safe
from anomalykit.speedups import speedups

GRID = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "avx2-channels-last" / "grid-avx2.json"
#: The AVX2 code path on any x86-64 CPU: oneDNN's kernels, ATen's, and anomalykit's own loops.
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ANOMALYKIT_TEST_HIDE_ISA": "avx512"}


def _is_channels_last(t: torch.Tensor) -> bool:
    """Strides of a channels-last tensor that a contiguous one does not have (for 1x1 kernels the
    ``is_contiguous`` flags cannot tell the two apart; the strides, which oneDNN reads, can)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and t.stride() != t.contiguous().stride()


def _conv(row: dict) -> nn.Conv2d:
    return nn.Conv2d(row["ic"], row["oc"], row["k"], stride=row["stride"], padding=row["pad"], bias=False)


def test_rule_excludes_every_shape_that_failed_in_the_committed_grid():
    record = json.loads(GRID.read_text())
    failed = [r for r in record["rows"] if r["result"] != "ok"]
    assert failed, "the committed grid shows no failure: re-measure before relaxing the guard"
    assert record["env"].get("ONEDNN_MAX_CPU_ISA") == "AVX2"
    for row in failed:
        assert not channels_last_safe(_conv(row)), f"the guard lets a shape that {row['result']} run channels-last: {row}"


@pytest.mark.parametrize("ic,k,stride,groups,safe", [
    (4, 1, 2, 1, False), (2, 1, 2, 1, False), (6, (1, 1), (2, 1), 1, False), (12, 1, 2, 1, False),
    (8, 1, 2, 1, True), (16, 1, 2, 1, True), (4, 1, 1, 1, True), (4, 3, 2, 1, True), (4, 4, 2, 1, True),
    (16, 1, 2, 4, False), (32, 1, 2, 4, True),
])
def test_rule_by_hand(ic, k, stride, groups, safe):
    assert channels_last_safe(nn.Conv2d(ic, 2 * ic, k, stride=stride, groups=groups)) is safe


def test_guarded_conv_is_contiguous_and_makes_its_input_contiguous():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 1, stride=2), nn.Conv2d(8, 16, 1, stride=2))
    with speedups(True):
        channels_last_(net)
        channels_last_(net)  # idempotent: one hook
    first, unsafe, wide = net
    assert _is_channels_last(first.weight)  # (a 1x1 weight has the same strides in both layouts)
    assert not _is_channels_last(unsafe.weight) and unsafe.weight.is_contiguous() and len(unsafe._forward_pre_hooks) == 1
    seen = {}

    def record(module, args):  # runs after the guard's hook
        seen["in"] = args[0].is_contiguous()

    unsafe.register_forward_pre_hook(record)
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    ref = nn.Sequential(*(nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in net))
    ref.load_state_dict({k: v.contiguous() for k, v in net.state_dict().items()})
    torch.testing.assert_close(net(x), ref(x.contiguous()), rtol=1e-5, atol=1e-6)
    assert seen["in"] is True


def test_speedups_off_leaves_layouts_alone():
    conv = nn.Conv2d(4, 8, 1, stride=2)
    with speedups(False):
        channels_last_(conv)
    assert conv.weight.is_contiguous() and not conv._forward_pre_hooks


_CHILD = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from anomalykit.nn import channels_last_
    from anomalykit.speedups import speedups
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ic = int(sys.argv[1])
    # a channels-last layer in front, so the guarded 1x1 stride-2 conv is handed a channels-last input
    net = nn.Sequential(nn.Conv2d(ic, ic, 3, padding=1, bias=False), nn.Conv2d(ic, 2 * ic, 1, stride=2, bias=False))
    ref = nn.Sequential(nn.Conv2d(ic, ic, 3, padding=1, bias=False), nn.Conv2d(ic, 2 * ic, 1, stride=2, bias=False))
    ref.load_state_dict(net.state_dict())
    with speedups(True):
        channels_last_(net)
    assert ic == 1 or not net[0].weight.is_contiguous()  # channels-last (one channel: the layouts coincide)
    for _ in range(20):
        x = torch.randn(256, ic, 8, 8)
        a = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
        b = x.clone().requires_grad_()
        net(a).square().sum().backward()
        ref(b).square().sum().backward()
        torch.testing.assert_close(a.grad, b.grad.contiguous(memory_format=torch.channels_last), rtol=1e-4, atol=1e-4)
    print("clean")
""")


@pytest.mark.parametrize("ic", [1, 2, 4, 6])
def test_guarded_unsafe_shapes_run_clean_on_the_avx2_path(ic):
    """The shapes that corrupt the heap bare (grid rows ``crash``) run clean through the guard,
    with oneDNN held to AVX2 and glibc's heap checks on where they exist."""
    env = {**os.environ, **AVX2_ENV}
    debug = Path("/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")
    if debug.exists():
        env.update(LD_PRELOAD=str(debug), GLIBC_TUNABLES="glibc.malloc.check=3")
    r = subprocess.run([sys.executable, "-c", _CHILD, str(ic)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "clean" in r.stdout, f"exit {r.returncode}: {r.stderr.strip()[-400:]}"


def _tiny_params(name: str) -> dict:
    return {
        "ama": dict(latent_dim=8, width=8),
        "mae-simplex": dict(latent_dim=8, width=8),
        "adgan": dict(n_seed=2, k=1, g_width=4, d_width=4),
        "csi-aae": dict(f_width=4, f_stages=2, ae_width=4, latent_dim=8),
    }.get(name, {})


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 16, 16)])
def test_no_builtin_network_runs_an_unsafe_convolution_channels_last(shape):
    """Every Conv2d call while each installed method fits and scores (tiny widths, where the
    unsafe shapes occur): a convolution with a channels-last weight or input is a safe one."""
    from anomalykit.registry import get_registry

    calls = []

    def watch(module, args, output):  # a forward hook: the arguments forward got, after the module's pre-hooks
        if isinstance(module, nn.Conv2d) and args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            cl = _is_channels_last(module.weight) or _is_channels_last(args[0])
            calls.append((type(module).__name__, channels_last_safe(module), cl, tuple(module.weight.shape)))

    X = np.random.default_rng(0).integers(0, 256, size=(48, *shape)).astype(np.uint8)
    handle = torch.nn.modules.module.register_module_forward_hook(watch)
    try:
        with speedups(True):
            for name in get_registry().methods:
                schema = get_registry().method(name).cls.param_schema()
                params = {k: v for k, v in _tiny_params(name).items() if k in schema}
                det = anomalykit.load_method(name, epochs=1, batch_size=16, device="cpu", **params).fit(X)
                det.score_samples(X[:8])
    finally:
        handle.remove()
    unsafe_cl = [c for c in calls if c[2] and not c[1]]
    assert not unsafe_cl, f"unsafe convolutions ran channels-last: {sorted(set(unsafe_cl))[:5]}"
    assert any(not c[1] for c in calls), "no unsafe shape was exercised: the tiny widths no longer reach the guard"
