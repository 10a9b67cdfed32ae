"""Export a fitted detector to one self-contained scoring graph: ONNX or TorchScript.

    det.export("ama.onnx")                                   # or format="onnx" / "torchscript"
    anomalykit export model.pt --format torchscript          # the same from the command line

The graph takes what ``fit`` took: a batch of **raw inputs** of the sample shape given to ``fit``
(``(N, F)``, ``(N, H, W)`` or ``(N, C, H, W)``) and its dtype (uint8 for a model fitted on uint8
images, else float32; a TorchScript graph also accepts the other one), and returns the ``(N,)``
float32 anomaly scores ``score_samples`` returns (higher = more anomalous). Inside it: the cast
to float32 and the channel axis, the fitted preprocessor (an affine map per channel/feature, as
buffers), the networks in eval mode, and the method's fitted constants (score statistics,
feature banks). The batch size is dynamic unless asked otherwise.

**Reference math only.** The graph is recorded with the reference kernels and the speed-ups off
(``ops.kernels("reference")`` and ``speedups(False)``: the plain eager math), so it holds standard ATen (TorchScript) or
standard-domain ONNX ops and none of anomalykit's custom ops: it loads with ``torch.jit.load``
or ``onnxruntime`` alone, without anomalykit, its native extension or the method's plugin
package.

How a method's ``_score`` is captured (the plugin declares it; the core never names a method):

- by default ``_score`` must be one fixed sequence of tensor ops for every batch size (no
  branch on tensor values or on the batch size, no random draws). ONNX: ``torch.onnx.export``
  (``torch.export`` underneath). TorchScript: ``torch.export`` first checks that the score is
  one graph (``torch.jit.trace`` alone would keep whichever branch the example rows took), then
  ``torch.jit.trace`` records it and ``torch.jit.freeze`` folds the weights in (networks the
  score never calls are dropped);
- ``Detector.score_needs_grad = True``: ``_score`` takes gradient steps (autograd inside
  scoring) and scores each row independently of the others. The core records the whole
  computation, gradient steps included, as plain ATen ops for a block of ``BLOCK_ROWS`` row(s)
  (``torch.fx.experimental.proxy_tensor.make_fx``), traces that, and a scripted loop runs the
  blocks. TorchScript only: an ONNX graph cannot hold the gradient steps;
- ``Detector._export_params()``: parameters set while the score is recorded (e.g. an equivalent
  implementation that traces where the chosen one does not); the parity check still compares
  with ``score_samples`` under the detector's own parameters;
- ``Detector.export_unsupported = "why"``: the method cannot be exported; ``export`` refuses
  with that line.

Before tracing, ``_score`` runs once eagerly on the example rows, so constants a plugin caches
lazily are made outside the graph. Every export is **parity-checked** before it is written: the
file is loaded back (onnxruntime / ``torch.jit.load``) and scores synthetic rows (drawn in the
model's input space and mapped back through the preprocessor) at two batch sizes other than the
traced one, the first batch twice; the largest deviation from ``score_samples`` must be at most
``PARITY_RTOL`` of the largest score, the same rows must give the same scores, and the graph
must draw no random numbers. Otherwise the export fails with one line
(:class:`~anomalykit.errors.ExportError`) and nothing is written.

TorchScript is deprecated in recent PyTorch releases (``torch.jit.trace``/``load`` warn) but
still loads and runs; ONNX is the format to prefer where a runtime other than PyTorch is wanted.

:class:`ExportedScorer` reads an exported file back (the threshold and input shape are stored in
it) for ``anomalykit score``.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List

import numpy as np
import torch
from torch import nn

from . import __version__
from .checkpoint import atomic_write_bytes
from .errors import AnomalyKitError, ConfigError, ExportError, InputError, first_line
from .validation import as_input_tensor, source_is_uint8

#: A fitted :class:`anomalykit.Detector` (not imported here: detector.py imports this module).
Detector = Any

FORMATS = ("onnx", "torchscript")
#: Default file suffix per format (TorchScript files get ``.torchscript.pt`` so they never
#: overwrite a checkpoint ``model.pt``).
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
#: Largest allowed deviation of exported scores from ``score_samples``, relative to the
#: largest score of the check (a per-row relative error is meaningless for scores near 0,
#: e.g. AMA's −log A-score, which crosses 0).
PARITY_RTOL = 1e-4
#: Rows per recorded block for methods with ``score_needs_grad``. One: the recorded graph grows
#: with the block (it unrolls the method's own chunking), and larger blocks were slower, not
#: faster (ADGAN on 28x28, n_seed 8, 64 rows: 3.1 s with blocks of 1, 3.9 s of 4, 7.7 s of 16;
#: files of 0.9, 1.0 and 1.3 MB; export 2, 12 and 58 s).
BLOCK_ROWS = 1
#: Name of the metadata entry (TorchScript: an extra file in the archive; ONNX: a
#: ``metadata_props`` key).
META_KEY = "anomalykit_scorer.json"
_META_FORMAT = "anomalykit-scorer"
_META_VERSION = 1

_TRACE_ROWS = 4  # rows of the example batch the graph is traced with (not 0/1: torch.export specialises those)
_CHECK_ROWS = (1, 7)  # batch sizes of the parity check (neither is the traced one)
_RANDOM_TS = ("rand", "randn", "randint", "rand_like", "randn_like", "randint_like", "normal", "bernoulli",
              "multinomial", "randperm", "uniform", "poisson", "exponential", "geometric", "cauchy", "log_normal")
_RANDOM_ONNX = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli")


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


def format_of(path: str | os.PathLike, fmt: str | None) -> str:
    """``fmt`` checked, or the format a file name implies (``.onnx`` -> onnx, ``.pt``/``.ts`` -> torchscript)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"export format must be one of {', '.join(FORMATS)}; got {fmt!r}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt", ".pth", ".ts", ".torchscript"):
        return "torchscript"
    raise ConfigError(f"cannot tell the export format from {str(path)!r}; pass format='onnx' or 'torchscript'")


