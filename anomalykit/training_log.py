"""Training logs a user can follow during a long run and compare across runs.

With a run folder (``anomalykit run`` always has one; ``fit(checkpoint_dir=...)`` in Python) the
trainer writes, on the main process only, flushed as it goes:

- ``train_log.csv``: one row per logged value per step: ``phase, epoch, step, seconds, term, value``
  (long format: phases with different loss terms share one file; ``seconds`` since the phase
  started);
- ``epochs.csv``: one row per term per epoch: ``phase, epoch, seconds, samples_per_second, term,
  mean`` (the epoch's mean of each term, its wall time and throughput);
- with ``log`` including ``"tensorboard"`` (``anomalykit run --log tensorboard``; needs the
  ``tensorboard`` package, ``pip install 'anomalykit[tensorboard]'``): the same scalars as
  TensorBoard events in ``tensorboard/`` (``<phase>/<term>`` per step, ``epoch/<phase>/<term>`` per
  epoch, ``epoch/<phase>/samples_per_second``); open with ``tensorboard --logdir runs/``.

After ``--resume`` the files are appended to: the steps between the last checkpoint and the
interruption appear twice (the second time as they were redone).
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Iterable

from .errors import ConfigError

BACKENDS = ("csv", "tensorboard")
STEP_COLUMNS = ("phase", "epoch", "step", "seconds", "term", "value")
EPOCH_COLUMNS = ("phase", "epoch", "seconds", "samples_per_second", "term", "mean")


def check_backends(log: str | Iterable[str]) -> tuple[str, ...]:
    """``"csv"``, ``"tensorboard"``, ``"csv,tensorboard"`` or a sequence of those; csv is always on."""
    names = [s.strip() for s in (log.split(",") if isinstance(log, str) else log) if s and s.strip()]
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise ConfigError(f"unknown training log {bad[0]!r}; use {' or '.join(BACKENDS)}")
    return tuple(dict.fromkeys(["csv", *names]))


class TrainingLog:
    """The logs of one training phase in ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | Path, phase: str, backends: Iterable[str] = ("csv",)):
        self.folder, self.phase = Path(folder), phase
        self.folder.mkdir(parents=True, exist_ok=True)
        self.start = self.epoch_start = time.perf_counter()
        self._steps = self._open("train_log.csv", STEP_COLUMNS)
        self._epochs = self._open("epochs.csv", EPOCH_COLUMNS)
        self._writer = None
        if "tensorboard" in backends:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("--log tensorboard needs the tensorboard package: pip install 'anomalykit[tensorboard]'") from None
            self._writer = SummaryWriter(log_dir=str(self.folder / "tensorboard"))

    def _open(self, name: str, columns: tuple[str, ...]):
        path = self.folder / name
        new = not path.exists() or path.stat().st_size == 0
        fh = open(path, "a", newline="", buffering=1)
        w = csv.writer(fh)
        if new:
            w.writerow(columns)
        return fh, w

    def step(self, epoch: int, step: int, values: dict[str, float]) -> None:
        seconds = round(time.perf_counter() - self.start, 3)
        for term, value in values.items():
            self._steps[1].writerow((self.phase, epoch, step, seconds, term, f"{value:.8g}"))
            if self._writer is not None:
                self._writer.add_scalar(f"{self.phase}/{term}", value, step)

    def epoch(self, epoch: int, samples: int, means: dict[str, float]) -> None:
        seconds = time.perf_counter() - self.epoch_start
        self.epoch_start = time.perf_counter()
        rate = round(samples / seconds, 1) if seconds > 0 else ""
        for term, mean in means.items():
            self._epochs[1].writerow((self.phase, epoch, round(seconds, 3), rate, term, f"{mean:.8g}"))
        if self._writer is not None:
            for term, mean in means.items():
                self._writer.add_scalar(f"epoch/{self.phase}/{term}", mean, epoch)
            if rate != "":
                self._writer.add_scalar(f"epoch/{self.phase}/samples_per_second", rate, epoch)
            self._writer.flush()
        self._steps[0].flush()
        self._epochs[0].flush()

    def close(self) -> None:
        for fh, _ in (self._steps, self._epochs):
            fh.close()
        if self._writer is not None:
            self._writer.close()
