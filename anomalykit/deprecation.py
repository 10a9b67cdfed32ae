"""Deprecations of the plugin API, in one module.

Policy (docs/plugin-api.md): anything a published plugin guide, the SDK (:mod:`anomalykit.sdk`)
or the contract (:mod:`anomalykit.contract`) allowed keeps working for at least one feature
release after it is deprecated. Meanwhile the core adapts it and emits one
:class:`AnomalykitDeprecationWarning` per deprecated member and plugin class, naming the
replacement and the release in which it stops working; CHANGELOG.md records it under "Plugin API".

:data:`DEPRECATIONS` lists every deprecated member with what the core does in the meantime (the
docs' table is generated from it). The adapters live here too:

- :func:`adapt_plugin_class` (called by ``Detector.__init_subclass__``): an override of
  ``reconstruct`` becomes the ``_reconstruct`` hook; ``threshold_sample``, overrides of other
  core-owned methods and a ``_fit`` that reads ``y`` without ``supports_labels`` are recorded;
- :func:`legacy_training_scores`: ``decision_scores_`` set by a plugin's ``_fit``;
- :class:`WeightAverage` and :func:`averaging_trainer`: ``self.trainer(average=..., average_decay=...)``;
- :class:`RenamedParam` / :func:`rename_params`: a method's renamed or retired parameters
  (old configs, ``--set`` lines and checkpoints keep loading).

``import anomalykit`` shows these warnings: it puts an "always" filter for this category right in
front of Python's default "ignore DeprecationWarning" filter, so any filter set before (the
user's, pytest's ``-W``/``filterwarnings``, ``python -W``) still decides. Each is emitted once per
process, plugin class and member (``_emitted``), so repeats stay quiet; a warning emitted while
ignored counts as emitted. ``warnings.filterwarnings("ignore", category=AnomalykitDeprecationWarning)``
after the import silences them.
"""
from __future__ import annotations

import dis
import inspect
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

#: The release in which everything deprecated in 0.2.0 stops working (at the earliest).
NEXT_REMOVAL = "0.3.0"


class AnomalykitDeprecationWarning(DeprecationWarning):
    """A plugin (or a user's configuration) relies on something anomalykit has deprecated.

    The message names the replacement and the release in which the old way stops working.
    """


@dataclass(frozen=True)
class Deprecation:
    """One deprecated member of the plugin API (or a user-facing name) and its adapter."""

    key: str
    what: str  # what the plugin does, e.g. "overriding Detector.reconstruct(X)"
    replacement: str  # what to do instead (imperative)
    meanwhile: str  # what the core does until removal
    since: str = "0.2.0"
    removed_in: str = NEXT_REMOVAL
    title: str = ""  # how the docs' table names it, where ``what`` has a {detail}

    def message(self, subject: str, detail: str = "") -> str:
        what = self.what.format(detail=detail) if "{detail}" in self.what else self.what
        return (f"{subject + ': ' if subject else ''}{what} is deprecated since anomalykit {self.since} and stops working in {self.removed_in}; "
                f"{self.replacement}")


