"""Building the scoring graph of a fitted detector: the raw-input module around ``_score``, the
capture (``torch.export`` / ``torch.jit.trace`` / ``make_fx``) with the reference math, the
checks on what was recorded, and the file's bytes with the metadata inside.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, List

import torch
from torch import nn

from .. import patches
from .._version import __version__
from ..errors import AnomalyKitError, ConfigError, ExportError, first_line
from .scorer import _META_FORMAT, _META_VERSION, META_KEY

#: A fitted :class:`anomalykit.Detector` (not imported here: detector.py imports this package).
Detector = Any

FORMATS = ("onnx", "torchscript")
#: Default file suffix per format (TorchScript files get ``.torchscript.pt`` so they never
#: overwrite a checkpoint ``model.pt``).
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
#: Rows per recorded block for methods with ``score_needs_grad``. One: the recorded graph grows
#: with the block (it unrolls the method's own chunking), and larger blocks were slower, not
#: faster (ADGAN on 28x28, n_seed 8, 64 rows: 3.1 s with blocks of 1, 3.9 s of 4, 7.7 s of 16;
#: files of 0.9, 1.0 and 1.3 MB; export 2, 12 and 58 s).
BLOCK_ROWS = 1

_TRACE_ROWS = 4  # rows of the example batch the graph is traced with (not 0/1: torch.export specialises those)
_RANDOM_TS = ("rand", "randn", "randint", "rand_like", "randn_like", "randint_like", "normal", "bernoulli",
              "multinomial", "randperm", "uniform", "poisson", "exponential", "geometric", "cauchy", "log_normal")
_RANDOM_ONNX = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli")


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


class _Scorer(nn.Module):
    """raw inputs (N, *fit sample shape), uint8 or float32 -> (N,) float32 scores: float32, the
    model's sample shape, the preprocessor, then ``det._score``.

    ``nets`` is registered so tracing maps the networks' weights to named parameters of the
    exported module; other tensors ``_score`` reads (statistics, banks) become constants.
    """

    def __init__(self, det: Detector):
        super().__init__()
        self.nets = det.nets
        # a bound method: not a module attribute tracing looks into (patch mode: the windows' scores
        # reduced per image, the same code as score_samples)
        self._score = det._score if det.image_shape_ is None else functools.partial(
            patches.score_images, det._score, size=det._patch(), stride=det._stride(), how=det.hp.patch_score, batch=None)
        self.model_shape = [int(s) for s in (det.image_shape_ or det.input_shape_)]
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


class _WithPValues(nn.Module):
    """A scorer of a calibrated detector: raw inputs -> (scores (N,) float32, conformal p-values (N,)
    float64), p = (1 + #{calibration scores >= score}) / (n + 1) with the sorted calibration scores
    inside (float64; :mod:`anomalykit.calibration`)."""

    def __init__(self, scorer: nn.Module, calibration_scores):
        super().__init__()
        self.scorer = scorer
        self.register_buffer("calibration", torch.as_tensor(calibration_scores, dtype=torch.float64).reshape(1, -1).clone())

    def forward(self, x: torch.Tensor):
        scores = self.scorer(x)
        at_least = (self.calibration >= scores.to(torch.float64).unsqueeze(1)).to(torch.float64).sum(1)
        return scores, (at_least + 1.0) / (self.calibration.shape[1] + 1.0)


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
    from ..ops import kernels
    from ..speedups import speedups

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
    calibrated = det.calibration_scores_ is not None
    inner = _Scorer(det).eval()
    # a calibrated detector's graph also outputs conformal p-values (needs_grad: around the row blocks)
    scorer = _WithPValues(inner, det.calibration_scores_).eval() if calibrated and not needs_grad else inner
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
                    if calibrated:
                        module = torch.jit.script(_WithPValues(module, det.calibration_scores_)).eval()
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
                                            input_names=["x"], output_names=["scores", "p_values"] if calibrated else ["scores"],
                                            verbose=False)
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
        "model_input_shape": list(det.image_shape_ or det.input_shape_),
        "batch_size": fixed,
        "input": f"{det.fit_input_[1]} (N, *input_shape): raw values as given to fit (the preprocessor is inside the graph)",
        "output": "float32 (N,) anomaly scores, higher = more anomalous"
                  + ("; float64 (N,) conformal p-values (second output)" if det.calibration_scores_ is not None else ""),
        "calibration_rows": None if det.calibration_scores_ is None else len(det.calibration_scores_),
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
    model_shape = det.image_shape_ or det.input_shape_
    shape = (n, *model_shape)
    model_space = torch.rand(shape, generator=g) * 2 - 1 if len(model_shape) == 3 else torch.randn(shape, generator=g)
    raw = det.preprocessor_.inverse_transform(model_space).float()
    raw_shape, dtype = det.fit_input_
    if dtype == "uint8":
        raw = raw.round().clamp(0, 255).to(torch.uint8)
    return raw.reshape(n, *raw_shape).contiguous()