def export(det: Detector, path: str | os.PathLike, *, format: str | None = None, batch_size: int | str | None = "dynamic",
           verify: bool = True) -> ExportResult:
    """Export the fitted ``det`` to ``path`` (see the module docstring). Written atomically after
    the parity check passes. ``batch_size``: ``"dynamic"`` (default) or a fixed row count (the
    ONNX input shape is then fixed; TorchScript graphs of traced methods accept any batch)."""
    fmt = format_of(path, format)
    fixed = _batch_size(batch_size)
    det._check_fitted("export")
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
    device = det.hp.device
    if det.device.type != "cpu":  # exported graphs are traced on the CPU
        det.set_params(device="cpu")
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
        if det.hp.device != device:
            det.set_params(device=device)
    return ExportResult(path, fmt, fixed, len(data), deviation, sizes)


# -- building the graph ------------------------------------------------------------------------
class _Scorer(nn.Module):
    """raw inputs (N, *fit sample shape), uint8 or float32 -> (N,) float32 scores: float32, the
    model's sample shape, the preprocessor, then ``det._score``.

    ``nets`` is registered so tracing maps the networks' weights to named parameters of the
    exported module; other tensors ``_score`` reads (statistics, banks) become constants.
    """

    def __init__(self, det: Detector):
        super().__init__()
        self.nets = det.nets
        self._score = det._score  # a bound method: not a module attribute tracing looks into
        self.model_shape = [int(s) for s in det.input_shape_]
        prep = det.preprocessor_
        self.affine = prep.kind != "none"
        if self.affine:
            shape = (1, -1) + (1,) * (len(det.input_shape_) - 1)
            self.register_buffer("input_shift", prep.shift.detach().float().reshape(shape).clone())
            self.register_buffer("input_scale", prep.scale.detach().float().reshape(shape).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32).reshape([x.shape[0]] + self.model_shape)
        if self.affine:
            x = (x - self.input_shift) / self.input_scale
        return self._score(x).to(torch.float32)


class _RowBlocks(nn.Module):
    """Scores any number of rows with a graph recorded for exactly ``rows`` rows: the rows are
    cut into blocks, the last one padded with copies of its last row (rows are scored
    independently, so padding does not change the others' scores)."""

    def __init__(self, block: nn.Module, rows: int):
        super().__init__()
        self.block = block
        self.rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n == 0:
            return torch.zeros([0], dtype=torch.float32, device=x.device)
        pad = (self.rows - n % self.rows) % self.rows
        if pad > 0:
            sizes: List[int] = [pad] + list(x.shape[1:])
            x = torch.cat([x, x[n - 1 : n].expand(sizes)], 0)
        outs: List[torch.Tensor] = []
        for lo in range(0, x.shape[0], self.rows):
            # canonical strides: the recorded graph keeps the layouts it saw (a view where the
            # traced strides allowed one), and a one-channel image counts as contiguous whatever
            # its channel stride, which can make a convolution answer channels-last
            block = x[lo : lo + self.rows].clone(memory_format=torch.contiguous_format)
            outs.append(self.block(block))
        return torch.cat(outs, 0)[:n]


