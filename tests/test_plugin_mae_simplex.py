"""Tests of the mae-simplex plugin (anomalykit_plugins/mae_simplex): losses against hand-computed values,
the interpolation wiring, the score against a direct eager formula, model selection against the
logged history, tabular mode, save/load and determinism."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import anomalykit
from anomalykit.data import make_split
from anomalykit_plugins.mae_simplex import losses
from anomalykit_plugins.mae_simplex.detector import MAESimplex
from anomalykit_plugins.mae_simplex.networks import tabular_dims

from conftest import model_space

# Small image nets so every fit takes a second or two on a shared CPU.
TINY = dict(width=8, hidden=32, latent_dim=8, batch_size=32, n_critic=1)


# tiny nets run fastest single-threaded (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    split = make_split("one-class", "digits", normal_class=0, seed=0)
    return split.X_train, split.X_test, split.y_test


class _Ctx:
    """A stand-in for the trainer's step context: nets, a generator, an update that keeps grads."""

    def __init__(self, nets=None, seed=0):
        self.nets = nets
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, names, loss, *, term=None):
        self.loss = loss
        loss.backward()


# -- losses: hand-checkable values -------------------------------------------------------------
def test_inter_critic_target_is_one_minus_alpha():
    d = torch.tensor([[0.2, 0.5, 0.9]])
    alpha = torch.tensor([[0.5, 0.3, 0.2]])
    # targets 1 - alpha = (0.5, 0.7, 0.8): (0.2-0.5)^2 + (0.5-0.7)^2 + (0.9-0.8)^2 = 0.09+0.04+0.01
    assert losses.inter_critic_loss(d, alpha).item() == pytest.approx(0.14)
    assert losses.inter_critic_loss(1 - alpha, alpha).item() == pytest.approx(0.0)
    # mean over simplices (rows)
    d2 = torch.tensor([[0.2, 0.5, 0.9], [0.5, 0.7, 0.8]])
    assert losses.inter_critic_loss(d2, alpha.repeat(2, 1)).item() == pytest.approx(0.07)


def test_two_point_case_is_eq2():
    # eq. (2): ||D(x1, xi) - (1 - a)||^2 + ||D(x2, xi) - a||^2 with alpha = (a, 1 - a)
    a = 0.3
    d = torch.tensor([[0.4, 0.1]])
    expected = (0.4 - (1 - a)) ** 2 + (0.1 - a) ** 2
    assert losses.inter_critic_loss(d, torch.tensor([[a, 1 - a]])).item() == pytest.approx(expected)


def test_generator_terms_eq5():
    d = torch.tensor([[0.2, 0.5, 0.9]])
    alpha = torch.tensor([[0.5, 0.3, 0.2]])
    # sum_i alpha_i D_i^2 = 0.5*0.04 + 0.3*0.25 + 0.2*0.81 = 0.257
    assert losses.inter_generator_loss(d, alpha).item() == pytest.approx(0.257)
    # latent regulariser, d = 4 so sqrt(d) = 2: norms 3 and 1 -> max(3-2, 0) = 1, max(1-2, 0) = 0
    z = torch.tensor([[3.0, 0, 0, 0], [0, 1.0, 0, 0]])
    assert losses.latent_regulariser(z).item() == pytest.approx(0.5)
    d_fake = torch.tensor([1.0, 3.0])
    assert losses.recon_generator_loss(d_fake).item() == pytest.approx(-2.0)
    assert losses.recon_critic_loss(torch.tensor([4.0, 2.0]), d_fake).item() == pytest.approx(2.0 - 3.0)
    terms = losses.generator_objective(d_fake, z, d, alpha, lambda_inter=0.5, latent_reg=True)
    assert terms["total"].item() == pytest.approx(-2.0 + 0.5 * 0.257 + 0.5)
    off = losses.generator_objective(d_fake, z, None, None, lambda_inter=0.5, latent_reg=False)
    assert off["total"].item() == pytest.approx(-2.0)
    assert off["inter"].item() == 0.0 and off["latent"].item() == 0.0


# -- interpolation wiring ------------------------------------------------------------------------
class _FirstHalfMean(nn.Module):
    """A fake D_inter: the mean of the first half of the channels, i.e. of x_i in (x_i, x_inter)."""

    def forward(self, pairs):
        c = pairs.shape[1] // 2
        return pairs[:, :c].flatten(1).mean(1)


