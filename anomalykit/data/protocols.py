"""Evaluation protocols: how a dataset becomes (train rows, test rows, 0/1 anomaly labels).

- ``one-class``: train on class c of the train split; test on the whole test split, c normal.
- ``ood``: train on dataset A's train split; test on A's test split (normal) plus anomalies
  drawn from dataset B, 20% of the normal test count (AMA paper, section 4.1).
- ``tabular-topk``: pool all rows, split 50/50 (seeded); train on the normal rows of one half;
  score the other half and flag the top k% (k = its anomaly ratio) (MAE-simplex paper, sec. 4).

Rows come out as the dataset holds them, tensors or lazy views of a file or folder (subsets and
concatenations of views are views: nothing is read until a detector reads a batch): scaling is the detector's job (its ``preprocess``
parameter is fitted on the training rows and saved with the model, see
:mod:`anomalykit.preprocess`), so a saved model scores raw files the same way.

``eval_split="val"`` (one-class and ood) never touches the test split: a seeded part of the
normal training rows is held out as the evaluation normals (as many as the test split has,
at most ``VAL_FRACTION`` of them), the model trains on the rest, and the anomalies are drawn
from the *training* rows of the other classes (one-class, as many per class as there are
evaluation normals) or of dataset B (ood, ``OOD_RATIO`` of the normals). It is the split for
choosing defaults, budgets and switches; the test split is for the final table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from ..lazy_rows import LazyRows, concat_rows, take_rows
from ..seeds import stream_seed
from .datasets import Dataset, fingerprint

PROTOCOLS = ("one-class", "ood", "tabular-topk")
EVAL_SPLITS = ("test", "val")
OOD_RATIO = 0.2
#: At most this fraction of the normal training rows is held out by ``eval_split="val"``.
VAL_FRACTION = 0.2


@dataclass
class Split:
    X_train: torch.Tensor | LazyRows
    X_test: torch.Tensor | LazyRows
    y_test: np.ndarray  # 1 = anomaly, 0 = normal
    info: dict = field(default_factory=dict)
    #: Ground-truth anomaly masks of the evaluation images (N, H, W) bool, where the dataset has them.
    masks_test: np.ndarray | None = None
    #: The defect type of each evaluation image (N,) str (``good`` = normal), where the dataset names them.
    defect_types: np.ndarray | None = None

    @property
    def anomaly_ratio(self) -> float:
        return float(self.y_test.mean())


def _subsample(X, max_rows: int | None, seed: int) -> tuple[torch.Tensor | LazyRows, np.ndarray]:
    idx = np.arange(X.shape[0])
    if max_rows is not None and X.shape[0] > max_rows:
        idx = np.sort(np.random.default_rng(stream_seed(seed, "subsample")).choice(X.shape[0], size=max_rows, replace=False))
    return take_rows(X, idx), idx


def _hold_out(n_rows: int, n_eval_normals: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (kept for training, held out for validation) among ``n_rows`` normal training
    rows: as many held out as the test split has normals, at most VAL_FRACTION of the rows."""
    n_val = max(1, min(n_eval_normals, int(round(VAL_FRACTION * n_rows))))
    if n_val >= n_rows:
        raise ConfigError(f"only {n_rows} normal training rows: too few to hold out a validation split")
    perm = np.random.default_rng(stream_seed(seed, "validation-holdout")).permutation(n_rows)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _check_eval_split(eval_split: str) -> None:
    if eval_split not in EVAL_SPLITS:
        raise ConfigError(f"unknown eval split {eval_split!r}; use one of {', '.join(EVAL_SPLITS)}")


def _require_labels(ds: Dataset, protocol: str) -> None:
    if ds.y_train is None or ds.y_test is None:
        raise DatasetError(
            f"dataset {ds.name!r} has no labels, which the {protocol} protocol needs; "
            "save an .npz with X and y, or use it with --protocol ood"
        )