DEPRECATIONS: dict[str, Deprecation] = {
    d.key: d
    for d in (
        Deprecation(
            "reconstruct-override", "overriding reconstruct(X)",
            "implement _reconstruct(x) instead (a batch in model space -> its reconstructions)",
            "a plain override is called as the _reconstruct hook: per batch, in model space (what _fit sees), with "
            "the core's validation, scaling and batching around it; one that calls super().reconstruct or sits "
            "beside a _reconstruct hook runs as an override of the core's method"),
        Deprecation(
            "threshold-sample", "threshold_sample",
            "remove it: the threshold comes from one score per training row (override _training_scores(X) to "
            "score the training rows another way)",
            "ignored: every training row is scored"),
        Deprecation(
            "decision-scores-in-fit", "setting self.decision_scores_ in _fit",
            "implement _training_scores(X) returning the training rows' scores instead",
            "used as the training scores (threshold_, labels_) when it holds one finite score per normal "
            "training row; otherwise the core scores the training rows"),
        Deprecation(
            "core-owned-override", "overriding Detector.{detail}, which the core owns,",
            "implement the underscore hooks instead (_fit, _score, _training_scores, _reconstruct, _anomaly_map)",
            "the override runs", title="overriding a method the core owns (fit, score_samples, predict, save, ...: "
            "anomalykit.detector.CORE_OWNED)"),
        Deprecation(
            "labels-without-supports-labels", "_fit reading y without declaring supports_labels",
            "declare supports_labels: True if _fit uses labelled anomalies, False if it trains on the normal rows only "
            "(it then gets those and y=None)",
            "_fit gets every training row and its 0/1 labels, as before"),
        Deprecation(
            "trainer-average", "self.trainer(average=..., average_decay=...)",
            "drop the arguments; keep an average of your networks' weights in your own _fit if you need one",
            "the named networks' weights are averaged and loaded when training ends, as before"),
        Deprecation(
            "weight-average", "anomalykit.training.WeightAverage",
            "keep an average of your networks' weights in your own code (torch.optim.swa_utils.AveragedModel)",
            "the class is importable from anomalykit.training"),
        Deprecation(
            "forward-with-features", "{detail}.forward_with_features(x)",
            "call f = critic.features(x) and value = critic.head(f).squeeze(1)",
            "returns (value, features) as before", title="ConvCritic.forward_with_features(x), MLPCritic.forward_with_features(x)"),
        Deprecation(
            "data-lazy", "the module anomalykit.data.lazy",
            "import from anomalykit.lazy_rows (or use anomalykit.open_rows)",
            "re-exports anomalykit.lazy_rows"),
        Deprecation(
            "contract-retired", "anomalykit.contract.RETIRED",
            "read anomalykit.deprecation.DEPRECATIONS (threshold_sample is deprecated, no longer refused)",
            "holds what it held in 0.1.0's development snapshots"),
        Deprecation(
            "retired-param", "parameter {detail}",
            "drop it (anomalykit show METHOD lists the parameters)",
            "accepted and ignored", title="a retired parameter of a method (table below)"),
        Deprecation(
            "renamed-param", "parameter {detail}",
            "use the new name (anomalykit show METHOD lists the parameters)",
            "the old name (in Python, --set, config files and saved models) is mapped onto the new one",
            title="a renamed parameter of a method (table below)"),
    )
}

_emitted: set[tuple[str, str, str]] = set()


def warn(key: str, subject: str, *, detail: str = "", stacklevel: int = 2) -> None:
    """Emit the deprecation ``key`` for ``subject`` (a plugin class, a method) once per process."""
    if (key, subject, detail) in _emitted:
        return
    _emitted.add((key, subject, detail))
    warnings.warn(AnomalykitDeprecationWarning(DEPRECATIONS[key].message(subject, detail)), stacklevel=stacklevel + 1)


def show_by_default() -> None:
    """Show this package's deprecation warnings (Python hides DeprecationWarning outside __main__);
    each is emitted once per subject by :func:`warn`, so "always" repeats nothing. Left alone when
    the user chose warning filters (``-W``, ``PYTHONWARNINGS``): theirs apply."""
    if sys.warnoptions:
        return
    for i, (action, message, category, module, lineno) in enumerate(warnings.filters):
        if message is None and module is None and issubclass(AnomalykitDeprecationWarning, category):
            # the first filter that would decide: only Python's own default ("ignore
            # DeprecationWarning") is overridden, right in front of it; a filter the user, pytest
            # or another library set earlier (ignore, error...) keeps deciding
            if (action, category, lineno) == ("ignore", DeprecationWarning, 0):
                warnings.filters.insert(i, ("always", None, AnomalykitDeprecationWarning, None, 0))
                warnings._filters_mutated()
            return


# -- plugin classes ---------------------------------------------------------------------------------
def _own(cls: type, attr: str, base: type) -> bool:
    """True if a class of ``cls``'s MRO other than ``base`` and its own bases defines ``attr``."""
    return any(attr in k.__dict__ for k in cls.__mro__ if k not in base.__mro__)


