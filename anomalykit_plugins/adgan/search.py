"""Algorithm 1: the anomaly score of x by latent search, in three interchangeable implementations.

For one test sample x (paper, Algorithm 1 and section 4.2)::

    z_{j,0} ~ p_z = N(0, I) and θ_{j,0} = θ (the trained generator)      for j = 1..n_seed
    for t = 1..k:  one Adam step on ℓ(g_{θ_{j,t-1}}(z_{j,t-1}), x) moves z_j (lr γ = 0.25) and θ_j
                   (lr γ_θ = 5e-5), betas (0.5, 0.999)
    score(x) = (1/n_seed) Σ_j ℓ(g_{θ_{j,k}}(z_{j,k}), x)

Who owns a θ copy (``theta_copies``):

- ``"seed"``: Algorithm 1 as printed: every (sample, seed) search has its own θ_j.
- ``"sample"``: the n_seed searches of one sample share one θ copy, stepped with the sum of their
  losses (n_seed times less parameter work; a cheaper variant, not the printed algorithm).
- ``"none"``: θ stays fixed and only the latents move (ablation of the joint θ update).

In every mode θ and the Adam state start afresh for every sample, and every sample starts from
the same n_seed latents (:func:`initial_latents`, a seeded draw from p_z; Algorithm 1) or from
latents of its own (``z0`` of shape (N, n_seed, d'), e.g. an encoder's approximate inversion of
g_θ), so a sample's score does not depend on the other samples scored with it, their order, or
the batch size.

θ is every ``nn.Parameter`` of the generator, BatchNorm's affine weight and bias included (what
``torch.optim.Adam(g.parameters())`` in a literal implementation updates). BatchNorm runs in eval
mode with the running statistics from training; they are buffers, fixed during the search, and
keep the searches independent (batch statistics would mix the seeds, and the samples, of a batch).

Implementations (``scoring``): ``reference`` is the literal loop with ``torch.optim.Adam``, one
sample and one θ copy at a time. ``batched`` runs many searches at once: the θ copies are stacked
along a leading dimension, :meth:`Generator.forward_copies` evaluates them with batched matmuls,
one backward gives each copy its own gradient (the total loss is a sum of independent terms), and
:func:`adam_step_` replays ``torch.optim.Adam``'s update op for op. ``vmap`` is the same with
``torch.func`` (``vmap(grad(functional_call))`` over the stacked copies) instead of
``forward_copies``. The three agree to floating-point summation order.

With the speed-ups on (``anomalykit.speedups``, the default) the batched search computes the same
steps with less memory traffic: buffers reused across chunks, torch's fused Adam, and, with one
latent per θ copy (``theta_copies="seed"``), the matmul layers' weights (above all the big
latent -> feature-map layer) stepped by ``outer_adam_step_`` from the factors of their
outer-product gradients (:func:`_outer_steps`). docs/performance.md has the measurements.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from anomalykit.sdk import outer_adam_step_, speedups_enabled, stream_seed

from .losses import reconstruction_loss

THETA_COPIES = ("seed", "sample", "none")
IMPLEMENTATIONS = ("batched", "vmap", "reference")
_CHUNK_FLOATS = 1 << 21  # auto chunk: about this many floats (8 MB) per stacked state tensor
_HAS_FUSED_ADAM = hasattr(torch, "_fused_adam_")


@dataclass(frozen=True)
class SearchConfig:
    """The hyperparameters of Algorithm 1 (defaults: the paper's, section 4.2 and footnote 9)."""

    steps: int = 5  # k
    lr_latent: float = 0.25  # γ
    lr_theta: float = 5e-5  # γ_θ
    betas: tuple[float, float] = (0.5, 0.999)
    eps: float = 1e-8  # Adam's ε (torch default; the paper does not say)
    loss: str = "l2"  # ℓ: squared L2 ("l2"), L1 ("l1") or the Laplacian pyramid L1 ("laplacian")
    theta_copies: str = "seed"

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"steps (k) must be >= 0, got {self.steps}")
        if self.theta_copies not in THETA_COPIES:
            raise ValueError(f"theta_copies must be one of {THETA_COPIES}, got {self.theta_copies!r}")
        if self.loss not in ("l2", "l1", "laplacian"):
            raise ValueError(f"loss must be 'l2', 'l1' or 'laplacian', got {self.loss!r}")

    @property
    def adapt_theta(self) -> bool:
        return self.theta_copies != "none"


