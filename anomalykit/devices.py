"""Which torch device a run uses: one rule for the detector, the CLI and torchrun."""
from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(spec: str, *, distributed: bool = False) -> torch.device:
    """``spec`` (cpu, cuda, cuda:N or auto) as a torch.device: ``auto`` is cuda when available, else
    cpu. Under torchrun (``distributed``) a bare ``cuda`` is this process's current device (set
    from LOCAL_RANK when the process group was joined). Unavailable or malformed devices are a
    one-line :class:`ConfigError`."""
    d = str(spec).strip()
    if d == "auto":
        d = "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {d!r} requested but CUDA is not available; use --device cpu")
    try:
        dev = torch.device(d)
    except RuntimeError:
        raise ConfigError(f"device {d!r} is not a valid torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and dev.index is None and distributed:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev
