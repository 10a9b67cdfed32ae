"""Network building blocks shared by the methods: shape-adaptive conv/MLP stacks, WGAN-GP.

Images of any size >= 4x4 are handled by the same ladder: stride-2 4x4 convolutions halve the
side while it is >= 8, then one "valid" convolution covering the remaining side maps to a 1x1
code; the decoder mirrors the ladder exactly (``output_padding`` fixes odd sides), e.g.
28 -> 14 -> 7 -> 1 and back, 8 -> 4 -> 1, 32 -> 16 -> 8 -> 4 -> 1. Flat inputs (F,) get MLPs.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from . import speedups as _speedups
from .precision import full_precision


def is_image(shape: Sequence[int]) -> bool:
    return len(shape) == 3 and shape[1] >= 4 and shape[2] >= 4


def flat_dim(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


def ladder(side: int) -> list[int]:
    """Spatial sides visited by the encoder: [side, side/2, ...] down to the last one < 8."""
    sides = [side]
    while sides[-1] >= 8:
        sides.append((sides[-1] + 2 - 4) // 2 + 1)
    return sides


def ladder2d(h: int, w: int) -> tuple[list[int], list[int]]:
    """Ladders of both sides padded to the same length (a side that stops early stays put)."""
    hs, ws = ladder(h), ladder(w)
    n = max(len(hs), len(ws))
    return (hs + [hs[-1]] * n)[:n], (ws + [ws[-1]] * n)[:n]


def _widths(base: int, n: int, cap: int) -> list[int]:
    return [min(base * 2**i, cap) for i in range(n)]


def maybe_sn(module: nn.Module, on: bool) -> nn.Module:
    """``module`` with spectral norm on its weight (``torch.nn.utils.parametrizations.spectral_norm``:
    same state-dict keys, same power iteration) when ``on``; see :class:`SpectralNorm`."""
    if not on:
        return module
    dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight, dim=dim))
    return module


# -- speed-ups that keep the math (anomalykit.speedups; docs/performance.md) --------------------
class SpectralNorm(_SpectralNorm):
    """torch's spectral-norm parametrization (Miyato et al.) with a fused backward.

    The forward is torch's: in training mode one power iteration updates the buffers u, v; then
    σ = uᵀ W v and the weight used is W / σ. torch records that division and σ as separate
    autograd nodes whose backward makes ~10 passes over W; with speed-ups on (and a gradient to
    compute) one node does it in about four:
    ∂L/∂W = G / σ − (Σ G∘W / σ²) · u vᵀ, the same gradient.
    """

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with full_precision(weight.device.type):  # the power iteration and σ in float32 under autocast
            return self._forward(weight)

    def _forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1 or not (_speedups.enabled() and torch.is_grad_enabled() and weight.requires_grad) \
                or torch.jit.is_tracing() or torch.jit.is_scripting():
            return super().forward(weight)
        weight_mat = self._reshape_weight_to_matrix(weight)
        if self.training:
            self._power_method(weight_mat, self.n_power_iterations)
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        return _SpectralDivide.apply(weight, u, v, self.dim)

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """σ exactly as :meth:`forward` computes it (after the same power iteration in training mode),
        as a differentiable function of ``weight``, for layers that divide their output by σ
        instead of their weight (:class:`WholeConv2d`): W x / σ is (W / σ) x."""
        with full_precision(weight.device.type):
            return self._sigma(weight)

    def _sigma(self, weight: torch.Tensor) -> torch.Tensor:
        weight_mat = self._reshape_weight_to_matrix(weight)
        if self.training:
            self._power_method(weight_mat, self.n_power_iterations)
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        return torch.vdot(u, torch.mv(weight_mat, v))


def _to_matrix(t: torch.Tensor, dim: int) -> torch.Tensor:
    if dim != 0:
        t = t.permute(dim, *(d for d in range(t.dim()) if d != dim))
    return t.flatten(1)


def _from_matrix(m: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    if dim == 0:
        return m.reshape(like.shape)
    order = [dim] + [d for d in range(like.dim()) if d != dim]
    permuted = m.reshape([like.shape[d] for d in order])
    return permuted.permute(*sorted(range(like.dim()), key=order.__getitem__))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ a∘b without copying when both share a dense layout (contiguous or channels-last)."""
    if a.is_contiguous() and b.is_contiguous():
        return torch.vdot(a.view(-1), b.view(-1))
    if a.dim() == 4 and a.is_contiguous(memory_format=torch.channels_last) and b.is_contiguous(memory_format=torch.channels_last):
        return torch.vdot(a.permute(0, 2, 3, 1).reshape(-1), b.permute(0, 2, 3, 1).reshape(-1))
    return (a * b).sum()