#: Instructions that push arguments of a call (what may sit between a method and one of its arguments).
_ARGUMENT_LOADS = ("LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_LOAD_FAST", "LOAD_CONST", "LOAD_DEREF", "LOAD_GLOBAL",
                   "LOAD_NAME", "KW_NAMES", "PUSH_NULL", "COPY_FREE_VARS")


def _loaded_names(ins: dis.Instruction) -> tuple[str, ...]:
    """The local names an instruction reads (3.10-3.13 opcodes; 3.13 fuses two into one)."""
    if ins.opname == "STORE_FAST_LOAD_FAST":  # argval (stored, loaded)
        return (ins.argval[1],)
    if ins.opname.startswith("LOAD_FAST") and ins.opname != "LOAD_FAST_AND_CLEAR" or ins.opname in ("LOAD_DEREF", "LOAD_CLOSURE"):
        return ins.argval if isinstance(ins.argval, tuple) else (ins.argval,)
    return ()


def label_use(fn: Callable, index: int = 2) -> str:
    """How ``fn`` (a ``_fit``) treats its positional argument ``index`` (``y``): "uses" (reads it),
    "forwards" (only hands it on to another ``_fit``, e.g. ``super()._fit(X, y)``) or "ignores"."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None or code.co_argcount <= index:
        return "ignores"
    name = code.co_varnames[index]
    if name in code.co_cellvars:  # used by a nested function or comprehension
        return "uses"
    instructions = list(dis.get_instructions(code))
    reads = [i for i, ins in enumerate(instructions) if name in _loaded_names(ins)]
    if not reads:
        return "ignores"

    def forwarded(i: int) -> bool:  # the read is an argument of a call of a method named _fit
        j = i - 1
        while j >= 0 and instructions[j].opname in _ARGUMENT_LOADS:
            j -= 1
        return j >= 0 and instructions[j].opname in ("LOAD_METHOD", "LOAD_ATTR", "LOAD_SUPER_ATTR") \
            and instructions[j].argval == "_fit"

    return "forwards" if all(forwarded(i) for i in reads) else "uses"


def _refers_to_super(fn: Callable) -> bool:
    code = getattr(inspect.unwrap(fn), "__code__", None)
    return code is not None and ("super" in code.co_names or "__class__" in code.co_freevars)


def _defining(cls: type, name: str, base: type) -> type | None:
    """The class whose ``name`` ``cls`` uses, if it is ``cls`` itself or a mixin that is no ``base``
    subclass (a ``base`` subclass was adapted when it was defined); None otherwise."""
    owner = next((k for k in cls.__mro__ if name in k.__dict__), base)
    if owner is cls or (owner not in base.__mro__ and not issubclass(owner, base)):
        return owner
    return None


def adapt_plugin_class(cls: type, base: type, core_owned: Sequence[str]) -> None:
    """Adapt a Detector subclass that uses deprecated members and warn once per member.

    Records the adapted members in ``cls._deprecated_members`` (a tuple of
    ``(key, detail)``, read by the registry for ``anomalykit list``) and, for a ``_fit`` that
    reads ``y`` without ``supports_labels``, sets ``cls._legacy_labels = True`` (read by ``fit``).
    """
    subject = f"{cls.__module__}.{cls.__qualname__}"
    found: list[tuple[str, str]] = list(getattr(cls, "_deprecated_members", ()))
    stack = 3  # warn -> adapt_plugin_class -> __init_subclass__ -> the class statement
    adapted: set[str] = set()

    owner = _defining(cls, "reconstruct", base)
    if owner is not None:
        fn = owner.__dict__["reconstruct"]
        fn = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
        # an override that calls super().reconstruct, or sits beside a _reconstruct hook, keeps
        # running as a core-owned override (below); a plain one becomes the _reconstruct hook
        if not _refers_to_super(fn) and not _own(cls, "_reconstruct", base):
            cls._reconstruct = _reconstruct_adapter(fn)
            if owner is cls:
                del cls.reconstruct  # the core's again: validation, scaling, batching around the hook
            else:
                cls.reconstruct = base.__dict__["reconstruct"]
            adapted.add("reconstruct")
            found.append(("reconstruct-override", ""))
            warn("reconstruct-override", subject, stacklevel=stack)
    if "threshold_sample" in cls.__dict__:
        found.append(("threshold-sample", ""))
        warn("threshold-sample", subject, stacklevel=stack)
    for name in core_owned:
        if name not in adapted and _defining(cls, name, base) is not None:
            found.append(("core-owned-override", name))
            warn("core-owned-override", subject, detail=name, stacklevel=stack)
    owner = _defining(cls, "_fit", base)
    if owner is not None and not _own(cls, "supports_labels", base):
        use = label_use(owner.__dict__["_fit"])
        if use == "uses":
            cls._legacy_labels = True
            found.append(("labels-without-supports-labels", ""))
            warn("labels-without-supports-labels", subject, stacklevel=stack)
        elif use == "ignores":
            cls._legacy_labels = False  # a _fit of its own that never reads y (a parent's may have)
    elif "supports_labels" in cls.__dict__:
        cls._legacy_labels = False
    cls._deprecated_members = tuple(dict.fromkeys(found))


def _reconstruct_adapter(legacy: Callable) -> Callable:
    def _reconstruct(self, x: torch.Tensor) -> torch.Tensor | None:
        """The plugin's deprecated ``reconstruct(X)`` override, called as the ``_reconstruct`` hook."""
        out = legacy(self, x)
        if out is None:
            return None
        return torch.as_tensor(out).to(x.device)

    _reconstruct.__qualname__ = getattr(legacy, "__qualname__", "reconstruct")
    return _reconstruct


