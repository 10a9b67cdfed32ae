"""The detector base class every method implements (PyOD vocabulary, scikit-learn names).

**Sign convention: ``score_samples`` returns higher = more anomalous** (PyOD's
``decision_function`` sign, under scikit-learn's method name). ``decision_function`` is an
alias. ``predict`` flags the ``contamination`` fraction of the training data with the highest
scores: ``threshold_`` is the (1 - contamination) quantile of ``decision_scores_``.

A plugin subclasses :class:`Detector`, sets ``name``, ``summary`` and ``params``, and
implements three methods:

- ``_build(input_shape)``: create the networks in ``self.nets`` (an ``nn.ModuleDict``) for
  inputs of shape ``input_shape`` = (C, H, W) or (F,). Called by ``fit`` and by ``load``.
- ``_fit(X, y)``: train on the validated float32 tensor ``X`` (labels ``y`` of known anomalies,
  or None); use ``self.trainer(...)`` for the loop.
- ``_score(X)``: return a (N,) tensor of anomaly scores for a batch ``X`` (already on
  ``self.device``); ``score_samples`` batches, validates and checks the output.

Optional: ``_extra_state()``/``_load_extra_state(d)`` for fitted non-network state (tensors and
plain data only), ``_reconstruct(x)`` (a batch in model space -> its reconstructions) for
``reconstruct`` and the report's grid, and ``supports_labels = True`` for a semi-supervised mode.
For :meth:`Detector.export`: ``score_needs_grad = True`` if ``_score`` takes gradient steps,
``export_unsupported = "why"`` if it cannot be exported, and ``_export_params()`` for parameters
to trace with (see :mod:`anomalykit.export`).

What the core owns, so no plugin writes it again: input validation; input scaling (the
``preprocess`` parameter, :mod:`anomalykit.preprocess`: fitted on the normal training rows,
saved with the model, applied to every batch ``_fit``/``_score``/``_reconstruct`` see); which rows
train (``fit(X, y)`` passes only the ``y == 0`` rows and ``y=None`` to a plugin without
``supports_labels``); and the threshold rule (``threshold_`` is the (1 - contamination) quantile
of ``decision_scores_``, the training scores; a plugin whose training rows would score
differently from new data, such as a nearest-neighbour score, implements ``_training_scores``
to score them the way new data would be scored).

The whole contract, what is stable and what is deprecated: docs/plugin-api.md
(:mod:`anomalykit.contract`, :mod:`anomalykit.deprecation`).

scikit-learn / PyOD vocabulary: ``get_params``/``set_params`` (``sklearn.base.clone`` works),
``decision_function``, ``decision_scores_``, ``threshold_``, ``labels_``,
``predict(X, return_confidence=False)``, ``predict_proba(X, method="linear"|"unify")`` and
``predict_confidence`` with PyOD's meaning.
"""
from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn
from tqdm.auto import tqdm

from . import calibration, deprecation, patches
from . import precision as _precision
from . import distributed as D
from .checkpoint import atomic_torch_save, detector_payload, model_file, restore_detector
from .errors import AnomalyKitError, CheckpointError, ConfigError, InputError, NotFittedError, PluginError, first_line
from .outlier_probability import check_proba_method, outlier_probability, prediction_confidence, threshold_from_scores  # noqa: F401
from .params import Param, merge_schemas, validate_params
from .preprocess import KINDS as PREPROCESS_KINDS
from .preprocess import Preprocessor
from .training import FitOptions, Trainer, batches_per_epoch, capped_epoch_steps, capped_epochs
from .training_log import check_backends
from .devices import resolve_device
from .seeds import stream_seed
from .lazy_rows import LazyRows, row_batches
from .validation import as_input_tensor, as_label_tensor, as_streamed_input, source_is_uint8, source_sample_shape

