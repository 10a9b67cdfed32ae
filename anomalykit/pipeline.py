"""The experiment pipeline: ``anomalykit run``, ``bench`` and ``score`` all go through it.

::

    RunConfig.resolve(...)        flags + config file + --resume rules, in one place
      -> load_split(cfg)          dataset + protocol; inputs validated once, before any file is written
      -> build_detector(...)      the method from the registry; parameters validated once
      -> fit_and_score(...)       train, score the evaluation rows, time both
      -> evaluate(...)            scikit-learn metrics (+ top-k for tabular-topk)
      -> write_report(...)        run folders: metrics.json, plots, scores.npy, model.pt (run only)

Who owns what: the data layer (:mod:`anomalykit.data`) owns datasets and protocols; the
:class:`~anomalykit.Detector` owns validation of user arrays, input scaling, which rows train and
the threshold; this module owns the order of the steps, timing, and run folders; the CLI only
parses and prints. A run folder gets ``config.toml`` first (so ``--resume`` can restart it) and
``metrics.json`` last, atomically, so a folder without ``metrics.json`` is unfinished.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ._version import __version__
from . import distributed as D
from .checkpoint import atomic_write_text
from .data import Split, make_split
from .detector import Detector
from .errors import ConfigError
from .metrics import detection_metrics, topk_metrics
from .registry import MethodInfo, get_registry
from .training import RESUMABLE_CHANGES
from .lazy_rows import LazyRows, take_rows
from .validation import as_streamed_input

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

#: What ``--resume`` may change: the method parameters a training checkpoint accepts changed
#: (``training.RESUMABLE_CHANGES``, their one home) and how often to checkpoint.
RESUME_OVERRIDES = ("checkpoint_every", *sorted(RESUMABLE_CHANGES))


@dataclass
class RunConfig:
    """Everything that defines a run; written to and read from ``config.toml``."""

    method: str
    data: str = "digits"
    protocol: str = "one-class"
    normal_class: int = 0
    ood_data: str | None = None
    max_train: int | None = None
    eval_split: str = "test"
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 0

    def to_toml(self) -> str:
        import tomli_w

        doc = {k: v for k, v in asdict(self).items() if v is not None and k != "params"}
        doc["params"] = {k: v for k, v in self.params.items() if v is not None}
        return tomli_w.dumps(doc)

    @classmethod
    def from_toml(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML ({exc})") from None
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "method" not in doc:
            raise ConfigError(f"{path}: missing 'method'")
        if not isinstance(doc.get("params", {}), dict):
            raise ConfigError(f"{path}: 'params' must be a table")
        return cls(**doc)

    @classmethod
    def resolve(
        cls,
        *,
        method: str | None = None,
        config_file: str | Path | None = None,
        resume: str | Path | None = None,
        fields: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> "RunConfig":
        """The run's configuration from the command line, in one place.

        ``fields`` are RunConfig fields and ``params`` method parameters given on the command line
        (None = not given). Precedence: command line > ``config_file`` > defaults. With ``resume``
        (a run folder) the folder's ``config.toml`` is used as it is, except for
        :data:`RESUME_OVERRIDES`; anything else given is an error.
        """
        fields = {k: v for k, v in (fields or {}).items() if v is not None}
        params = {k: v for k, v in (params or {}).items() if v is not None}
        if resume is not None:
            cfg = cls.from_toml(Path(resume) / "config.toml")
            given = [k for k in fields if k not in RESUME_OVERRIDES] + [k for k in params if k not in RESUME_OVERRIDES]
            if config_file is not None:
                given.append("config")
            if given or (method and method != cfg.method):
                flags = [k.replace("_", "-") for k in given] or ["METHOD"]
                raise ConfigError(f"--resume continues the run exactly as configured; drop --{', --'.join(flags)}")
        elif config_file is not None:
            cfg = cls.from_toml(config_file)
            if method and method != cfg.method:
                raise ConfigError(f"METHOD {method!r} disagrees with {config_file} (method = {cfg.method!r})")
        else:
            if not method:
                raise ConfigError("missing METHOD; e.g. `anomalykit run ama` (`anomalykit list` shows methods)")
            cfg = cls(method=method)
        for key, value in fields.items():
            if key not in cls.__dataclass_fields__ or key in ("method", "params"):
                raise ConfigError(f"unknown run setting {key!r}")
            setattr(cfg, key, value)
        cfg.params = {**cfg.params, **params}
        if cfg.checkpoint_every < 0:
            raise ConfigError("--checkpoint-every must be >= 0")
        return cfg


# -- the steps ---------------------------------------------------------------------------------------
def build_detector(method: str, params: dict[str, Any], data: str | None = None) -> tuple[Detector, MethodInfo]:
    """An unfitted detector of ``method`` (parameters validated against its schema); with ``data``
    the defaults that data calls for (:func:`data_defaults`) fill what ``params`` leaves unset."""
    info = get_registry().method(method)
    return info.cls(**{**data_defaults(data, params), **params}), info


def data_defaults(data: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """Parameters a kind of data calls for, where ``given`` does not set them: an MVTec-layout folder
    (local defects in images) trains in patch mode (:func:`anomalykit.patches.mvtec_defaults`)."""
    from .data.datasets import is_mvtec_layout, looks_like_path
    from .patches import mvtec_defaults

    if not data or not looks_like_path(data) or not is_mvtec_layout(Path(data).expanduser()):
        return {}
    keys = {k.replace("-", "_") for k in given}
    return {k: v for k, v in mvtec_defaults().items() if k not in keys}


def load_split(cfg: RunConfig, *, seed: int) -> Split:
    """The dataset split of a run, its rows validated (NaN/inf, empty, rank) before anything is
    written. Lazy rows (a ``.npy`` file, an image folder) stay lazy: float rows are read once for
    the check, a batch at a time; an image file that cannot be decoded fails when it is read."""
    split = make_split(
        cfg.protocol, cfg.data, normal_class=cfg.normal_class, ood_data=cfg.ood_data,
        seed=seed, max_train=cfg.max_train, eval_split=cfg.eval_split,
    )
    split.X_train = as_streamed_input(split.X_train, name=f"{cfg.data} training data")
    split.X_test = as_streamed_input(split.X_test, name=f"{cfg.data} test data")
    for X in (split.X_train, split.X_test):
        if isinstance(X, LazyRows):
            X.check_values()
    return split


@dataclass
class Outcome:
    """Scores of the evaluation rows and the time each stage took."""

    scores: np.ndarray
    threshold: float
    train_seconds: float
    score_seconds: float


def fit_and_score(det: Detector, split: Split, **fit_options: Any) -> Outcome:
    """Train on the split's training rows, score its evaluation rows; ``fit_options`` go to ``fit``."""
    t0 = time.perf_counter()
    det.fit(split.X_train, **fit_options)
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    scores = det.score_samples(split.X_test)
    return Outcome(scores, det.threshold_, train_seconds, time.perf_counter() - t1)