def legacy_training_scores(det, n: int) -> torch.Tensor | None:
    """``decision_scores_`` a plugin's ``_fit`` set (deprecated), as a (n,) tensor, or None.

    Warns once per class; scores of another length or with non-finite values are not used (the
    core then scores the training rows itself, so ``labels_`` keeps one label per training row)."""
    scores = det.decision_scores_
    if scores is None:
        return None
    det.decision_scores_ = None
    warn("decision-scores-in-fit", f"{type(det).__module__}.{type(det).__qualname__}", stacklevel=3)
    scores = torch.as_tensor(scores).detach().reshape(-1).to("cpu", torch.float64)
    if scores.shape != (n,) or not bool(torch.isfinite(scores).all()):
        return None
    return scores


# -- weight averaging (self.trainer(average=..., average_decay=...)) ----------------------------------
class WeightAverage:
    """Exponential moving average of the parameters of some modules (Polyak averaging): after
    every step ``avg <- decay * avg + (1 - decay) * param``. Deprecated (see :data:`DEPRECATIONS`).

    Buffers (e.g. BatchNorm statistics) are not averaged; re-estimate them for the averaged
    weights if the method uses them (:func:`anomalykit.sdk.recompute_batchnorm`).
    """

    def __init__(self, modules: Mapping[str, nn.Module], decay: float):
        self.decay = float(decay)
        self.names = sorted(modules)
        self.params = {k: [p for p in modules[k].parameters()] for k in self.names}
        self.average = {k: [p.detach().clone() for p in self.params[k]] for k in self.names}

    @torch.no_grad()
    def update(self) -> None:
        live = [p.detach() for k in self.names for p in self.params[k]]
        avg = [a for k in self.names for a in self.average[k]]
        torch._foreach_lerp_(avg, live, 1.0 - self.decay)

    @torch.no_grad()
    def copy_to_modules(self) -> None:
        for k in self.names:
            for p, a in zip(self.params[k], self.average[k]):
                p.copy_(a)

    def state_dict(self) -> dict:
        return {k: list(v) for k, v in self.average.items()}

    def load_state_dict(self, state: Mapping[str, Sequence[torch.Tensor]]) -> None:
        for k in self.names:
            for a, saved in zip(self.average[k], state[k], strict=True):
                a.copy_(saved)