@contextlib.contextmanager
def _reference_kernels():
    """Record the plain math: the pure-PyTorch reference ops (no custom ops in the graph) and no
    implementation speed-ups (buffers reused across calls and custom autograd functions are for
    eager scoring, not for a graph), through the switches' own context managers (they take
    precedence over ``ANOMALYKIT_KERNELS`` / ``ANOMALYKIT_SPEEDUPS`` and are undone on exit)."""
    from .ops import kernels
    from .speedups import speedups

    with kernels("reference"), speedups(False):
        yield


@contextlib.contextmanager
def _quiet():
    """Silence tracing/exporter chatter (deprecation and tracer warnings, exporter logs)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes",
                                              "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _build_with(det: Detector, params: dict, fmt: str, fixed: int | None, needs_grad: bool) -> bytes:
    """``_build`` with the plugin's export parameters set for the duration."""
    before = {k: det.params_[k] for k in params if k in det.params_}
    if params:
        det.set_params(**params)
    try:
        return _build(det, fmt, fixed, needs_grad)
    finally:
        if params:
            det.set_params(**before)


def _build(det: Detector, fmt: str, fixed: int | None, needs_grad: bool) -> bytes:
    """The exported file's bytes (with the metadata inside)."""
    det.nets.eval()
    rows = BLOCK_ROWS if needs_grad else (fixed or _TRACE_ROWS)
    example = example_rows(det, rows, seed=1)
    scorer = _Scorer(det).eval()
    meta = _metadata(det, fmt, fixed)
    dynamic = None if fixed else {"x": {0: torch.export.Dim("batch", min=1)}}
    stage = "tracing"
    try:
        with _reference_kernels(), _quiet():
            with torch.no_grad():
                scorer(example)  # eager warm-up: lazily cached constants are made outside the graph
            if fmt == "torchscript":
                if needs_grad:
                    from torch.fx.experimental.proxy_tensor import make_fx

                    graph = make_fx(lambda x: scorer(x))(example)  # noqa: E731 -- a plain function of the rows
                    with torch.no_grad():
                        block = torch.jit.trace(graph, example, check_trace=False)
                    # not frozen: the recorded graph holds only the tensors the score reads
                    # already, and it updates tensors in place, which is best left as recorded
                    module = torch.jit.script(_RowBlocks(block, rows)).eval()
                else:
                    stage = "torch.export"
                    _capture(scorer, example, dynamic)  # refuses what a trace would silently bake in
                    stage = "tracing"
                    with torch.no_grad():
                        module = torch.jit.trace(scorer, example, check_trace=False)
                    # weights become constants and networks the score never calls are dropped
                    module = torch.jit.freeze(module.eval(), optimize_numerics=False)
                stage = "checking"
                _check_ts_graph(det, module)
                buf = io.BytesIO()
                torch.jit.save(module, buf, _extra_files={META_KEY: json.dumps(meta)})
                return buf.getvalue()
            stage = "torch.onnx.export"
            with torch.no_grad():
                program = torch.onnx.export(scorer, (example,), dynamo=True, external_data=False, dynamic_shapes=dynamic,
                                            input_names=["x"], output_names=["scores"], verbose=False)
            stage = "checking"
            proto = program.model_proto
            _refuse_random_onnx(det, proto)
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_KEY, json.dumps(meta)
            proto.producer_name = "anomalykit"
            return proto.SerializeToString()
    except AnomalyKitError:
        raise
    except Exception as exc:  # noqa: BLE001 -- any tracing/export failure is one line naming the method
        raise ExportError(f"{det.name}: {type(det).__name__}._score could not be exported to {fmt} ({stage}: "
                          f"{_reason(exc)}); the score must be one fixed sequence of tensor ops for every batch (no "
                          "branches on tensor values or on the batch size)") from exc


def _capture(scorer: nn.Module, example: torch.Tensor, dynamic) -> None:
    """Check that ``torch.export`` captures the score as one graph for every batch size (what the
    ONNX exporter does first). ``torch.jit.trace`` alone would record whichever branch the example
    rows took; ``torch.export`` refuses a branch on tensor values or on the batch size."""
    with torch.no_grad():
        try:
            torch.export.export(scorer, (example,), dynamic_shapes=dynamic, strict=False)
        except Exception:  # noqa: BLE001 -- the strict (TorchDynamo) capture also handles numpy interop
            torch.export.export(scorer, (example,), dynamic_shapes=dynamic, strict=True)


