"""Shifting transformations S and augmentations T of CSI / SimCLR, in pure torch.

Images are (N, C, H, W) in [-1, 1]. Every random draw takes a ``torch.Generator`` (the
trainer's ``ctx.generator``) so training is reproducible and resumable bitwise.

- :func:`rotate` / :func:`shift_batch`: the shifted instances S = rotations by 0, 90, 180, 270
  degrees (exact: ``torch.rot90``, no interpolation).
- :class:`Augment`: T ~ the SimCLR family, per sample: random resized crop (bilinear),
  brightness/contrast jitter (plus saturation for RGB and random grayscale), Gaussian blur.
  Crop-and-resize and blur are separable, so each is a pair of batched matrix products with
  per-sample (H, H) and (W, W) matrices -- much faster on a CPU than ``grid_sample`` or a
  grouped convolution with per-sample kernels. Random horizontal flip is :func:`random_flip`, applied *before*
  the rotation (as in CSI's code) so that a flip never turns a 90-degree rotation into a
  270-degree one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Number of shifting transformations (rotations by k * 90 degrees, k = 0..3).
N_ROTATIONS = 4


def rotate(x: torch.Tensor, k: int) -> torch.Tensor:
    """Rotate (N, C, H, W) images by k * 90 degrees counter-clockwise (exact, ``torch.rot90``)."""
    return torch.rot90(x, k % N_ROTATIONS, dims=(2, 3))


def shift_batch(x: torch.Tensor, n_shifts: int = N_ROTATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """All shifted instances of a batch: (N, C, H, W) -> ((n_shifts * N, C, H, W), labels (n_shifts * N,)).

    Rows are grouped by shift: rows [k*N, (k+1)*N) hold ``rotate(x, k)``; labels are k.
    ``n_shifts = 1`` gives the batch itself (plain SimCLR, no shifted instances).
    """
    out = torch.cat([rotate(x, k) for k in range(n_shifts)])
    labels = torch.arange(n_shifts, device=x.device).repeat_interleave(x.shape[0])
    return out, labels


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device)


def _coin(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, device=g.device) < p


def random_flip(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with probability p."""
    flip = _coin(x.shape[0], p, g).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def _separable(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Apply per-sample linear maps along both image axes: rows (n, H', H) @ x (n, C, H, W) @ cols (n, W', W)^T."""
    return rows.unsqueeze(1) @ x @ cols.unsqueeze(1).transpose(2, 3)


def _resize_matrix(size: int, frac: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling matrices (n, size, size) of the 1-D crop [centre - frac, centre + frac]
    (normalised coordinates, ``align_corners=False``, border padding), resized back to ``size``."""
    out = (2 * torch.arange(size, device=frac.device, dtype=frac.dtype) + 1) / size - 1  # output pixel centres
    src = frac.view(-1, 1) * out.view(1, -1) + centre.view(-1, 1)  # (n, size) source coordinates
    pix = ((src + 1) * size - 1) / 2  # source pixel index (fractional)
    pix = pix.clamp(0, size - 1)
    grid = torch.arange(size, device=frac.device, dtype=frac.dtype)
    return (1 - (pix.unsqueeze(2) - grid.view(1, 1, -1)).abs()).clamp_min(0)  # hat function = bilinear weights


def random_resized_crop(x: torch.Tensor, g: torch.Generator, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        shared: bool = False) -> torch.Tensor:
    """Per-sample random crop of area fraction ~ U(scale) and aspect ratio log-uniform in
    ``ratio``, resized back to (H, W) with bilinear interpolation. Sides are clamped to the
    image (where torchvision would retry), so every crop lies inside the image. An axis-aligned
    crop + resize is separable, so it is two batched matrix products (the same sampling as
    ``affine_grid`` + ``grid_sample(bilinear, border, align_corners=False)``). ``shared``: one
    crop for the whole batch (a fixed transform)."""
    n, _, hgt, wid = x.shape
    n = 1 if shared else n
    area = _uniform(n, scale[0], scale[1], g)
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), g)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)  # fractions of the side
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (1 - w) * (2 * torch.rand(n, generator=g, device=g.device) - 1)  # centre in [-1, 1] coords
    cy = (1 - h) * (2 * torch.rand(n, generator=g, device=g.device) - 1)
    rows = _resize_matrix(hgt, h.to(x.dtype), cy.to(x.dtype))
    cols = _resize_matrix(wid, w.to(x.dtype), cx.to(x.dtype))
    return _separable(x, rows, cols)


