"""Networks of MAE-simplex: encoder E, generator G, reconstruction critic D_recon, interpolation
critic D_inter (paper supplementary, Tables 2-5).

Images (C, H, W) follow the MNIST table (Table 2), made shape-adaptive with the core's ladder
(28 -> 14 -> 7, 8 -> 4, 32 -> 16 -> 8 -> 4):

- E: stride-2 4x4 convs (width, 2*width, ...) + LeakyReLU(0.2), Dense(hidden) + LeakyReLU(0.2),
  Dense(latent_dim). (N, C, H, W) -> (N, d).
- G: Dense(d -> hidden) + ReLU, then the core's ConvDecoder (a dense map to the smallest side,
  stride-2 transposed convs with BatchNorm + ReLU, tanh). (N, d) -> (N, C, H, W) in [-1, 1].
- D_recon, D_inter: the same trunk as E on channel-stacked pairs (2C channels), Dense(hidden) +
  LeakyReLU(0.2) = the penultimate features f, then Dense(1) without bias (the core's
  ConvCritic, whose last "valid" conv is exactly a dense layer on the flattened map).
  (N, 2C, H, W) -> (N,); ``features``: (N, 2C, H, W) -> (N, hidden).

Flat rows (F,) get MLPs sized from F by :func:`tabular_dims`, a rule that reproduces the
supplementary's KDD99 (F=121), Arrhythmia (F=274) and Thyroid (F=6) tables closely.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from anomalykit.sdk import ConvCritic, ConvDecoder, MLPCritic, flat_dim, mlp


class ImageEncoder(nn.Module):
    """E: (N, C, H, W) -> (N, latent_dim). Conv trunk + Dense(hidden) + LeakyReLU, Dense(d)."""

    def __init__(self, shape: Sequence[int], latent_dim: int, width: int, hidden: int):
        super().__init__()
        # ConvCritic's body is the Table 2 trunk: strided convs, then Dense(hidden) + LeakyReLU.
        self.trunk = ConvCritic(shape, feature_dim=hidden, width=width).body
        self.out = nn.Linear(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(x).flatten(1))


class ImageGenerator(nn.Module):
    """G: (N, latent_dim) -> (N, C, H, W) in [-1, 1]. Dense(hidden) + ReLU, then ConvDecoder."""

    def __init__(self, latent_dim: int, shape: Sequence[int], width: int, hidden: int):
        super().__init__()
        self.head = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True))
        self.body = ConvDecoder(hidden, shape, width=width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.head(z))


class TabularEncoder(nn.Module):
    """E: (N, F) -> (N, d). Linear layers with LeakyReLU(0.2) between them."""

    def __init__(self, dims: Sequence[int]):
        super().__init__()
        self.net = mlp(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TabularGenerator(nn.Module):
    """G: (N, d) -> (N, F). Linear layers with ReLU between them; linear output (rows are
    standardised by the protocol, not squashed to [-1, 1])."""

    def __init__(self, dims: Sequence[int]):
        super().__init__()
        self.net = mlp(dims, act="relu")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@dataclass(frozen=True)
class TabularDims:
    """Layer widths of the four MLPs for F input features (see :func:`tabular_dims`)."""

    encoder: tuple[int, ...]  # F -> ... -> d
    generator: tuple[int, ...]  # d -> ... -> F
    recon_hidden: tuple[int, ...]  # D_recon hidden widths before the features
    recon_features: int  # D_recon penultimate width (the anomaly-score features f)
    inter_hidden: tuple[int, ...]
    inter_features: int


def _pow2(v: float) -> int:
    return 2 ** int(round(math.log2(max(v, 1.0))))


def tabular_dims(n_features: int, latent_dim: int | None = None) -> TabularDims:
    """Widths from the input width F (the supplementary's Tables 3-5, as a rule):

    - latent d = the power of two nearest F/4, clipped to [4, 64] (KDD99 121 -> 32,
      Arrhythmia 274 -> 64, Thyroid 6 -> 4: exactly the tables);
    - E: F -> h [-> h/2 while > d] -> d with h = max(2d, min(256, largest power of two <= F))
      (KDD99 121-64-32, Arrhythmia 274-256-128-64: the tables; Thyroid 6-8-4 vs 6-12-4);
    - G: d -> 2d -> 4d -> F (KDD99 32-64-128-121, Arrhythmia 64-128-256-274: the tables);
    - D_recon: 2F -> hd -> min(32, hd/2) features -> 1 with hd = min(256, power of two >= F)
      (KDD99 242-128-32 vs 242-128-25, Arrhythmia 548-256-32: the table);
    - D_inter: 2F -> hd -> hd/2 -> 1 (KDD99 242-128-64-1: the table).
    """
    f = int(n_features)
    d = int(latent_dim) if latent_dim is not None else min(64, max(4, _pow2(f / 4)))
    h = max(2 * d, min(256, 2 ** int(math.floor(math.log2(max(f, 1))))))
    enc = [f, h]
    while enc[-1] // 2 > d:
        enc.append(enc[-1] // 2)
    enc.append(d)
    hd = min(256, 2 ** int(math.ceil(math.log2(max(f, 2)))))
    return TabularDims(
        encoder=tuple(enc),
        generator=(d, 2 * d, 4 * d, f),
        recon_hidden=(hd,),
        recon_features=max(2, min(32, hd // 2)),
        inter_hidden=(hd,),
        inter_features=max(2, hd // 2),
    )


def build_networks(
    input_shape: Sequence[int], *, latent_dim: int | None, width: int, hidden: int, spectral_norm: bool, image: bool
) -> tuple[nn.ModuleDict, int]:
    """E, G, D_recon, D_inter for ``input_shape``; returns (nets, latent dimension d).

    ``spectral_norm`` wraps D_recon's layers (the Lipschitz constraint of the Wasserstein
    critic); D_inter is a least-squares regressor and has no constraint (as in the paper).
    """
    nets = nn.ModuleDict()
    if image:
        c, h, w = input_shape
        d = 64 if latent_dim is None else int(latent_dim)
        nets["encoder"] = ImageEncoder(input_shape, d, width, hidden)
        nets["generator"] = ImageGenerator(d, input_shape, width, hidden)
        pair = (2 * c, h, w)
        nets["d_recon"] = ConvCritic(pair, feature_dim=hidden, width=width, spectral_norm=spectral_norm)
        nets["d_inter"] = ConvCritic(pair, feature_dim=hidden, width=width)
    else:
        f = flat_dim(input_shape)
        dims = tabular_dims(f, latent_dim)
        d = dims.encoder[-1]
        nets["encoder"] = TabularEncoder(dims.encoder)
        nets["generator"] = TabularGenerator(dims.generator)
        nets["d_recon"] = MLPCritic(2 * f, dims.recon_hidden, dims.recon_features, spectral_norm=spectral_norm)
        nets["d_inter"] = MLPCritic(2 * f, dims.inter_hidden, dims.inter_features)
    return nets, d
