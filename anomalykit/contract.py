"""The contract of a method plugin, in one place (as pytest's hookspecs are for its plugins).

A method is a subclass of :class:`anomalykit.Detector` registered through the
``anomalykit_register_methods`` hook (:mod:`anomalykit.hookspecs`) of a module named by an entry
point in the group ``anomalykit.methods``. :data:`MEMBERS` lists everything such a class declares
or implements, required or optional, with the default the base class supplies; the registry
checks a class against it when its plugin loads (:func:`check_method_class`) and reports the first
violation in one line (the plugin is then skipped). :func:`anomalykit.testing.check_method`
checks behaviour (fit/score/predict, save/load, determinism, export...) on top.

What the core owns, so a plugin never writes it: input validation and scaling (the fitted
``preprocess``; hooks see float32 rows in model space, on ``self.device``), which rows train
(``y == 0`` unless ``supports_labels``), ``decision_scores_`` / ``threshold_`` / ``labels_`` (from
the ``_training_scores`` hook), the training loop (``self.trainer(...)``, checkpoints, resume,
DDP, divergence checks), persistence and export. A plugin's public helpers that take user rows go
through ``self.map_inputs``.

The step context a training step receives (``trainer.run(X, step)`` calls ``step(x, ctx)``, see
:class:`anomalykit.training.StepContext`, exported as ``anomalykit.sdk.StepContext``):

- ``ctx.update(name, loss, term=...)``: backward + step of the optimiser ``name`` (zero_grad
  first; the loss term is checked for NaN/inf and named in the error);
- ``ctx.nets``: the trainer's modules, wrapped in DistributedDataParallel under torchrun (use them
  for the networks being updated; call the plain ``self.nets[...]`` for the others);
- ``ctx.generator``: the trainer's seeded ``torch.Generator`` (all training noise comes from it,
  so runs and resumes are reproducible);
- ``ctx.epoch``, ``ctx.step``, ``ctx.batch_index``, ``ctx.labels`` (the batch's labels when the
  method ``supports_labels``), ``ctx.extra`` (a dict saved in training checkpoints, e.g. the best
  epoch of a model selection; also ``trainer.extra`` after the run).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

#: Method names users type (``anomalykit run NAME``).
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
#: The budgets ``anomalykit bench --budget`` knows.
BUDGETS = ("small", "paper")


@dataclass(frozen=True)
class Member:
    """One thing a method class declares (``attribute``) or implements (``hook``)."""

    name: str
    kind: str  # "attribute" or "hook"
    required: bool
    default: str
    doc: str


MEMBERS: tuple[Member, ...] = (
    # -- required ---------------------------------------------------------------------------
    Member("name", "attribute", True, "", "the method name, lowercase [a-z0-9_-], unique among installed methods"),
    Member("summary", "attribute", True, "", "one line for `anomalykit list`"),
    Member("params", "attribute", True, "()", "tuple of anomalykit.Param: the schema with defaults (the core adds "
           "epochs, max_steps, batch_size, score_batch_size, seed, device, contamination, preprocess; redeclare one to change its "
           "default; a schedule over epochs reads self.epochs_, the epochs fit trains: epochs, or fewer under max_steps; when "
           "max_steps cuts the one epoch short, self.trainer() stops it there and self.epoch_steps_ says after how many batches)"),
    Member("_build", "hook", True, "", "_build(input_shape): create the networks in self.nets for samples of shape (C, H, W) or "
           "(F,); called by fit and by load (so it must not train)"),
    Member("_fit", "hook", True, "", "_fit(X, y): train on the normal rows X (float32, model space; a tensor, or a view read "
           "per batch when streams_training_rows); y the labels of known anomalies when supports_labels, else None; use "
           "self.trainer(...) for the loop"),
    Member("_score", "hook", True, "", "_score(X) -> (N,) float tensor for a batch X (model space, on self.device); higher = "
           "more anomalous; one fixed sequence of tensor ops (no branch on values or batch size) if it is to export"),
    # -- optional ---------------------------------------------------------------------------
    Member("_training_scores", "hook", False, "_score on the training rows",
           "_training_scores(X) -> (N,) tensor: the training rows scored as new rows would be (e.g. leave-one-out for a "
           "nearest-neighbour score, out-of-fold for a fitted density); decision_scores_ and the threshold come from it"),
    Member("budgets", "attribute", False, "{}", "{'small': {...}, 'paper': {...}}: parameter overrides per "
           "`anomalykit bench --budget` (small: a 2-core CPU; paper: the paper's schedule); checked against params"),
    Member("streams_training_rows", "attribute", False, "False", "True if _fit and _training_scores only index, slice, "
           "read .shape of and map_batches their X: lazy training rows (a .npy, an image folder) then stay on disk, read "
           "per batch; otherwise the core reads them whole into a tensor first"),
    Member("map_baseline", "attribute", False, "False", "True for a reference method that every anomaly map is read "
           "against: `anomalykit bench` on MVTec-layout data runs it beside the methods asked for"),
    Member("supports_labels", "attribute", False, "False", "True if _fit uses labelled anomalies (y == 1); otherwise the core "
           "passes only the normal rows and y=None"),
    Member("_reconstruct", "hook", False, "None (no reconstructions)", "_reconstruct(x) -> reconstructions of a batch "
           "(model space) for Detector.reconstruct and the report's grid"),
    Member("_anomaly_map", "hook", False, "squared residual of _reconstruct, summed over channels",
           "_anomaly_map(x) -> (n, H, W) per-pixel anomaly of an image batch (model space) for Detector.anomaly_map; "
           "None if the method has no map"),
    Member("_extra_state", "hook", False, "{}", "fitted state beside the networks' (tensors and plain data only: saved with "
           "torch.save, loaded with weights_only=True)"),
    Member("_load_extra_state", "hook", False, "refuses any extra state", "_load_extra_state(state): restore what "
           "_extra_state returned; raise ValueError/KeyError for a state that does not fit"),
    Member("score_needs_grad", "attribute", False, "False", "export: True if _score takes gradient steps and scores each row "
           "independently (TorchScript only, recorded a block of rows at a time); it may be a property where only some "
           "parameters' scores do"),
    Member("export_unsupported", "attribute", False, "None", "export: a one-line reason the method (or these parameters: it "
           "may be a property) cannot be exported"),
    Member("score_params", "attribute", False, "frozenset()", "names of the parameters the scores of a fitted detector "
           "depend on (read when scoring); changing one after fit makes predict and export refuse until refit"),
    Member("renamed_params", "attribute", False, "()", "tuple of anomalykit.deprecation.RenamedParam: parameter names "
           "the method accepted in earlier releases, mapped onto today's (or retired) with a deprecation warning, so "
           "old configs, --set lines and saved models keep loading"),
    Member("_export_params", "hook", False, "{}", "export: parameters set while the score is recorded (e.g. an equivalent "
           "implementation that traces); the export is still parity-checked with the detector's own parameters"),
)



def __getattr__(name: str):
    """``CORE_OWNED`` (the public methods the core owns: defined beside them, in
    :mod:`anomalykit.detector`) and the deprecated ``RETIRED``."""
    if name == "CORE_OWNED":
        from .detector import CORE_OWNED

        return CORE_OWNED
    if name == "RETIRED":
        from .deprecation import warn

        warn("contract-retired", "")
        return {"threshold_sample": "implement _training_scores(X) instead (decision_scores_ holds one score per training row)"}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")



def check_method_class(cls) -> str | None:
    """The first way ``cls`` breaks the contract, as one line; None if it keeps it."""
    from .detector import Detector  # late import: detector imports this module's constants only
    from .errors import ConfigError
    from .deprecation import RenamedParam
    from .params import Param, validate_params

    if not isinstance(cls, type) or not issubclass(cls, Detector):
        return f"register() expects a subclass of anomalykit.Detector, got {cls!r}"
    label = cls.__name__
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_RE.match(name):
        return f"{label}.name must be a lowercase string matching {NAME_RE.pattern}, got {name!r}"
    summary = getattr(cls, "summary", None)
    if not isinstance(summary, str) or not summary.strip() or "\n" in summary.strip():
        return f"{label}.summary must be a one-line string"
    params = getattr(cls, "params", None)
    if not isinstance(params, (tuple, list)) or not all(isinstance(p, Param) for p in params):
        return f"{label}.params must be a tuple of anomalykit.Param"
    names = [p.name for p in params]
    if len(names) != len(set(names)):
        return f"{label}.params declares {sorted({n for n in names if names.count(n) > 1})[0]!r} twice"
    for m in MEMBERS:
        if m.kind == "hook" and m.required and getattr(cls, m.name) is getattr(Detector, m.name):
            return f"{label} does not implement {m.name}()"
        if m.kind == "hook" and not callable(getattr(cls, m.name)):
            return f"{label}.{m.name} must be a method"
    for attr in ("supports_labels", "score_needs_grad", "streams_training_rows", "map_baseline"):
        value = getattr(cls, attr)
        if not isinstance(value, bool) and not (attr == "score_needs_grad" and isinstance(value, property)):
            return f"{label}.{attr} must be True or False" + (" (or a property returning one)" if attr == "score_needs_grad" else "")
    score_params = getattr(cls, "score_params")
    if not isinstance(score_params, frozenset) or not all(isinstance(k, str) for k in score_params):
        return f"{label}.score_params must be a frozenset of parameter names"
    unknown = sorted(score_params - set(cls.param_schema()))
    if unknown:
        return f"{label}.score_params names {unknown[0]!r}, which is not one of its parameters"
    reason = cls.__dict__.get("export_unsupported", None)
    if reason is not None and not isinstance(reason, (str, property)):
        return f"{label}.export_unsupported must be None, a one-line string, or a property returning one"
    # overriding a CORE_OWNED method or setting threshold_sample is deprecated, not refused:
    # Detector.__init_subclass__ adapts and warns (anomalykit.deprecation)
    renamed = getattr(cls, "renamed_params", ())
    if not isinstance(renamed, (tuple, list)) or not all(isinstance(r, RenamedParam) for r in renamed):
        return f"{label}.renamed_params must be a tuple of anomalykit.deprecation.RenamedParam"
    schema = cls.param_schema()
    for r in renamed:
        if r.old in schema:
            return f"{label}.renamed_params: {r.old!r} is still one of its parameters"
        if r.new is not None and r.new not in schema:
            return f"{label}.renamed_params maps {r.old!r} onto {r.new!r}, which is not one of its parameters"
    budgets = getattr(cls, "budgets", {})
    if not isinstance(budgets, dict) or not all(isinstance(v, dict) for v in budgets.values()):
        return f"{label}.budgets must be a dict of budget name -> dict of parameter overrides"
    unknown = sorted(set(budgets) - set(BUDGETS))
    if unknown:
        return f"{label}.budgets has unknown budget {unknown[0]!r}; use {', '.join(BUDGETS)}"
    for budget, overrides in budgets.items():
        bad = sorted(set(overrides) - set(schema))
        if bad:
            return f"{label}.budgets[{budget!r}] sets {bad[0]!r}, which is not one of its parameters"
        try:
            validate_params(schema, overrides, owner=f"{name} budget {budget!r}")
        except ConfigError as exc:
            return f"{label}.budgets[{budget!r}]: {exc}"
    return None
