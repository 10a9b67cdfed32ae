"""annulus_sample: points uniform in the volume of the shell r_inner <= ||z|| <= r_outer (AMA Atypical Selection).

Every statistical test runs on both implementations (the native one when built) and compares
against the analytic distribution, never against the other implementation.
"""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from anomalykit import ops
from anomalykit.errors import InputError

native_cpu = pytest.mark.native("annulus_sample")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
P_MIN = 1e-3  # fixed seeds: these p-values are deterministic, the threshold only guards real bias


@pytest.fixture(params=["reference", pytest.param("native", marks=native_cpu)])
def kernels(request, monkeypatch):
    """Run the test with ANOMALYKIT_KERNELS set to the parameter."""
    monkeypatch.setenv("ANOMALYKIT_KERNELS", request.param)
    return request.param


def sample(n, d, r_inner, r_outer, seed=0, **kwargs):
    return ops.annulus_sample(n, d, r_inner, r_outer, generator=torch.Generator().manual_seed(seed), **kwargs)


def shell_cdf(r, d, r_inner, r_outer):
    """Volume-uniform radius CDF (r^d - r_in^d) / (r_out^d - r_in^d), in log space (float64 numpy)."""
    log_q = d * (math.log(r_inner) - math.log(r_outer)) if r_inner > 0 else -math.inf
    a = d * np.log(np.asarray(r, dtype=np.float64) / r_outer)  # log (r / r_out)^d
    return np.exp(log_q) * np.expm1(a - log_q) / -math.expm1(log_q) if r_inner > 0 else np.exp(a)


