"""AMA's three networks, adapted to the input shape.

- Encoder E: (N, C, H, W) or (N, F) -> (N, d) latent codes.
- Generator G: (N, d) -> (N, C, H, W) in [-1, 1] (tanh), or (N, F) (linear, for standardised rows).
- Critic D on stacked pairs: (N, 2C, H, W) or (N, 2F) -> (N,) values, with ``features`` f(., .)
  = its penultimate layer, (N, feature_dim), used by the R-score (eq. 5). With the mirrored loss
  switched off (ablation) the critic sees single samples: C channels / F features.

Images use the shape-adaptive ladders of :mod:`anomalykit.nn` (strided 4x4 convolutions, BatchNorm +
LeakyReLU(0.2) in E, BatchNorm + ReLU in G, no normalisation in D so the gradient penalty is
well defined; spectral norm optional), as in the authors' DCGAN-style encoder; flat rows use MLPs.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from anomalykit.sdk import ConvCritic, ConvDecoder, ConvEncoder, MLPCritic, flat_dim, is_image, mlp


def build_networks(
    shape: Sequence[int],
    *,
    latent_dim: int,
    width: int,
    feature_dim: int,
    mirrored: bool,
    spectral_norm: bool,
    hidden: int = 256,
    generator_bn: bool = True,
) -> dict[str, nn.Module]:
    """The encoder, generator and critic for samples of ``shape``: {"encoder", "generator", "critic"}."""
    pair = 2 if mirrored else 1
    if is_image(shape):
        c, h, w = shape
        return {
            "encoder": ConvEncoder(shape, latent_dim, width=width),
            "generator": ConvDecoder(latent_dim, shape, width=width, batchnorm=generator_bn),
            "critic": ConvCritic((pair * c, h, w), feature_dim, width=width, spectral_norm=spectral_norm),
        }
    f = flat_dim(shape)
    return {
        "encoder": nn.Sequential(nn.Flatten(), mlp([f, hidden, hidden // 2, latent_dim], batchnorm=True)),
        "generator": nn.Sequential(mlp([latent_dim, hidden // 2, hidden, f], batchnorm=generator_bn), nn.Unflatten(1, tuple(shape))),
        "critic": MLPCritic(pair * f, (hidden, hidden), feature_dim, spectral_norm=spectral_norm),
    }