@dataclass
class SearchResult:
    """Final state of the searches of N samples with S seeds each."""

    losses: torch.Tensor  # (N, S): ℓ(g_{θ_{j,k}}(z_{j,k}), x) per seed
    latents: torch.Tensor  # (N, S, d'): z_{j,k}
    outputs: torch.Tensor | None = None  # (N, S, *shape): g_{θ_{j,k}}(z_{j,k}), when asked for

    def scores(self) -> torch.Tensor:
        """Algorithm 1's return value: the mean final loss over the seeds, (N,)."""
        return self.losses.mean(1)

    def best_outputs(self) -> torch.Tensor:
        """(N, *shape): each sample's reconstruction from the seed with the lowest final loss."""
        if self.outputs is None:
            raise ValueError("search was run without keep_outputs=True")
        j = self.losses.argmin(1)
        return self.outputs[torch.arange(j.shape[0], device=j.device), j]


def initial_latents(n_seed: int, latent_dim: int, seed: int, *, device=None, dtype=None) -> torch.Tensor:
    """The n_seed starting latents z_{j,0} ~ N(0, I), (n_seed, latent_dim): a fixed, seeded draw
    (on the CPU, so it is the same on every device) shared by all test samples."""
    g = torch.Generator().manual_seed(stream_seed(seed, "search-starts"))  # not the training stream
    return torch.randn(n_seed, latent_dim, generator=g).to(device=device, dtype=dtype or torch.get_default_dtype())


@torch.no_grad()
def adam_step_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    *,
    step: int,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    scratch: Sequence[torch.Tensor] | None = None,
) -> None:
    """Step ``step`` (counted from 1) of Adam on ``params`` in place, with explicit state.

    Replays ``torch.optim.Adam``'s single-tensor update (its CPU default; amsgrad, weight decay
    and maximize off) op for op, so the same gradients give bitwise the same parameters and
    moments: m ← lerp(m, g, 1−β₁); v ← β₂v + (1−β₂)g²; p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε).
    ``scratch`` (tensors shaped like ``params``) holds the denominator instead of a fresh
    allocation per call: the same values, without the page faults of large new tensors.
    """
    beta1, beta2 = betas
    bias_correction1 = 1 - beta1 ** float(step)
    bias_correction2 = 1 - beta2 ** float(step)
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if scratch is None:
            denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = torch.sqrt(v, out=scratch[i]).div_(bias_correction2_sqrt).add_(eps)
        p.addcdiv_(m, denom, value=-step_size)


