"""The value checks every entry point applies to float input: finite, and within float32's range.
One home, so an in-memory array and rows read from disk fail the same way."""
from __future__ import annotations

import numpy as np
import torch

from .errors import InputError

FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_finite(t: torch.Tensor, name: str, rows: np.ndarray | None = None, chunk_elements: int = 1 << 22) -> None:
    """NaN/inf check of (N, ...) float ``t`` in row chunks (the temporary mask stays small). The
    error names the first bad row: its index in ``t`` (with the count of bad values), or
    ``rows[i]`` where ``t`` is a batch read from a file (``rows``: the file rows of the batch)."""
    if t.numel() == 0:
        return
    step = max(1, chunk_elements // max(1, t[0].numel()))
    for start in range(0, t.shape[0], step):
        bad = ~torch.isfinite(t[start : start + step])
        if bool(bad.any()):
            first = start + int(bad.reshape(bad.shape[0], -1).any(1).nonzero()[0, 0])
            if rows is not None:
                raise InputError(f"{name} contains NaN/inf values (first in row {int(rows[first])}); clean or impute them first")
            count = sum(int((~torch.isfinite(t[s : s + step])).sum()) for s in range(0, t.shape[0], step))
            raise InputError(f"{name} contains {count} NaN/inf value(s) (first in row {first}); clean or impute them first")


def check_float32_range(t: torch.Tensor, name: str) -> None:
    """Finite values of a wider float type (float64) must fit float32, the detectors' dtype."""
    if t.numel() and float(t.abs().max()) > FLOAT32_MAX:
        raise InputError(f"{name} has values beyond float32 range (|x| > {FLOAT32_MAX:.3g}); rescale the data")