def shells(d, delta):
    s = math.sqrt(d)
    return {"inward": (s - delta, s), "outward": (s, s + delta), "ball": (0.0, s)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # each takes its own path in both kernels
@pytest.mark.parametrize("d, n", [(1, 20000), (8, 20000), (64, 10000), (1024, 2000)])
@pytest.mark.parametrize("shell", ["inward", "outward", "ball"])
def test_radius_follows_volume_uniform_cdf(kernels, d, n, shell, dtype):
    r_inner, r_outer = shells(d, delta=0.5)[shell]
    z = sample(n, d, r_inner, r_outer, dtype=dtype)
    radius = torch.linalg.vector_norm(z.double(), dim=1).numpy()
    assert radius.min() >= r_inner and radius.max() <= r_outer
    result = scipy.stats.kstest(radius, lambda r: shell_cdf(r, d, r_inner, r_outer))
    assert result.pvalue > P_MIN, result
    # no pile-up at an edge (a clamp hit by a wrong radius formula): the analytic mass of the
    # outer and inner 0.1% of the radius range, against the sample's, within 5 standard errors
    for edge in (r_inner + 1e-3 * (r_outer - r_inner), r_outer - 1e-3 * (r_outer - r_inner)):
        below = float(shell_cdf(edge, d, r_inner, r_outer))
        p = below if edge < 0.5 * (r_inner + r_outer) else 1 - below
        observed = float(np.mean(radius <= edge)) if edge < 0.5 * (r_inner + r_outer) else float(np.mean(radius >= edge))
        assert abs(observed - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1 / n, (edge, observed, p)


def test_rounding_margin_and_clamp_by_hand():
    """The clamp interval [r_in (1 + m), r_out (1 - m)] with m = 4 eps(dtype) + 16 d eps(float64),
    its midpoint when empty, and the radius formula at u = 0, 1/2, 1, all written out here."""
    from anomalykit.ops import reference

    eps32, eps64 = 2.0**-23, 2.0**-52
    assert reference.rounding_margin(torch.float32, 10) == 4 * eps32 + 160 * eps64
    assert reference.rounding_margin(torch.float64, 1024) == 4 * eps64 + 16 * 1024 * eps64
    assert reference.rounding_margin(torch.bfloat16, 3) == 4 * 2.0**-7 + 48 * eps64
    m = reference.rounding_margin(torch.float32, 4)
    assert reference.radius_bounds(4, 2.0, 3.0, m) == (2.0 * (1 + m), 3.0 * (1 - m))
    assert reference.radius_bounds(4, 1.0, 1.0 + 1e-7, m) == (0.5 * (1.0 + (1.0 + 1e-7)),) * 2  # thinner than the margin
    u = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    rho = reference.shell_radius(u, 4, 2.0, 3.0, m)
    assert rho[0] == 2.0 * (1 + m) and rho[2] == 3.0 * (1 - m)
    assert float(rho[1]) == pytest.approx(((2.0**4 + 3.0**4) / 2) ** 0.25, rel=1e-14)  # (r_in^d + u (r_out^d - r_in^d))^(1/d)


def test_a_shell_thinner_than_the_margin_gives_its_midpoint(kernels):
    """d = 1024, float64: the margin is dominated by its 16 d eps(float64) term (3.6e-12), wider than
    the shell [1, 1 + 3e-12]: every radius is the shell's midpoint, not spread across it."""
    z = sample(500, 1024, 1.0, 1.0 + 3e-12, dtype=torch.float64)
    radius = np.linalg.norm(z.numpy(), axis=1)
    assert np.abs(radius - (1.0 + 1.5e-12)).max() < 2e-13, (radius.min() - 1, radius.max() - 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [3, 64, 1024])
def test_every_radius_within_bounds_exactly(kernels, dtype, d):
    for r_inner, r_outer in shells(d, delta=1.0).values():
        z = sample(3000, d, r_inner, r_outer, dtype=dtype)
        assert z.dtype == dtype and z.shape == (3000, d)
        radius = torch.linalg.vector_norm(z.double(), dim=1)
        assert radius.min() >= r_inner and radius.max() <= r_outer, (r_inner, r_outer, radius.min(), radius.max())


@pytest.mark.parametrize("d", [2, 16, 256])
def test_directions_isotropic(kernels, d):
    n = 20000
    unit = torch.nn.functional.normalize(sample(n, d, 1.0, 2.0, dtype=torch.float64), dim=1)
    # Uniform unit vectors have mean 0 and covariance I/d, so n*d*||mean||^2 ~ chi2(d).
    stat = n * d * unit.mean(dim=0).square().sum().item()
    assert scipy.stats.chi2.sf(stat, d) > P_MIN, stat
    second_moment = (unit.T @ unit / n) * d  # ~ identity; entries have std ~ sqrt(2/n) * ...
    torch.testing.assert_close(second_moment, torch.eye(d, dtype=torch.float64), atol=0.06, rtol=0)


def test_sphere_when_radii_equal(kernels):
    z = sample(1000, 32, 3.0, 3.0, dtype=torch.float32)
    torch.testing.assert_close(torch.linalg.vector_norm(z.double(), dim=1), torch.full((1000,), 3.0, dtype=torch.float64), rtol=1e-6, atol=0)
    assert torch.equal(sample(5, 4, 0.0, 0.0), torch.zeros(5, 4))


def test_same_seed_same_samples_other_seed_differs(kernels):
    first, again, other = sample(500, 64, 8, 9, seed=3), sample(500, 64, 8, 9, seed=3), sample(500, 64, 8, 9, seed=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    consecutive = torch.Generator().manual_seed(3)
    a = ops.annulus_sample(10, 4, 1, 2, generator=consecutive)
    b = ops.annulus_sample(10, 4, 1, 2, generator=consecutive)
    assert not torch.equal(a, b), "the generator state must advance"


def test_defaults_and_empty(kernels):
    z = ops.annulus_sample(4, 3, 1.0, 2.0)
    assert z.dtype == torch.get_default_dtype() and z.device.type == "cpu"
    assert ops.annulus_sample(0, 3, 1.0, 2.0).shape == (0, 3)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((10, 4, -1.0, 2.0), {}, "r_inner must be >= 0"),
        ((10, 4, 3.0, 2.0), {}, r"r_inner \(3.0\) must be <= r_outer \(2.0\)"),
        ((-1, 4, 1.0, 2.0), {}, "n must be >= 0"),
        ((10, 0, 1.0, 2.0), {}, "d must be >= 1"),
        ((10.5, 4, 1.0, 2.0), {}, "n must be an integer"),
        ((10, 4, 1.0, float("nan")), {}, "r_outer must be a finite number"),
        ((10, 4, 1.0, 2.0), {"dtype": torch.int64}, "floating"),
    ],
)
def test_bad_arguments(kernels, args, kwargs, match):
    with pytest.raises(InputError, match=match):
        ops.annulus_sample(*args, **kwargs)


# ------------------------------------------------------------------------------ native op specifics
def native_op(n, d, r_inner, r_outer, generator=None, dtype=torch.float32, device="cpu"):
    return torch.ops.anomalykit.annulus_sample(n, d, r_inner, r_outer, generator=generator, dtype=dtype, device=torch.device(device))


@native_cpu
def test_native_samples_do_not_depend_on_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native_op(3000, 40, 6.0, 7.0, torch.Generator().manual_seed(5))
        torch.set_num_threads(max(2, threads))
        many = native_op(3000, 40, 6.0, 7.0, torch.Generator().manual_seed(5))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


@native_cpu
def test_native_uses_the_default_generator_when_none_given():
    torch.manual_seed(11)
    first = native_op(50, 8, 1.0, 2.0)
    torch.manual_seed(11)
    assert torch.equal(first, native_op(50, 8, 1.0, 2.0))


@native_cpu
def test_native_opcheck():
    # Without a generator opcheck reseeds the default one between runs; with one, the first run
    # advances it, so the eager-vs-traced output comparison cannot apply.
    op = torch.ops.anomalykit.annulus_sample.default
    torch.library.opcheck(op, (10, 4, 1.0, 2.0), {"dtype": torch.float32, "device": torch.device("cpu")})
    torch.library.opcheck(
        op, (10, 4, 1.0, 2.0), {"generator": torch.Generator().manual_seed(0), "dtype": torch.float64, "device": torch.device("cpu")},
        test_utils=("test_schema", "test_faketensor"),
    )


@native_cpu
def test_native_under_torch_compile_fullgraph(monkeypatch):
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "native")
    compiled = torch.compile(lambda: ops.annulus_sample(64, 16, 4.0, 5.0, dtype=torch.float32), fullgraph=True, backend="aot_eager")
    radius = torch.linalg.vector_norm(compiled().double(), dim=1)
    assert radius.min() >= 4.0 and radius.max() <= 5.0


