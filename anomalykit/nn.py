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
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn


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
    return _sn(module) if on else module


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
        layers.append(nn.Conv2d(chans[-1], latent_dim, (hs[-1], ws[-1])))
        self.net = nn.Sequential(*layers)
        self.sides = list(zip(hs, ws))

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
            nn.ConvTranspose2d(latent_dim, chans[0], (hs[-1], ws[-1]), bias=not batchnorm),
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

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


class ConvCritic(nn.Module):
    """Critic on (N, C_in, H, W) (C_in = 2C for stacked pairs). Strided convs + LeakyReLU(0.2),
    no BatchNorm (gradient penalty friendly), a valid conv to ``feature_dim`` channels + LeakyReLU
    giving the penultimate features f, then Linear(feature_dim -> 1, no bias).

    ``forward(x)`` returns the (N,) critic values; ``features(x)`` the (N, feature_dim) f.
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
        layers += [maybe_sn(nn.Conv2d(chans[-1], feature_dim, (hs[-1], ws[-1])), spectral_norm), nn.LeakyReLU(0.2, inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = maybe_sn(nn.Linear(feature_dim, 1, bias=False), spectral_norm)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.head(f).squeeze(1), f


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