@pytest.mark.parametrize("m", [2, 3])  # the paper's m = simplex_k
def test_inter_outputs_pair_each_vertex_with_the_interpolant(digits, m):
    X = digits[0][:10]
    det = MAESimplex(simplex_k=m, **TINY)
    det.input_shape_ = tuple(X.shape[1:])
    det._build(det.input_shape_)
    index, alpha = det._draw_simplex(10, _Ctx())
    assert index.shape == alpha.shape == (10, m)
    assert torch.allclose(alpha.sum(1), torch.ones(10))
    out = det._inter_outputs(_FirstHalfMean(), X, torch.zeros_like(X), index)
    expected = torch.stack([X[index[:, i]].flatten(1).mean(1) for i in range(m)], 1)
    torch.testing.assert_close(out, expected)


class _ZeroGradCritic(nn.Module):
    """A fake D_recon whose output does not depend on its input (no gradient to E/G)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, pairs):
        return self.w.expand(pairs.shape[0])


def test_interpolation_term_trains_encoder_and_generator(digits):
    """Unlike the authors' code, x_hat_inter is not detached: eq. 5's interpolation term alone
    (recon term without gradient, latent regulariser off) must give E and G gradients."""
    X = digits[0][:16]
    det = MAESimplex(simplex_k=3, lambda_inter=1.0, latent_reg=False, **TINY)
    det.input_shape_ = tuple(X.shape[1:])
    det._build(det.input_shape_)
    det.nets["d_recon"] = _ZeroGradCritic()
    ctx = _Ctx(nets=det.nets)
    logged = det._generator_step(X, ctx)
    assert logged["g_inter"] > 0
    for name in ("encoder", "generator"):
        grads = [p.grad for p in det.nets[name].parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    # the critics are frozen during the E/G step: no gradient accumulates in them
    assert all(p.grad is None for p in det.nets["d_inter"].parameters())
    assert all(p.requires_grad for p in det.nets["d_inter"].parameters())


def test_m_changes_the_computation(digits):
    X = digits[0]
    fitted = {}
    for m in (0, 2, 3):
        det = anomalykit.load_method("mae-simplex", simplex_k=m, epochs=1, **TINY).fit(X, progress=False)
        fitted[m] = det
        if m == 0:
            assert "d_inter" not in det.nets
            assert "d_inter" not in det.history_[0] and det.history_[0]["g_inter"] == 0.0
        else:
            assert "d_inter" in det.nets and det.history_[0]["d_inter"] > 0
    s = {m: d.score_samples(X[:20]) for m, d in fitted.items()}
    assert not np.allclose(s[2], s[3]) and not np.allclose(s[0], s[2])


# -- score -----------------------------------------------------------------------------------------
def test_score_equals_eager_feature_l1(digits):
    X, Xt, _ = digits
    det = anomalykit.load_method("mae-simplex", epochs=1, score="feature-l1", **TINY).fit(X, progress=False)  # the paper's
    raw = Xt[:50]
    x = model_space(det, raw)
    with torch.no_grad():
        x_hat = det.nets["generator"](det.nets["encoder"](x))
        critic = det.nets["d_recon"]
        f_real = critic.features(torch.cat([x, x], dim=1))
        f_fake = critic.features(torch.cat([x, x_hat], dim=1))
        expected = (f_real - f_fake).abs().sum(1).double().numpy()
    np.testing.assert_allclose(det.score_samples(raw), expected, rtol=1e-5, atol=1e-6)


# -- model selection -------------------------------------------------------------------------------
def _selection_rows(X, det):
    g = torch.Generator().manual_seed(det.hp.seed)
    return X[torch.randperm(X.shape[0], generator=g)[: det.hp.select_rows]]


def test_model_selection_keeps_smallest_training_feature_l1(digits):
    X = digits[0]
    # score="feature-l1": score_samples then is the selection criterion itself (it selects with either score)
    det = anomalykit.load_method("mae-simplex", epochs=5, select_after=1, select_rows=64, score="feature-l1", **TINY)
    det.fit(X, progress=False)
    curve = [h["select_feat_l1"] for h in det.history_]
    assert len(curve) == 5
    best = 1 + int(np.argmin(curve[1:]))
    assert det.selected_epoch_ == best
    assert det.history_[-1]["best_epoch"] == best
    # the kept weights are that epoch's: their mean feature-L1 on the selection rows is the logged one
    kept = float(det.score_samples(_selection_rows(X, det)).mean())
    assert kept == pytest.approx(curve[best], rel=1e-5)
    # no labels are involved: the same fit with anomaly-free y gives the same selection
    det_y = anomalykit.load_method("mae-simplex", epochs=5, select_after=1, select_rows=64, **TINY)
    det_y.fit(X, np.zeros(X.shape[0], dtype=np.int64), progress=False)
    assert det_y.selected_epoch_ == best


def test_model_selection_off_keeps_last_epoch(digits):
    X = digits[0]
    det = anomalykit.load_method("mae-simplex", epochs=3, select_best=False, select_rows=64, score="feature-l1", **TINY)
    det.fit(X, progress=False)
    assert det.selected_epoch_ == 2
    kept = float(det.score_samples(_selection_rows(X, det)).mean())
    assert kept == pytest.approx(det.history_[-1]["select_feat_l1"], rel=1e-5)


def test_selected_snapshot_survives_resume(digits, tmp_path):
    X = digits[0]
    kw = dict(epochs=4, select_after=1, select_rows=64, **TINY)
    a = anomalykit.load_method("mae-simplex", **kw).fit(X, checkpoint_dir=tmp_path, progress=False)
    # a resumed fit finds the finished checkpoint, trains nothing, and restores the snapshot
    b = anomalykit.load_method("mae-simplex", **kw).fit(X, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert b.selected_epoch_ == a.selected_epoch_
    np.testing.assert_array_equal(a.score_samples(X[:30]), b.score_samples(X[:30]))


# -- tabular ----------------------------------------------------------------------------------------
def test_tabular_dims_follow_the_supplementary_tables():
    kdd, arr, thy = tabular_dims(121), tabular_dims(274), tabular_dims(6)
    assert kdd.encoder == (121, 64, 32) and kdd.generator == (32, 64, 128, 121)  # Table 3
    assert kdd.inter_hidden == (128,) and kdd.inter_features == 64
    assert arr.encoder == (274, 256, 128, 64) and arr.generator == (64, 128, 256, 274)  # Table 4
    assert arr.recon_hidden == (256,) and arr.recon_features == 32
    assert thy.encoder[-1] == 4 and thy.recon_features == 4  # Table 5: z in R^4, D_recon 12 -> 4 -> 1


def test_tabular_mode_on_rows():
    """Flat (N, F) rows get MLPs sized from F and separate gross outliers from a low-rank cloud."""
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 12, generator=g)

    def rows(n):
        return torch.randn(n, 3, generator=g) @ basis + 0.1 * torch.randn(n, 12, generator=g)

    normal = rows(300)
    mu, sd = normal.mean(0), normal.std(0)
    normal, test_n = (normal - mu) / sd, (rows(100) - mu) / sd
    test_a = 4.0 * torch.randn(100, 12, generator=g)  # isotropic, far off the 3-d subspace
    det = anomalykit.load_method("mae-simplex", epochs=30, n_critic=1).fit(normal, progress=False)
    assert not any(isinstance(mod, nn.Conv2d) for mod in det.nets.modules())
    dims = tabular_dims(12)
    assert det.nets["encoder"](normal[:2]).shape == (2, dims.encoder[-1]) == (2, 4)  # d = 4 for F = 12
    assert det.nets["d_recon"].features(torch.cat([normal[:2], normal[:2]], 1)).shape == (2, dims.recon_features)
    from sklearn.metrics import roc_auc_score

    s = det.score_samples(torch.cat([test_n, test_a]))
    assert np.isfinite(s).all()
    assert roc_auc_score(np.r_[np.zeros(100), np.ones(100)], s) > 0.85


def test_tabular_topk_run_writes_metrics_matching_sklearn(tmp_path):
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    from anomalykit.pipeline import RunConfig, run_experiment

    cfg = RunConfig(method="mae-simplex", data="breast-cancer", protocol="tabular-topk",
                    params={"epochs": 3, "n_critic": 1})
    rec = run_experiment(cfg, out=tmp_path / "run", progress=False, echo=lambda *a: None)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    scores, labels = np.load(tmp_path / "run" / "scores.npy")
    k = math.ceil(labels.mean() * len(labels))
    pred = np.zeros_like(labels)
    pred[np.argsort(-scores, kind="stable")[:k]] = 1
    p, r, f1, _ = precision_recall_fscore_support(labels, pred, average="binary")
    assert saved["topk_precision"] == pytest.approx(p) and saved["topk_recall"] == pytest.approx(r)
    assert saved["topk_f1"] == pytest.approx(f1) and rec["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert (tmp_path / "run" / "model.pt").is_file()


# -- persistence and determinism ---------------------------------------------------------------------
@pytest.mark.parametrize("lipschitz", ["gp", "sn"])
def test_save_load_identical_scores(digits, tmp_path, lipschitz):
    X, Xt, _ = digits
    det = anomalykit.load_method("mae-simplex", epochs=2, lipschitz=lipschitz, select_after=0, **TINY)
    det.fit(X, progress=False)
    path = det.save(tmp_path / "m.pt")
    back = anomalykit.load(path)
    assert back.selected_epoch_ == det.selected_epoch_
    np.testing.assert_array_equal(det.score_samples(Xt[:64]), back.score_samples(Xt[:64]))


def test_one_epoch_on_digits_is_deterministic(digits):
    """Default networks, one epoch: the same seed gives the same scores and losses, another seed other
    scores (fit time: benchmarks/test_bench_fit_seconds.py)."""
    X, Xt, _ = digits
    a = anomalykit.load_method("mae-simplex", epochs=1, seed=3).fit(X, progress=False)  # default nets
    b = anomalykit.load_method("mae-simplex", epochs=1, seed=3).fit(X, progress=False)
    c = anomalykit.load_method("mae-simplex", epochs=1, seed=4).fit(X, progress=False)
    sa, sb, sc = (d.score_samples(Xt[:64]) for d in (a, b, c))
    np.testing.assert_array_equal(sa, sb)
    assert a.history_ == b.history_
    assert not np.allclose(sa, sc)


# -- data-parallel -------------------------------------------------------------------------------------
_DDP_WORKER = """
import json, sys, torch
import torch.distributed as dist
import anomalykit
from anomalykit import distributed as D
from anomalykit.data import make_split
assert D.init_from_env("cpu") and D.world_size() == 2
X = make_split("one-class", "digits", normal_class=0, seed=0).X_train
det = anomalykit.load_method("mae-simplex", epochs=3, select_after=1, width=8, hidden=32, latent_dim=8, n_critic=1)
det.fit(X, progress=False)
flat = torch.cat([v.flatten().double() for v in det.nets.state_dict().values()])
rank = D.rank()
out = {"rank": rank, "world": D.world_size(), "checksum": float(flat.sum()), "first": flat[:50].tolist(),
       "selected": det.selected_epoch_, "curve": [h["select_feat_l1"] for h in det.history_]}