@native_cpu
@pytest.mark.parametrize("args, match", [((-1, 4, 1.0, 2.0), "n must be >= 0"), ((3, 0, 1.0, 2.0), "d must be >= 1"), ((3, 4, 2.0, 1.0), "r_inner <= r_outer"), ((3, 4, -1.0, 1.0), "0 <= r_inner")])
def test_native_op_rejects_bad_arguments(args, match):
    with pytest.raises(RuntimeError, match=match):
        native_op(*args)


# ------------------------------------------------------------------------------ CUDA
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [1, 64, 1024])
def test_cuda_bounds_cdf_and_determinism(dtype, d):
    for r_inner, r_outer in shells(d, delta=1.0).values():
        z = native_op(4000, d, r_inner, r_outer, torch.Generator("cuda").manual_seed(0), dtype, "cuda")
        assert z.device.type == "cuda" and z.dtype == dtype
        radius = torch.linalg.vector_norm(z.double(), dim=1).cpu().numpy()
        assert radius.min() >= r_inner and radius.max() <= r_outer
        if dtype == torch.float64:
            assert scipy.stats.kstest(radius, lambda r: shell_cdf(r, d, r_inner, r_outer)).pvalue > P_MIN
        again = native_op(4000, d, r_inner, r_outer, torch.Generator("cuda").manual_seed(0), dtype, "cuda")
        assert torch.equal(z, again)


@needs_cuda
def test_cuda_directions_isotropic_and_opcheck():
    n, d = 20000, 16
    unit = torch.nn.functional.normalize(native_op(n, d, 1.0, 2.0, torch.Generator("cuda").manual_seed(1), torch.float64, "cuda"), dim=1)
    stat = n * d * unit.mean(dim=0).square().sum().item()
    assert scipy.stats.chi2.sf(stat, d) > P_MIN
    torch.library.opcheck(torch.ops.anomalykit.annulus_sample.default, (10, 4, 1.0, 2.0), {"dtype": torch.float32, "device": torch.device("cuda")})
