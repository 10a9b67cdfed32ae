"""Pure-PyTorch reference implementations of anomalykit's fused ops.

This module is the specification of the ops: the native CPU/CUDA kernels in ``csrc/`` compute
the same functions (up to floating-point summation order) and are tested against these.
Every function here validates its inputs and raises :class:`anomalykit.errors.InputError`
(a ``ValueError``) with one line naming the op and the problem.

Ops (AMA = the Adversarial Mirrored Autoencoders paper, sections 3.2 and 3.4):

- ``pair_feature_l1(f_real, f_fake)``: R(x) = ||f(x, x) - f(x, G(E(x)))||_1, row-wise (eq. 5).
- ``simplex_mix(latents, index, weight)``: z = sum_i alpha_i E(x_{j_i}) (simplex interpolation, sec. 3.2).
- ``sample_simplex(batch, k)``: the (index, alpha) draws that feed ``simplex_mix``.
- ``annulus_sample(n, d, r_inner, r_outer)``: points uniform in the shell r_inner <= ||z|| <= r_outer
  (atypical-selection negatives around the typical set radius sqrt(d)).

Helper (no paper equation; a memory-traffic saver for ADGAN's latent search):

- ``outer_adam_step_(param, left, right, coef_m, coef_v, ...)``: an Adam step on a parameter whose
  every gradient so far was an outer product, from the factors of those gradients.
"""
from __future__ import annotations

import math
import numbers

import torch

from ..errors import InputError

__all__ = ["pair_feature_l1", "simplex_mix", "sample_simplex", "annulus_sample", "outer_adam_step_"]

_REDUCED_PRECISION = (torch.float16, torch.bfloat16)
SIMPLEX_SCHEMES = ("normalized", "residual")


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16 (they accumulate in float32), otherwise ``dtype`` itself."""
    return torch.float32 if dtype in _REDUCED_PRECISION else dtype


# ----------------------------------------------------------------------------------------------
# input checks (shared with the front-end in anomalykit.ops)
# ----------------------------------------------------------------------------------------------

def _describe(t: torch.Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')} on {t.device}"


def _require_float_matrix(op: str, name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise InputError(f"{op}: {name} must be a 2-D (rows, features) tensor, got {_describe(t)}")
    if not t.is_floating_point():
        raise InputError(f"{op}: {name} must have a floating dtype, got {_describe(t)}")


def check_pair_feature_l1_inputs(f_real, f_fake) -> None:
    """f_real and f_fake: (B, F) tensors of the same floating dtype, shape and device."""
    op = "pair_feature_l1"
    _require_float_matrix(op, "f_real", f_real)
    _require_float_matrix(op, "f_fake", f_fake)
    if f_real.shape != f_fake.shape:
        raise InputError(f"{op}: f_real {_describe(f_real)} and f_fake {_describe(f_fake)} must have the same shape")
    if f_real.dtype != f_fake.dtype:
        raise InputError(f"{op}: f_real {_describe(f_real)} and f_fake {_describe(f_fake)} must have the same dtype")
    if f_real.device != f_fake.device:
        raise InputError(f"{op}: f_real {_describe(f_real)} and f_fake {_describe(f_fake)} must be on the same device")


def check_simplex_mix_inputs(latents, index, weight, *, check_range: bool = True) -> None:
    """latents (B, d) float; index (B', k) int64 with values in [0, B); weight (B', k), dtype of latents.

    ``check_range`` reads the index values (one device-to-host sync on GPU); the native CPU kernel
    checks the range itself, so the front-end skips it there.
    """
    op = "simplex_mix"
    _require_float_matrix(op, "latents", latents)
    if not isinstance(index, torch.Tensor) or index.dim() != 2:
        got = _describe(index) if isinstance(index, torch.Tensor) else type(index).__name__
        raise InputError(f"{op}: index must be a 2-D (B', k) int64 tensor, got {got}")
    if index.dtype != torch.int64:
        raise InputError(f"{op}: index must have dtype int64 (torch.long), got {_describe(index)}; use index.long()")
    _require_float_matrix(op, "weight", weight)
    if weight.shape != index.shape:
        raise InputError(f"{op}: weight {_describe(weight)} must have the shape of index {_describe(index)}")
    if weight.dtype != latents.dtype:
        raise InputError(f"{op}: weight {_describe(weight)} must have the dtype of latents {_describe(latents)}")
    if not (latents.device == index.device == weight.device):
        raise InputError(
            f"{op}: latents ({latents.device}), index ({index.device}) and weight ({weight.device}) "
            "must be on the same device"
        )
    if check_range and index.numel() > 0 and not torch.compiler.is_compiling():
        lo, hi = (int(v) for v in torch.aminmax(index))
        if lo < 0 or hi >= latents.shape[0]:
            bad = lo if lo < 0 else hi
            raise InputError(f"{op}: index value {bad} is out of range for {latents.shape[0]} latent rows")


def _as_int(op: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{op}: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise InputError(f"{op}: {name} must be >= {minimum}, got {value}")
    return int(value)


def check_annulus_args(n, d, r_inner, r_outer, dtype) -> tuple[int, int, float, float, torch.dtype]:
    """Validated (n, d, r_inner, r_outer, dtype); dtype None means torch.get_default_dtype()."""
    op = "annulus_sample"
    n = _as_int(op, "n", n, 0)
    d = _as_int(op, "d", d, 1)
    radii = []
    for name, r in (("r_inner", r_inner), ("r_outer", r_outer)):
        if isinstance(r, torch.Tensor) and r.numel() == 1:
            r = r.item()
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not math.isfinite(r):
            raise InputError(f"{op}: {name} must be a finite number, got {r!r}")
        if r < 0:
            raise InputError(f"{op}: {name} must be >= 0 (it is a radius), got {r}")
        radii.append(float(r))
    r_inner, r_outer = radii
    if r_inner > r_outer:
        raise InputError(f"{op}: r_inner ({r_inner}) must be <= r_outer ({r_outer})")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InputError(f"{op}: dtype must be a floating torch.dtype, got {dtype!r}")
    return n, d, r_inner, r_outer, dtype


def resolve_device(device, generator) -> torch.device:
    """``device`` if given, else the generator's device, else CPU."""
    if device is not None:
        return torch.device(device)
    if generator is not None:
        return generator.device
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# the ops
# ----------------------------------------------------------------------------------------------

