"""Training logs (anomalykit.training_log): written while training runs, equal to the history."""
from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest
import torch

from anomalykit import ConfigError, Detector, Param


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


class Tiny(Detector):
    """A linear auto-encoder trained with the core loop; its step reads the log as it is written."""

    name = "tiny-log"
    summary = "linear auto-encoder (test)"
    params = (Param("epochs", 3, "epochs", low=0), Param("batch_size", 16, "batch", low=1))
    seen_during_training: list[int] = []

    def _build(self, input_shape):
        d = int(np.prod(input_shape))
        self.nets["ae"] = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, 2), torch.nn.Linear(2, d))

    def _fit(self, X, y):
        trainer = self.trainer(optimizers={"ae": torch.optim.SGD(self.nets["ae"].parameters(), lr=0.01)})
        folder = self._fit_options.checkpoint_dir

        def step(x, ctx):
            if ctx.batch_index == 0 and ctx.epoch > 0:  # what a user tailing the file would see
                Tiny.seen_during_training.append(len(rows(folder / "epochs.csv")))
            loss = (ctx.nets["ae"](x) - x.flatten(1)).square().mean()
            ctx.update("ae", loss, term="loss")
            return {"loss": loss.detach(), "scaled": 2 * loss.detach()}

        trainer.run(X, step)

    def _score(self, X):
        return (self.nets["ae"](X) - X.flatten(1)).square().sum(1)


def test_logs_follow_the_run_and_equal_the_history(tmp_path):
    Tiny.seen_during_training = []
    X = np.random.default_rng(0).normal(size=(80, 6)).astype(np.float32)
    det = Tiny(epochs=3).fit(X, checkpoint_dir=tmp_path)
    steps, epochs = rows(tmp_path / "train_log.csv"), rows(tmp_path / "epochs.csv")
    assert len(steps) == 3 * 5 * 2  # 3 epochs x 5 batches x 2 terms
    assert Tiny.seen_during_training == [2, 4]  # epoch 0's two terms, then epoch 1's, before training ended
    by_epoch = defaultdict(list)
    for r in steps:
        by_epoch[(int(r["epoch"]), r["term"])].append(float(r["value"]))
    for r in epochs:
        e, term = int(r["epoch"]), r["term"]
        assert float(r["mean"]) == pytest.approx(np.mean(by_epoch[(e, term)]), rel=1e-6)
        assert float(r["mean"]) == pytest.approx(det.history_[e][term], rel=1e-6)
        assert float(r["samples_per_second"]) > 0 and float(r["seconds"]) > 0
    assert {r["phase"] for r in steps} == {"train"}
    # no run folder, no files
    Tiny(epochs=1).fit(X)


def test_tensorboard_events_hold_the_same_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    X = np.random.default_rng(1).normal(size=(48, 4)).astype(np.float32)
    det = Tiny(epochs=2).fit(X, checkpoint_dir=tmp_path, log="tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/scaled", "epoch/train/loss", "epoch/train/samples_per_second"} <= tags
    means = [e.value for e in events.Scalars("epoch/train/loss")]
    assert means == pytest.approx([h["loss"] for h in det.history_], rel=1e-6)


def test_unknown_log_backend_is_one_line():
    with pytest.raises(ConfigError, match="unknown training log 'wandb'"):
        Tiny().fit(np.zeros((8, 3), np.float32), log="wandb")
