"""Reading an exported file back: :class:`ExportedScorer` (``score_samples``/``predict`` from an
``.onnx`` or TorchScript file, with the metadata stored in it) and the file format it checks.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import AnomalyKitError, ConfigError, ExportError, InputError, first_line
from ..lazy_rows import row_batches
from ..validation import as_streamed_input, source_is_uint8

#: Name of the metadata entry (TorchScript: an extra file in the archive; ONNX: a
#: ``metadata_props`` key).
META_KEY = "anomalykit_scorer.json"
_META_FORMAT = "anomalykit-scorer"
_META_VERSION = 1


def scorer_format(path) -> str:
    """"TorchScript" for a zip archive (what ``torch.jit.save`` writes), else "ONNX" (a protobuf)."""
    return "TorchScript" if zipfile.is_zipfile(path) else "ONNX"


def is_exported_scorer(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file written by ``export`` (an ``.onnx`` file, or a TorchScript
    archive holding anomalykit's metadata), as opposed to a checkpoint or a run folder."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(name.endswith(f"/extra/{META_KEY}") for name in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return path.suffix.lower() == ".onnx"


class ExportedScorer:
    """An exported scoring graph with the ``score_samples``/``predict`` part of the detector API.

    Needs torch (TorchScript) or onnxruntime (ONNX); never the method's plugin. ``threshold_``,
    ``input_shape_`` and ``method`` come from the metadata stored in the file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"exported scorer {self.path} does not exist")
        self.format = "torchscript" if scorer_format(self.path) == "TorchScript" else "onnx"
        try:
            if self.format == "onnx":
                meta = self._open_onnx()
            else:
                extra = {META_KEY: ""}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still loads
                    self._module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra)
                meta = extra[META_KEY]
            self.meta = json.loads(meta) if meta else {}
        except AnomalyKitError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"{self.path} is not a readable exported scorer ({type(exc).__name__}: {first_line(exc)})") from None
        if self.meta.get("format") != _META_FORMAT:
            raise ExportError(f"{self.path} is not a file written by `anomalykit export` (no anomalykit metadata in the {scorer_format(self.path)} file)")
        if self.meta.get("version") != _META_VERSION:
            raise ExportError(f"{self.path} was exported in scorer format version {self.meta.get('version')}; this anomalykit reads {_META_VERSION}")
        self.method = str(self.meta["method"])
        self.input_shape_ = tuple(int(s) for s in self.meta["input_shape"])
        self.input_dtype = str(self.meta.get("input_dtype", "float32"))
        self._model_shape = tuple(int(s) for s in self.meta.get("model_input_shape", self.input_shape_))
        self.threshold_ = float(self.meta["threshold"])
        self.batch_size = self.meta.get("batch_size")
        self.score_batch_size = int(self.meta.get("score_batch_size") or 512)
        #: how many calibration rows the graph's p-values count against (None: not calibrated)
        self.calibration_rows = self.meta.get("calibration_rows")

    def _open_onnx(self) -> str:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("scoring an .onnx file needs onnxruntime: pip install 'anomalykit[export]'") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        return self._session.get_modelmeta().custom_metadata_map.get(META_KEY, "")

    def __repr__(self) -> str:
        return f"ExportedScorer({str(self.path)!r}, method={self.method!r}, format={self.format!r})"

    def run_graph(self, x: torch.Tensor) -> np.ndarray:
        """The graph on one batch as it is ((n, *input_shape) of ``input_dtype`` -> float32 (n,) scores)."""
        return self.run_graph_outputs(x)[0]

    def run_graph_outputs(self, x: torch.Tensor) -> list[np.ndarray]:
        """Every output of the graph on one batch: the scores, then (a calibrated model) the p-values."""
        if self.format == "onnx":
            return list(self._session.run(None, {"x": x.numpy()}))
        with torch.no_grad():
            out = self._module(x)
        return [t.numpy() for t in out] if isinstance(out, (tuple, list)) else [out.numpy()]

    def score_samples(self, X) -> np.ndarray:
        """Anomaly scores (N,), float64, higher = more anomalous, in batches of the model's
        ``score_batch_size`` (or of the fixed batch size, the last batch padded). ``X`` as for the
        detector's ``score_samples``: the sample shape given to ``fit`` (or the same with its
        channel axis, e.g. (N, 1, 8, 8) for (N, 8, 8)), uint8 or float values; lazy rows
        (:func:`anomalykit.open_rows`, ``np.memmap``) are read a batch at a time."""
        return self._outputs(X)[0].astype(np.float64)

    decision_function = score_samples

    def p_values(self, X) -> np.ndarray:
        """Conformal p-values (N,) float64 from the graph's second output (a model fitted with
        ``calibration`` > 0; see ``Detector.p_values``)."""
        if not self.calibration_rows:
            raise ConfigError(f"{self.path} was exported from a model fitted without calibration rows; refit with "
                              "calibration=0.2 and export again to get p-values")
        return self._outputs(X)[1].astype(np.float64)

    def _outputs(self, X) -> list[np.ndarray]:
        uint8 = source_is_uint8(X)
        X = as_streamed_input(X, name="X")
        if tuple(X.shape[1:]) not in (self._model_shape, self.input_shape_):
            raise InputError(f"X has sample shape {tuple(X.shape[1:])} but the model was fitted on {self.input_shape_}")
        step = self.batch_size or self.score_batch_size
        n_rows = X.shape[0]
        batches = row_batches(X, 0, n_rows, step)
        outs: list[list[np.ndarray]] = []
        for batch in batches:
            batch = batch.reshape(batch.shape[0], *self.input_shape_)
            if self.input_dtype == "uint8":
                if not uint8 and not bool(((batch >= 0) & (batch <= 255) & (batch == batch.round())).all()):
                    raise InputError("this scorer was exported from a model fitted on uint8 images; "
                                     "pass integer pixel values 0..255")
                batch = batch.to(torch.uint8)
            n = batch.shape[0]
            if self.batch_size and n < self.batch_size:  # a fixed-size graph: pad with copies of the last row
                batch = torch.cat([batch, batch[-1:].expand(self.batch_size - n, *batch.shape[1:])])
            batch = batch.contiguous() if self.input_dtype == "uint8" else batch.to(torch.float32).contiguous()
            outs.append([np.asarray(o)[:n] for o in self.run_graph_outputs(batch)])
        return [np.concatenate(parts) for parts in zip(*outs)]

    def predict(self, X) -> np.ndarray:
        """1 for anomalies (score above ``threshold_``), 0 for normal; int64 (N,)."""
        return (self.score_samples(X) > self.threshold_).astype(np.int64)


def load_scorer(path: str | os.PathLike) -> ExportedScorer:
    """An exported scorer (``.onnx`` or TorchScript) written by ``export``."""
    return ExportedScorer(path)