def one_class(ds: Dataset, normal_class: int, *, seed: int = 0, max_train: int | None = None, eval_split: str = "test") -> Split:
    _require_labels(ds, "one-class")
    _check_eval_split(eval_split)
    present = sorted(set(np.unique(ds.y_train).tolist()))
    if normal_class not in present:
        raise ConfigError(
            f"--normal-class {normal_class} is not a class of {ds.name} (classes {present[0]}-{present[-1]})"
            if present and present == list(range(present[0], present[-1] + 1))
            else f"--normal-class {normal_class} is not a class of {ds.name} (classes {present})"
        )
    train_idx = np.flatnonzero(ds.y_train == normal_class)
    if eval_split == "val":
        keep, held = _hold_out(len(train_idx), int((ds.y_test == normal_class).sum()), seed)
        others = np.flatnonzero(ds.y_train != normal_class)
        n_anom = min(len(others), len(held) * (len(present) - 1))
        anom_idx = np.sort(np.random.default_rng(stream_seed(seed, "validation-anomalies")).choice(others, size=n_anom, replace=False))
        eval_idx = np.concatenate([train_idx[held], anom_idx])
        train_idx = train_idx[keep]
        X_eval = take_rows(ds.X_train, eval_idx)
        y_test = np.concatenate([np.zeros(len(held), np.int64), np.ones(n_anom, np.int64)])
    else:
        eval_idx, X_eval = None, ds.X_test
        y_test = (ds.y_test != normal_class).astype(np.int64)
    X_train, sub = _subsample(take_rows(ds.X_train, train_idx), max_train, seed)
    if y_test.min() == y_test.max():
        raise ConfigError(f"the {ds.name} {eval_split} split has no anomalies for normal class {normal_class}")
    X_test = X_eval
    info = {
        "protocol": "one-class",
        "dataset": ds.name,
        "normal_class": normal_class,
        "normal_class_name": ds.classes[normal_class] if normal_class < len(ds.classes) else str(normal_class),
        "eval_split": eval_split,
        "split_fingerprint": fingerprint(train_idx[sub], y_test) if eval_split == "test"
        else fingerprint(train_idx[sub], eval_idx, y_test),
    }
    with_masks = eval_split == "test" and ds.masks_test is not None and normal_class == 0
    return Split(X_train, X_test, y_test, info, ds.masks_test if with_masks else None,
                 ds.defect_types_test if with_masks else None)


def ood(a: Dataset, b: Dataset, *, seed: int = 0, max_train: int | None = None, ratio: float = OOD_RATIO,
        eval_split: str = "test") -> Split:
    _check_eval_split(eval_split)
    if a.sample_shape != b.sample_shape:
        raise ConfigError(
            f"OOD data {b.name!r} has sample shape {b.sample_shape} but {a.name!r} has {a.sample_shape}; pick datasets of the same shape"
        )
    if eval_split == "val":
        keep, held = _hold_out(a.X_train.shape[0], a.X_test.shape[0], seed)
        pool_a, X_normal, X_b = take_rows(a.X_train, keep), take_rows(a.X_train, held), b.X_train
    else:
        keep, held = np.arange(a.X_train.shape[0]), None
        pool_a, X_normal, X_b = a.X_train, a.X_test, b.all_rows()[0]
    X_train, sub = _subsample(pool_a, max_train, seed)
    n_anom = max(1, int(round(ratio * X_normal.shape[0])))
    if X_b.shape[0] < n_anom:
        raise ConfigError(f"OOD data {b.name!r} has {X_b.shape[0]} rows; {n_anom} are needed ({ratio:.0%} of {X_normal.shape[0]})")
    pick = np.sort(np.random.default_rng(stream_seed(seed, "ood-anomalies")).choice(X_b.shape[0], size=n_anom, replace=False))
    X_test = concat_rows([X_normal, take_rows(X_b, pick)])
    y_test = np.concatenate([np.zeros(X_normal.shape[0], np.int64), np.ones(n_anom, np.int64)])
    info = {
        "protocol": "ood",
        "dataset": a.name,
        "ood_data": b.name,
        "normal_class": None,
        "eval_split": eval_split,
        "split_fingerprint": fingerprint(sub, pick) if eval_split == "test" else fingerprint(keep[sub], held, pick),
    }
    return Split(X_train, X_test, y_test, info)


def tabular_topk(ds: Dataset, *, normal_class: int = 0, seed: int = 0, max_train: int | None = None,
                 eval_split: str = "test") -> Split:
    _require_labels(ds, "tabular-topk")
    if eval_split != "test":
        raise ConfigError("--eval-split val applies to the one-class and ood protocols; tabular-topk splits all rows 50/50 itself")
    X, y = ds.all_rows()
    is_anom = (y != normal_class).astype(np.int64)
    perm = np.random.default_rng(stream_seed(seed, "tabular-split")).permutation(X.shape[0])
    half = X.shape[0] // 2
    first, second = perm[:half], np.sort(perm[half:])
    train_idx = np.sort(first[is_anom[first] == 0])
    X_train, sub = _subsample(take_rows(X, train_idx), max_train, seed)
    X_test, y_test = take_rows(X, second), is_anom[second]
    if y_test.min() == y_test.max():
        raise ConfigError(f"the {ds.name} test half has only one class; use a dataset with anomalies")
    info = {
        "protocol": "tabular-topk",
        "dataset": ds.name,
        "normal_class": normal_class,
        "eval_split": "test",
        "split_fingerprint": fingerprint(train_idx[sub], second),
    }
    return Split(X_train, X_test, y_test, info)
