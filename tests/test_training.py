"""The core training loop: divergence detection, atomic checkpoints, bitwise resume."""
import numpy as np
import pytest
import torch
from torch import nn

from anomalykit import CheckpointError, Detector, DivergenceError, Param, PluginError
from anomalykit.checkpoint import safe_load


class Crash(Exception):
    pass


class TinyAE(Detector):
    """Linear autoencoder trained by the core Trainer; reconstruction error as the score."""

    name = "tiny-ae"
    crash_at_step = -1  # raise Crash at this global step (simulates a kill)
    scheduler_interval = "epoch"  # StepLR(2, 0.5) steps per epoch or per training step
    summary = "linear autoencoder for trainer tests"
    params = (
        Param("lr", 1e-2, "learning rate", low=0.0),
        Param("batch_size", 16, "batch", low=1),
        Param("epochs", 4, "epochs", low=0),
    )

    def _build(self, shape):
        d = int(np.prod(shape))
        self.nets["enc"] = nn.Sequential(nn.Flatten(), nn.Linear(d, 3), nn.Dropout(0.2))
        self.nets["dec"] = nn.Linear(3, d)

    def _fit(self, X, y):
        params = list(self.nets.parameters())
        opt = {"ae": torch.optim.Adam(params, lr=self.hp.lr)}
        sched = {"ae": torch.optim.lr_scheduler.StepLR(opt["ae"], 2, 0.5)}
        self.seen, self.lrs = [], []

        def step(x, ctx):
            if ctx.step == self.crash_at_step:
                raise Crash()
            self.seen.append(ctx.step)
            self.lrs.append(opt["ae"].param_groups[0]["lr"])
            noise = torch.randn(x.shape, generator=ctx.generator) * 0.01  # the step's own randomness
            loss = (self.nets["dec"](self.nets["enc"](x + noise)) - x.flatten(1)).pow(2).mean()
            ctx.update("ae", loss, term="reconstruction")
            return {"reconstruction": loss}

        self.trainer(optimizers=opt, schedulers=sched, scheduler_interval=self.scheduler_interval).run(X, step)

    def _score(self, X):
        return (self.nets["dec"](self.nets["enc"](X)) - X.flatten(1)).pow(2).mean(1)


@pytest.fixture
def X():
    return torch.randn(100, 8, generator=torch.Generator().manual_seed(0))


def state(det):
    return {k: v.clone() for k, v in det.nets.state_dict().items()}


def test_same_seed_same_weights_and_history(X):
    a, b = TinyAE(seed=3).fit(X), TinyAE(seed=3).fit(X)
    for k, v in state(a).items():
        assert torch.equal(v, state(b)[k])
    assert len(a.history_) == 4 and a.history_ == b.history_
    c = TinyAE(seed=4).fit(X)
    assert not torch.equal(state(a)["dec.weight"], state(c)["dec.weight"])


