"""anomalykit: plugin-based generative anomaly detection on PyTorch.

    import anomalykit
    det = anomalykit.load_method("ama", epochs=5).fit(X_train)
    scores = det.score_samples(X_test)      # higher = more anomalous
    labels = det.predict(X_test)            # 1 = anomaly (threshold from `contamination`)
    det.save("ama.pt"); det2 = anomalykit.load("ama.pt")
"""
from __future__ import annotations

from ._version import PLUGIN_API_VERSION, __version__  # noqa: E402
from .deprecation import AnomalykitDeprecationWarning, show_by_default  # noqa: E402

show_by_default()  # this package's deprecation warnings are shown (once each), not hidden

from .data.datasets import Dataset  # noqa: E402
from .detector import COMMON_PARAMS, Detector  # noqa: E402
from .errors import (  # noqa: E402
    AnomalyKitError,
    CheckpointError,
    ConfigError,
    DatasetError,
    DivergenceError,
    ExportError,
    InputError,
    NotFittedError,
    PluginError,
)
from .hookspecs import hookimpl  # noqa: E402
from .lazy_rows import open_rows  # noqa: E402
from .params import Param  # noqa: E402

__all__ = [
    "open_rows",
    "Detector", "Dataset", "Param", "hookimpl", "load_method", "load", "list_methods", "COMMON_PARAMS",
    "AnomalyKitError", "CheckpointError", "ConfigError", "DatasetError", "DivergenceError",
    "InputError", "NotFittedError", "PluginError", "ExportError", "__version__", "PLUGIN_API_VERSION",
    "AnomalykitDeprecationWarning",
]


def list_methods() -> list[str]:
    """Names of the installed methods."""
    from .registry import get_registry

    return sorted(get_registry().methods)


def load_method(name: str, **params) -> Detector:
    """An unfitted detector of method ``name`` with ``params`` (validated against its schema)."""
    from .registry import get_registry

    return get_registry().method(name).cls(**params)


def load(path, **overrides) -> Detector:
    """A fitted detector from a file written by ``Detector.save`` (or a run folder).

    Loaded with ``torch.load(weights_only=True)``; ``overrides`` may change runtime
    parameters such as ``device`` or ``score_batch_size``.
    """
    from pathlib import Path

    from .checkpoint import model_file, safe_load
    from .registry import get_registry

    path = model_file(path)
    ckpt = safe_load(path, kind="detector")
    cls = get_registry().method(str(ckpt.get("method"))).cls
    return cls.from_checkpoint(ckpt, path=path, **overrides)