def color_jitter(x: torch.Tensor, g: torch.Generator, strength: float = 0.4, p: float = 0.8, gray_p: float = 0.2,
                 shared: bool = False) -> torch.Tensor:
    """Brightness and contrast jitter (factors ~ U[1 - s, 1 + s]) with probability p; for RGB
    also saturation jitter and random grayscale (probability gray_p). Works in [0, 1].
    ``shared``: one draw for the whole batch."""
    n, c = x.shape[:2]
    n = 1 if shared else n
    u = (x + 1) / 2
    on = _coin(n, p, g).view(-1, 1, 1, 1)
    b = _uniform(n, 1 - strength, 1 + strength, g).view(-1, 1, 1, 1)
    ct = _uniform(n, 1 - strength, 1 + strength, g).view(-1, 1, 1, 1)
    j = (u * b).clamp(0, 1)
    gray = j.mean(1, keepdim=True) if c == 1 else (0.299 * j[:, :1] + 0.587 * j[:, 1:2] + 0.114 * j[:, 2:3])
    mean = gray.mean((1, 2, 3), keepdim=True)
    j = (mean + ct * (j - mean)).clamp(0, 1)
    if c == 3:
        s = _uniform(n, 1 - strength, 1 + strength, g).view(-1, 1, 1, 1)
        gray = 0.299 * j[:, :1] + 0.587 * j[:, 1:2] + 0.114 * j[:, 2:3]
        j = (gray + s * (j - gray)).clamp(0, 1)
        to_gray = _coin(n, gray_p, g).view(-1, 1, 1, 1)
        j = torch.where(to_gray, (0.299 * j[:, :1] + 0.587 * j[:, 1:2] + 0.114 * j[:, 2:3]).expand_as(j), j)
    u = torch.where(on, j, u)
    return u * 2 - 1


def _blur_matrix(size: int, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian smoothing matrices (n, size, size): row o holds exp(-(o - i)^2 / 2 sigma^2),
    renormalised to sum 1 (the kernel is truncated at the border rather than reflected)."""
    t = torch.arange(size, device=sigma.device, dtype=sigma.dtype)
    d2 = (t.view(-1, 1) - t.view(1, -1)).pow(2)
    k = torch.exp(-d2.unsqueeze(0) / (2 * sigma.view(-1, 1, 1) ** 2))
    return k / k.sum(2, keepdim=True)


def gaussian_blur(x: torch.Tensor, g: torch.Generator, sigma: tuple[float, float] = (0.1, 1.0), p: float = 0.5,
                  shared: bool = False) -> torch.Tensor:
    """Per-sample Gaussian blur with sigma ~ U(sigma) (pixels), with probability p; separable,
    as two batched matrix products. ``shared``: one draw for the whole batch."""
    n, _, hgt, wid = x.shape
    n = 1 if shared else n
    s = _uniform(n, sigma[0], sigma[1], g).to(x.dtype)
    on = _coin(n, p, g).view(-1, 1, 1)
    rows, cols = _blur_matrix(hgt, s), _blur_matrix(wid, s)
    eye_h = torch.eye(hgt, device=x.device, dtype=x.dtype).expand_as(rows)
    eye_w = torch.eye(wid, device=x.device, dtype=x.dtype).expand_as(cols)
    return _separable(x, torch.where(on, rows, eye_h), torch.where(on, cols, eye_w))


@dataclass(frozen=True)
class Augment:
    """T ~ 𝒯 of the paper (SimCLR's family minus the flip, see :func:`random_flip`)."""

    crop_scale: float = 0.08  # smallest crop area fraction
    jitter: float = 0.4  # brightness/contrast(/saturation) strength
    blur_sigma: float = 1.0  # largest blur sigma in pixels; 0 disables the blur

    def __call__(self, x: torch.Tensor, g: torch.Generator, *, shared: bool = False) -> torch.Tensor:
        """T(x) with per-sample draws, or with ``shared=True`` one draw applied to every sample
        (a fixed transformation T_r, as the ensemble score M_ens uses)."""
        if self.crop_scale < 1.0:
            x = random_resized_crop(x, g, scale=(self.crop_scale, 1.0), shared=shared)
        if self.jitter > 0:
            x = color_jitter(x, g, strength=self.jitter, shared=shared)
        if self.blur_sigma > 0:
            x = gaussian_blur(x, g, sigma=(min(0.1, self.blur_sigma), self.blur_sigma), shared=shared)
        return x
