"""The five sub-networks of CSI-AAE (paper, section 2.2 and Figure 1).

- F (:class:`FeatureExtractor`): a small ResNet (the paper: ResNet-18 on 32x32) with a SimCLR
  projection head (the representation z compared by cosine similarity in eq. 1, 8 and 11) and a
  4-way rotation head (eq. 3). Depth and width are parameters sized for a CPU.
- E, G: the shared shape-adaptive conv encoder/decoder of anomalykit (``anomalykit.nn``);
  G's architecture mirrors E (the paper: "the architecture of encoder E is symmetric to G").
- D (:class:`ImageDiscriminator`): real vs synthetic G(h) vs reconstruction G(E(x)) (eq. 7); a
  conv discriminator with optional spectral norm (the paper follows SN-GAN [23]).
- D' (:class:`LatentDiscriminator`): prior sample h ~ N(0, I) vs code E(x) (eq. 9); an MLP.

The discriminators return logits; the losses apply the log-sigmoid.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from anomalykit.sdk import ConvCritic, channels_last_, mlp


class BasicBlock(nn.Module):
    """ResNet basic block: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class FeatureExtractor(nn.Module):
    """F: (N, C, H, W) -> backbone features (N, D), D = width * 2**(stages - 1).

    A 3x3 stem conv with stride ``stem_stride`` (1 as in CIFAR ResNets; 2 quarters the cost on
    28x28 inputs), then ``stages`` stages of ``blocks`` basic blocks; each stage after the first
    halves the side (while it is >= 4) and doubles the width; global average pooling. Heads:

    - ``project(h)``: SimCLR projection MLP D -> D -> proj_dim, the z of eq. 1/8/11 (N, proj_dim);
    - ``rotation(h)``: Linear D -> n_shifts, rotation logits for eq. 3 (N, n_shifts); absent
      (``n_shifts=0``, logits None) when eq. 3 is switched off, so that no parameter goes unused.

    ``forward(x)`` returns (z, rotation logits or None, h).
    """

    def __init__(self, shape: Sequence[int], width: int = 16, stages: int = 3, blocks: int = 1, proj_dim: int = 128, n_shifts: int = 4, stem_stride: int = 1):
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = [nn.Conv2d(c, width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        c_in, side = width, (min(h, w) - 1) // stem_stride + 1
        for s in range(stages):
            c_out = width * 2**s
            for b in range(blocks):
                stride = 2 if (s > 0 and b == 0 and side >= 4) else 1
                side = (side + 1) // 2 if stride == 2 else side
                layers.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.feature_dim = c_in
        self.projection = nn.Sequential(nn.Linear(c_in, c_in), nn.ReLU(inplace=True), nn.Linear(c_in, proj_dim))
        self.rotation_head = nn.Linear(c_in, n_shifts) if n_shifts > 0 else None
        channels_last_(self)  # with speed-ups on: the layout oneDNN runs fastest (~1.4x for F on 28x28)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return self.projection(h)

    def rotation(self, h: torch.Tensor) -> torch.Tensor:
        return self.rotation_head(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        h = self.body(x)
        return self.projection(h), (None if self.rotation_head is None else self.rotation_head(h)), h


class ImageDiscriminator(nn.Module):
    """D: (N, C, H, W) -> (N,) logits of "real". Strided convs + LeakyReLU (``anomalykit.nn.ConvCritic``)."""

    def __init__(self, shape: Sequence[int], width: int = 32, spectral_norm: bool = True):
        super().__init__()
        self.net = ConvCritic(shape, feature_dim=4 * width, width=width, spectral_norm=spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LatentDiscriminator(nn.Module):
    """D': (N, latent_dim) -> (N,) logits of "drawn from the prior N(0, I)"."""

    def __init__(self, latent_dim: int, hidden: int = 128):
        super().__init__()
        self.net = mlp([latent_dim, hidden, hidden, 1])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).squeeze(1)
