"""Mixed precision: the one home of the ``precision`` parameter (Lightning's names).

- ``"32"`` (default): everything in float32, exactly as without this module;
- ``"bf16-mixed"``: the forward passes of training steps and of scoring run under
  ``torch.autocast(dtype=torch.bfloat16)`` (CPU and CUDA): matrix products and convolutions in
  bfloat16, PyTorch's autocast lists keep reductions, norms and losses in float32;
- ``"16-mixed"``: ``torch.autocast(dtype=torch.float16)`` with a gradient scaler (CUDA only).

The core opens the regions (:func:`autocast`): the trainer around each plugin step
(:class:`anomalykit.training.Trainer`), ``Detector.map_batches`` around each scoring batch, so every
plugin gets mixed precision without code. What stays in float32 whatever the setting: the weights
(and so checkpoints and exports), optimiser states, the spectral-norm power iteration and σ
(:func:`full_precision` in :class:`anomalykit.nn.SpectralNorm`), the loss each ``ctx.update``
checks and steps on, the fused ops' accumulators, the Gaussian scores' statistics (float64) and the
scores handed back (float32, then float64). A plugin opts a part of its own forward out with
``with anomalykit.sdk.full_precision(device_type):``.

On a CPU without bfloat16 units (AMX or AVX512-BF16) bf16 is emulated and slower: ``fit`` warns
once, in one line.
"""
from __future__ import annotations

import contextlib
import warnings
from functools import lru_cache
from typing import Iterator

from .errors import ConfigError

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
_DTYPES = {"bf16-mixed": "bfloat16", "16-mixed": "float16"}  # torch dtype names (torch is imported on use: the CLI starts fast)
_warned_emulated = False


def check(precision: str, device) -> None:
    """One-line ConfigError for a precision the device cannot run; a one-time warning where bf16
    is emulated (a CPU without AMX or AVX512-BF16)."""
    global _warned_emulated
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "16-mixed" and device.type != "cuda":
        raise ConfigError("precision=16-mixed needs a CUDA device (float16 autocast with a gradient scaler); "
                          "use bf16-mixed on a CPU")
    if precision == "bf16-mixed" and device.type == "cpu" and not cpu_bf16_units() and not _warned_emulated:
        _warned_emulated = True
        warnings.warn("anomalykit: this CPU has no bfloat16 units (AMX or AVX512-BF16), so precision=bf16-mixed is "
                      "emulated and slower than precision=32", RuntimeWarning, stacklevel=3)


@contextlib.contextmanager
def autocast(precision: str, device) -> Iterator[None]:
    """The autocast region of ``precision`` on ``device`` (nothing for "32")."""
    dtype = _DTYPES.get(precision)
    if dtype is None:
        yield
        return
    import torch

    with torch.autocast(device_type=device.type, dtype=getattr(torch, dtype)):
        yield


@contextlib.contextmanager
def full_precision(device_type: str) -> Iterator[None]:
    """Inside an autocast region: run this part in the tensors' own dtype (float32)."""
    import torch

    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield


def grad_scaler(precision: str, device):
    """The gradient scaler of ``16-mixed`` (None otherwise)."""
    if precision != "16-mixed":
        return None
    import torch

    return torch.amp.GradScaler(device.type)


@lru_cache(maxsize=1)
def cpu_bf16_units() -> str:
    """The CPU's bfloat16 hardware, "amx_bf16" or "avx512_bf16" (from /proc/cpuinfo), or "" if none."""
    import os

    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if capped and not capped.startswith(("AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX10", "ALL", "DEFAULT")):
        return ""  # oneDNN told to stay below its bfloat16 paths (e.g. CI's AVX2 pass)
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ""
    return next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), "")
