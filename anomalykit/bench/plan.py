"""What ``anomalykit bench`` runs: its settings, the cells (method or baseline x class x seed)
and the parameters each method cell gets (the budget, then the data's defaults such as patch mode
on MVTec-layout folders, then ``--set``: each later one wins).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..registry import get_registry
from .baselines import BASELINES


@dataclass(frozen=True)
class Cell:
    name: str
    kind: str  # "method" or "baseline"
    normal_class: int | None
    seed: int

    @property
    def key(self) -> tuple:
        return (self.name, self.kind, "" if self.normal_class is None else str(self.normal_class), str(self.seed))


def parse_classes(spec: str) -> list[int]:
    """'0-9', '0,3,7' or '2' -> sorted unique ints."""
    out: set[int] = set()
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-")
                out.update(range(int(lo), int(hi) + 1))
            elif part:
                out.add(int(part))
    except ValueError:
        raise ConfigError(f"--classes expects e.g. 0-9 or 0,3,7; got {spec!r}") from None
    if not out:
        raise ConfigError("--classes is empty")
    return sorted(out)


def _split_list(spec: str | None) -> list[str]:
    return [s.strip() for s in (spec or "").split(",") if s.strip()]


@dataclass
class BenchConfig:
    protocol: str = "one-class"
    data: str = "fashion-mnist"
    ood_data: str | None = None
    eval_split: str = "test"  # "val": held-out training rows only (for choosing defaults)
    classes: str | None = None  # None: "0" (the good images) on MVTec-layout data, else "0-9"
    methods: str = "ama"
    baselines: str = ""
    seeds: str = "0"
    budget: str = "small"
    max_train: int | None = None
    device: str = "auto"
    set: tuple[str, ...] = ()  # method params applied to every method (key=value or method.key=value)


def for_data(cfg: BenchConfig, *, map_baselines: bool = True) -> BenchConfig:
    """``cfg`` with what its data call for filled in: on an MVTec-layout folder (local defects with
    masks) the classes default to 0 (train on the good images) and, with ``map_baselines``, every
    installed method declaring ``map_baseline`` joins the methods, so each map is read against
    them on the same splits; elsewhere the classes default to 0-9."""
    from dataclasses import replace

    from ..data.datasets import is_mvtec_layout, looks_like_path

    mvtec = cfg.protocol == "one-class" and looks_like_path(cfg.data) and is_mvtec_layout(Path(cfg.data).expanduser())
    classes = cfg.classes if cfg.classes is not None else ("0" if mvtec else "0-9")
    methods = _split_list(cfg.methods)
    if mvtec and map_baselines:
        reg = get_registry()
        methods += [name for name, info in sorted(reg.methods.items()) if info.cls.map_baseline and name not in methods]
    return replace(cfg, classes=classes, methods=",".join(methods))


def plan(cfg: BenchConfig) -> list[Cell]:
    reg = get_registry()
    methods = _split_list(cfg.methods)
    baselines = _split_list(cfg.baselines)
    for m in methods:
        reg.method(m)  # ConfigError for unknown names, before anything runs
    for b in baselines:
        if b not in BASELINES:
            raise ConfigError(f"unknown baseline {b!r}; use one of {', '.join(BASELINES)}")
    if cfg.budget not in ("small", "paper", "default"):
        raise ConfigError("--budget must be small, paper or default")
    check_assignments(cfg.set, methods)
    seeds = parse_classes(cfg.seeds)
    classes: list[int | None] = parse_classes(cfg.classes or "0-9") if cfg.protocol == "one-class" else [None]
    return [
        Cell(name, kind, c, s)
        for c in classes
        for s in seeds
        for kind, names in (("baseline", baselines), ("method", methods))
        for name in names
    ]


def check_assignments(assignments, methods: list[str]) -> None:
    """Refuse a ``--set`` that would be silently dropped, before anything runs: ``METHOD.KEY=VALUE``
    must name an installed method (a folder's settings may name methods benchmarked by an earlier
    command into it) and one of its parameters; a bare ``KEY=VALUE`` must be a parameter of at
    least one planned method (it applies to each method that has it)."""
    from ..params import parse_assignments

    from ..deprecation import accepted_names

    reg = get_registry()
    schemas = {m: accepted_names(reg.method(m).cls) for m in methods}
    for key in parse_assignments(assignments):
        target, _, pkey = key.rpartition(".")
        if target:
            if target not in reg.methods:
                raise ConfigError(f"--set {key}: no installed method is called {target!r} (installed: {', '.join(sorted(reg.methods))})")
            schema = accepted_names(reg.method(target).cls)
            if pkey.replace("-", "_") not in schema:
                raise ConfigError(f"--set {key}: {target} has no parameter {pkey!r}; its parameters: "
                                  f"{', '.join(reg.method(target).cls.param_schema())}")
        elif not any(pkey.replace("-", "_") in schema for schema in schemas.values()):
            known = sorted({k for schema in schemas.values() for k in schema})
            raise ConfigError(f"--set {key}: no benchmarked method has a parameter {pkey!r}; known: {', '.join(known) or 'none'}")


def method_params(name: str, cfg: BenchConfig, seed: int) -> dict[str, Any]:
    from ..deprecation import accepted_names
    from ..params import parse_assignments

    from ..pipeline import data_defaults

    cls = get_registry().method(name).cls
    accepted = accepted_names(cls)
    budget = dict(getattr(cls, "budgets", {}).get(cfg.budget, {})) if cfg.budget != "default" else {}
    sets = {}
    for key, value in parse_assignments(cfg.set).items():
        target, _, pkey = key.rpartition(".")
        if not target or target == name:
            if pkey.replace("-", "_") in accepted or target == name:
                sets[pkey] = value
    # what the data calls for (patch mode on MVTec-layout folders) goes over the budget, --set over both
    params = {**budget, **data_defaults(cfg.data, sets), **sets}
    params.update(seed=seed, device=cfg.device)
    return params