class _SpectralDivide(torch.autograd.Function):
    """W / σ with σ = uᵀ mat(W) v (u, v constants): the last step of :class:`SpectralNorm`."""

    @staticmethod
    def forward(ctx, weight, u, v, dim):
        sigma = torch.vdot(u, torch.mv(_to_matrix(weight, dim), v))
        ctx.save_for_backward(weight, u, v, sigma)
        ctx.dim = dim
        return weight / sigma

    @staticmethod
    def backward(ctx, grad):
        weight, u, v, sigma = ctx.saved_tensors
        coeff = -_dot(grad, weight) / (sigma * sigma)  # ∂L/∂σ
        grad_mat = _to_matrix(grad, ctx.dim).div(sigma).addr_(u * coeff, v)
        return _from_matrix(grad_mat, weight, ctx.dim), None, None, None


class WholeConv2d(nn.Conv2d):
    """A ``Conv2d`` applied to inputs exactly as large as its kernel, without padding (output 1x1):
    the "valid" convolution that ends the ladders. With speed-ups on it runs as the matrix
    product it is (``F.linear`` on the flattened input), several times faster on a CPU than the
    convolution routine; same parameters, same state dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (_speedups.enabled() and x.dim() == 4 and tuple(x.shape[2:]) == tuple(self.kernel_size)
                and self.padding == (0, 0) and self.dilation == (1, 1) and self.groups == 1):
            sn = self._spectral_norm()
            if sn is None:
                out = F.linear(x.flatten(1), self.weight.flatten(1), self.bias)  # self.weight read once (spectral norm)
            else:  # (W / σ) x as W x / σ: the division touches B x out values instead of the whole weight
                original = self.parametrizations.weight.original
                out = F.linear(x.flatten(1), original.flatten(1)) / sn.sigma(original)
                if self.bias is not None:
                    out = out + self.bias
            return out.view(out.shape[0], out.shape[1], 1, 1)
        return super().forward(x)

    def _spectral_norm(self) -> "SpectralNorm | None":
        """This layer's :class:`SpectralNorm` when it is the weight's only parametrization and
        ``weight`` is not being cached (``parametrize.cached()``), else None."""
        if not parametrize.is_parametrized(self, "weight") or parametrize._cache_enabled:
            return None
        chain = self.parametrizations.weight
        return chain[0] if len(chain) == 1 and isinstance(chain[0], SpectralNorm) else None


class WholeConvTranspose2d(nn.ConvTranspose2d):
    """A ``ConvTranspose2d`` applied to 1x1 inputs without padding (the first layer of the
    decoders: latent code -> the smallest feature map). With speed-ups on it runs as the matrix
    product it is; same parameters, same state dict."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if (_speedups.enabled() and output_size is None and x.dim() == 4 and tuple(x.shape[2:]) == (1, 1)
                and self.padding == (0, 0) and self.output_padding == (0, 0) and self.dilation == (1, 1) and self.groups == 1):
            w = self.weight  # (C_in, C_out, kh, kw), read once
            out = (x.flatten(1) @ w.flatten(1)).view(x.shape[0], *w.shape[1:])
            return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)
        return super().forward(x, output_size)