@torch.no_grad()
def fused_adam_step_(params, grads, exp_avgs, exp_avg_sqs, *, step: int, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
    """The same Adam step as :func:`adam_step_` in one pass over each tensor (``torch._fused_adam_``,
    torch's ``Adam(fused=True)`` kernel): agrees with it to rounding (float64: 2e-16; float32: one
    ulp), about 3.5x faster on the big θ copies of a chunk, whose Adam state is the search's main
    memory traffic."""
    steps = [torch.tensor(float(step), dtype=torch.float32, device=params[0].device)] * len(params)
    grads = [g if g.is_contiguous() and g.stride() == p.stride() else g.contiguous() for g, p in zip(grads, params)]
    torch._fused_adam_(list(params), grads, list(exp_avgs), list(exp_avg_sqs), [], steps, lr=lr, beta1=betas[0], beta2=betas[1],
                       weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)


# -- reference: Algorithm 1 literally ----------------------------------------------------------
def search_reference(generator: nn.Module, x: torch.Tensor, z0: torch.Tensor, cfg: SearchConfig, *, keep_outputs: bool = False) -> SearchResult:
    """One sample at a time; per θ copy a fresh ``torch.optim.Adam`` over [z] (lr γ) and the
    generator's parameters (lr γ_θ), reset to the trained θ; k steps; the final loss per seed.
    ``z0``: (S, d') shared by every sample, or (N, S, d') one set per sample."""
    per_sample = z0.dim() == 3
    N, S = x.shape[0], z0.shape[-2]
    work = copy.deepcopy(generator).eval()
    theta0 = [p.detach().clone() for p in generator.parameters()]
    for p in work.parameters():
        p.requires_grad_(cfg.adapt_theta)
    groups = [list(range(S))] if cfg.theta_copies == "sample" else [[j] for j in range(S)]
    losses = x.new_empty(N, S)
    latents = z0.new_empty(N, S, z0.shape[-1])
    outputs = x.new_empty(N, S, *x.shape[1:]) if keep_outputs else None
    with torch.enable_grad():
        for i in range(N):
            xi = x[i : i + 1]
            for seeds in groups:
                with torch.no_grad():
                    for p, p0 in zip(work.parameters(), theta0):
                        p.copy_(p0)  # θ_{j,0} = θ
                z = (z0[i, seeds] if per_sample else z0[seeds]).clone().requires_grad_(True)
                param_groups = [{"params": [z], "lr": cfg.lr_latent}]
                if cfg.adapt_theta:
                    param_groups.append({"params": list(work.parameters()), "lr": cfg.lr_theta})
                opt = torch.optim.Adam(param_groups, betas=cfg.betas, eps=cfg.eps)
                for _ in range(cfg.steps):
                    opt.zero_grad()
                    reconstruction_loss(work(z), xi, cfg.loss).sum().backward()
                    opt.step()
                with torch.no_grad():
                    out = work(z)
                    losses[i, seeds] = reconstruction_loss(out, xi, cfg.loss)
                    latents[i, seeds] = z
                    if outputs is not None:
                        outputs[i, seeds] = out
    return SearchResult(losses, latents, outputs)


# -- batched: many searches per pass -------------------------------------------------------------
def search_batched(
    generator: nn.Module,
    x: torch.Tensor,
    z0: torch.Tensor,
    cfg: SearchConfig,
    *,
    implementation: str = "batched",
    chunk: int = 0,
    keep_outputs: bool = False,
) -> SearchResult:
    """All searches of ``x`` (N samples × S seeds), ``chunk`` θ copies per pass (0 = automatic:
    about two million floats per stacked parameter tensor). ``z0``: (S, d') shared by every
    sample, or (N, S, d') one set per sample.

    ``implementation`` "batched" uses :meth:`Generator.forward_copies` + autograd, "vmap" uses
    ``torch.func``; both step with :func:`adam_step_`. ``generator`` is used in eval mode.
    """
    if implementation not in ("batched", "vmap"):
        raise ValueError(f"implementation must be 'batched' or 'vmap', got {implementation!r}")
    per_sample = z0.dim() == 3
    N, S, d = x.shape[0], z0.shape[-2], z0.shape[-1]
    z_flat = z0.reshape(N * S, d) if per_sample else None
    theta = [p.detach() for p in generator.parameters()]
    n_theta = sum(p.numel() for p in theta)
    sample_numel = math.prod(x.shape[1:])
    losses = x.new_empty(N * S)
    latents = z0.new_empty(N * S, d)
    outputs = x.new_empty(N * S, *x.shape[1:]) if keep_outputs else None
    mode = cfg.theta_copies
    # work units: one per θ copy ("seed": a (sample, seed) pair; "sample": a sample with its S
    # seeds) or, with θ fixed, one per latent, all sharing the single copy of θ
    units = N if mode == "sample" else N * S
    fast = speedups_enabled()
    if chunk <= 0:
        if mode == "seed":
            # the fast path keeps no gradient or Adam moments of the big matmul weights: 4x the copies
            chunk = (4 if fast and implementation == "batched" else 1) * _CHUNK_FLOATS // max(n_theta, 1)
        elif mode == "sample":
            chunk = _CHUNK_FLOATS // max(n_theta + 4 * S * sample_numel, 1)
        else:
            chunk = 8 * _CHUNK_FLOATS // (4 * sample_numel + d)
        chunk = max(1, chunk)
    was_training = generator.training
    generator.eval()
    # with speed-ups on, the θ copies and Adam moments of a chunk live in buffers allocated once and
    # reused by every chunk: fresh multi-megabyte tensors per chunk cost as much in page faults as
    # the arithmetic (same values either way)
    work = _Workspace() if fast else None
    try:
        for lo in range(0, units, chunk):
            hi = min(lo + chunk, units)
            if mode == "sample":
                z_init = z0[lo:hi] if per_sample else z0.unsqueeze(0).expand(hi - lo, S, d)
                target = x[lo:hi].unsqueeze(1)
            else:
                u = torch.arange(lo, hi, device=z0.device)
                z_init, target = (z_flat[u] if per_sample else z0[u % S]), x[u // S]
                if mode == "seed":
                    z_init, target = z_init.unsqueeze(1), target.unsqueeze(1)  # (C, 1, ...)
                else:
                    z_init, target = z_init.unsqueeze(0), target.unsqueeze(0)  # (1, m, ...)
            fin_loss, fin_z, fin_out = _search_chunk(generator, theta, z_init, target, cfg, implementation, work)
            a, b = (lo * S, hi * S) if mode == "sample" else (lo, hi)
            losses[a:b] = fin_loss.reshape(-1)
            latents[a:b] = fin_z.reshape(-1, d)
            if outputs is not None:
                outputs[a:b] = fin_out.reshape(-1, *x.shape[1:])
    finally:
        generator.train(was_training)
    return SearchResult(
        losses.reshape(N, S), latents.reshape(N, S, d), None if outputs is None else outputs.reshape(N, S, *x.shape[1:])
    )


class _Workspace:
    """The stacked θ copies, latents and Adam state of one chunk, allocated for the first (largest)
    chunk of a search and handed out again, trimmed, to the later ones."""

    def __init__(self):
        self.buffers: dict[str, list[torch.Tensor]] = {}

    def take(self, name: str, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Uninitialised tensors shaped like ``like`` (their leading dimension may shrink)."""
        return self.take_shaped(name, [(tuple(t.shape), t) for t in like])

    def take_shaped(self, name: str, specs: Sequence[tuple[tuple[int, ...], torch.Tensor]]) -> list[torch.Tensor]:
        """Uninitialised tensors of the given (shape, dtype/device like) pairs (leading dimension may shrink)."""
        held = self.buffers.get(name)
        if held is None or len(held) != len(specs) or any(
            h.shape[1:] != shape[1:] or h.shape[0] < shape[0] or h.dtype != t.dtype or h.device != t.device
            for h, (shape, t) in zip(held, specs)
        ):
            held = self.buffers[name] = [torch.empty(shape, dtype=t.dtype, device=t.device) for shape, t in specs]
        return [h[: shape[0]] for h, (shape, _) in zip(held, specs)]


def _search_chunk(generator, theta, z_init, target, cfg: SearchConfig, implementation: str, work: _Workspace | None = None):
    """k steps for C θ copies with m latents each: z_init (C, m, d'), target (C, m or 1, *shape).

    Returns the final losses (C, m), latents (C, m, d') and reconstructions (C, m, *shape).
    ``work``: reuse its buffers for the copies and the Adam state (None: allocate them).
    """
    C = z_init.shape[0]
    adapt = cfg.adapt_theta
    if work is None:
        if adapt:
            params = [p.unsqueeze(0).expand(C, *p.shape).clone() for p in theta]  # θ_{j,0} = θ, one per copy
        else:
            params = [p.unsqueeze(0) for p in theta]  # one shared, fixed θ
        z = z_init.clone()
        leaves = [z] + (params if adapt else [])
        exp_avgs = [torch.zeros_like(t) for t in leaves]
        exp_avg_sqs = [torch.zeros_like(t) for t in leaves]
        scratch = [torch.empty_like(t) for t in leaves]
    else:
        if adapt:
            stacked = [p.unsqueeze(0).expand(C, *p.shape) for p in theta]
            params = work.take("params", stacked)
            for dst, src in zip(params, stacked):
                dst.copy_(src)  # θ_{j,0} = θ, one per copy
        else:
            params = [p.unsqueeze(0) for p in theta]
        (z,) = work.take("z", [z_init])
        z.copy_(z_init)
        if implementation == "batched" and adapt and z_init.shape[1] == 1 and _HAS_FUSED_ADAM:
            return _outer_steps(generator, params, z, target, cfg, work)
        leaves = [z] + (params if adapt else [])
        exp_avgs = [t.zero_() for t in work.take("exp_avgs", leaves)]
        exp_avg_sqs = [t.zero_() for t in work.take("exp_avg_sqs", leaves)]
        scratch = None if _HAS_FUSED_ADAM else work.take("scratch", leaves)
    if implementation == "batched":
        forward = generator.forward_copies
        grads_of = _grads_autograd(generator, cfg, adapt)
    else:
        forward = _forward_vmap(generator)
        grads_of = _grads_vmap(generator, cfg, adapt)
    for t in range(1, cfg.steps + 1):
        grads = grads_of(params, z, target)
        if work is not None and _HAS_FUSED_ADAM:
            fused_adam_step_([z], grads[:1], exp_avgs[:1], exp_avg_sqs[:1], step=t, lr=cfg.lr_latent, betas=cfg.betas, eps=cfg.eps)
            if adapt:
                fused_adam_step_(params, grads[1:], exp_avgs[1:], exp_avg_sqs[1:], step=t, lr=cfg.lr_theta, betas=cfg.betas, eps=cfg.eps)
            continue
        adam_step_([z], grads[:1], exp_avgs[:1], exp_avg_sqs[:1], step=t, lr=cfg.lr_latent, betas=cfg.betas, eps=cfg.eps, scratch=scratch[:1])
        if adapt:
            adam_step_(params, grads[1:], exp_avgs[1:], exp_avg_sqs[1:], step=t, lr=cfg.lr_theta, betas=cfg.betas, eps=cfg.eps, scratch=scratch[1:])
    with torch.no_grad():
        out = forward(params, z)
        return reconstruction_loss(out, target, cfg.loss, batch_dims=2), z, out


def _outer_steps(generator, params, z, target, cfg: SearchConfig, work: _Workspace):
    """The k Adam steps of one chunk with one latent per θ copy (``theta_copies="seed"``), speed-ups on.

    The weight gradient of each matmul layer of a copy (above all the big first layer, latent ->
    smallest feature map) is then an outer product, layer input ⊗ upstream gradient: those weights
    step by ``outer_adam_step_`` from the factors of their gradients (nothing materialised: no
    gradient, no Adam moments, one pass over the weights, which also yields the latent's gradient
    when the layer reads the latent directly), the rest by torch's fused Adam. The same Adam as
    :func:`adam_step_` up to summation order.
    """
    C = z.shape[0]
    beta1, beta2 = cfg.betas
    # image generators: the latent feeds the first layer only, whose pass gives ∂/∂z (no GEMV in backward)
    latent_layer = 0 if getattr(generator, "image", False) and isinstance(generator.net[0], nn.ConvTranspose2d) else None
    outer: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    state = None
    for t in range(1, cfg.steps + 1):
        outer.clear()
        with torch.enable_grad():
            zg = z.detach() if latent_layer is not None else z.detach().requires_grad_(True)
            ps = [p.detach().requires_grad_(True) for p in params]
            out = generator.forward_copies(ps, zg, outer=outer)
            total = reconstruction_loss(out, target, cfg.loss, batch_dims=2).sum()
            wrt = ps if latent_layer is not None else [zg] + ps
            grads = list(torch.autograd.grad(total, wrt, allow_unused=True))
        grad_z = None if latent_layer is not None else grads.pop(0)
        if latent_layer is not None and latent_layer not in outer:
            raise RuntimeError("ADGAN fast search: the generator's first layer did not map the latent as a matrix product")
        dense = [i for i, g in enumerate(grads) if g is not None]
        if state is None:  # Adam moments of z and of the weights stepped densely (zeroed buffers)
            leaves = [z] + [params[i] for i in dense]
            state = ([m.zero_() for m in work.take("exp_avgs", leaves)], [v.zero_() for v in work.take("exp_avg_sqs", leaves)])
        exp_avgs, exp_avg_sqs = state
        if dense:
            fused_adam_step_([params[i] for i in dense], [grads[i] for i in dense], exp_avgs[1:], exp_avg_sqs[1:], step=t,
                             lr=cfg.lr_theta, betas=cfg.betas, eps=cfg.eps)
        coef_m = [(1 - beta1) * beta1 ** (t - 1 - s) for s in range(t)]
        coef_v = [(1 - beta2) * beta2 ** (t - 1 - s) for s in range(t)]
        for i, (left, right) in sorted(outer.items()):
            hist_left, hist_right = work.take_shaped(f"outer{i}", [((cfg.steps, C, left.shape[1]), left), ((cfg.steps, C, right.shape[1]), right)])
            hist_left[t - 1].copy_(left)
            hist_right[t - 1].copy_(right)
            grad_in = outer_adam_step_(params[i].view(C, left.shape[1], right.shape[1]), hist_left[:t], hist_right[:t], coef_m, coef_v,
                                       step_size=cfg.lr_theta / (1 - beta1**t), bias_correction2_sqrt=math.sqrt(1 - beta2**t), eps=cfg.eps,
                                       input_grad=i == latent_layer)
            if i == latent_layer:
                grad_z = grad_in.view_as(z)
        fused_adam_step_([z], [grad_z], exp_avgs[:1], exp_avg_sqs[:1], step=t, lr=cfg.lr_latent, betas=cfg.betas, eps=cfg.eps)
    with torch.no_grad():
        out = generator.forward_copies(params, z)
        return reconstruction_loss(out, target, cfg.loss, batch_dims=2), z, out


def _grads_autograd(generator, cfg: SearchConfig, adapt: bool):
    """(params, z, target) -> [∂/∂z, ∂/∂θ_copies...] of Σ_copies Σ_latents ℓ, by one backward."""

    def grads_of(params, z, target):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            ps = [p.detach().requires_grad_(True) for p in params] if adapt else params
            total = reconstruction_loss(generator.forward_copies(ps, z), target, cfg.loss, batch_dims=2).sum()
            return torch.autograd.grad(total, [z] + (ps if adapt else []))

    return grads_of


def _functional(generator):
    names = [n for n, _ in generator.named_parameters()]
    buffers = dict(generator.named_buffers())

    def one_copy(params, z):  # params: one copy's tensors; z: (m, d') -> (m, *shape)
        return functional_call(generator, ({**dict(zip(names, params)), **buffers},), (z,))

    return one_copy


def _forward_vmap(generator):
    one_copy = _functional(generator)
    return lambda params, z: vmap(one_copy, in_dims=(0, 0))(params, z)


def _grads_vmap(generator, cfg: SearchConfig, adapt: bool):
    """The same gradients as :func:`_grads_autograd` with torch.func: vmap over the copies of
    grad of one copy's loss w.r.t. (z, θ)."""
    one_copy = _functional(generator)

    def copy_loss(z, params, target):
        return reconstruction_loss(one_copy(params, z), target, cfg.loss).sum()

    if adapt:
        g = vmap(grad(copy_loss, argnums=(0, 1)), in_dims=(0, 0, 0))

        def grads_of(params, z, target):
            gz, gp = g(z, params, target)
            return [gz, *gp]
    else:
        g = vmap(grad(copy_loss, argnums=0), in_dims=(0, 0, 0))

        def grads_of(params, z, target):
            return [g(z, params, target)]

    return grads_of


def search(generator, x, z0, cfg: SearchConfig, *, implementation: str = "batched", chunk: int = 0, keep_outputs: bool = False) -> SearchResult:
    """Run Algorithm 1 on ``x`` with the chosen implementation (see the module docstring)."""
    if implementation == "reference":
        return search_reference(generator, x, z0, cfg, keep_outputs=keep_outputs)
    return search_batched(generator, x, z0, cfg, implementation=implementation, chunk=chunk, keep_outputs=keep_outputs)