open(sys.argv[1] + f"/rank{rank}.json", "w").write(json.dumps(out))
assert D.shutdown()  # barrier, then the group and gloo's threads are freed before interpreter teardown
"""


@pytest.mark.slow
def test_torchrun_two_processes_keep_ranks_identical(tmp_path):
    """Under torchrun (gloo, 2 CPU processes, each training on its own shard of every batch) the
    trained E/G/critics stay identical on both ranks and both select the same epoch (gradients
    synchronised through ctx.nets; the selection mean gathered over both shards)."""
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["first"] == r1["first"] and r0["checksum"] == r1["checksum"]
    assert r0["selected"] == r1["selected"] == 1 + int(np.argmin(r0["curve"][1:]))


def test_feature_gaussian_score_is_the_density_of_the_feature_differences(digits, tmp_path):
    from scipy.stats import multivariate_normal
    from sklearn.covariance import LedoitWolf

    X, Xt, _ = digits
    det = anomalykit.load_method("mae-simplex", epochs=2, score="feature-gaussian", select_after=0, **TINY).fit(X, progress=False)
    with torch.no_grad():
        train = torch.sub(*det._pair_features(model_space(det, X))).double().numpy()
        test = torch.sub(*det._pair_features(model_space(det, Xt[:30]))).double().numpy()
    lw = LedoitWolf().fit(train)
    expected = -multivariate_normal(lw.location_, lw.covariance_).logpdf(test)
    np.testing.assert_allclose(det.score_samples(Xt[:30]), expected, rtol=1e-5)
    back = anomalykit.load(det.save(tmp_path / "m.pt"))
    np.testing.assert_array_equal(back.score_samples(Xt[:30]), det.score_samples(Xt[:30]))


def test_inter_generator_loss_by_hand():
    """Eq. 5's interpolation term: mean over simplices of Σ_i α_i D_inter(x_i, x̂)²."""
    from anomalykit_plugins.mae_simplex import losses as mae_losses

    d_inter = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]])
    alpha = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    # row 0: 0.5 + 0.25*4 = 1.5; row 1: 0.2*9 + 0.5*1 = 2.3; mean 1.9
    assert float(mae_losses.inter_generator_loss(d_inter, alpha)) == pytest.approx(1.9)