_AVERAGE_KEY = "_deprecated_weight_average"


def averaging_trainer(trainer, names: Sequence[str], decay: float, subject: str):
    """``trainer`` whose ``run`` keeps a :class:`WeightAverage` of the networks ``names`` (updated
    after every step, saved in its checkpoints' ``extra``, loaded into the networks at the end)."""
    warn("trainer-average", subject, stacklevel=3)
    if not names or decay <= 0:
        return trainer
    average = WeightAverage({k: trainer.modules[k] for k in names}, decay)
    state = average.state_dict()  # lists of the averaged tensors themselves (updated in place)
    plain_run = trainer.run

    def run(X, step_fn, **kwargs):
        def step(x, ctx):
            saved = ctx.extra.get(_AVERAGE_KEY)
            if saved is not None and saved is not state:  # resumed: continue the checkpoint's average
                average.load_state_dict(saved)
            ctx.extra[_AVERAGE_KEY] = state  # saved with every training checkpoint
            out = step_fn(x, ctx)
            average.update()
            return out

        history = plain_run(X, step, **kwargs)
        saved = trainer.extra.pop(_AVERAGE_KEY, None)
        if saved is not None and saved is not state:  # resumed after the last step: the checkpoint's average
            average.load_state_dict(saved)
        average.copy_to_modules()
        return history

    trainer.run = run
    return trainer


# -- renamed parameters of a method -----------------------------------------------------------------
@dataclass(frozen=True)
class RenamedParam:
    """A parameter name a method accepted before (``old``), mapped onto ``new`` with a deprecation
    warning. ``values`` maps old values (coerced like ``old_default``) onto new ones where the
    meaning changed too; ``new=None`` marks a retired parameter: accepted and ignored."""

    old: str
    new: str | None
    old_default: Any
    values: Mapping[Any, Any] = field(default_factory=dict)
    note: str = ""
    since: str = "0.2.0"
    removed_in: str = NEXT_REMOVAL

    def describe(self) -> str:
        if self.new is None:
            return f"{self.old} (retired, ignored{': ' + self.note if self.note else ''})"
        mapped = "; ".join(f"{k!r} -> {v!r}" for k, v in self.values.items())
        return f"{self.old} -> {self.new}" + (f" ({mapped})" if mapped else "")


def accepted_names(cls) -> set[str]:
    """The parameter names ``cls`` accepts: its schema's and the old names of its renamed ones."""
    return set(cls.param_schema()) | {r.old for r in getattr(cls, "renamed_params", ())}


def rename_params(cls, given: Mapping[str, Any], *, owner: str) -> dict[str, Any]:
    """``given`` with the deprecated names of ``cls.renamed_params`` mapped onto their
    replacements (warning once per method and name); a name given both ways is a ConfigError."""
    from .errors import ConfigError
    from .params import Param

    renamed = {r.old: r for r in getattr(cls, "renamed_params", ())}
    if not renamed or not any(k.replace("-", "_") in renamed for k in given):
        return dict(given)
    schema = cls.param_schema()
    current = {k.replace("-", "_"): v for k, v in given.items() if k.replace("-", "_") not in renamed}
    out: dict[str, Any] = dict(current)
    for key, value in given.items():
        r = renamed.get(key.replace("-", "_"))
        if r is None:
            continue
        warn("retired-param" if r.new is None else "renamed-param", owner or cls.__name__, detail=r.describe(), stacklevel=4)
        if r.new is None:
            continue
        old = Param(r.old, r.old_default, "").coerce(value, owner=owner)
        new_value = r.values.get(old, old) if r.values else old
        if r.new in current:
            given_new = schema[r.new].coerce(current[r.new], owner=owner) if r.new in schema else current[r.new]
            if given_new != new_value:
                raise ConfigError(f"{owner}: {r.old}={value!r} (the old name of {r.new}) and {r.new}={current[r.new]!r} "
                                  f"disagree; give {r.new} only")
        out[r.new] = new_value
    return out
