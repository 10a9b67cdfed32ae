"""The training loop every method runs: batching, progress, divergence checks, checkpoints, resume.

A plugin describes one optimisation step; :class:`Trainer` does the rest::

    trainer = self.trainer(modules=self.nets, optimizers={"d": opt_d, "g": opt_g})
    def step(batch, ctx):
        loss_d = ...;  ctx.update("d", loss_d, term="critic")
        loss_g = ...;  ctx.update("g", loss_g, term="generator")
        return {"critic": loss_d, "generator": loss_g}
    trainer.run(X, step)

Guarantees: batches come from a ``DistributedSampler`` (per-epoch reshuffle, seeded; also with
one process); every loss passed to ``ctx.update`` and every value returned by ``step`` is checked
for NaN/inf before the optimiser steps (a :class:`DivergenceError` names method, epoch, step and
loss term); parameters are checked at each checkpoint and epoch end; checkpoints are atomic and
hold nets, optimisers, schedulers, RNG states (torch, numpy, python, the step generator) and the
position in the epoch, so ``resume`` reproduces an uninterrupted run bitwise on the CPU. Under
torchrun, gradients are averaged across ranks before every optimiser step and only rank 0
writes checkpoints and shows progress.
"""
from __future__ import annotations

import math
import random
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from . import distributed as D
from . import precision as _precision
from .seeds import stream_seed
from .training_log import TrainingLog
from .checkpoint import atomic_torch_save, safe_load, stamp
from .errors import CheckpointError, DivergenceError, first_line
from .lazy_rows import read_batches


