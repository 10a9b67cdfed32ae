"""Datasets and evaluation protocols."""
from __future__ import annotations

from ..errors import ConfigError, DatasetError
from .datasets import BUILTIN_DATASETS, Dataset, load_path, looks_like_path
from .protocols import EVAL_SPLITS, PROTOCOLS, Split, ood, one_class, tabular_topk

__all__ = [
    "Dataset", "Split", "PROTOCOLS", "EVAL_SPLITS", "load_dataset", "make_split", "one_class", "ood", "tabular_topk",
    "register_builtin_datasets",
]


def register_builtin_datasets(registry) -> None:
    from ..registry import DatasetInfo

    for name, (loader, summary) in BUILTIN_DATASETS.items():
        registry.datasets[name] = DatasetInfo(name, summary, loader, "anomalykit")


def load_dataset(name: str, *, seed: int = 0) -> Dataset:
    """A registered dataset by name, or a user dataset from a path."""
    from ..registry import get_registry

    reg = get_registry()
    if name in reg.datasets:
        ds = reg.datasets[name].loader(seed)
        if not isinstance(ds, Dataset):
            raise DatasetError(f"dataset loader {name!r} returned {type(ds).__name__}, not anomalykit.data.Dataset")
        return ds
    if looks_like_path(name):
        return load_path(name, seed)
    raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(reg.datasets))}, or a path to .npy/.npz/.csv/image folder")


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