#: Parameters every method has. A plugin may redeclare one to change its default or help.
COMMON_PARAMS: tuple[Param, ...] = (
    Param("epochs", 10, "training epochs", low=0),
    Param("max_steps", None, "cap on training steps: fewer whole epochs when epochs x batches per epoch would take more; "
          "when one epoch alone is longer, that one epoch stops after max_steps batches (a seeded random subset "
          "of the rows); the fitted epochs_ and steps_ say what ran; None: no cap", type=int, low=1),
    Param("batch_size", 64, "training batch size", low=1),
    Param("score_batch_size", 512, "batch size when scoring (bounds memory)", low=1),
    Param("seed", 0, "random seed (weights, shuffling, sampling)"),
    Param("device", "auto", "cpu, cuda, cuda:N, or auto (cuda when available)"),
    Param("contamination", 0.1, "expected anomaly fraction; sets threshold_ for predict()", low=1e-6, high=0.5),
    Param("calibration", 0.0, "normal training rows held out for calibrated alarms (p_values, predict(alpha=...) or "
          "predict(fdr=...), drift): a fraction in (0, 1) or a count >= 1, never trained on, scored after training and "
          "saved with the model; 0: none (predict uses contamination)", low=0.0),
    Param("precision", "32", "32 (float32), bf16-mixed (bfloat16 autocast in training steps and scoring: CPUs with AMX or "
          "AVX512-BF16, GPUs) or 16-mixed (float16 autocast with a gradient scaler: CUDA); weights, checkpoints and "
          "exports stay float32", choices=_precision.PRECISIONS),
    Param("patch_size", None, "images: train on random crops of this side and score by sliding windows (patch mode, "
          "anomalykit.patches; set for MVTec-layout folders by run and bench); None: whole images", type=int, low=2),
    Param("patches_per_image", 64, "patch mode: random crops per training image", low=1),
    Param("patch_stride", None, "patch mode: the scoring windows' stride; None: half the patch size", type=int, low=1),
    Param("patch_score", "max", "patch mode: an image's score from its windows' scores: max, or top10 (the mean of the "
          "highest 10%)", choices=patches.PATCH_SCORES),
    Param("preprocess", "auto", "input scaling fitted on the training rows and saved with the model: auto (uint8 images "
          "-> x/127.5-1, other images -> training range per channel onto [-1, 1], rows -> median/IQR per feature), "
          "uint8, range, robust, or none (data already prepared)", choices=PREPROCESS_KINDS),
)


#: Public methods the core implements; a plugin that overrides one bypasses a policy. Overriding
#: one is deprecated (a warning, refused from anomalykit 0.3.0); an override of ``reconstruct``
#: is adapted into the ``_reconstruct`` hook (:mod:`anomalykit.deprecation`).
CORE_OWNED = ("fit", "score_samples", "decision_function", "predict", "p_values", "drift", "predict_proba",
              "predict_confidence", "fit_predict",
              "reconstruct", "anomaly_map", "save", "export", "get_params", "set_params", "map_batches", "map_inputs", "trainer",
              "require_current_threshold")