def pair_feature_l1(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    """Row-wise L1 distance, the R-score core of AMA (eq. 5): R(x) = ||f(x, x) - f(x, G(E(x)))||_1.

    f_real, f_fake: (B, F) critic features of the real pair and of the reconstruction pair.
    Returns (B,) in their dtype; float16/bfloat16 accumulate in float32.
    Gradient: grad * sign(f_real - f_fake) for f_real (0 where equal), its negative for f_fake.
    """
    check_pair_feature_l1_inputs(f_real, f_fake)
    acc = accumulate_dtype(f_real.dtype)
    return (f_real.to(acc) - f_fake.to(acc)).abs().sum(dim=1).to(f_real.dtype)


def simplex_mix(latents: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Simplex interpolation in latent space (AMA sec. 3.2): out[b] = sum_i weight[b, i] * latents[index[b, i]].

    latents: (B, d) float; index: (B', k) int64 in [0, B); weight: (B', k), dtype of latents.
    Returns (B', d). The weights are used as given, NOT normalised (``sample_simplex`` returns
    weights that sum to 1). float16/bfloat16 accumulate in float32.
    Gradients: latents get the weighted scatter-add of the output gradient, weight[b, i] gets
    <grad_out[b], latents[index[b, i]]>.
    """
    check_simplex_mix_inputs(latents, index, weight)
    acc = accumulate_dtype(latents.dtype)
    vertices = latents.to(acc)[index]  # (B', k, d); cast before the gather so gradients also sum in acc
    return (weight.to(acc).unsqueeze(-1) * vertices).sum(dim=1).to(latents.dtype)


def sample_simplex(
    batch: int,
    k: int = 3,
    *,
    n_latents: int | None = None,
    generator: torch.Generator | None = None,
    device=None,
    scheme: str = "normalized",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random simplex vertices and weights for ``simplex_mix`` (AMA sec. 3.2).

    Returns (index, weight): index (batch, k) int64, k distinct rows of range(n_latents) per output
    row (n_latents defaults to batch), uniformly without replacement; weight (batch, k) float32.

    scheme="normalized" (default, the paper's text): alpha_i ~ U(0, 0.5] i.i.d., weight = alpha / sum(alpha).
    scheme="residual" (the authors' code, k <= 3): alpha_i ~ U(0, 0.5) for i < k, alpha_k = 1 - sum of the others.
    Both give non-negative weights summing to 1. Draws come from ``generator`` (on its device), so a
    seeded generator reproduces them.
    """
    op = "sample_simplex"
    batch = _as_int(op, "batch", batch, 0)
    k = _as_int(op, "k", k, 1)
    n_latents = batch if n_latents is None else _as_int(op, "n_latents", n_latents, 1)
    if scheme not in SIMPLEX_SCHEMES:
        raise InputError(f"{op}: scheme must be one of {SIMPLEX_SCHEMES}, got {scheme!r}")
    if scheme == "residual" and k > 3:
        raise InputError(f"{op}: scheme='residual' needs k <= 3 (alpha_k = 1 - sum of k-1 draws from U(0, 0.5)), got k={k}")
    if batch > 0 and k > n_latents:
        raise InputError(f"{op}: cannot draw k={k} distinct vertices from n_latents={n_latents} rows")
    device = resolve_device(device, generator)

    index = _distinct_indices(batch, k, n_latents, generator, device)
    if scheme == "normalized":
        alpha = 0.5 * (1.0 - torch.rand(batch, k, generator=generator, device=device))  # U(0, 0.5]
        weight = alpha / alpha.sum(dim=1, keepdim=True)
    else:
        head = 0.5 * torch.rand(batch, k - 1, generator=generator, device=device)  # U[0, 0.5)
        weight = torch.cat([head, 1.0 - head.sum(dim=1, keepdim=True)], dim=1)
    return index, weight


def _distinct_indices(batch: int, k: int, n: int, generator, device) -> torch.Tensor:
    """(batch, k) int64: k distinct values of range(n) per row, uniform without replacement.

    Draw j picks r uniformly from range(n - j) and maps it past the j values already taken
    (visited in ascending order), a bijection onto the values not yet taken; O(batch * k^2).
    """
    index = torch.empty(batch, k, dtype=torch.int64, device=device)
    for j in range(k):
        r = torch.randint(0, n - j, (batch,), generator=generator, device=device)
        taken, _ = index[:, :j].sort(dim=1)
        for c in range(j):
            r += (r >= taken[:, c]).long()
        index[:, j] = r
    return index


def shell_radius(u: torch.Tensor, d: int, r_inner: float, r_outer: float, margin: float) -> torch.Tensor:
    """Radius with density proportional to r^(d-1) on [r_inner, r_outer], from u ~ U[0, 1) (float64).

    rho = (r_in^d + u (r_out^d - r_in^d))^(1/d), evaluated in log space so d up to thousands
    neither overflows nor loses the thin-shell digits:
        q = (r_in / r_out)^d = exp(log_q),  rho = r_out * exp(log1p((1 - u) * expm1(log_q)) / d).
    The result is clamped into [r_in (1 + margin), r_out (1 - margin)] (the midpoint if that is
    empty), so that after rounding to the output dtype every norm stays inside [r_in, r_out].
    """
    if r_outer == 0.0:
        return torch.zeros_like(u)
    log_q = d * (math.log(r_inner) - math.log(r_outer)) if r_inner > 0 else -math.inf
    rho = r_outer * torch.exp(torch.log1p((1.0 - u) * math.expm1(log_q)) / d)
    lo, hi = radius_bounds(d, r_inner, r_outer, margin)
    return rho.clamp_(lo, hi)


def radius_bounds(d: int, r_inner: float, r_outer: float, margin: float) -> tuple[float, float]:
    """The clamp interval of ``shell_radius``: [r_in (1 + margin), r_out (1 - margin)], or its midpoint."""
    lo, hi = r_inner * (1.0 + margin), r_outer * (1.0 - margin)
    if lo > hi:
        lo = hi = 0.5 * (r_inner + r_outer)
    return lo, hi


def rounding_margin(dtype: torch.dtype, d: int) -> float:
    """Relative radius margin covering rounding to ``dtype`` and float64 norm evaluation over d terms."""
    return 4.0 * torch.finfo(dtype).eps + 16.0 * d * torch.finfo(torch.float64).eps


def annulus_sample(
    n: int,
    d: int,
    r_inner: float,
    r_outer: float,
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(n, d) points uniform in the volume of the shell r_inner <= ||z|| <= r_outer (AMA sec. 3.2, Atypical Selection).

    direction = g / ||g|| with g ~ N(0, I_d); radius from ``shell_radius`` (inverse CDF of the
    volume-uniform radius, CDF(r) = (r^d - r_in^d) / (r_out^d - r_in^d)). AMA uses r_in = sqrt(d),
    r_out = sqrt(d) + delta (outward) or r_in = sqrt(d) - delta, r_out = sqrt(d) (inward);
    r_inner == r_outer samples the sphere. Every row's norm lies in [r_inner, r_outer] (see
    ``rounding_margin``; for float16/bfloat16 the margin is a visible fraction of thin shells, so
    prefer float32 and cast). dtype defaults to torch.get_default_dtype(), device to the generator's.
    """
    n, d, r_inner, r_outer, dtype = check_annulus_args(n, d, r_inner, r_outer, dtype)
    device = resolve_device(device, generator)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    g = torch.randn(n, d, generator=generator, device=device, dtype=compute)
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    norm = torch.linalg.vector_norm(g, dim=1)
    if n > 0 and not bool((norm > 0).all()):  # probability ~0; keep the direction defined
        g[norm == 0, 0] = 1.0
        norm = torch.linalg.vector_norm(g, dim=1)
    radius = shell_radius(u, d, r_inner, r_outer, rounding_margin(dtype, d))
    scale = (radius / norm.to(torch.float64)).to(compute)
    return (g * scale.unsqueeze(1)).to(dtype)


def check_outer_adam_args(param, left, right, coef_m, coef_v) -> None:
    """Shapes and dtypes of :func:`outer_adam_step_` (InputError naming the problem)."""
    op = "outer_adam_step_"
    for name, t in (("param", param), ("left", left), ("right", right)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3 or not t.is_floating_point():
            raise InputError(f"{op}: {name} must be a 3-D float tensor, got {_describe(t) if isinstance(t, torch.Tensor) else type(t).__name__}")
    B, K, N = param.shape
    T = left.shape[0]
    if tuple(left.shape) != (T, B, K) or tuple(right.shape) != (T, B, N):
        raise InputError(f"{op}: left must be (T, {B}, {K}) and right (T, {B}, {N}) for param {tuple(param.shape)}; "
                         f"got {tuple(left.shape)} and {tuple(right.shape)}")
    if left.dtype != param.dtype or right.dtype != param.dtype or left.device != param.device or right.device != param.device:
        raise InputError(f"{op}: param, left and right must share dtype and device")
    if len(coef_m) != T or len(coef_v) != T:
        raise InputError(f"{op}: coef_m and coef_v need one value per step ({T}), got {len(coef_m)} and {len(coef_v)}")


@torch.no_grad()
def outer_adam_step_(
    param: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    coef_m,
    coef_v,
    *,
    step_size: float,
    bias_correction2_sqrt: float,
    eps: float,
    input_grad: bool = False,
) -> torch.Tensor | None:
    """One Adam step, in place, on ``param`` (B, K, N) whose gradient at each earlier step s < T
    was the outer product ``left[s, b] ⊗ right[s, b]`` (left (T, B, K), right (T, B, N)).

    Adam's moments of such a parameter are sums of outer products, so they are not stored:
    m = Σ_s coef_m[s] · left[s] ⊗ right[s] and v = Σ_s coef_v[s] · left[s]² ⊗ right[s]²
    (with Adam's recursions from zero, coef_m[s] = (1-β₁)β₁^(T-1-s), coef_v[s] = (1-β₂)β₂^(T-1-s));
    then param -= step_size · m / (√v / bias_correction2_sqrt + eps), torch.optim.Adam's update with
    step_size = lr / (1-β₁ᵀ) and bias_correction2_sqrt = √(1-β₂ᵀ). Equal to Adam on the
    materialised gradients up to floating-point summation order.

    ``input_grad``: also return ``param @ right[T-1]`` (B, K) with param as it was *before* the
    step: for a layer x -> x @ param (gradient x ⊗ g, left = x, right = g) the gradient reaching
    x, computed in the same pass over ``param``. Returns it, else None.
    """
    check_outer_adam_args(param, left, right, coef_m, coef_v)
    if input_grad and left.shape[0] == 0:
        raise InputError("outer_adam_step_: input_grad needs at least one step")
    grad_in = torch.einsum("bkn,bn->bk", param, right[-1]) if input_grad else None
    cm = torch.tensor(list(coef_m), dtype=param.dtype, device=param.device)
    cv = torch.tensor(list(coef_v), dtype=param.dtype, device=param.device)
    m = torch.einsum("s,sbk,sbn->bkn", cm, left, right)
    v = torch.einsum("s,sbk,sbn->bkn", cv, left * left, right * right)
    param.addcdiv_(m, v.sqrt_().div_(bias_correction2_sqrt).add_(eps), value=-step_size)
    return grad_in