def channels_last_safe(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` may run channels-last on every x86-64 CPU.

    oneDNN (PyTorch's CPU convolution library, as bundled with torch 2.13) corrupts the heap on
    AVX2 CPUs in the backward pass of a channels-last *strided 1x1* convolution whose input
    channels per group are not a multiple of 8 (its ``brgconv_strided:avx2`` backward-data
    kernel; an upstream bug). Measured grid, one process per shape, AVX2 forced on an AVX-512
    machine: ``benchmarks/results/avx2-channels-last/`` (``benchmarks/onednn_channels_last_grid.py``).
    Either operand being channels-last selects that path, so an unsafe convolution must see a
    contiguous weight *and* a contiguous input (:func:`channels_last_` arranges both).
    """
    one_by_one = all(k == 1 for k in conv.kernel_size)
    strided = any(st > 1 for st in conv.stride)
    return not (one_by_one and strided and (conv.in_channels // conv.groups) % 8 != 0)


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook of a convolution kept off the channels-last path: its input in NCHW."""
    return (args[0].contiguous(),) + tuple(args[1:])


def channels_last_(module: nn.Module) -> nn.Module:
    """With speed-ups on, store the weights of ``module``'s 2-D convolutions channels-last (in
    place; call it when a network is built): oneDNN, PyTorch's CPU convolution library, runs them
    faster in that layout, and activations follow the weights' layout. Whole-input convolutions
    (:class:`WholeConv2d`, matrix products) stay as they are.

    The one place the layout is decided: a convolution that is not :func:`channels_last_safe`
    keeps contiguous weights and gets its input made contiguous (a forward pre-hook), whatever
    the layout of the layers before it, on every machine (so every CPU computes the same
    layouts, not only the AVX2 ones). Returns ``module``."""
    if not _speedups.enabled():
        return module
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and not isinstance(m, WholeConv2d):
            p = m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
            if channels_last_safe(m):
                p.data = p.data.contiguous(memory_format=torch.channels_last)
            else:
                p.data = p.data.contiguous()
                if _contiguous_input not in m._forward_pre_hooks.values():
                    m.register_forward_pre_hook(_contiguous_input)
    return module


class ConvEncoder(nn.Module):
    """(N, C, H, W) -> (N, latent_dim). Strided 4x4 convs + BatchNorm + LeakyReLU(0.2), then a
    valid conv to a 1x1 code (the AMA authors' encoder, generalised to any side)."""

    def __init__(self, shape: Sequence[int], latent_dim: int, width: int = 64, max_width: int = 512, batchnorm: bool = True):
        super().__init__()
        c, h, w = shape
        hs, ws = ladder2d(h, w)
        n = len(hs) - 1
        layers: list[nn.Module] = []
        chans = [c] + _widths(width, n, max_width)
        for i in range(n):
            sh = 2 if hs[i + 1] != hs[i] else 1
            sw = 2 if ws[i + 1] != ws[i] else 1
            layers.append(nn.Conv2d(chans[i], chans[i + 1], (4 if sh == 2 else 3, 4 if sw == 2 else 3), (sh, sw), 1, bias=not batchnorm or i == 0))
            if batchnorm and i > 0:
                layers.append(nn.BatchNorm2d(chans[i + 1]))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers.append(WholeConv2d(chans[-1], latent_dim, (hs[-1], ws[-1])))
        self.net = nn.Sequential(*layers)
        self.sides = list(zip(hs, ws))
        channels_last_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class ConvDecoder(nn.Module):
    """(N, latent_dim) -> (N, C, H, W) in [-1, 1] (tanh). Mirror of :class:`ConvEncoder`:
    a transposed conv to the smallest side, then stride-2 transposed convs + BatchNorm + ReLU
    (``batchnorm=False``: no normalisation, biases instead)."""

    def __init__(self, latent_dim: int, shape: Sequence[int], width: int = 64, max_width: int = 512, out_activation: str = "tanh",
                 batchnorm: bool = True):
        super().__init__()
        c, h, w = shape
        norm = nn.BatchNorm2d if batchnorm else (lambda _: nn.Identity())
        hs, ws = ladder2d(h, w)
        n = len(hs) - 1
        chans = _widths(width, n, max_width)[::-1] + [c]
        if n == 0:
            chans = [width, c]
        layers: list[nn.Module] = [
            WholeConvTranspose2d(latent_dim, chans[0], (hs[-1], ws[-1]), bias=not batchnorm),
            norm(chans[0]),
            nn.ReLU(inplace=True),
        ]
        for i in range(n, 0, -1):
            j = n - i  # layer index
            up_h, up_w = hs[i - 1] != hs[i], ws[i - 1] != ws[i]
            kh, kw = (4 if up_h else 3), (4 if up_w else 3)
            sh, sw = (2 if up_h else 1), (2 if up_w else 1)
            oph = hs[i - 1] - (2 * hs[i]) if up_h else 0
            opw = ws[i - 1] - (2 * ws[i]) if up_w else 0
            last = i == 1
            layers.append(nn.ConvTranspose2d(chans[j], chans[j + 1], (kh, kw), (sh, sw), 1, output_padding=(oph, opw),
                                             bias=last or not batchnorm))
            if not last:
                layers += [norm(chans[j + 1]), nn.ReLU(inplace=True)]
        if n == 0:
            layers.append(nn.Conv2d(chans[0], c, 3, 1, 1))
        if out_activation == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        channels_last_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


class ConvCritic(nn.Module):
    """Critic on (N, C_in, H, W) (C_in = 2C for stacked pairs). Strided convs + LeakyReLU(0.2),
    no BatchNorm (gradient penalty friendly), a valid conv to ``feature_dim`` channels + LeakyReLU
    giving the penultimate features f, then Linear(feature_dim -> 1, no bias).

    ``forward(x)`` returns the (N,) critic values; ``features(x)`` the (N, feature_dim) f;
    ``layer_features(x)`` every layer's activations, spatially averaged, with f last.
    """

    def __init__(self, shape: Sequence[int], feature_dim: int = 128, width: int = 64, max_width: int = 512, spectral_norm: bool = False):
        super().__init__()
        c, h, w = shape
        hs, ws = ladder2d(h, w)
        n = len(hs) - 1
        chans = [c] + _widths(width, n, max_width)
        layers: list[nn.Module] = []
        for i in range(n):
            sh = 2 if hs[i + 1] != hs[i] else 1
            sw = 2 if ws[i + 1] != ws[i] else 1
            conv = nn.Conv2d(chans[i], chans[i + 1], (4 if sh == 2 else 3, 4 if sw == 2 else 3), (sh, sw), 1)
            layers += [maybe_sn(conv, spectral_norm), nn.LeakyReLU(0.2, inplace=True)]
        layers += [maybe_sn(WholeConv2d(chans[-1], feature_dim, (hs[-1], ws[-1])), spectral_norm), nn.LeakyReLU(0.2, inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = maybe_sn(nn.Linear(feature_dim, 1, bias=False), spectral_norm)
        channels_last_(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)

    def layer_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, width_1 + ... + width_n + feature_dim): the spatial mean of each strided conv's
        activation map (N, width_i, H_i, W_i) -> (N, width_i), then f; the multi-layer feature
        vector of a Mahalanobis feature ensemble (Lee et al. 2018), one Gaussian over all layers."""
        return torch.cat(_activations(self.body, x, lambda h: h.mean((2, 3))), 1)  # f's map is (N, F, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Deprecated: (value, features f) of ``x``; call ``features`` and ``head`` instead."""
        from .deprecation import warn

        warn("forward-with-features", "", detail=type(self).__name__)
        f = self.features(x)
        return self.head(f).squeeze(1), f


def _activations(body: nn.Sequential, x: torch.Tensor, summarise) -> list[torch.Tensor]:
    """``summarise`` of the output of every activation layer of ``body`` run on ``x``, in order."""
    out = []
    for layer in body:
        x = layer(x)
        if isinstance(layer, (nn.LeakyReLU, nn.ReLU)):
            out.append(summarise(x).flatten(1))
    return out


def mlp(dims: Sequence[int], *, act: str = "leaky_relu", batchnorm: bool = False, spectral_norm: bool = False, last_act: bool = False) -> nn.Sequential:
    """Linear layers dims[0] -> ... -> dims[-1] with activations between (and after, if last_act)."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(maybe_sn(nn.Linear(dims[i], dims[i + 1]), spectral_norm))
        if i < len(dims) - 2 or last_act:
            if batchnorm:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(nn.LeakyReLU(0.2, inplace=True) if act == "leaky_relu" else nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MLPCritic(nn.Module):
    """Critic on flat (N, F_in) rows: MLP to ``feature_dim`` features f, then Linear(-> 1, no bias)."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (256, 256), feature_dim: int = 64, spectral_norm: bool = False):
        super().__init__()
        self.body = mlp([in_dim, *hidden, feature_dim], spectral_norm=spectral_norm, last_act=True)
        self.head = maybe_sn(nn.Linear(feature_dim, 1, bias=False), spectral_norm)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))

    def layer_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, hidden_1 + ... + feature_dim): every hidden layer's activations, then f."""
        return torch.cat(_activations(self.body, x.flatten(1), lambda h: h), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Deprecated: (value, features f) of ``x``; call ``features`` and ``head`` instead."""
        from .deprecation import warn

        warn("forward-with-features", "", detail=type(self).__name__)
        f = self.features(x)
        return self.head(f).squeeze(1), f



def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP term E[(||grad_x D(x_mix)||_2 - 1)^2] on random interpolates (Gulrajani et al.).

    ``real``/``fake`` are critic inputs of the same shape (for stacked-pair critics: the stacked
    pairs). Multiply by lambda (10 in the papers) outside.
    """
    n = real.shape[0]
    eps = torch.rand((n,) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype, generator=generator)
    mix = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic(mix)
    (grad,) = torch.autograd.grad(out.sum(), mix, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def stack_pair(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The mirrored critic's input (a, b): channel concat for images, feature concat for rows."""
    return torch.cat([a, b], dim=1)


@torch.no_grad()
def recompute_batchnorm(modules: Sequence[nn.Module], forward: Callable[[torch.Tensor], object], batches: Iterable[torch.Tensor]) -> None:
    """Re-estimate the BatchNorm running statistics of ``modules`` from ``forward(batch)`` over
    ``batches``, as an exact (cumulative) average instead of the training-time moving average.

    Use it when the statistics collected in training mix inputs that scoring never sees (e.g. a
    generator that also decoded interpolants and negatives). The modules are left in eval mode.
    """
    norms = [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    for mod in modules:
        mod.train()
    try:
        for batch in batches:
            forward(batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        for mod in modules:
            mod.eval()


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Inside the block the parameters of ``modules`` accumulate no gradient (gradients still flow
    *through* them to earlier networks): e.g. the critic during the generator's update."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