class Detector(BaseEstimator):
    """Base class of all anomaly detectors. See the module docstring for the contract.

    A scikit-learn estimator (``BaseEstimator`` supplies its tags, so pipelines accept it);
    the parameters come from the plugin's schema rather than ``__init__``'s signature.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    #: ``anomalykit bench --budget``: parameter overrides per budget, {"small": {...}, "paper": {...}}.
    budgets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: True if ``_fit`` uses labelled anomalies (``y == 1``); otherwise the core passes only the
    #: normal rows and ``y=None``.
    supports_labels: ClassVar[bool] = False
    #: True if ``_fit``/``_training_scores`` only index, slice and ``map_batches`` their rows, so
    #: lazy training rows are read per batch (anomalykit.contract); else they are read whole first.
    streams_training_rows: ClassVar[bool] = False
    #: True for a reference method every anomaly map is read against (``anomalykit bench`` on
    #: MVTec-layout data runs it beside the methods asked for).
    map_baseline: ClassVar[bool] = False
    #: Export (:meth:`export`): True if ``_score`` takes gradient steps (autograd inside scoring)
    #: and scores each row independently of the others; the exporter then records the
    #: computation, gradients included, for a block of rows (TorchScript only). A property where
    #: it depends on the parameters (ADGAN: only the scores that search).
    score_needs_grad: ClassVar[bool] = False
    #: Export: a one-line reason if the method cannot be exported (``export`` refuses with it).
    export_unsupported: ClassVar[str | None] = None
    #: Parameters that the scores of a *fitted* detector depend on (read when scoring, not only by
    #: ``fit``). Changed after fit (``set_params``, or an override of ``anomalykit.load``), they
    #: leave ``threshold_``, a quantile of the training scores under the old values, stale:
    #: ``predict``, ``predict_proba``, ``predict_confidence`` and export refuse in one line until the
    #: detector is refitted or the values are set back; ``score_samples`` scores with the new values.
    score_params: ClassVar[frozenset[str]] = frozenset()
    #: Parameter names this method accepted in earlier releases, mapped onto today's with a
    #: deprecation warning (:class:`anomalykit.deprecation.RenamedParam`), so old configs,
    #: ``--set`` lines and saved models keep loading.
    renamed_params: ClassVar[tuple[deprecation.RenamedParam, ...]] = ()
    #: Deprecated members this class uses, as (key, detail) (anomalykit.deprecation; set per class).
    _deprecated_members: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: True when ``_fit`` reads ``y`` without declaring ``supports_labels`` (deprecated): it then
    #: gets every row and the labels, as before ``supports_labels`` existed.
    _legacy_labels: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        deprecation.adapt_plugin_class(cls, Detector, CORE_OWNED)

    def __init__(self, **params: Any):
        owner = self.name or type(self).__name__
        params = deprecation.rename_params(type(self), params, owner=owner)
        self.params_ = validate_params(self.param_schema(), params, owner=owner)
        self.hp = SimpleNamespace(**self.params_)
        self.nets = nn.ModuleDict()
        self.input_shape_: tuple[int, ...] | None = None
        #: The sample shape and dtype ``fit`` was given, e.g. ((28, 28), "uint8"); exported graphs take the same.
        self.fit_input_: tuple[tuple[int, ...], str] | None = None
        self.threshold_: float | None = None
        self.decision_scores_: np.ndarray | None = None
        self.labels_: np.ndarray | None = None
        #: The ``score_params`` values ``decision_scores_`` and ``threshold_`` were computed with.
        self.threshold_params_: dict[str, Any] | None = None
        self.preprocessor_ = Preprocessor("none")
        self.history_: list[dict[str, float]] = []
        #: The epochs fit trained: ``epochs``, or fewer under ``max_steps`` (None before fit).
        self.epochs_: int | None = None
        #: The batches of each of those epochs when ``max_steps`` cut the one epoch short, else None.
        self.epoch_steps_: int | None = None
        #: The optimiser steps of the main training: ``epochs_`` x the batches of an epoch (None before fit).
        self.steps_: int | None = None
        #: Sorted scores (n,) of the held-out calibration rows (``calibration`` > 0), else None.
        self.calibration_scores_: np.ndarray | None = None
        #: Patch mode: the (C, H, W) of the images fit took (``input_shape_`` is then the crops'); else None.
        self.image_shape_: tuple[int, ...] | None = None
        self._fit_options = FitOptions()

    # -- schema --------------------------------------------------------------------------
    @classmethod
    def param_schema(cls) -> dict[str, Param]:
        return merge_schemas(COMMON_PARAMS, cls.params)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The parameters (scikit-learn's estimator API; ``deep`` is accepted and has no effect)."""
        return dict(self.params_)

    def set_params(self, **params: Any) -> "Detector":
        """Change parameters (validated against the schema); returns ``self``.

        Like scikit-learn, this does not refit: changes take effect at the next ``fit``, except
        ``contamination``, which re-derives ``threshold_`` and ``labels_`` of a fitted detector,
        and the runtime ones (``device``, ``score_batch_size``).
        """
        owner = self.name or type(self).__name__
        params = deprecation.rename_params(type(self), params, owner=owner)
        merged = validate_params(self.param_schema(), {**self.params_, **params}, owner=owner)
        self.params_ = merged
        self.hp = SimpleNamespace(**merged)
        if self.decision_scores_ is not None and "contamination" in params:
            self._set_threshold()
        if "device" in params and self.input_shape_ is not None:
            self.nets.to(self.device)
        return self

    def __sklearn_clone__(self) -> "Detector":
        """An unfitted copy with the same parameters (what ``sklearn.base.clone`` returns)."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.params_.items() if v != self.param_schema()[k].default}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # -- device ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return resolve_device(self.hp.device, distributed=D.is_distributed())

    # -- public API ------------------------------------------------------------------------
    def fit(
        self,
        X,
        y=None,
        *,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 0,
        resume: bool = False,
        progress: bool | None = None,
        log: str | Sequence[str] = "csv",
    ) -> "Detector":
        """Train on ``X`` ((N, F), (N, H, W) or (N, C, H, W)); ``y`` marks known anomalies (1).

        Methods without a semi-supervised mode train on the rows with ``y == 0`` only.
        ``checkpoint_dir``/``checkpoint_every``/``resume`` control training checkpoints (see
        :class:`anomalykit.training.FitOptions`); with a ``checkpoint_dir`` the training logs go
        there too (``log``: "csv", or "csv,tensorboard"; :mod:`anomalykit.training_log`). Returns ``self``.
        """
        uint8 = source_is_uint8(X)
        # lazy rows (and np.memmap) stay lazy, read per batch, for a plugin that streams them;
        # any other plugin gets them read whole into a validated tensor
        X = as_streamed_input(X, name="X") if self.streams_training_rows else as_input_tensor(X, name="X")
        lazy = isinstance(X, LazyRows)
        raw_shape = X.source_shape if lazy else source_sample_shape(X)
        labels = None if y is None else as_label_tensor(y, X.shape[0])
        if labels is not None and int((labels == 0).sum()) == 0:
            raise InputError("y marks every row as an anomaly; fit needs normal rows (y == 0)")
        if labels is not None and not bool((labels == 1).any()):
            labels = None
        if checkpoint_every < 0:
            raise ConfigError("checkpoint_every must be >= 0")
        # the core's policy for calibrated alarms: the held-out rows leave before anything is fitted
        held_out = None
        if self.hp.calibration:
            X, labels, held_out = calibration.hold_out(X, labels, self.hp.calibration, self.hp.seed)
        self._fit_options = FitOptions(checkpoint_dir, checkpoint_every, resume, progress, check_backends(log))
        _precision.check(self.hp.precision, self.device)
        seed_everything(stream_seed(self.hp.seed, "weights"))
        self.input_shape_ = tuple(X.shape[1:])
        self.image_shape_ = None
        if self.hp.patch_size:  # the core's patch mode (anomalykit.patches): the plugin trains on crops
            patches.check(self.input_shape_, self.hp.patch_size, self.hp.patch_stride)
            self.image_shape_, self.input_shape_ = self.input_shape_, (self.input_shape_[0], self.hp.patch_size, self.hp.patch_size)
        self.fit_input_ = (raw_shape, "uint8" if uint8 else "float32")
        self.decision_scores_ = self.threshold_ = self.labels_ = self.calibration_scores_ = None
        if labels is None:
            normal = X
        else:
            normal = X.subset(np.flatnonzero(labels.numpy() == 0)) if lazy else X[labels == 0]
        # the core's policy: scaling is fitted on the normal rows; only methods with a
        # semi-supervised mode ever see the labelled anomalies
        self.preprocessor_ = Preprocessor.fit(normal, self.hp.preprocess, uint8=uint8)
        normal = self.preprocessor_.transform_rows(normal)
        # (a _fit that reads y without declaring supports_labels gets every row and the labels, as
        # plugins written before supports_labels did: deprecated, anomalykit.deprecation)
        takes_labels = self.supports_labels or self._legacy_labels
        X = normal if labels is None or not takes_labels else self.preprocessor_.transform_rows(X)
        labels = labels if takes_labels else None
        images = normal
        if self.image_shape_ is not None:
            k = self.hp.patches_per_image
            normal = patches.random_crops(normal, self.hp.patch_size, k, self.hp.seed)
            X = normal if X is images else patches.random_crops(X, self.hp.patch_size, k, self.hp.seed)
            labels = None if labels is None else labels.repeat_interleave(k)
        # the core's policy for the training length: the plugin trains self.epochs_ epochs
        n, hp = normal.shape[0], self.hp
        self.epochs_ = capped_epochs(hp.epochs, hp.max_steps, n, hp.batch_size)
        self.epoch_steps_ = capped_epoch_steps(hp.epochs, hp.max_steps, n, hp.batch_size)
        self.steps_ = self.epochs_ * (self.epoch_steps_ or batches_per_epoch(n, hp.batch_size))
        self.nets = nn.ModuleDict()
        self._build(self.input_shape_)
        self.nets.to(self.device)
        self._trainers: list[Trainer] = []
        with _plugin_guard(self.name, "fit"):
            self._fit(X, labels)
        many = len(self._trainers) > 1  # several training phases: prefix the loss names with the phase
        self.history_ = [
            {(f"{t.phase}/{k}" if many else k): v for k, v in h.items()} for t in self._trainers for h in t.history
        ]
        self.nets.eval()
        # the core's policy: one training score per normal training row, scored as new rows would be
        # (decision_scores_ set by _fit is still taken, with a deprecation warning)
        train_scores = deprecation.legacy_training_scores(self, images.shape[0])
        if train_scores is None:
            with _plugin_guard(self.name, "training scores"):
                train_scores = self._training_scores(normal) if self.image_shape_ is None else \
                    self.map_batches(self._image_scores, images, desc="threshold", batch_size=self._images_per_batch())
        self.decision_scores_ = self._checked_scores(train_scores, images.shape[0], "_training_scores")
        self._set_threshold()
        self.threshold_params_ = {k: self.params_[k] for k in self.score_param_names()}
        self.calibration_scores_ = None if held_out is None else np.sort(self._score_validated(held_out, desc="calibration"))
        return self

    def _set_threshold(self) -> None:
        self.decision_scores_ = np.asarray(self.decision_scores_, dtype=np.float64)
        self.threshold_ = threshold_from_scores(self.decision_scores_, self.hp.contamination)
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)

    def fit_predict(self, X, y=None) -> np.ndarray:
        """``fit(X, y)`` then the training rows' labels ``labels_`` (1 = anomaly)."""
        return self.fit(X, y).labels_

    def score_samples(self, X) -> np.ndarray:
        """Anomaly scores, shape (N,), float64. **Higher = more anomalous.**

        ``X`` is in the same space as the data given to ``fit`` (raw pixels, raw features): the
        fitted preprocessor is applied batch by batch.
        """
        X = self._validated(X, "score_samples")
        return self._score_validated(X, desc="score")

    decision_function = score_samples

    def predict(self, X, return_confidence: bool = False, *, alpha: float | None = None, fdr: float | None = None):
        """1 for anomalies, 0 for normal; shape (N,), int64.

        By default a score above ``threshold_`` (the ``contamination`` rule). With calibration rows
        (``calibration`` > 0): ``alpha`` flags ``p_values(X) <= alpha``, a marginal false-alarm rate
        of at most ``alpha`` on normal rows like the calibration rows; ``fdr`` flags the rows
        Benjamini-Hochberg selects at that false discovery rate across the batch
        (:mod:`anomalykit.calibration`). With ``return_confidence=True`` also
        :meth:`predict_confidence` (PyOD's signature).
        """
        self.require_current_threshold("predict")
        if alpha is not None and fdr is not None:
            raise ConfigError("predict takes alpha (a false-alarm rate per row) or fdr (a false discovery rate of the batch), not both")
        if alpha is not None or fdr is not None:
            level = calibration.check_level("alpha" if alpha is not None else "fdr", alpha if alpha is not None else fdr)
            p = self.p_values(X)
            labels = (p <= level).astype(np.int64) if alpha is not None else calibration.benjamini_hochberg(p, level)
            if return_confidence:
                raise ConfigError("return_confidence belongs to the contamination threshold; with alpha or fdr the "
                                  "p-values (p_values) say how sure each flag is")
            return labels
        scores = self.score_samples(X)
        labels = (scores > self.threshold_).astype(np.int64)
        return (labels, self._confidence(scores)) if return_confidence else labels

    def p_values(self, X) -> np.ndarray:
        """Conformal p-values (N,) float64 of the rows of ``X`` against the calibration scores:
        (1 + #{calibration scores >= score}) / (n + 1). Small = unlike the normal rows; for a normal
        row like the calibration rows, P(p <= alpha) <= alpha. Needs ``calibration`` > 0."""
        self._check_fitted("p_values")
        if self.calibration_scores_ is None:
            raise calibration.not_calibrated(self.name, "p_values")
        self.require_current_threshold("p_values")
        return calibration.p_values(self.calibration_scores_, self.score_samples(X))

    def drift(self, X) -> "calibration.DriftResult":
        """Whether a batch of presumed-normal rows still looks like the calibration rows: a
        two-sample Kolmogorov-Smirnov test of their scores (:class:`anomalykit.calibration.DriftResult`:
        statistic, p_value, sizes, the batch's mean conformal p-value). Needs ``calibration`` > 0."""
        self._check_fitted("drift")
        if self.calibration_scores_ is None:
            raise calibration.not_calibrated(self.name, "drift")
        self.require_current_threshold("drift")
        return calibration.drift_test(self.calibration_scores_, self.score_samples(X))

    def predict_proba(self, X, method: str = "linear", return_confidence: bool = False) -> np.ndarray:
        """(N, 2) probabilities of [normal, anomaly], as PyOD computes them from the training scores.

        ``linear``: the test scores min-max scaled by the training scores' range, clipped to
        [0, 1]; ``unify``: erf((s - mean) / (std √2)) of the training scores, clipped to [0, 1]
        (Kriegel et al., "Interpreting and unifying outlier scores").
        """
        check_proba_method(method)  # before any scoring
        self.require_current_threshold("predict_proba")
        scores = self.score_samples(X)
        probs = outlier_probability(scores, np.asarray(self.decision_scores_, np.float64), method)
        return (probs, self._confidence(scores)) if return_confidence else probs

    def predict_confidence(self, X) -> np.ndarray:
        """Confidence in each ``predict`` label, in [0, 1] (PyOD's ExCeeD: Perini et al., 2020)."""
        self.require_current_threshold("predict_confidence")
        return self._confidence(self.score_samples(X))

    def score_param_names(self) -> list[str]:
        """The parameters that change this fitted detector's scores: the plugin's ``score_params``,
        and in patch mode the core's ``patch_stride`` and ``patch_score`` (sorted)."""
        core = patches.SCORE_PARAMS if self.image_shape_ is not None else frozenset()
        return sorted(self.score_params | core)

    def require_current_threshold(self, what: str) -> None:
        """One-line :class:`InputError` if a ``score_params`` value differs from the one
        ``threshold_`` was computed with (see ``score_params``); a no-op before fit."""
        fitted = self.threshold_params_
        if not fitted:
            return
        for key, old in fitted.items():
            new = self.params_[key]
            if new != old:
                raise InputError(
                    f"{self.name}: {key}={new!r} changes the scores, but threshold_ comes from the training scores "
                    f"with {key}={old!r}; refit before {what}(), or set {key}={old!r} again (score_samples works either way)"
                )

    def _confidence(self, scores: np.ndarray) -> np.ndarray:
        return prediction_confidence(scores, np.asarray(self.decision_scores_, np.float64), self.threshold_, self.hp.contamination)

    def map_inputs(self, fn: Callable[[torch.Tensor], torch.Tensor], X, *, what: str = "score") -> torch.Tensor:
        """``fn`` on user rows ``X`` as ``score_samples`` sees them: validated against the fitted
        sample shape, then each batch of ``score_batch_size`` rows scaled by the fitted
        preprocessor on ``self.device`` (model space) before ``fn`` gets it. Returns the
        concatenated CPU outputs in row order. A plugin's public methods that take user data
        (e.g. CSI-AAE's ``nearest_training_index``) go through here, so no entry point scales
        inputs its own way."""
        X = self._validated(X, what)
        prep = self.preprocessor_
        self.nets.eval()
        with _plugin_guard(self.name, what):
            return self.map_batches(lambda x: fn(prep.transform(x)), X, desc=what, batch_size=self._images_per_batch())

    @torch.no_grad()
    def reconstruct(self, X) -> torch.Tensor | None:
        """Reconstructions of ``X`` in the space of the inputs (float32 CPU, same shape), or None
        for a method that does not reconstruct. The preprocessor is applied to ``X`` and inverted
        on the output, so inputs and reconstructions compare directly.

        Called on rank 0 only under torchrun: a plugin's ``_reconstruct`` must not use
        collectives (e.g. ``map_batches``).
        """
        X = self._validated(X, "reconstruct")
        self.nets.eval()
        prep = self.preprocessor_
        outs = []
        step = self._images_per_batch()
        for lo in range(0, X.shape[0], step):
            x = prep.transform(X[lo : lo + step].to(self.device))
            with _plugin_guard(self.name, "reconstruct"):
                out = self._reconstruct(x) if self.image_shape_ is None else self._patch_reconstruct(x)
            if out is None:
                return None
            outs.append(prep.inverse_transform(out.detach().float()).cpu())
        return torch.cat(outs)

    @torch.no_grad()
    def anomaly_map(self, X, *, sigma: float = 1.0) -> np.ndarray:
        """Where each image is anomalous: (N, H, W) float64, higher = more anomalous, for images
        ``X`` as ``score_samples`` takes them. The method's ``_anomaly_map`` hook (default: the
        squared residual between the model-space input and its reconstruction, summed over the
        channels), smoothed by a Gaussian of ``sigma`` pixels (0 = none), as anomalib smooths
        residual maps. A method without reconstructions or maps, or rows instead of images, is a
        one-line :class:`ConfigError`."""
        if len(self.input_shape_ or ()) != 3:
            self._check_fitted("anomaly_map")
            raise ConfigError(f"{self.name}: anomaly maps need images (N, C, H, W); this detector was fitted on rows")
        maps = self.map_inputs(self._map_or_refuse if self.image_shape_ is None else self._patch_maps, X, what="anomaly_map")
        if sigma > 0:
            maps = gaussian_smooth(maps, sigma)
        return maps.double().numpy()

    # -- patch mode (anomalykit.patches) ---------------------------------------------------------
    def _images_per_batch(self) -> int:
        """Images per scoring batch: ``score_batch_size`` rows, or in patch mode that many windows."""
        if self.image_shape_ is None:
            return self.hp.score_batch_size
        return max(1, self.hp.score_batch_size // patches.n_windows(self.image_shape_, self._patch(), self._stride()))

    def _patch(self) -> int:
        """The side of the crops the networks were built for at ``fit`` (``patch_size`` then)."""
        return self.input_shape_[1]

    def _stride(self) -> int:
        return patches.stride_of(self._patch(), self.hp.patch_stride)

    def _image_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Patch mode: (n,) scores of model-space images from their windows' ``_score``."""
        return patches.score_images(self._score, x, self._patch(), self._stride(), self.hp.patch_score,
                                    self.hp.score_batch_size)

    def _patch_maps(self, x: torch.Tensor) -> torch.Tensor:
        return patches.map_images(self._anomaly_map, self._score, x, self._patch(), self._stride(), self.hp.score_batch_size)

    def _patch_reconstruct(self, x: torch.Tensor) -> torch.Tensor | None:
        p, stride = self._patch(), self._stride()
        w = patches.windows(x, p, stride)
        parts = [self._reconstruct(w[lo : lo + self.hp.score_batch_size]) for lo in range(0, w.shape[0], self.hp.score_batch_size)]
        if any(r is None for r in parts):
            return None
        return patches.assemble(torch.cat(parts), x.shape[0], x.shape[2], x.shape[3], p, stride)

    def _map_or_refuse(self, x: torch.Tensor) -> torch.Tensor:
        out = self._anomaly_map(x)
        if out is None:
            raise ConfigError(f"{self.name} gives no anomaly map (it has no reconstruction of its input)")
        if tuple(out.shape) != (x.shape[0], *x.shape[2:]):
            raise PluginError(f"plugin {self.name!r} broke the contract: _anomaly_map returned {tuple(out.shape)}, "
                              f"expected {(x.shape[0], *x.shape[2:])}")
        return out.float()

    def save(self, path: str | Path) -> Path:
        """Write config + state to ``path`` (a file, or ``path/model.pt`` if a folder); atomic."""
        self._check_fitted("save")
        path = model_file(path)
        atomic_torch_save(detector_payload(self), path)
        return path

    def export(self, path: str | Path, format: str | None = None, *, batch_size: int | str = "dynamic") -> Path:
        """Write a self-contained scoring graph: float32 raw inputs (N, *input_shape) -> the (N,)
        scores of ``score_samples`` (float32), preprocessor and fitted constants inside.

        ``format``: ``"onnx"`` or ``"torchscript"`` (default: from the suffix, ``.onnx`` or
        ``.pt``). ``batch_size``: ``"dynamic"`` or a fixed row count. The file is parity-checked
        against ``score_samples`` before it is written; a method that cannot be exported raises
        :class:`~anomalykit.errors.ExportError` with one line. See :mod:`anomalykit.export`.
        """
        from .export import export

        return export(self, path, format=format, batch_size=batch_size).path

    @classmethod
    def from_checkpoint(cls, ckpt: dict, *, path: Path, **overrides: Any) -> "Detector":
        """A fitted detector from a checkpoint payload (see :func:`anomalykit.checkpoint.restore_detector`)."""
        return restore_detector(cls, ckpt, path=path, overrides=overrides)

    # -- helpers for plugins ---------------------------------------------------------------
    def trainer(self, *, modules=None, optimizers, schedulers=None, scheduler_interval="epoch", epochs=None, phase="train",
                average: Sequence[str] = (), average_decay: float | None = None) -> Trainer:
        """A :class:`Trainer` wired to this detector's params and the fit options (``scheduler_interval``:
        the schedulers step after every "epoch" or every training "step"). ``average`` and
        ``average_decay`` (deprecated, :mod:`anomalykit.deprecation`): networks whose weights are
        replaced by their exponential moving average when training ends."""
        trainer = Trainer(
            method=self.name,
            modules=self.nets if modules is None else modules,
            optimizers=optimizers,
            schedulers=schedulers,
            scheduler_interval=scheduler_interval,
            epochs=self.epochs_ if epochs is None else epochs,
            # max_steps shortens the main training's one epoch, not a phase of its own length
            epoch_steps=self.epoch_steps_ if epochs is None else None,
            batch_size=self.hp.batch_size,
            seed=self.hp.seed,
            device=self.device,
            options=self._fit_options,
            phase=phase,
            config=self.params_,
            precision=self.hp.precision,
        )
        if average or average_decay is not None:
            subject = f"{type(self).__module__}.{type(self).__qualname__}"
            trainer = deprecation.averaging_trainer(trainer, tuple(average), float(average_decay or 0.0), subject)
        getattr(self, "_trainers", []).append(trainer)
        return trainer

    def map_batches(self, fn: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, *, desc: str = "score",
                    batch_size: int | None = None) -> torch.Tensor:
        """Apply ``fn`` to ``X`` in batches of ``batch_size`` (default ``score_batch_size``) on ``self.device``.

        Returns the concatenated CPU outputs in input order. Under torchrun each rank handles a
        contiguous shard and the results are all-gathered, so every rank gets the full result.
        Memory stays bounded by one batch of ``fn``'s intermediates plus the outputs; a
        :class:`~anomalykit.lazy_rows.LazyRows` ``X`` is read a batch at a time (each rank its shard).
        """
        n = X.shape[0]
        start, stop = D.shard_bounds(n)
        bs = batch_size or self.hp.score_batch_size
        outs = []
        show = self._fit_options.show_progress and (stop - start) > bs
        batches = row_batches(X, start, stop, bs)
        if show:  # no tqdm object otherwise (see anomalykit.training._NoProgress)
            batches = tqdm(batches, total=-(-(stop - start) // bs), desc=f"{self.name} {desc}", unit="batch", leave=False)
        for batch in batches:
            with _precision.autocast(self.hp.precision, self.device):  # the core's precision policy
                out = fn(batch.to(self.device, non_blocking=True)).detach()
            if out.dtype in (torch.bfloat16, torch.float16):
                out = out.float()
            outs.append(out.cpu())
        local = torch.cat(outs) if outs else torch.empty(0)
        return D.gather_shards(local, n)

    # -- plugin hooks ----------------------------------------------------------------------
    def _build(self, input_shape: tuple[int, ...]) -> None:
        raise NotImplementedError

    def _fit(self, X: torch.Tensor, y: torch.Tensor | None) -> None:
        raise NotImplementedError

    def _score(self, X: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _training_scores(self, X: torch.Tensor) -> torch.Tensor:
        """The normal training rows ``X`` (model space) scored as new rows would be: (N,). Default:
        ``_score`` in batches. Override where a training row would score differently from a new
        one (a nearest-neighbour score finds the row itself; a density fitted to the rows scores
        them too well): leave-one-out, out-of-fold."""
        self.nets.eval()
        return self.map_batches(self._score, X, desc="threshold")

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        if state:
            raise CheckpointError(f"{self.name}: unexpected extra state {sorted(state)}")

    def _reconstruct(self, x: torch.Tensor) -> torch.Tensor | None:
        """Reconstructions of a batch ``x`` (model space, on ``self.device``); None if the method has none."""
        return None

    def _anomaly_map(self, x: torch.Tensor) -> torch.Tensor | None:
        """(n, H, W) per-pixel anomaly of an image batch ``x`` (model space): by default the
        squared reconstruction residual summed over channels; None if the method has neither."""
        rec = self._reconstruct(x)
        return None if rec is None else (x - rec).square().sum(1)

    def _export_params(self) -> dict[str, Any]:
        """Parameters set while :meth:`export` records ``_score`` (restored afterwards), e.g. an
        equivalent implementation that traces where the chosen one does not. The exported graph
        is still parity-checked against ``score_samples`` with the detector's own parameters."""
        return {}

    # -- internals -------------------------------------------------------------------------
    def _validated(self, X, what: str) -> torch.Tensor:
        """A fitted detector's check of user data: float32 tensor of the fitted sample shape."""
        self._check_fitted(what)
        X = as_streamed_input(X, name="X")
        fitted = self.image_shape_ or self.input_shape_
        if tuple(X.shape[1:]) != fitted:
            raise InputError(f"X has sample shape {tuple(X.shape[1:])} but the detector was fitted on {fitted}")
        return X

    def _score_validated(self, X: torch.Tensor, *, desc: str) -> np.ndarray:
        """Scores of validated user-space rows: each batch is preprocessed on the device, then scored."""
        prep = self.preprocessor_
        score = self._score if self.image_shape_ is None else self._image_scores
        return self._scores_checked(lambda x: score(prep.transform(x)), X, desc=desc, batch_size=self._images_per_batch())

    def _scores_checked(self, fn, X: torch.Tensor, *, desc: str, batch_size: int | None = None) -> np.ndarray:
        self.nets.eval()
        with _plugin_guard(self.name, "score"):
            scores = self.map_batches(fn, X, desc=desc, batch_size=batch_size)
        return self._checked_scores(scores, X.shape[0], "_score")

    def _checked_scores(self, scores, n: int, hook: str) -> np.ndarray:
        """A hook's scores as float64 numpy, or a one-line PluginError naming the broken contract."""
        if not isinstance(scores, torch.Tensor) or scores.shape != (n,):
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise PluginError(f"plugin {self.name!r} broke the contract: {hook} returned {got}, expected shape ({n},)")
        if not scores.is_floating_point():
            raise PluginError(f"plugin {self.name!r} broke the contract: {hook} returned dtype {scores.dtype}, expected floating point")
        scores = scores.detach().cpu().to(torch.float64)
        bad = ~torch.isfinite(scores)
        if bool(bad.any()):
            raise PluginError(
                f"plugin {self.name!r} produced {int(bad.sum())} non-finite score(s) (model diverged or input out of range)"
            )
        return scores.numpy()

    def _check_fitted(self, what: str) -> None:
        if self.input_shape_ is None or self.threshold_ is None:
            raise NotFittedError(f"{self.name}: call fit() before {what}()")


class _plugin_guard:
    """Turn an unexpected exception inside a plugin's _fit/_score into a one-line PluginError.

    Documented anomalykit errors pass through unchanged; the original exception stays chained
    (``__cause__``) for debugging (``ANOMALYKIT_DEBUG=1`` makes the CLI print it).
    """

    def __init__(self, method: str, stage: str):
        self.method, self.stage = method, stage

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (AnomalyKitError, KeyboardInterrupt)) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise ConfigError(f"{self.method}: out of GPU memory during {self.stage}; lower batch_size/score_batch_size") from exc
        raise PluginError(
            f"plugin {self.method!r} failed during {self.stage}: {type(exc).__name__}: {first_line(exc, default='')}"
        ) from exc


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, H, W) maps blurred by a separable Gaussian of ``sigma`` pixels (kernel radius 3 sigma,
    reflect padding)."""
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t.square() / (2 * sigma**2))
    k = k / k.sum()
    x = maps.float().unsqueeze(1)
    pad = lambda v, p: torch.nn.functional.pad(v, p, mode="reflect" if min(v.shape[-2:]) > radius else "replicate")  # noqa: E731
    x = torch.nn.functional.conv2d(pad(x, (radius, radius, 0, 0)), k.view(1, 1, 1, -1))
    x = torch.nn.functional.conv2d(pad(x, (0, 0, radius, radius)), k.view(1, 1, -1, 1))
    return x.squeeze(1)
