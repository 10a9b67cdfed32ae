"""Datasets and evaluation protocols.

Dependencies point one way: this package uses the registry (for datasets that plugins
register); the registry never imports it.
"""
from __future__ import annotations

from ..errors import ConfigError, DatasetError
from .datasets import BUILTIN_DATASETS, Dataset, load_path, looks_like_path
from .protocols import EVAL_SPLITS, PROTOCOLS, Split, ood, one_class, tabular_topk

__all__ = [
    "Dataset", "Split", "PROTOCOLS", "EVAL_SPLITS", "dataset_summaries", "load_dataset", "make_split", "one_class", "ood",
    "tabular_topk",
]


def _named_loaders() -> dict[str, tuple]:
    """name -> (loader, summary, provider): the built-in datasets, then those plugins register
    (a plugin cannot shadow a built-in name)."""
    from ..registry import get_registry

    out = {name: (loader, summary, "anomalykit") for name, (loader, summary) in BUILTIN_DATASETS.items()}
    for name, info in get_registry().datasets.items():
        out.setdefault(name, (info.loader, info.summary, info.plugin))
    return out


def dataset_summaries() -> dict[str, str]:
    """Every named dataset with its one-line summary (built-in and from plugins)."""
    return {name: summary for name, (_, summary, _) in _named_loaders().items()}


def load_dataset(name: str, *, seed: int = 0) -> Dataset:
    """A named dataset (built-in or from a plugin), or a user dataset from a path."""
    named = _named_loaders()
    if name in named:
        ds = named[name][0](seed)
        if not isinstance(ds, Dataset):
            raise DatasetError(f"dataset loader {name!r} returned {type(ds).__name__}, not anomalykit.data.Dataset")
        return ds
    if looks_like_path(name):
        return load_path(name, seed)
    raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(named))}, or a path to .npy/.npz/.csv/image folder")


def make_split(
    protocol: str,
    data: str,
    *,
    normal_class: int = 0,
    ood_data: str | None = None,
    seed: int = 0,
    max_train: int | None = None,
    eval_split: str = "test",
) -> Split:
    """Load the dataset(s) and apply ``protocol``; the entry point the CLI and benchmarks use.

    ``eval_split="val"`` evaluates on held-out *training* rows only (see :mod:`.protocols`).
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if max_train is not None and max_train < 1:
        raise ConfigError("--max-train must be >= 1")
    if protocol == "ood" and not ood_data:
        raise ConfigError("--protocol ood needs --ood-data NAME (the dataset the anomalies come from)")
    if ood_data and protocol != "ood":
        raise ConfigError(f"--ood-data only applies to --protocol ood (got --protocol {protocol})")
    ds = load_dataset(data, seed=seed)
    if protocol == "one-class":
        return one_class(ds, normal_class, seed=seed, max_train=max_train, eval_split=eval_split)
    if protocol == "ood":
        return ood(ds, load_dataset(ood_data, seed=seed), seed=seed, max_train=max_train, eval_split=eval_split)
    return tabular_topk(ds, normal_class=normal_class, seed=seed, max_train=max_train, eval_split=eval_split)