def test_every_sample_seen_once_per_epoch_in_a_new_order(X):
    from anomalykit.training import Trainer

    t = Trainer(method="m", modules={}, optimizers={}, epochs=2, batch_size=16, seed=0, device="cpu")
    e0, e1 = torch.cat(t.batches(100, 0)), torch.cat(t.batches(100, 1))
    assert sorted(e0.tolist()) == list(range(100)) == sorted(e1.tolist())
    assert not torch.equal(e0, e1)


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_schedulers_step_after_every_epoch_or_every_step(X, monkeypatch, interval):
    monkeypatch.setattr(TinyAE, "scheduler_interval", interval)
    det = TinyAE(seed=1).fit(X)  # 100 rows, batch 16: 7 steps per epoch, 4 epochs
    per = 7 if interval == "epoch" else 1
    assert det.lrs == [1e-2 * 0.5 ** ((s // per) // 2) for s in range(28)]


@pytest.mark.parametrize("interval", ["epoch", "step"])
@pytest.mark.parametrize("crash_at", [5, 7, 14])  # mid-epoch (after a checkpoint), right at one, later epoch
def test_resume_after_a_crash_reproduces_the_uninterrupted_run_bitwise(X, tmp_path, monkeypatch, crash_at, interval):
    monkeypatch.setattr(TinyAE, "scheduler_interval", interval)
    reference = TinyAE(seed=1).fit(X)
    crashing = TinyAE(seed=1)
    crashing.crash_at_step = crash_at
    with pytest.raises(PluginError) as err:
        crashing.fit(X, checkpoint_dir=tmp_path, checkpoint_every=3)
    assert isinstance(err.value.__cause__, Crash)
    ckpt = safe_load(tmp_path / "train_state-train.pt", kind="train-state")
    assert ckpt["step"] == (crash_at // 3) * 3 or (ckpt["batch"] == 0 and ckpt["step"] <= crash_at)
    resumed = TinyAE(seed=1).fit(X, checkpoint_dir=tmp_path, checkpoint_every=3, resume=True)
    assert resumed.lrs == reference.lrs[len(reference.lrs) - len(resumed.lrs):]  # the schedule resumes where it stopped
    assert resumed.seen[0] == ckpt["step"]  # restarted right after the checkpoint, not from scratch
    for k, v in state(reference).items():
        assert torch.equal(v, state(resumed)[k]), k
    assert resumed.history_ == reference.history_
    np.testing.assert_array_equal(resumed.score_samples(X), reference.score_samples(X))


def test_divergence_names_method_epoch_step_and_term_and_keeps_last_checkpoint(X, tmp_path):
    X = X * 1e3
    with pytest.raises(DivergenceError) as err:
        TinyAE(lr=1e8, epochs=50, preprocess="none").fit(X, checkpoint_dir=tmp_path, checkpoint_every=1)  # unscaled x1e3 rows
    msg = str(err.value)
    assert msg.startswith("tiny-ae: training diverged at epoch ")
    assert ", step " in msg and ("'reconstruction'" in msg or "parameter" in msg)
    assert "last good checkpoint kept at" in msg and "\n" not in msg
    ckpt = safe_load(tmp_path / "train_state-train.pt", kind="train-state")
    for tensor in ckpt["modules"]["enc"].values():
        assert torch.isfinite(tensor).all()


def test_resume_refuses_other_parameters_or_method(X, tmp_path):
    TinyAE(seed=1, epochs=1).fit(X, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="different parameters.*lr"):
        TinyAE(seed=1, lr=0.5).fit(X, checkpoint_dir=tmp_path, resume=True)
    ckpt = torch.load(tmp_path / "train_state-train.pt", weights_only=True)
    ckpt["method"] = "ama"
    torch.save(ckpt, tmp_path / "train_state-train.pt")
    with pytest.raises(CheckpointError, match="belongs to method 'ama'"):
        TinyAE(seed=1, epochs=1).fit(X, checkpoint_dir=tmp_path, resume=True)


def test_more_epochs_on_resume_continue_training(X, tmp_path):
    TinyAE(seed=2, epochs=2).fit(X, checkpoint_dir=tmp_path)
    longer = TinyAE(seed=2, epochs=4).fit(X, checkpoint_dir=tmp_path, resume=True)
    reference = TinyAE(seed=2, epochs=4).fit(X)
    assert len(longer.history_) == 4
    for k, v in state(reference).items():
        assert torch.equal(v, state(longer)[k])


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 33, 100])
@pytest.mark.parametrize("batch_size", [1, 4, 16, 64])
def test_batches_per_epoch_counts_what_the_trainer_yields(n, batch_size):
    from anomalykit.training import Trainer, batches_per_epoch

    t = Trainer(method="m", modules={}, optimizers={}, epochs=1, batch_size=batch_size, seed=0, device="cpu")
    assert batches_per_epoch(n, batch_size) == len(t.batches(n, 0))


@pytest.mark.parametrize("epochs, max_steps, n, batch_size, expected", [
    (10, None, 50_000, 64, 10),   # no cap
    (10, 320, 2_000, 64, 10),     # 32 batches x 10 epochs = 320 steps: the cap is not reached
    (10, 320, 6_000, 64, 3),      # 94 batches per epoch: 3 whole epochs = 282 steps
    (10, 320, 50_000, 64, 1),     # 782 batches: one epoch is more than the cap: one (cut short, below)
    (2, 320, 6_000, 64, 2),       # the cap never raises epochs
    (0, 320, 6_000, 64, 0),       # epochs=0 (no training) stays 0
    (5, 3, 10, 16, 3),            # one batch per epoch: 3 epochs fit in 3 steps
])
def test_capped_epochs_by_hand(epochs, max_steps, n, batch_size, expected):
    from anomalykit.training import capped_epochs

    assert capped_epochs(epochs, max_steps, n, batch_size) == expected


def test_max_steps_trains_the_whole_epochs_that_fit_and_only_those(X):
    # 100 rows, batch 16: 7 batches per epoch; max_steps=15 leaves 2 of the 4 epochs
    capped = TinyAE(seed=5, max_steps=15).fit(X)
    assert capped.epochs_ == 2 and capped.seen == list(range(14)) and len(capped.history_) == 2
    two_epochs = TinyAE(seed=5, epochs=2).fit(X)  # the same training, the scheduler included
    for k, v in state(two_epochs).items():
        assert torch.equal(v, state(capped)[k]), k
    assert TinyAE(seed=5, max_steps=10_000).fit(X).epochs_ == 4  # a cap above epochs x batches: no change


@pytest.mark.parametrize("epochs, max_steps, n, batch_size, expected", [
    (10, None, 50_000, 64, None),   # no cap
    (10, 320, 6_000, 64, None),     # 94 batches per epoch: whole epochs (capped_epochs: 3)
    (10, 320, 20_480, 64, None),    # 320 batches: one whole epoch is exactly the cap
    (10, 320, 20_481, 64, None),    # a lone last row is dropped: still 320 batches
    (10, 320, 20_482, 64, 320),     # 321 batches: the one epoch stops after 320
    (10, 320, 50_000, 64, 320),     # 782 batches: likewise
    (1, 5, 100, 16, 5),             # 7 batches
    (0, 5, 100, 16, None),          # epochs=0: no training, nothing to cut
])
def test_capped_epoch_steps_by_hand(epochs, max_steps, n, batch_size, expected):
    from anomalykit.training import capped_epoch_steps

    assert capped_epoch_steps(epochs, max_steps, n, batch_size) == expected


def test_a_cut_epoch_is_the_first_batches_of_its_seeded_shuffle():
    from anomalykit.training import Trainer

    t = Trainer(method="m", modules={}, optimizers={}, epochs=1, batch_size=16, seed=3, device="cpu", epoch_steps=3)
    # DistributedSampler's shuffle in one process: randperm seeded with seed + epoch
    order = torch.randperm(100, generator=torch.Generator().manual_seed(3 + 2))
    got = t.batches(100, 2)
    assert len(got) == 3 and torch.equal(torch.cat(got), order[:48])


def test_max_steps_below_one_epoch_stops_that_epoch(X):
    # 100 rows, batch 16: 7 batches per epoch, 4 epochs; max_steps=5: one epoch of 5 steps
    capped = TinyAE(seed=5, max_steps=5).fit(X)
    assert (capped.epochs_, capped.epoch_steps_, capped.steps_) == (1, 5, 5)
    assert capped.seen == list(range(5)) and len(capped.history_) == 1
    whole = TinyAE(seed=5).fit(X)
    assert (whole.epochs_, whole.epoch_steps_, whole.steps_) == (4, None, 28)
    assert (TinyAE(seed=5, max_steps=15).fit(X).steps_) == 14  # 2 whole epochs of 7


def test_saved_model_keeps_the_epochs_it_trained(X, tmp_path):
    path = TinyAE(seed=5, max_steps=15).fit(X).save(tmp_path / "m.pt")
    loaded = TinyAE.from_checkpoint(safe_load(path, kind="detector"), path=path)  # what anomalykit.load calls
    assert loaded.epochs_ == 2 and loaded.hp.max_steps == 15
    assert (loaded.epoch_steps_, loaded.steps_) == (None, 14)
    path = TinyAE(seed=5, max_steps=5).fit(X).save(tmp_path / "cut.pt")
    loaded = TinyAE.from_checkpoint(safe_load(path, kind="detector"), path=path)
    assert (loaded.epochs_, loaded.epoch_steps_, loaded.steps_) == (1, 5, 5)
    assert TinyAE().epochs_ is None  # not fitted


# -- what a step sees, by hand ------------------------------------------------------------------------
class Probe(Detector):
    """Records what each step and the epoch hook see; one optimiser over two networks, b only
    receiving a gradient on even steps; labels encoded in the rows' first column."""

    name = "probe"
    summary = "trainer probe"
    supports_labels = True
    params = (Param("batch_size", 16, "batch", low=1), Param("epochs", 2, "epochs", low=0))

    def _build(self, shape):
        self.nets["a"] = nn.Linear(int(np.prod(shape)), 1)
        self.nets["b"] = nn.Linear(int(np.prod(shape)), 1)

    def _fit(self, X, y):
        opt = {"ab": torch.optim.Adam(self.nets.parameters(), lr=0.1)}
        self.seen = []
        self.b_before_after = []

        def step(x, ctx):
            self.seen.append((ctx.epoch, ctx.step, ctx.batch_index, ctx.nets["a"] is self.nets["a"],
                              isinstance(ctx.generator, torch.Generator), ctx.labels.clone()))
            self.seen_x = x
            before = self.nets["b"].weight.detach().clone()
            loss_a = self.nets["a"](x).square().mean()
            if ctx.step % 2 == 0:
                ctx.update("ab", loss_a + self.nets["b"](x).square().mean())
            else:  # b has no gradient this step
                ctx.update("ab", loss_a)
            self.b_before_after.append((ctx.step, before, self.nets["b"].weight.detach().clone()))
            assert torch.equal(ctx.labels.float(), x[:, 0]), "the labels of this batch's rows"
            return {"value": float(ctx.step)}

        def epoch_end(epoch, ctx):
            return {"epoch_value": 10.0 * (epoch + 1), "steps_so_far": float(ctx.step)}

        self.trainer(optimizers=opt).run(X, step, labels=torch.as_tensor(y), on_epoch_end=epoch_end)

    def _score(self, X):
        return self.nets["a"](X).squeeze(1)


def test_a_step_sees_its_position_labels_and_networks_and_the_history_holds_epoch_means():
    """100 rows, batch 16: 7 batches per epoch, 2 epochs. By hand: steps 0..13, batch indices
    0..6 in each epoch; the history's per-epoch mean of the step values (0..6 -> 3, 7..13 -> 10)
    and the epoch hook's values; each batch's labels are those of its rows."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(100, 4, generator=g)
    y = np.r_[np.zeros(80, int), np.ones(20, int)]
    X[:, 0] = torch.as_tensor(y, dtype=torch.float32)  # the label, readable from the row
    det = Probe(preprocess="none").fit(X, y)
    assert [(e, s, b) for e, s, b, *_ in det.seen] == [(e, 7 * e + b, b) for e in range(2) for b in range(7)]
    assert all(same and gen for *_, same, gen, _ in det.seen)
    assert det.history_ == [{"value": 3.0, "epoch_value": 10.0, "steps_so_far": 7.0},
                            {"value": 10.0, "epoch_value": 20.0, "steps_so_far": 14.0}]
    assert sum(len(s[-1]) for s in det.seen) == 200 and sum(int(s[-1].sum()) for s in det.seen) == 40


def test_an_optimiser_without_a_gradient_in_a_step_leaves_its_parameters_alone():
    """Adam with momentum would move a parameter whose gradient is a zero tensor; update zeroes
    gradients to None, so network b moves only on the even steps that give it a gradient."""
    X = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    y = np.r_[np.zeros(56, int), np.ones(8, int)]
    X[:, 0] = torch.as_tensor(y, dtype=torch.float32)
    det = Probe(preprocess="none", epochs=1).fit(X, y)
    for step, before, after in det.b_before_after:
        assert torch.equal(before, after) == (step % 2 == 1), step


def test_progress_bar_counts_steps_of_the_whole_training(X, capsys):
    TinyAE(epochs=3).fit(X, progress=True)  # 100 rows, batch 16: 7 steps per epoch
    err = capsys.readouterr().err
    assert "tiny-ae train" in err and "/21 [" in err and "step/s" in err
    TinyAE(epochs=3).fit(X, progress=False)
    assert capsys.readouterr().err == ""


def test_divergence_message_gives_the_value_and_the_joined_optimiser_names():
    class Nan(TinyAE):
        name = "nan-ae"

        def _fit(self, X, y):
            opt = {"enc": torch.optim.SGD(self.nets["enc"].parameters(), lr=0.1),
                   "dec": torch.optim.SGD(self.nets["dec"].parameters(), lr=0.1)}

            def step(x, ctx):
                ctx.update(("enc", "dec"), self.nets["dec"](self.nets["enc"](x)).sum() * float("nan"))

            self.trainer(optimizers=opt).run(X, step)

    with pytest.raises(DivergenceError, match=r"at epoch 1, step 0: loss term 'enc\+dec' is nan; no checkpoint was written"):
        Nan(preprocess="none").fit(torch.randn(32, 8))


@pytest.mark.parametrize("n, sizes", [(33, [16, 16]), (34, [16, 16, 2]), (1, [1]), (17, [16])])
def test_a_lone_last_row_is_left_to_the_next_epoch_by_hand(n, sizes):
    from anomalykit.training import Trainer

    t = Trainer(method="m", modules={}, optimizers={}, epochs=1, batch_size=16, seed=0, device="cpu")
    got = t.batches(n, 0)
    assert [len(c) for c in got] == sizes
    assert got[0].dtype == torch.long and len(set(torch.cat(got).tolist())) == sum(sizes)


class Draws(TinyAE):
    """Each step draws from numpy's and Python's global generators and counts in ctx.extra; a
    resumed run must continue all three where the crashed one left them."""

    name = "draws"

    def _fit(self, X, y):
        import random

        opt = {"ae": torch.optim.SGD(self.nets.parameters(), lr=1e-3)}
        self.draws = []

        def step(x, ctx):
            if ctx.step == self.crash_at_step:
                raise Crash()
            ctx.extra["count"] = ctx.extra.get("count", 0) + 1
            self.draws.append((ctx.step, float(np.random.rand()), random.random(), float(np.random.randn()), ctx.extra["count"]))
            ctx.update("ae", (self.nets["dec"](self.nets["enc"](x)) - x.flatten(1)).pow(2).mean())

        self.trainer(optimizers=opt).run(X, step)


def test_resume_continues_numpy_python_and_plugin_state(X, tmp_path):
    reference = Draws(seed=2).fit(X)
    crashing = Draws(seed=2)
    crashing.crash_at_step = 10
    with pytest.raises(PluginError):
        crashing.fit(X, checkpoint_dir=tmp_path, checkpoint_every=3)  # last checkpoint after step 9
    resumed = Draws(seed=2).fit(X, checkpoint_dir=tmp_path, resume=True)
    assert resumed.draws[0][0] == 9 and resumed.draws == reference.draws[9:]


def test_a_non_finite_parameter_stops_training_naming_it():
    class Poisoned(TinyAE):
        name = "poisoned"

        def _fit(self, X, y):
            opt = {"ae": torch.optim.SGD(self.nets.parameters(), lr=1e-3)}

            def step(x, ctx):
                ctx.update("ae", (self.nets["dec"](self.nets["enc"](x)) - x.flatten(1)).pow(2).mean())
                if ctx.batch_index == 1:  # the epoch's last step (32 rows, batch 16); its loss was finite
                    with torch.no_grad():
                        self.nets["dec"].bias[0] = float("inf")

            self.trainer(optimizers=opt).run(X, step)

    with pytest.raises(DivergenceError, match=r"poisoned: .*dec.*bias.*no checkpoint was written") as err:
        Poisoned(preprocess="none").fit(torch.randn(32, 8))
    assert "\n" not in str(err.value)


def test_resume_refuses_a_checkpoint_whose_settings_the_run_lacks(X, tmp_path):
    TinyAE(seed=1, epochs=1).fit(X, checkpoint_dir=tmp_path)
    ckpt = torch.load(tmp_path / "train_state-train.pt", weights_only=True)
    ckpt["config"]["width"] = 7  # a setting this run does not have
    torch.save(ckpt, tmp_path / "train_state-train.pt")
    with pytest.raises(CheckpointError, match="different parameters.*width"):
        TinyAE(seed=1, epochs=2).fit(X, checkpoint_dir=tmp_path, resume=True)