def _reason(exc: BaseException) -> str:
    """One line on why an export failed: the innermost exception's first line (the ONNX
    exporter wraps torch.export's error in paragraphs of advice)."""
    while exc.__cause__ is not None and type(exc).__module__.startswith("torch.onnx"):
        exc = exc.__cause__
    return f"{type(exc).__name__}: {first_line(exc)}"


def _check_ts_graph(det, module) -> None:
    """Refuse random draws, and custom ops the graph would need anomalykit's extension for."""
    kinds = {node.kind() for node in module.inlined_graph.nodes()}
    for m in module.modules():  # submodules called through methods keep their own graphs
        if hasattr(m, "inlined_graph"):
            kinds |= {node.kind() for node in m.inlined_graph.nodes()}
    custom = sorted(k for k in kinds if k.startswith("anomalykit::"))
    if custom:
        raise ExportError(f"{det.name}: the recorded score calls anomalykit's native op(s) {', '.join(custom)} although "
                          "the reference kernels and the plain path were selected, so the graph would need "
                          "anomalykit's extension; the op's front-end must honour those switches")
    random = sorted(k for k in kinds if k.split("::")[-1].rstrip("_") in _RANDOM_TS)
    if random:
        raise ExportError(f"{det.name}: the traced score draws random numbers ({', '.join(random)}), so the exported "
                          "graph would not reproduce score_samples; scoring must be deterministic")


def _refuse_random_onnx(det, proto) -> None:
    random = sorted({n.op_type for n in proto.graph.node if n.op_type in _RANDOM_ONNX})
    if random:
        raise ExportError(f"{det.name}: the exported score draws random numbers (ONNX {', '.join(random)}), so it "
                          "would not reproduce score_samples; scoring must be deterministic")


def _metadata(det: Detector, fmt: str, fixed: int | None) -> dict:
    return {
        "format": _META_FORMAT,
        "version": _META_VERSION,
        "anomalykit_version": __version__,
        "torch_version": torch.__version__,
        "method": det.name,
        "export_format": fmt,
        "input_shape": list(det.fit_input_[0]),
        "input_dtype": det.fit_input_[1],
        "model_input_shape": list(det.input_shape_),
        "batch_size": fixed,
        "input": f"{det.fit_input_[1]} (N, *input_shape): raw values as given to fit (the preprocessor is inside the graph)",
        "output": "float32 (N,) anomaly scores, higher = more anomalous",
        "threshold": float(det.threshold_),
        "contamination": float(det.hp.contamination),
        "score_batch_size": int(det.hp.score_batch_size),
        "preprocess": det.preprocessor_.kind,
        "ops": "reference",
        "params": {k: v for k, v in det.params_.items() if isinstance(v, (int, float, str, bool, type(None)))},
    }