def anomaly_maps(det: Detector, split: Split, *, limit: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows, maps)``: the detector's anomaly maps (len(rows), H, W) of the split's evaluation
    images ``rows`` (all of them when the split has masks, else the first ``limit`` anomalous ones
    for the report), or None when the method gives no map or the data are not images."""
    from .errors import ConfigError

    if split.X_test.ndim != 4:
        return None
    rows = np.arange(split.X_test.shape[0])
    if split.masks_test is None and limit is not None:
        rows = np.flatnonzero(split.y_test == 1)[:limit]
    try:
        return rows, det.anomaly_map(take_rows(split.X_test, rows))
    except ConfigError:
        return None


def pixel_metrics(maps: np.ndarray, split: Split, scores: np.ndarray | None = None) -> dict[str, Any]:
    """Pixel AUROC and AUPRO (up to FPR 0.3) of the maps of every evaluation image (N, H, W)
    against the split's masks. Where the split names each image's defect type, also
    ``per_defect_type``: for each type, the same measures (and the image AUROC of ``scores``, (N,))
    on the good images plus that type's images only, as MVTec AD reports them."""
    from .metrics import aupro, pixel_auroc

    out: dict[str, Any] = {"pixel_auroc": pixel_auroc(maps, split.masks_test), "aupro": aupro(maps, split.masks_test)}
    if split.defect_types is None:
        return out
    types = np.asarray(split.defect_types)
    good = types == "good"
    per_type = {}
    for t in sorted(set(types.tolist()) - {"good"}):
        rows = good | (types == t)
        entry: dict[str, Any] = {"images": int((types == t).sum())}
        if scores is not None and good.any():
            entry["image_auroc"] = detection_metrics(np.asarray(scores)[rows], split.y_test[rows], 0.0)["auroc"]
        if split.masks_test[rows].any():  # a type without defect pixels (no masks) has no pixel measures
            entry["pixel_auroc"] = pixel_auroc(maps[rows], split.masks_test[rows])
            entry["aupro"] = aupro(maps[rows], split.masks_test[rows])
        per_type[t] = entry
    out["per_defect_type"] = per_type
    return out


def evaluate(scores: np.ndarray, split: Split, threshold: float, protocol: str) -> dict[str, float]:
    """AUROC, AUPR, F1 at ``threshold`` (+ top-k precision/recall/F1 for tabular-topk)."""
    metrics = detection_metrics(scores, split.y_test, threshold)
    if protocol == "tabular-topk":
        metrics.update(topk_metrics(scores, split.y_test))
    return metrics


