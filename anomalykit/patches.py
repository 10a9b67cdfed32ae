"""Patch mode for images: train on random crops, score by sliding windows (one home for the policy).

With ``patch_size`` set, ``fit`` trains the method on ``patches_per_image`` random crops of each
normal training image (seeded; the networks are built for the crop shape), the way the MVTec AD
paper trained its autoencoders on textures: many more samples per image than whole-image training,
and a model of the local texture rather than of whole images. Scoring slides a window of the same
size over each image with stride ``patch_stride`` (the last window of a row or column flush with
the border, so every pixel is covered):

- the image's score is the ``patch_score`` of its windows' scores: their maximum, or the mean of
  the top 10% (``top10``), so one defect in a large good image still counts;
- its anomaly map puts each window's map back where it came from and averages the overlaps (a
  window's map is the method's ``_anomaly_map``, or its score spread over the window for a method
  without maps), then ``Detector.anomaly_map`` smooths it as usual;
- its reconstruction is assembled the same way from the windows' reconstructions.

Every method gets this without code: plugins see crops as their rows. The image shape and the
patch size are fixed at ``fit`` (scored images have the training images' size; a ``patch_size``
changed later takes effect at the next ``fit``, and ``load`` refuses to change it). ``patch_stride``
and ``patch_score`` change the scores of a fitted model, so ``predict`` and the calibrated alarms
refuse values other than the ones the threshold was computed with (:data:`SCORE_PARAMS`).

Thresholds: ``contamination`` takes its quantile of the training images' own scores, and their
windows overlap the crops the model learned, so they score lower than new normal images would and
the threshold errs low (more alarms than ``contamination`` says). For a false-alarm rate you can
rely on, set ``calibration``: its held-out images are never cropped for training.
"""
from __future__ import annotations

import math

import torch

from .errors import ConfigError, InputError
from .seeds import stream_seed

PATCH_SCORES = ("max", "top10")
#: the core's parameters that change a fitted patch-mode model's scores (checked like a plugin's ``score_params``)
SCORE_PARAMS = frozenset({"patch_stride", "patch_score"})


def check(image_shape: tuple[int, ...], patch_size: int, patch_stride: int | None = None) -> None:
    """One-line refusal of a patch mode that cannot work on images of ``image_shape`` (C, H, W)."""
    if len(image_shape) != 3:
        raise ConfigError(f"patch_size needs images (N, C, H, W); this data has rows of shape {image_shape}")
    if min(image_shape[1:]) < patch_size:
        raise InputError(f"patch_size={patch_size} is larger than the images ({image_shape[1]}x{image_shape[2]}); lower it")
    stride_of(patch_size, patch_stride)


def random_crops(X, size: int, per_image: int, seed: int) -> torch.Tensor:
    """(N * per_image, C, size, size): ``per_image`` random crops of every row of ``X`` (a tensor
    or lazy rows, read a batch at a time), positions drawn from the run's seeded stream."""
    from .lazy_rows import row_batches

    n, _, h, w = X.shape
    g = torch.Generator().manual_seed(stream_seed(seed, "patches"))
    ys = torch.randint(0, h - size + 1, (n, per_image), generator=g)
    xs = torch.randint(0, w - size + 1, (n, per_image), generator=g)
    out = []
    lo = 0
    for batch in row_batches(X, 0, n, 256):
        for j in range(batch.shape[0]):
            image = batch[j]
            for y, x in zip(ys[lo + j].tolist(), xs[lo + j].tolist()):
                out.append(image[:, y : y + size, x : x + size])
        lo += batch.shape[0]
    return torch.stack(out).contiguous()


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Start positions of windows of ``size`` every ``stride`` along ``length``, the last flush with the end."""
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def windows(x: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """(n, C, H, W) -> (n * L, C, size, size): every window, row-major within each image."""
    n, c, h, w = x.shape
    ys, xs = window_starts(h, size, stride), window_starts(w, size, stride)
    crops = [x[:, :, y : y + size, x0 : x0 + size] for y in ys for x0 in xs]
    return torch.stack(crops, 1).reshape(n * len(crops), c, size, size)


def assemble(per_window: torch.Tensor, n: int, height: int, width: int, size: int, stride: int) -> torch.Tensor:
    """(n * L, *lead, size, size) window values -> (n, *lead, H, W): each window's values put back
    where it came from, overlaps averaged."""
    ys, xs = window_starts(height, size, stride), window_starts(width, size, stride)
    vals = per_window.reshape(n, len(ys) * len(xs), *per_window.shape[1:])
    lead = vals.shape[2:-2]
    total = per_window.new_zeros((n, *lead, height, width), dtype=torch.float32)
    count = per_window.new_zeros((height, width), dtype=torch.float32)
    k = 0
    for y in ys:
        for x in xs:
            total[..., y : y + size, x : x + size] += vals[:, k].float()
            count[y : y + size, x : x + size] += 1
            k += 1
    return total / count


def image_score(window_scores: torch.Tensor, n: int, how: str) -> torch.Tensor:
    """(n * L,) -> (n,): the max of each image's windows, or the mean of their top 10% (rounded up)."""
    per_image = window_scores.reshape(n, -1).float()
    if how == "max":
        return per_image.max(1).values
    k = max(1, math.ceil(0.1 * per_image.shape[1]))
    return per_image.topk(k, dim=1).values.mean(1)


def n_windows(shape: tuple[int, ...], size: int, stride: int) -> int:
    return len(window_starts(shape[1], size, stride)) * len(window_starts(shape[2], size, stride))


def stride_of(size: int, stride: int | None) -> int:
    """The windows' stride: ``stride``, or half the patch size; one larger than the patch would
    leave pixels no window covers (a one-line :class:`ConfigError`)."""
    if stride is None:
        return max(1, size // 2)
    if stride > size:
        raise ConfigError(f"patch_stride={stride} is larger than patch_size={size}, so some pixels would lie in no window; "
                          f"use patch_stride <= {size}")
    return stride


def score_images(score_fn, x: torch.Tensor, size: int, stride: int, how: str, batch: int | None) -> torch.Tensor:
    """Image scores (n,) of a model-space batch ``x`` (n, C, H, W): windows scored ``batch`` at a
    time (None: all at once, the fixed sequence of ops an exported graph records)."""
    w = windows(x, size, stride)
    if batch is None:
        return image_score(score_fn(w), x.shape[0], how)
    scores = torch.cat([score_fn(w[lo : lo + batch]) for lo in range(0, w.shape[0], batch)])
    return image_score(scores, x.shape[0], how)


def map_images(map_fn, score_fn, x: torch.Tensor, size: int, stride: int, batch: int) -> torch.Tensor:
    """Anomaly maps (n, H, W) of a model-space batch ``x``: each window's map (``map_fn``, or its
    score spread over the window where the method has no map) put back, overlaps averaged."""
    w = windows(x, size, stride)
    parts = []
    for lo in range(0, w.shape[0], batch):
        chunk = w[lo : lo + batch]
        m = map_fn(chunk)
        if m is None:
            m = score_fn(chunk).float()[:, None, None].expand(chunk.shape[0], size, size)
        parts.append(m.float())
    return assemble(torch.cat(parts), x.shape[0], x.shape[2], x.shape[3], size, stride)


def mvtec_defaults() -> dict:
    """What ``anomalykit run``/``bench`` set on an MVTec-layout folder when the user did not
    (textures and objects with local defects; chosen on the validation halves of the texture sets)."""
    return {"patch_size": 16, "patches_per_image": 64, "max_steps": 1000, "epochs": 100}

