"""Microbenchmarks of anomalykit's fused ops (pytest-benchmark; not part of the test suite).

    pytest benchmarks/test_bench_ops.py --benchmark-only --benchmark-json=bench-results/ops.json
    python benchmarks/ops_table.py bench-results/ops.json        # markdown table for docs/ops.md

One group per op and shape, one benchmark per implementation:

- native      anomalykit's C++/CUDA kernel (torch.ops.anomalykit.*), as the front-end calls it
- reference   the eager pure-PyTorch reference (anomalykit.ops.reference)
- compiled    torch.compile of the reference (compiled and warmed up outside the timed function)
- read        pair_feature_l1 only: a plain read of the same bytes, ``a.sum(); b.sum()`` (memory limit)

pair_feature_l1 reports the achieved read bandwidth (GB/s) in ``extra_info`` and prints it.
ANOMALYKIT_BENCH_THREADS=N runs everything with torch.set_num_threads(N) (default: torch's choice).
"""
from __future__ import annotations

import functools

import pytest
import torch

from anomalykit.ops import _native, reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def skip_unless_native(op: str, device: str) -> None:
    if not _native.has_kernel(op, device):
        pytest.skip(f"native {op} not built for {device}: {_native.LOAD_ERROR or 'no kernel'}")


@functools.cache
def compiled(fn):
    return torch.compile(fn, dynamic=False)


def synchronized(fn, device: str):
    """fn, followed by a CUDA synchronise when timing on the GPU."""
    if device != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def run_benchmark(benchmark, fn, device: str, *, warmup: int = 3, **extra):
    benchmark.extra_info.update(
        device=device, threads=torch.get_num_threads(), torch=torch.__version__,
        cuda=torch.version.cuda, gpu=torch.cuda.get_device_name() if device == "cuda" else None, **extra,
    )
    fn = synchronized(fn, device)
    for _ in range(warmup):  # first-call costs (allocator, compile, caches) stay outside the timing
        fn()
    return benchmark(fn)


# ------------------------------------------------------------------------------ pair_feature_l1
PAIR_IMPLS = ["native", "reference", "compiled", "read"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", PAIR_IMPLS)
@pytest.mark.parametrize("shape", [(256, 512), (4096, 8192)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_pair_feature_l1(benchmark, shape, impl, device):
    dtype = torch.float32
    benchmark.group = f"pair_feature_l1 {shape[0]}x{shape[1]} fp32 {device}"
    a, b = (torch.randn(shape, device=device, dtype=dtype) for _ in range(2))
    if impl == "native":
        skip_unless_native("pair_feature_l1", device)
        fn = functools.partial(torch.ops.anomalykit.pair_feature_l1, a, b)
    elif impl == "reference":
        fn = functools.partial(reference.pair_feature_l1, a, b)
    elif impl == "compiled":
        fn = functools.partial(compiled(reference.pair_feature_l1), a, b)
    else:
        fn = lambda: (a.sum(), b.sum())  # noqa: E731
    bytes_read = 2 * a.numel() * a.element_size()
    run_benchmark(benchmark, fn, device, bytes_read=bytes_read)
    stats = benchmark.stats.stats
    benchmark.extra_info["GB/s (min)"] = round(bytes_read / stats.min / 1e9, 2)
    benchmark.extra_info["GB/s (median)"] = round(bytes_read / stats.median / 1e9, 2)
    print(f"\n{benchmark.group} {impl}: {benchmark.extra_info['GB/s (min)']} GB/s (best), {benchmark.extra_info['GB/s (median)']} GB/s (median)")


# ------------------------------------------------------------------------------ simplex_mix
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["native", "reference", "compiled"])
@pytest.mark.parametrize("d", [64, 512])
@pytest.mark.parametrize("batch", [256, 4096])
def test_simplex_mix_forward_backward(benchmark, batch, d, impl, device):
    """out = simplex_mix(E, index, alpha) and its gradients w.r.t. E and alpha (k = 3, AMA's setting)."""
    benchmark.group = f"simplex_mix fwd+bwd B={batch} d={d} fp32 {device}"
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(batch, d, generator=g).to(device).requires_grad_(True)
    index, weight = reference.sample_simplex(batch, 3, generator=g)
    index, weight = index.to(device), weight.to(device).requires_grad_(True)
    grad_out = torch.randn(batch, d, device=device)
    if impl == "native":
        skip_unless_native("simplex_mix", device)
        mix = torch.ops.anomalykit.simplex_mix
    else:
        mix = reference.simplex_mix if impl == "reference" else compiled(reference.simplex_mix)

    def forward_backward():
        return torch.autograd.grad(mix(latents, index, weight), (latents, weight), grad_out)

    run_benchmark(benchmark, forward_backward, device)


# ------------------------------------------------------------------------------ annulus_sample
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", ["native", "reference"])
@pytest.mark.parametrize("d", [64, 256])
def test_annulus_sample(benchmark, d, impl, device):
    """65536 outward Atypical Selection negatives: sqrt(d) <= ||z|| <= sqrt(d) + 1."""
    n = 65536
    benchmark.group = f"annulus_sample n={n} d={d} fp32 {device}"
    generator = torch.Generator(device).manual_seed(0)
    r_inner, r_outer = d**0.5, d**0.5 + 1.0
    if impl == "native":
        skip_unless_native("annulus_sample", device)

        def fn():
            return torch.ops.anomalykit.annulus_sample(
                n, d, r_inner, r_outer, generator=generator, dtype=torch.float32, device=torch.device(device)
            )
    else:

        def fn():
            return reference.annulus_sample(n, d, r_inner, r_outer, generator=generator, device=device, dtype=torch.float32)

    run_benchmark(benchmark, fn, device)