# -- a run folder ------------------------------------------------------------------------------------
def default_out_dir(cfg: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    data = Path(cfg.data).name if ("/" in cfg.data) else cfg.data
    return Path("runs") / f"{cfg.method}-{data}-{stamp}"


def run_experiment(
    cfg: RunConfig,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
    log: str = "csv",
) -> dict[str, Any]:
    """Train, score and report one run; returns the metrics record (also in ``out/metrics.json``)."""
    det, info = build_detector(cfg.method, cfg.params, cfg.data)
    cfg.params = det.get_params()
    split = load_split(cfg, seed=det.hp.seed)
    _ = det.device  # fail early on an unavailable device

    out = Path(out) if out is not None else default_out_dir(cfg)
    main = D.is_main_process()
    if main:
        _prepare_out_dir(out, cfg, resume)
    D.barrier()

    desc = f"{cfg.method} on {split.info['dataset']}" + (
        f" ({cfg.protocol}, normal class {cfg.normal_class})" if cfg.protocol != "ood" else f" vs {cfg.ood_data}"
    ) + (" [validation split]" if cfg.eval_split == "val" else "")
    if main:
        echo(f"{desc}: {split.X_train.shape[0]} training / {split.X_test.shape[0]} test samples, device {det.device}")
    outcome = fit_and_score(det, split, checkpoint_dir=out, checkpoint_every=cfg.checkpoint_every, resume=resume, progress=progress,
                            log=log)
    record = _record(cfg, info, det, split, outcome)
    maps = anomaly_maps(det, split, limit=8)  # every rank: map_batches shards and gathers under torchrun
    if maps is not None and split.masks_test is not None:
        record.update(pixel_metrics(maps[1], split, outcome.scores))  # maps of every row: the split has masks
    if main:
        record["files"] = write_report(out, det, split, outcome.scores, f"{cfg.method}: {desc.split(' on ', 1)[1]}", maps)
        atomic_write_text(out / "metrics.json", json.dumps(record, indent=2, default=_json_default) + "\n")
        record["out"] = str(out)
    D.barrier()
    return record


def _record(cfg: RunConfig, info: MethodInfo, det: Detector, split: Split, outcome: Outcome) -> dict[str, Any]:
    n_train = int(split.X_train.shape[0])
    epochs = det.epochs_
    rows_per_epoch = n_train if det.epoch_steps_ is None else min(n_train, det.epoch_steps_ * det.hp.batch_size * D.world_size())
    return {
        "method": cfg.method,
        "dataset": split.info["dataset"],
        "protocol": cfg.protocol,
        "normal_class": split.info.get("normal_class"),
        "ood_data": split.info.get("ood_data"),
        "eval_split": cfg.eval_split,
        "seed": det.hp.seed,
        **evaluate(outcome.scores, split, outcome.threshold, cfg.protocol),
        "threshold": outcome.threshold,
        "preprocess": det.preprocessor_.describe(),
        "n_train": n_train,
        "n_test": int(split.X_test.shape[0]),
        "anomaly_ratio": split.anomaly_ratio,
        "train_seconds": round(outcome.train_seconds, 3),
        "epochs_trained": epochs,  # epochs, or fewer under max_steps
        "steps_trained": det.steps_,  # optimiser steps (per rank) of the main training
        # training rows seen / train_seconds (all ranks together; includes the post-training
        # statistics pass): epochs trained x the rows of an epoch, fewer when max_steps cut it
        "train_samples_per_second": (round(epochs * rows_per_epoch / outcome.train_seconds, 1)
                                     if outcome.train_seconds > 0 else None),
        "score_seconds": round(outcome.score_seconds, 3),
        "device": str(det.device),
        "world_size": D.world_size(),
        "kernels": _kernels(det.device),
        "split_fingerprint": split.info["split_fingerprint"],
        "params": cfg.params,
        "plugin": {"name": info.plugin, "distribution": info.distribution, "version": info.version},
        "anomalykit_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "final_losses": det.history_[-1] if det.history_ else {},
    }


def write_report(out: Path, det: Detector, split: Split, scores: np.ndarray, title: str,
                 maps: tuple[np.ndarray, np.ndarray] | None = None) -> list[str]:
    """Plots, scores.npy and model.pt of a finished run (rank 0); returns the file names."""
    from .report import write_plots

    np.save(out / "scores.npy", np.stack([scores, split.y_test.astype(np.float64)]))
    files = write_plots(out, det, split, scores, title, maps) + ["scores.npy"]
    det.save(out / "model.pt")
    for stale in out.glob("train_state-*.pt"):
        stale.unlink()
    logs = [name for name in ("train_log.csv", "epochs.csv", "tensorboard") if (out / name).exists()]
    return files + logs + ["model.pt", "config.toml", "metrics.json"]


def _prepare_out_dir(out: Path, cfg: RunConfig, resume: bool) -> None:
    if resume:
        if not (out / "config.toml").is_file():
            raise ConfigError(f"--resume {out}: no config.toml there; is it a run folder?")
        if (out / "metrics.json").exists():
            raise ConfigError(f"--resume {out}: that run is already complete (metrics.json exists)")
        return
    if out.exists() and any(out.iterdir()):
        if (out / "metrics.json").exists():
            raise ConfigError(f"output folder {out} already holds a finished run; choose another --out")
        raise ConfigError(f"output folder {out} is not empty; resume it with --resume {out} or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.toml", cfg.to_toml())


def _kernels(device: torch.device) -> dict[str, str]:
    from .ops import active_kernels

    return active_kernels(device)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)
