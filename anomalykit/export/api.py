"""``export()``: the argument checks, the build, the parity check and the atomic write, in that
order; nothing is written unless the check passes (see :mod:`anomalykit.export`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import atomic_write_bytes
from ..errors import ConfigError, ExportError
from .graph import SUFFIXES, _build_with, format_of
from .verify import _verify

#: A fitted :class:`anomalykit.Detector` (not imported here: detector.py imports this package).
Detector = Any


@dataclass(frozen=True)
class ExportResult:
    """What ``export`` wrote and how closely it matches ``score_samples``."""

    path: Path
    format: str
    batch_size: int | None  # None = dynamic
    bytes: int
    max_deviation: float  # max |exported - score_samples| / max |score_samples| over the check
    checked_batch_sizes: tuple[int, ...]

    def line(self) -> str:
        batch = "dynamic batch" if self.batch_size is None else f"batch size {self.batch_size}"
        sizes = self.checked_batch_sizes
        where = (f"on {len(sizes)} batches of {sizes[0]} rows" if len(set(sizes)) == 1
                 else "at batch sizes " + " and ".join(str(b) for b in sizes))
        return (f"{self.path} ({self.format}, {batch}, {self.bytes / 1e6:.2f} MB); scores match score_samples to "
                f"{self.max_deviation:.1e} of the largest score {where}")


def export(det: Detector, path: str | os.PathLike, *, format: str | None = None, batch_size: int | str | None = "dynamic",
           verify: bool = True) -> ExportResult:
    """Export the fitted ``det`` to ``path`` (see :mod:`anomalykit.export`). Written atomically after
    the parity check passes. ``batch_size``: ``"dynamic"`` (default) or a fixed row count (the
    ONNX input shape is then fixed; TorchScript graphs of traced methods accept any batch)."""
    fmt = format_of(path, format)
    fixed = _batch_size(batch_size)
    det._check_fitted("export")
    det.require_current_threshold("export")  # the graph's metadata carries threshold_
    reason = getattr(det, "export_unsupported", None)
    if reason:
        raise ExportError(f"{det.name} cannot be exported: {reason}")
    needs_grad = bool(getattr(det, "score_needs_grad", False))
    if needs_grad and fmt == "onnx":
        raise ExportError(f"{det.name} cannot be exported to ONNX: its score takes gradient steps per row (autograd inside "
                          "scoring), which an ONNX graph cannot hold; use format torchscript")
    if fmt == "onnx":
        _require_onnx()
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"export path {path} is a folder; give a file name, e.g. {path / ('model' + SUFFIXES[fmt])}")
    device, precision = det.hp.device, det.hp.precision
    if det.device.type != "cpu":  # exported graphs are traced on the CPU
        det.set_params(device="cpu")
    if precision != "32":  # exported graphs compute in float32, and are checked against float32 scores
        det.set_params(precision="32")
    try:
        data = _build_with(det, det._export_params(), fmt, fixed, needs_grad)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.export-check{path.suffix}")
        try:
            tmp.write_bytes(data)
            deviation, sizes = _verify(det, tmp, fixed) if verify else (float("nan"), ())
        finally:
            tmp.unlink(missing_ok=True)
        atomic_write_bytes(path, data)
    finally:
        if det.hp.device != device or det.hp.precision != precision:
            det.set_params(device=device, precision=precision)
    return ExportResult(path, fmt, fixed, len(data), deviation, sizes)


def _require_onnx() -> None:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if not _importable(m)]
    if missing:
        raise ConfigError(f"ONNX export needs {', '.join(missing)}: pip install 'anomalykit[export]'")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _batch_size(batch_size) -> int | None:
    if batch_size is None or batch_size == "dynamic":
        return None
    try:
        value = int(batch_size)
    except (TypeError, ValueError):
        value = 0
    if isinstance(batch_size, bool) or value < 1 or str(value) != str(batch_size).strip():
        raise ConfigError(f"batch size must be 'dynamic' or a positive integer; got {batch_size!r}")
    return value
