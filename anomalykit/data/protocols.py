"""Evaluation protocols: how a dataset becomes (train rows, test rows, 0/1 anomaly labels).

- ``one-class``: train on class c of the train split; test on the whole test split, c normal.
- ``ood``: train on dataset A's train split; test on A's test split (normal) plus anomalies
  drawn from dataset B, 20% of the normal test count (AMA paper, section 4.1).
- ``tabular-topk``: pool all rows, split 50/50 (seeded); train on the normal rows of one half;
  score the other half and flag the top k% (k = its anomaly ratio) (MAE-simplex paper, sec. 4).

Tabular features are standardised with the training rows' mean and std.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from .datasets import Dataset, fingerprint

PROTOCOLS = ("one-class", "ood", "tabular-topk")
OOD_RATIO = 0.2


@dataclass
class Split:
    X_train: torch.Tensor
    X_test: torch.Tensor
    y_test: np.ndarray  # 1 = anomaly, 0 = normal
    info: dict = field(default_factory=dict)

    @property
    def anomaly_ratio(self) -> float:
        return float(self.y_test.mean())


def _subsample(X: torch.Tensor, max_rows: int | None, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    idx = np.arange(X.shape[0])
    if max_rows is not None and X.shape[0] > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(X.shape[0], size=max_rows, replace=False))
    return X[torch.from_numpy(idx)], idx


def _standardise(ds: Dataset, X_train: torch.Tensor, X_test: torch.Tensor):
    if ds.kind != "tabular":
        return X_train, X_test
    mean = X_train.mean(0, keepdim=True)
    std = X_train.std(0, keepdim=True).clamp_min(1e-6) if X_train.shape[0] > 1 else torch.ones_like(mean)
    return (X_train - mean) / std, (X_test - mean) / std


def _require_labels(ds: Dataset, protocol: str) -> None:
    if ds.y_train is None or ds.y_test is None:
        raise DatasetError(
            f"dataset {ds.name!r} has no labels, which the {protocol} protocol needs; "
            "save an .npz with X and y, or use it with --protocol ood"
        )


def one_class(ds: Dataset, normal_class: int, *, seed: int = 0, max_train: int | None = None) -> Split:
    _require_labels(ds, "one-class")
    present = sorted(set(np.unique(ds.y_train).tolist()))
    if normal_class not in present:
        raise ConfigError(
            f"--normal-class {normal_class} is not a class of {ds.name} (classes {present[0]}-{present[-1]})"
            if present and present == list(range(present[0], present[-1] + 1))
            else f"--normal-class {normal_class} is not a class of {ds.name} (classes {present})"
        )
    train_idx = np.flatnonzero(ds.y_train == normal_class)
    X_train, sub = _subsample(ds.X_train[torch.from_numpy(train_idx)], max_train, seed)
    y_test = (ds.y_test != normal_class).astype(np.int64)
    if y_test.min() == y_test.max():
        raise ConfigError(f"the {ds.name} test split has no anomalies for normal class {normal_class}")
    X_train, X_test = _standardise(ds, X_train, ds.X_test)
    info = {
        "protocol": "one-class",
        "dataset": ds.name,
        "normal_class": normal_class,
        "normal_class_name": ds.classes[normal_class] if normal_class < len(ds.classes) else str(normal_class),
        "split_fingerprint": fingerprint(train_idx[sub], y_test),
    }
    return Split(X_train, X_test, y_test, info)


def ood(a: Dataset, b: Dataset, *, seed: int = 0, max_train: int | None = None, ratio: float = OOD_RATIO) -> Split:
    if a.sample_shape != b.sample_shape:
        raise ConfigError(
            f"OOD data {b.name!r} has sample shape {b.sample_shape} but {a.name!r} has {a.sample_shape}; pick datasets of the same shape"
        )
    X_train, sub = _subsample(a.X_train, max_train, seed)
    n_anom = max(1, int(round(ratio * a.X_test.shape[0])))
    X_b, _ = b.all_rows()
    if X_b.shape[0] < n_anom:
        raise ConfigError(f"OOD data {b.name!r} has {X_b.shape[0]} rows; {n_anom} are needed ({ratio:.0%} of {a.X_test.shape[0]})")
    pick = np.sort(np.random.default_rng(seed + 1).choice(X_b.shape[0], size=n_anom, replace=False))
    X_test = torch.cat([a.X_test, X_b[torch.from_numpy(pick)]])
    y_test = np.concatenate([np.zeros(a.X_test.shape[0], np.int64), np.ones(n_anom, np.int64)])
    X_train, X_test = _standardise(a, X_train, X_test)
    info = {
        "protocol": "ood",
        "dataset": a.name,
        "ood_data": b.name,
        "normal_class": None,
        "split_fingerprint": fingerprint(sub, pick),
    }
    return Split(X_train, X_test, y_test, info)


def tabular_topk(ds: Dataset, *, normal_class: int = 0, seed: int = 0, max_train: int | None = None) -> Split:
    _require_labels(ds, "tabular-topk")
    X, y = ds.all_rows()
    is_anom = (y != normal_class).astype(np.int64)
    perm = np.random.default_rng(seed).permutation(X.shape[0])
    half = X.shape[0] // 2
    first, second = perm[:half], np.sort(perm[half:])
    train_idx = np.sort(first[is_anom[first] == 0])
    X_train, sub = _subsample(X[torch.from_numpy(train_idx)], max_train, seed)
    X_test, y_test = X[torch.from_numpy(second)], is_anom[second]
    if y_test.min() == y_test.max():
        raise ConfigError(f"the {ds.name} test half has only one class; use a dataset with anomalies")
    X_train, X_test = _standardise(ds, X_train, X_test)
    info = {
        "protocol": "tabular-topk",
        "dataset": ds.name,
        "normal_class": normal_class,
        "split_fingerprint": fingerprint(train_idx[sub], second),
    }
    return Split(X_train, X_test, y_test, info)