def example_rows(det: Detector, n: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` synthetic rows as ``fit`` took them: uniform in [-1, 1] (images) or standard normal
    (rows) in the model's space, mapped back through the fitted preprocessor, in the sample shape
    and dtype given to ``fit`` (uint8: rounded and clipped to 0..255)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, *det.input_shape_)
    model_space = torch.rand(shape, generator=g) * 2 - 1 if len(det.input_shape_) == 3 else torch.randn(shape, generator=g)
    raw = det.preprocessor_.inverse_transform(model_space).float()
    raw_shape, dtype = det.fit_input_
    if dtype == "uint8":
        raw = raw.round().clamp(0, 255).to(torch.uint8)
    return raw.reshape(n, *raw_shape).contiguous()


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


# -- the parity check ----------------------------------------------------------------------------
def _verify(det: Detector, path: Path, fixed: int | None) -> tuple[float, tuple[int, ...]]:
    """Load the written file back and compare its scores with ``score_samples`` (see module docstring)."""
    sizes = (fixed, fixed) if fixed else _CHECK_ROWS
    rows = example_rows(det, sum(sizes), seed=2)
    reference = det.score_samples(rows)
    try:
        scorer = ExportedScorer(path)
        parts, lo = [], 0
        for size in sizes:
            parts.append(scorer.run_graph(rows[lo : lo + size]))
            lo += size
        again = scorer.run_graph(rows[: sizes[0]])
    except AnomalyKitError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{det.name}: the exported {scorer_format(path)} graph failed when loaded back and run on batches "
                          f"of {' and '.join(map(str, sizes))} rows ({type(exc).__name__}: {first_line(exc)}); the traced "
                          "score depends on the batch size") from exc
    for size, part in zip(sizes, parts):
        if np.shape(part) != (size,):
            raise ExportError(f"{det.name}: the exported graph returns scores of shape {tuple(np.shape(part))} for {size} "
                              "row(s); the traced score depends on the traced batch size (a tensor made from Python values "
                              "or numpy inside _score?)")
    got = np.concatenate(parts).astype(np.float64)
    scale = max(float(np.abs(reference).max()), 1e-12)
    deviation = float(np.abs(got - reference).max()) / scale
    if not np.array_equal(again, parts[0]):
        raise ExportError(f"{det.name}: the exported graph gives different scores for the same rows on a second call; "
                          "scoring must be deterministic")
    if not deviation <= PARITY_RTOL:
        raise ExportError(f"{det.name}: the exported graph's scores differ from score_samples by {deviation:.1e} of the "
                          f"largest score (allowed {PARITY_RTOL:.0e}) at batch sizes {sizes}; the traced score is not "
                          "the same computation (a branch on tensor values or a batch-size-dependent step?)")
    return deviation, tuple(sizes)


def scorer_format(path) -> str:
    """"TorchScript" for a zip archive (what ``torch.jit.save`` writes), else "ONNX" (a protobuf)."""
    return "TorchScript" if zipfile.is_zipfile(path) else "ONNX"


# -- reading an exported file back ---------------------------------------------------------------
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
        """The graph on one batch as it is ((n, *input_shape) of ``input_dtype`` -> float32 (n,))."""
        if self.format == "onnx":
            return self._session.run(None, {"x": x.numpy()})[0]
        with torch.no_grad():
            return self._module(x).numpy()

    def score_samples(self, X) -> np.ndarray:
        """Anomaly scores (N,), float64, higher = more anomalous, in batches of the model's
        ``score_batch_size`` (or of the fixed batch size, the last batch padded). ``X`` as for the
        detector's ``score_samples``: the sample shape given to ``fit`` (or the same with its
        channel axis, e.g. (N, 1, 8, 8) for (N, 8, 8)), uint8 or float values."""
        uint8 = source_is_uint8(X)
        X = as_input_tensor(X, name="X")
        if tuple(X.shape[1:]) not in (self._model_shape, self.input_shape_):
            raise InputError(f"X has sample shape {tuple(X.shape[1:])} but the model was fitted on {self.input_shape_}")
        X = X.reshape(X.shape[0], *self.input_shape_)
        if self.input_dtype == "uint8":
            if not uint8 and not bool(((X >= 0) & (X <= 255) & (X == X.round())).all()):
                raise InputError("this scorer was exported from a model fitted on uint8 images; pass integer pixel values 0..255")
            X = X.to(torch.uint8)
        elif not X.is_floating_point():  # uint8 rows for a float32 graph: converted batch by batch below
            X = X.contiguous()
        step = self.batch_size or self.score_batch_size
        outs = []
        for lo in range(0, X.shape[0], step):
            batch = X[lo : lo + step]
            n = batch.shape[0]
            if self.batch_size and n < self.batch_size:  # a fixed-size graph: pad with copies of the last row
                batch = torch.cat([batch, batch[-1:].expand(self.batch_size - n, *batch.shape[1:])])
            batch = batch.contiguous() if self.input_dtype == "uint8" else batch.to(torch.float32).contiguous()
            outs.append(np.asarray(self.run_graph(batch))[:n])
        return np.concatenate(outs).astype(np.float64)

    decision_function = score_samples

    def predict(self, X) -> np.ndarray:
        """1 for anomalies (score above ``threshold_``), 0 for normal; int64 (N,)."""
        return (self.score_samples(X) > self.threshold_).astype(np.int64)


def load_scorer(path: str | os.PathLike) -> ExportedScorer:
    """An exported scorer (``.onnx`` or TorchScript) written by ``export``."""
    return ExportedScorer(path)


__all__ = ["export", "ExportResult", "ExportedScorer", "load_scorer", "is_exported_scorer", "example_rows", "format_of",
           "FORMATS", "SUFFIXES", "PARITY_RTOL", "BLOCK_ROWS"]
