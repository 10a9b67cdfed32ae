"""Turn user data into the float32 tensors detectors work on, or fail with one clear line."""
from __future__ import annotations

import numpy as np
import torch

from .errors import InputError
from .lazy_rows import LazyRows, NpyRows, looks_channel_last
from .value_checks import check_finite, check_float32_range

_VALIDATED = "_anomalykit_validated"
_UINT8 = "_anomalykit_source_uint8"
_SOURCE_SHAPE = "_anomalykit_source_sample_shape"


def source_is_uint8(X) -> bool:
    """True if ``X`` holds uint8 values: a uint8 array or tensor, or a tensor that
    :func:`as_input_tensor` made from one (the dtype the ``auto`` input scaling looks at)."""
    if isinstance(X, torch.Tensor):
        return X.dtype == torch.uint8 or bool(getattr(X, _UINT8, False))
    if isinstance(X, LazyRows):
        return X.uint8
    return getattr(X, "dtype", None) == np.uint8


def as_streamed_input(X, *, name: str = "X"):
    """What the scoring path takes: a :class:`~anomalykit.lazy_rows.LazyRows` as it is, an
    ``np.memmap`` (e.g. ``np.load(f, mmap_mode="r")``) wrapped as one, both read and validated a
    batch at a time; anything else through :func:`as_input_tensor`."""
    if isinstance(X, LazyRows):
        return X
    if isinstance(X, np.memmap):
        return NpyRows(X, name)
    return as_input_tensor(X, name=name)


def source_sample_shape(t: torch.Tensor) -> tuple[int, ...]:
    """The sample shape the user's array had before :func:`as_input_tensor` added a channel
    axis, e.g. (28, 28) for (N, 28, 28) images; ``t``'s own sample shape otherwise."""
    return tuple(getattr(t, _SOURCE_SHAPE, t.shape[1:]))


def as_input_tensor(X, *, name: str = "X") -> torch.Tensor:
    """Validate ``X`` and return it as a contiguous CPU tensor: float32, or uint8 when the values
    are uint8 (kept compact, a quarter of the memory: the fitted preprocessor scales them to
    float32 batch by batch, so scoring 70,000 uint8 images never holds a float copy of all of them).

    Accepted shapes: (N, F) tabular rows, (N, H, W) grayscale images (a channel axis is
    added), (N, C, H, W) images; uint8 (N, H, W, C) images move their channels first
    (:func:`looks_channel_last`). Other integer, boolean and float inputs are converted to float32.
    Raises :class:`InputError` for anything else: other ranks, zero rows or features,
    complex/object/string dtypes, NaN/inf, or values beyond float32's range.

    The returned tensor is marked as validated, so passing it on (the pipeline validates a
    split before writing a run folder, then hands it to ``fit``) costs no second pass; it also
    remembers whether the values were uint8 (:func:`source_is_uint8`), so the fitted input
    scaling is the same whichever entry point converted them.
    """
    if isinstance(X, torch.Tensor) and getattr(X, _VALIDATED, False):
        return X
    if isinstance(X, LazyRows):
        return as_input_tensor(X.read_all(), name=name)
    uint8 = source_is_uint8(X)
    if isinstance(X, torch.Tensor):
        t = X.detach()
        if t.is_complex():
            raise InputError(f"{name} has complex dtype {t.dtype}; pass real-valued data")
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype == torch.float64:
            check_finite(t, name)
            check_float32_range(t, name)
    else:
        try:
            arr = np.asarray(X)
        except Exception as exc:  # ragged lists etc.
            raise InputError(f"{name} could not be read as an array ({exc}); pass a numpy array or tensor") from None
        if arr.dtype == object or arr.dtype.kind in "USVMmO":
            raise InputError(f"{name} has dtype {arr.dtype}; pass numbers (float or integer)")
        if arr.dtype.kind == "c":
            raise InputError(f"{name} has complex dtype {arr.dtype}; pass real-valued data")
        if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
            t64 = torch.from_numpy(np.ascontiguousarray(arr))
            check_finite(t64, name)
            check_float32_range(t64, name)
        keep = np.uint8 if uint8 else np.float32
        t = torch.from_numpy(np.array(arr, dtype=keep, copy=True)) if arr.dtype != keep else torch.from_numpy(arr.copy())
    if t.ndim not in (2, 3, 4):
        raise InputError(
            f"{name} has {t.ndim} dimension(s) {tuple(t.shape)}; expected (N, F) rows, (N, H, W) or (N, C, H, W) images"
        )
    if t.shape[0] == 0:
        raise InputError(f"{name} is empty (0 rows); pass at least one sample")
    if any(s == 0 for s in t.shape[1:]):
        raise InputError(f"{name} has an empty feature axis {tuple(t.shape)}")
    if looks_channel_last(tuple(t.shape), uint8):
        t = t.permute(0, 3, 1, 2)
    source_shape = tuple(int(s) for s in t.shape[1:])
    if t.ndim == 3:
        t = t.unsqueeze(1)
    if uint8:
        t = t.contiguous()
    else:
        t = t.to(torch.float32).contiguous()
        check_finite(t, name)
    setattr(t, _VALIDATED, True)  # views and copies made later are new objects without the marks
    if uint8:
        setattr(t, _UINT8, True)
    setattr(t, _SOURCE_SHAPE, source_shape)
    return t


def as_label_tensor(y, n: int, *, name: str = "y") -> torch.Tensor:
    """Validate optional labels (1 = known anomaly, 0 = normal) of length ``n``; int64 tensor."""
    t = torch.as_tensor(np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y))
    if t.ndim != 1 or t.shape[0] != n:
        raise InputError(f"{name} must be a 1-D array of {n} labels (one per row of X); got shape {tuple(t.shape)}")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise InputError(f"{name} contains NaN or inf")
    values = set(torch.unique(t).tolist())
    if not values <= {0, 1}:
        raise InputError(f"{name} must contain only 0 (normal) and 1 (anomaly); found {sorted(values)[:5]}")
    return t.to(torch.int64)
