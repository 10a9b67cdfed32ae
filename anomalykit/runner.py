"""One experiment end to end: method + data + protocol -> trained model, metrics, report folder.

Used by ``anomalykit run`` and the benchmarks. Everything that can be checked is checked before
the run folder is created; the folder gets ``config.toml`` first (so ``--resume`` can restart
it) and ``metrics.json`` last, atomically, so a folder without ``metrics.json`` is unfinished.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from . import distributed as D
from .checkpoint import atomic_write_text
from .data import make_split
from .errors import ConfigError
from .metrics import detection_metrics, topk_metrics
from .registry import get_registry
from .validation import as_input_tensor

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


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
    echo=print,
) -> dict[str, Any]:
    """Train, score and report one run; returns the metrics dict (also in ``out/metrics.json``)."""
    reg = get_registry()
    info = reg.method(cfg.method)
    det = info.cls(**cfg.params)  # validates params (ConfigError on a bad key or value)
    cfg.params = det.get_params()
    if cfg.checkpoint_every < 0:
        raise ConfigError("--checkpoint-every must be >= 0")
    split = make_split(
        cfg.protocol, cfg.data, normal_class=cfg.normal_class, ood_data=cfg.ood_data,
        seed=det.hp.seed, max_train=cfg.max_train, eval_split=cfg.eval_split,
    )
    _ = det.device  # fail early on an unavailable device
    for name, X in (("training data", split.X_train), ("test data", split.X_test)):
        as_input_tensor(X, name=f"{cfg.data} {name}")  # NaN/inf, empty, rank: fail before writing anything

    out = Path(out) if out is not None else default_out_dir(cfg)
    main = D.is_main_process()
    if main:
        _prepare_out_dir(out, cfg, resume)
    D.barrier()

    desc = f"{cfg.method} on {split.info['dataset']}" + (
        f" ({cfg.protocol}, normal class {cfg.normal_class})" if cfg.protocol != "ood" else f" vs {cfg.ood_data}"
    )
    if main:
        echo(f"{desc}: {split.X_train.shape[0]} training / {split.X_test.shape[0]} test samples, device {det.device}")
    t0 = time.perf_counter()
    det.fit(split.X_train, checkpoint_dir=out, checkpoint_every=cfg.checkpoint_every, resume=resume, progress=progress)
    train_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    scores = det.score_samples(split.X_test)
    score_seconds = time.perf_counter() - t1

    metrics = detection_metrics(scores, split.y_test, det.threshold_)
    if cfg.protocol == "tabular-topk":
        metrics.update(topk_metrics(scores, split.y_test))
    record = {
        "method": cfg.method,
        "dataset": split.info["dataset"],
        "protocol": cfg.protocol,
        "normal_class": split.info.get("normal_class"),
        "ood_data": split.info.get("ood_data"),
        "eval_split": cfg.eval_split,
        "seed": det.hp.seed,
        **metrics,
        "threshold": det.threshold_,
        "preprocess": det.preprocessor_.describe(),
        "n_train": int(split.X_train.shape[0]),
        "n_test": int(split.X_test.shape[0]),
        "anomaly_ratio": split.anomaly_ratio,
        "train_seconds": round(train_seconds, 3),
        # epochs x training rows / train_seconds (all ranks together; includes the post-training
        # statistics pass); None for methods without an epochs parameter
        "train_samples_per_second": (round(int(split.X_train.shape[0]) * det.hp.epochs / train_seconds, 1)
                                     if isinstance(getattr(det.hp, "epochs", None), int) and train_seconds > 0 else None),
        "score_seconds": round(score_seconds, 3),
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
    if main:
        from .report import write_plots

        title = f"{cfg.method}: {desc.split(': ')[0].split(' on ', 1)[1]}"
        np.save(out / "scores.npy", np.stack([scores, split.y_test.astype(np.float64)]))
        record["files"] = write_plots(out, det, split, scores, title) + ["scores.npy"]
        det.save(out / "model.pt")
        record["files"] += ["model.pt", "config.toml", "metrics.json"]
        for stale in out.glob("train_state-*.pt"):
            stale.unlink()
        atomic_write_text(out / "metrics.json", json.dumps(record, indent=2, default=_json_default) + "\n")
        record["out"] = str(out)
    D.barrier()
    return record


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
    try:
        from .ops import active_kernels
    except ImportError:
        return {}
    return active_kernels(device)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)