#: Parameters that may differ between a run and its resumption (they do not change what was learnt).
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "device", "score_batch_size", "contamination"})


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one epoch of ``n`` rows on this rank: what :meth:`Trainer.batches` yields.

    Each rank gets ceil(n / world size) rows (``DistributedSampler`` pads); a last batch of one
    row is dropped when there are others.
    """
    per_rank = math.ceil(n / D.world_size())
    count = math.ceil(per_rank / batch_size)
    last = per_rank - (count - 1) * batch_size
    return count - 1 if count > 1 and last < 2 else count


def capped_epochs(epochs: int, max_steps: int | None, n: int, batch_size: int) -> int:
    """The epochs a fit trains: ``epochs``, lowered to the whole epochs that fit in ``max_steps``.

    ``min(epochs, max(1, max_steps // batches_per_epoch(n, batch_size)))``: whole epochs, so the
    per-epoch reshuffle and learning-rate schedules stay as they are; at least one epoch, so a
    dataset with more batches than ``max_steps`` is still seen once. ``max_steps=None``: ``epochs``.
    """
    if max_steps is None or epochs == 0:
        return int(epochs)
    return min(int(epochs), max(1, int(max_steps) // max(batches_per_epoch(n, batch_size), 1)))


def capped_epoch_steps(epochs: int, max_steps: int | None, n: int, batch_size: int) -> int | None:
    """The steps of the one epoch a fit trains when that epoch alone is longer than ``max_steps``.

    ``max_steps`` when ``batches_per_epoch(n, batch_size) > max_steps`` (and ``epochs`` >= 1): the
    epoch stops after ``max_steps`` batches of its seeded shuffle, so it sees a random subset of
    about ``max_steps x batch_size`` rows; otherwise ``None`` (whole epochs, :func:`capped_epochs`).
    """
    if max_steps is None or epochs == 0 or batches_per_epoch(n, batch_size) <= int(max_steps):
        return None
    return int(max_steps)


class _NoProgress:
    """The progress bar's calls when no bar is shown. tqdm is not touched at all: creating even a
    disabled bar takes its global lock, which a process forked meanwhile (data loader workers,
    multiprocessing) would inherit held."""

    disable = True

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class FitOptions:
    """How ``fit`` runs (not what it learns): checkpoints, resume and progress display.

    checkpoint_dir: folder for ``train_state-<phase>.pt``; None disables checkpoints.
    checkpoint_every: steps between checkpoints; 0 = at the end of every epoch.
    resume: continue from the checkpoint in ``checkpoint_dir`` if there is one.
    progress: show tqdm bars (None = only when stderr is a terminal).
    log: training logs written into ``checkpoint_dir`` (:mod:`anomalykit.training_log`): csv
    always, plus "tensorboard".
    """

    checkpoint_dir: str | Path | None = None
    checkpoint_every: int = 0
    resume: bool = False
    progress: bool | None = None
    log: tuple[str, ...] = ("csv",)

    @property
    def show_progress(self) -> bool:
        shown = sys.stderr.isatty() if self.progress is None else self.progress
        return shown and D.is_main_process()


class StepContext:
    """What a step function sees: position, a seeded generator, and ``update``."""

    def __init__(self, trainer: "Trainer"):
        self._trainer = trainer
        self.epoch = 0
        self.step = 0  # global step, counted from 0
        self.batch_index = 0  # index of the batch within the epoch
        self.generator: torch.Generator = trainer.generator
        #: The networks to call in a step when their gradients must be synchronised: under torchrun
        #: each is wrapped in DistributedDataParallel, otherwise it is the module itself. Call the
        #: plain module (``self.nets[name]`` in a detector) for a network that is frozen in this
        #: update, so DDP does not wait for gradients that never come.
        self.nets: Mapping[str, nn.Module] = trainer.modules
        self.labels: torch.Tensor | None = None  # labels of this batch when run(..., labels=) was given

    @property
    def extra(self) -> dict:
        """Plugin state that must survive a resume (saved in every checkpoint)."""
        return self._trainer.extra

    def check(self, term: str, value) -> None:
        """Raise :class:`DivergenceError` if ``value`` (tensor or float) is not finite."""
        v = _as_float(value)
        if not math.isfinite(v):
            self._trainer.diverged(term, v, self)

    def update(self, names: str | Sequence[str], loss: torch.Tensor, *, term: str | None = None) -> float:
        """zero_grad -> check ``loss`` -> backward -> average grads across ranks -> step.

        ``names`` selects the optimisers (one, or several that share this loss).
        Returns the loss as a float.
        """
        names = (names,) if isinstance(names, str) else tuple(names)
        term = term or "+".join(names)
        loss = loss.float()  # a reduced-precision loss is checked and stepped on in float32
        self.check(term, loss)
        opts = [self._trainer.optimizers[n] for n in names]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        scaler = self._trainer.scaler  # 16-mixed: scaled backward, unscaled gradients, skipped inf steps
        (scaler.scale(loss) if scaler is not None else loss).backward()
        synced = self._trainer.ddp_params
        for opt in opts:
            if scaler is not None:
                scaler.unscale_(opt)
            params = [p for group in opt.param_groups for p in group["params"] if id(p) not in synced]
            D.average_gradients(params)  # what DDP does, for networks stepped outside a DDP wrapper
            if scaler is not None:
                scaler.step(opt)
            else:
                opt.step()
        if scaler is not None:
            scaler.update()
        return float(loss.detach())


class Trainer:
    """Runs ``epochs`` passes of a step function over a tensor dataset. See module docstring."""

    def __init__(
        self,
        *,
        method: str,
        modules: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        schedulers: Mapping[str, Any] | None = None,
        epochs: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        options: FitOptions | None = None,
        phase: str = "train",
        config: Mapping[str, Any] | None = None,
        epoch_steps: int | None = None,
        scheduler_interval: str = "epoch",
        precision: str = "32",
    ):
        self.method = method
        self.modules = dict(modules)
        self.optimizers = dict(optimizers)
        self.schedulers = dict(schedulers or {})
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        #: at most this many batches per epoch (the first of its shuffle); None: the whole epoch
        self.epoch_steps = None if epoch_steps is None else int(epoch_steps)
        #: when the schedulers step: after every epoch ("epoch") or after every training step ("step")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.scheduler_interval = scheduler_interval
        self.seed = int(seed)
        self.device = torch.device(device)
        self.options = options or FitOptions()
        self.phase = phase
        self.config = dict(config or {})
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(stream_seed(self.seed, "training-noise"))
        self.extra: dict = {}
        self.history: list[dict[str, float]] = []
        self._epoch_sums: dict[str, float] = defaultdict(float)
        self._epoch_counts: dict[str, int] = defaultdict(int)
        self.last_checkpoint: Path | None = None
        self.ddp_params: set[int] = set()
        #: the autocast of each step (anomalykit.precision) and, for 16-mixed, its gradient scaler
        self.precision = precision
        self.scaler = _precision.grad_scaler(precision, self.device)

    def _step_schedulers(self, at: str) -> None:
        """Step every scheduler when ``at`` ("step" or "epoch") is this trainer's scheduler interval."""
        if self.scheduler_interval == at:
            for s in self.schedulers.values():
                s.step()

    # -- checkpoints ---------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        d = self.options.checkpoint_dir
        return None if d is None else Path(d) / f"train_state-{self.phase}.pt"

    def _state(self, epoch: int, batch: int, step: int) -> dict:
        return stamp(
            "train-state",
            {
                "method": self.method,
                "phase": self.phase,
                "config": self.config,
                "epoch": epoch,
                "batch": batch,
                "step": step,
                "modules": {k: m.state_dict() for k, m in self.modules.items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "rng": _rng_state(self.generator),
                "extra": self.extra,
                "history": self.history,
                "epoch_sums": dict(self._epoch_sums),
                "epoch_counts": dict(self._epoch_counts),
            },
        )

    def save_checkpoint(self, epoch: int, batch: int, step: int) -> None:
        path = self.checkpoint_path
        if path is None or not D.is_main_process():
            return
        self.check_parameters(epoch, step)
        atomic_torch_save(self._state(epoch, batch, step), path)
        self.last_checkpoint = path

    def load_checkpoint(self) -> tuple[int, int, int] | None:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return None
        state = safe_load(path, kind="train-state")
        if state.get("method") != self.method:
            raise CheckpointError(f"{path} belongs to method {state.get('method')!r}, not {self.method!r}")
        mismatched = sorted(
            k for k in set(self.config) | set(state.get("config", {}))
            if k not in RESUMABLE_CHANGES and self.config.get(k) != state.get("config", {}).get(k)
        )
        if mismatched:
            raise CheckpointError(f"{path} was written with different parameters ({', '.join(mismatched)}); resume with the same settings")
        try:
            for k, m in self.modules.items():
                m.load_state_dict(state["modules"][k])
            for k, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][k])
            for k, s in self.schedulers.items():
                s.load_state_dict(state["schedulers"][k])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path} does not match this model ({type(exc).__name__}: {first_line(exc)})") from None
        _set_rng_state(state["rng"], self.generator)
        self.extra = state.get("extra", {})
        self.history = list(state.get("history", []))
        self._epoch_sums = defaultdict(float, state.get("epoch_sums", {}))
        self._epoch_counts = defaultdict(int, state.get("epoch_counts", {}))
        self.last_checkpoint = path
        return int(state["epoch"]), int(state["batch"]), int(state["step"])

    # -- divergence ----------------------------------------------------------------------
    def diverged(self, term: str, value: float, ctx: StepContext) -> None:
        kept = f"last good checkpoint kept at {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written"
        raise DivergenceError(
            f"{self.method}: training diverged at epoch {ctx.epoch + 1}, step {ctx.step}: "
            f"loss term {term!r} is {value}; {kept}; lower the learning rate(s)"
        )

    def check_parameters(self, epoch: int, step: int) -> None:
        for name, module in self.modules.items():
            for pname, p in module.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    kept = f"last good checkpoint kept at {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written"
                    raise DivergenceError(
                        f"{self.method}: training diverged at epoch {epoch + 1}, step {step}: "
                        f"parameter {name}.{pname} is not finite; {kept}; lower the learning rate(s)"
                    )

    # -- the loop ------------------------------------------------------------------------
    def batches(self, n: int, epoch: int) -> list[torch.Tensor]:
        """Index batches of one epoch for this rank (seeded reshuffle per epoch; the first
        ``epoch_steps`` of them when that is set)."""
        sampler = DistributedSampler(
            range(n), num_replicas=D.world_size(), rank=D.rank(), shuffle=True, seed=self.seed, drop_last=False
        )
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        chunks = list(torch.split(order, self.batch_size))
        if len(chunks) > 1 and len(chunks[-1]) < 2:
            chunks.pop()  # a lone sample breaks batch statistics; it is seen in the next epoch
        return chunks if self.epoch_steps is None else chunks[: self.epoch_steps]

    def run(
        self,
        X: torch.Tensor,
        step_fn: Callable[[torch.Tensor, StepContext], Mapping[str, Any] | None],
        *,
        labels: torch.Tensor | None = None,
        on_epoch_end: Callable[[int, StepContext], Mapping[str, Any] | None] | None = None,
    ) -> list[dict[str, float]]:
        """Train; returns the per-epoch mean of every value the step (and epoch hook) reported."""
        ctx = StepContext(self)
        start_epoch, start_batch, step = 0, 0, 0
        if self.options.resume:
            pos = self.load_checkpoint()
            if pos is not None:
                start_epoch, start_batch, step = pos
        for m in self.modules.values():
            D.broadcast_module(m)
        ctx.nets = self._wrap_ddp()
        n = X.shape[0]
        per_epoch = batches_per_epoch(n, self.batch_size)
        if self.epoch_steps is not None:
            per_epoch = min(per_epoch, self.epoch_steps)
        total = per_epoch * self.epochs
        bar = tqdm(
            total=total,
            initial=min(step, total),
            desc=f"{self.method} {self.phase}",
            unit="step",
            dynamic_ncols=True,
            leave=False,
        ) if self.options.show_progress else _NoProgress()
        every = self.options.checkpoint_every
        log = (TrainingLog(self.options.checkpoint_dir, self.phase, self.options.log)
               if self.options.checkpoint_dir is not None and D.is_main_process() else None)
        try:
            for epoch in range(start_epoch, self.epochs):
                ctx.epoch = epoch
                for m in self.modules.values():
                    m.train()
                chunks = self.batches(n, epoch)
                first = start_batch if epoch == start_epoch else 0
                # lazy rows of image files are decoded ahead by worker processes while this one trains
                for b, batch in enumerate(read_batches(X, chunks[first:]), start=first):
                    idx = chunks[b]
                    ctx.batch_index, ctx.step = b, step
                    ctx.labels = None if labels is None else labels[idx].to(self.device, non_blocking=True)
                    batch = batch.to(self.device, non_blocking=True)
                    with _precision.autocast(self.precision, self.device):
                        logged = step_fn(batch, ctx) or {}
                    values = self._record(logged, ctx)
                    if log is not None and values:
                        log.step(epoch, step, values)
                    step += 1
                    self._step_schedulers("step")
                    bar.update(1)
                    if logged and not bar.disable:
                        bar.set_postfix({k: f"{_as_float(v):.3g}" for k, v in list(logged.items())[:4]}, refresh=False)
                    if every and step % every == 0 and b + 1 < len(chunks):
                        self.save_checkpoint(epoch, b + 1, step)
                ctx.batch_index, ctx.step = len(chunks), step
                for m in self.modules.values():
                    # BatchNorm running statistics follow each rank's own shard between DDP forwards;
                    # take rank 0's so every rank evaluates and keeps the same model (no-op in one process)
                    D.broadcast_module(m)
                if on_epoch_end is not None:
                    self._record(on_epoch_end(epoch, ctx) or {}, ctx)
                self._step_schedulers("epoch")
                self._close_epoch()
                if log is not None:
                    log.epoch(epoch, sum(len(c) for c in chunks[first:]) * D.world_size(), self.history[-1])
                self.check_parameters(epoch, step)
                if self.checkpoint_path is not None:
                    self.save_checkpoint(epoch + 1, 0, step)
        finally:
            bar.close()
            if log is not None:
                log.close()
        for m in self.modules.values():
            m.eval()
        return self.history

    def _wrap_ddp(self) -> dict[str, nn.Module]:
        """DistributedDataParallel around every trainable network when running under torchrun."""
        self.ddp_params: set[int] = set()
        if not D.is_distributed():
            return dict(self.modules)
        wrapped = {}
        for name, module in self.modules.items():
            if not any(p.requires_grad for p in module.parameters()):
                wrapped[name] = module
                continue
            ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()] if self.device.type == "cuda" else None
            wrapped[name] = nn.parallel.DistributedDataParallel(module, device_ids=ids)  # buffers (BatchNorm) synced from rank 0
            self.ddp_params.update(id(p) for p in module.parameters())
        return wrapped

    def _record(self, logged: Mapping[str, Any], ctx: StepContext) -> dict[str, float]:
        values = {}
        for k, v in logged.items():
            ctx.check(k, v)
            values[k] = _as_float(v)
            self._epoch_sums[k] += values[k]
            self._epoch_counts[k] += 1
        return values

    def _close_epoch(self) -> None:
        self.history.append({k: self._epoch_sums[k] / max(self._epoch_counts[k], 1) for k in self._epoch_sums})
        self._epoch_sums.clear()
        self._epoch_counts.clear()


def _as_float(value) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _rng_state(generator: torch.Generator) -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "python": [py[0], torch.tensor(py[1], dtype=torch.int64), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def __getattr__(name: str):
    """Deprecated names of this module (anomalykit.deprecation)."""
    if name == "WeightAverage":
        from . import deprecation

        deprecation.warn("weight-average", "")
        return deprecation.WeightAverage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
