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

One job per module: ``api`` (``export`` itself: checks, build, parity check, atomic write),
``graph`` (building the scoring graph), ``verify`` (the parity check), ``scorer`` (reading an
exported file back).
"""
from __future__ import annotations

from ..errors import ExportError  # noqa: F401 -- the error export raises, importable from here as before
from .api import ExportResult, export
from .graph import BLOCK_ROWS, FORMATS, SUFFIXES, example_rows, format_of
from .graph import _reference_kernels, _RowBlocks  # noqa: F401 -- used by tests
from .scorer import ExportedScorer, is_exported_scorer, load_scorer
from .scorer import META_KEY, scorer_format  # noqa: F401 -- names of the former single module
from .verify import PARITY_RTOL

__all__ = ["export", "ExportResult", "ExportedScorer", "load_scorer", "is_exported_scorer", "example_rows", "format_of",
           "FORMATS", "SUFFIXES", "PARITY_RTOL", "BLOCK_ROWS"]
