import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

import anomalykit
from anomalykit.data import make_split
from anomalykit_plugins.ama import losses

from conftest import model_space

TINY = dict(epochs=1, width=8, feature_dim=16, n_critic=1, batch_size=32)


@pytest.fixture(scope="module")
def digits0():
    return make_split("one-class", "digits", normal_class=0)


@pytest.fixture(scope="module")
def fitted(digits0):
    return anomalykit.load_method("ama", **dict(TINY, epochs=3)).fit(digits0.X_train)


# -- the equations on hand-checkable numbers ------------------------------------------------------------------
def test_loss_terms_by_hand():
    d_real, d_rec = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 0.0])
    d_inter, d_neg = torch.tensor([0.5, 0.5]), torch.tensor([-2.0, -4.0])
    assert losses.mirrored_wasserstein(d_real, d_rec) == pytest.approx(1.5)       # eq. 1: mean(2, 1)
    assert losses.interpolation_term(d_real, d_inter) == pytest.approx(1.5)      # mean(2.5, 0.5)
    assert losses.negative_term(d_real, d_neg) == pytest.approx(5.0)             # eq. 4: mean(5, 5)
    z = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert losses.latent_regulariser(z) == pytest.approx(3.0)                    # mean(5, 1)
    terms = {"rec": torch.tensor(1.5), "inter": torch.tensor(1.5), "neg": torch.tensor(5.0), "reg": torch.tensor(3.0)}
    # eq. 2-3 for E and G: W_rec + λ_inter W_inter + λ_reg E‖E(x)‖ − λ_neg W_neg
    assert losses.autoencoder_objective(terms, lambda_inter=0.2, lambda_reg=1.0, lambda_neg=0.5) == pytest.approx(1.5 + 0.3 + 3.0 - 2.5)
    # the critic maximises every Wasserstein estimate
    assert losses.critic_objective(terms, lambda_inter=0.2, lambda_neg=0.5) == pytest.approx(-(1.5 + 0.3 + 2.5))


def test_neg_log_a_score_is_minus_log_gaussian_density():
    r = torch.tensor([0.0, 1.0, 2.5, 40.0])
    expected = -norm(loc=1.0, scale=0.5).logpdf(r.numpy())
    np.testing.assert_allclose(losses.neg_log_a_score(r, 1.0, 0.5).numpy(), expected, rtol=1e-10)
    assert math.isfinite(float(losses.neg_log_a_score(torch.tensor([1e6]), 1.0, 1e-3)))  # no underflow


def test_atypical_latents_live_in_the_shell():
    g = torch.Generator().manual_seed(0)
    out = losses.atypical_latents(500, 16, delta=1.5, direction="outward", generator=g).norm(dim=1)
    assert out.min() >= 4.0 - 1e-5 and out.max() <= 5.5 + 1e-5
    inward = losses.atypical_latents(500, 16, delta=1.5, direction="inward", generator=g).norm(dim=1)
    assert inward.min() >= 2.5 - 1e-5 and inward.max() <= 4.0 + 1e-5
    # annulus-codes: the shell rescaled by the *mean* code norm over sqrt(d); codes of unequal norms
    norms = np.array([0.2, 0.4, 0.6, 1.0, 3.0, 0.3, 0.5, 0.8])
    codes = torch.from_numpy(norms[:, None] * np.eye(16)[:8])
    draw = losses.draw_atypical(8, 16, mode="annulus-codes", delta=1.5, direction="outward", generator=g)
    z = losses.atypical_from_draw(draw, codes)
    torch.testing.assert_close(z, draw["z"].double() * (norms.mean() / 4.0), rtol=1e-6, atol=0, check_dtype=False)
    rel = z.norm(dim=1)
    assert rel.min() >= norms.mean() - 1e-5 and rel.max() <= norms.mean() * 5.5 / 4.0 + 1e-5


@pytest.mark.parametrize("direction", ["inward", "outward"])
def test_scaling_factors_are_uniform_on_zero_half(direction):
    """The authors' scaling negatives: α ~ U(0, 0.5) per row (clamped at 1e-3), a factor α inward
    and 1/α outward: a KS test of the α implied by the factors against U(0, 0.5)."""
    from scipy.stats import kstest

    g = torch.Generator().manual_seed(1)
    draw = losses.draw_atypical(4000, 16, mode="scaling", delta=1.5, direction=direction, generator=g)
    factor = draw["factor"].reshape(-1).double().numpy()
    alpha = factor if direction == "inward" else 1.0 / factor
    assert alpha.min() >= 1e-3 - 1e-12 and alpha.max() <= 0.5
    assert kstest(alpha, "uniform", args=(0.0, 0.5)).pvalue > 0.01
    codes = torch.randn(4000, 16, generator=g)
    torch.testing.assert_close(losses.atypical_from_draw(draw, codes), codes * draw["factor"])


# -- networks and scores ------------------------------------------------------------------------------------
def test_critic_sees_stacked_pairs_and_real_pairs_are_x_with_x(fitted, digits0):
    x = digits0.X_test[:4]
    pair = fitted.critic_input(x, x)
    assert pair.shape == (4, 2, 8, 8) and torch.equal(pair[:, :1], x) and torch.equal(pair[:, 1:], x)
    plain = anomalykit.load_method("ama", **dict(TINY, mirrored=False)).fit(digits0.X_train[:40])
    assert plain.critic_input(x, x).shape == (4, 1, 8, 8)
    assert plain.nets["critic"].body[0].in_channels == 1 and fitted.nets["critic"].body[0].in_channels == 2


def test_r_score_equals_a_direct_eager_computation(fitted, digits0):
    raw = digits0.X_test[:50]
    x = model_space(fitted, raw)
    E, G, D = (fitted.nets[k] for k in ("encoder", "generator", "critic"))
    with torch.no_grad():
        x_hat = G(E(x))
        direct = (D.features(torch.cat([x, x], 1)) - D.features(torch.cat([x, x_hat], 1))).abs().sum(1)
    torch.testing.assert_close(fitted.r_scores(x), direct, rtol=1e-5, atol=1e-5)
    r_model = anomalykit.load_method("ama", **dict(TINY, score="r")).fit(digits0.X_train)
    np.testing.assert_allclose(r_model.score_samples(raw), r_model.r_scores(model_space(r_model, raw)).double().numpy(), rtol=1e-6)


def test_a_score_ranks_by_distance_from_the_training_mean(digits0):
    fitted = anomalykit.load_method("ama", **dict(TINY, epochs=3, score="a")).fit(digits0.X_train)  # the paper's eq. 6
    x = digits0.X_test
    r = fitted.r_scores(model_space(fitted, x)).double().numpy()
    a = fitted.score_samples(x)
    assert fitted.r_mean_ == pytest.approx(float(fitted.map_batches(fitted.r_scores, model_space(fitted, digits0.X_train)).double().mean()))
    dist = np.abs(r - fitted.r_mean_)
    assert (np.argsort(a, kind="stable") == np.argsort(dist, kind="stable")).mean() > 0.99
    np.testing.assert_allclose(a, -norm(fitted.r_mean_, fitted.r_std_).logpdf(r), rtol=1e-6)


@pytest.mark.parametrize(
    "switch, missing",
    [({"simplex": False}, "w_inter"), ({"atypical": False}, "w_neg"), ({"latent_reg": False}, "latent_norm")],
)
def test_each_ablation_switch_removes_its_term(digits0, switch, missing):
    full = anomalykit.load_method("ama", **TINY).fit(digits0.X_train[:64])
    ablated = anomalykit.load_method("ama", **TINY, **switch).fit(digits0.X_train[:64])
    assert missing in full.history_[-1] and missing not in ablated.history_[-1]
    assert full.history_[-1]["autoencoder"] != ablated.history_[-1]["autoencoder"]


def test_semi_supervised_uses_labelled_anomalies_as_negatives(digits0):
    ds_test = make_split("one-class", "digits", normal_class=1).X_train[:20]  # ones as labelled anomalies
    X = torch.cat([digits0.X_train[:64], ds_test])
    y = np.r_[np.zeros(64, int), np.ones(20, int)]
    det = anomalykit.load_method("ama", **dict(TINY, atypical=False)).fit(X, y)
    assert "w_neg" in det.history_[-1]  # negatives come from the anomalies although atypical=False


def test_one_epoch_on_digits_is_deterministic_per_seed(digits0):
    a = anomalykit.load_method("ama", **TINY, seed=5).fit(digits0.X_train)
    b = anomalykit.load_method("ama", **TINY, seed=5).fit(digits0.X_train)
    for (k, v), w in zip(a.nets.state_dict().items(), b.nets.state_dict().values()):
        assert torch.equal(v, w), k
    np.testing.assert_array_equal(a.score_samples(digits0.X_test), b.score_samples(digits0.X_test))


def test_save_load_gives_identical_scores(fitted, digits0, tmp_path):
    path = fitted.save(tmp_path / "ama.pt")
    again = anomalykit.load(path)
    np.testing.assert_array_equal(again.score_samples(digits0.X_test), fitted.score_samples(digits0.X_test))
    assert (again.r_mean_, again.r_std_) == (fitted.r_mean_, fitted.r_std_)


def test_reconstruct_and_tabular_inputs(fitted, digits0, blobs):
    assert fitted.reconstruct(digits0.X_test[:3]).shape == (3, 1, 8, 8)
    X, y = blobs
    det = anomalykit.load_method("ama", epochs=5, hidden=32, feature_dim=16, n_critic=1).fit(X[:200])
    assert det.reconstruct(X[:3]).shape == (3, 6)
    assert roc_auc_score(y, det.score_samples(X)) > 0.8


def test_scoring_streams_in_batches(fitted, digits0, monkeypatch):
    seen = []
    original = fitted.pair_features

    def spy(x):
        seen.append(x.shape[0])
        return original(x)

    monkeypatch.setattr(fitted, "pair_features", spy)
    fitted.params_["score_batch_size"] = fitted.hp.score_batch_size = 100
    fitted.score_samples(digits0.X_test)  # 540 rows
    assert max(seen) == 100 and sum(seen) == 540


# -- switches chosen on the validation split (docs/methods/ama.md) ----------------------------------------------
def test_a_features_is_minus_log_gaussian_density_of_the_feature_differences(digits0, tmp_path):
    from scipy.stats import multivariate_normal

    det = anomalykit.load_method("ama", **dict(TINY, score="a-features")).fit(digits0.X_train)
    gauss = det.feature_gaussian_.state()
    with torch.no_grad():
        f_real, f_rec = det.pair_features(model_space(det, digits0.X_test[:20]))
    diff = (f_real - f_rec).double().numpy()
    cov = np.linalg.inv(gauss["precision"].numpy())
    expected = -multivariate_normal(gauss["mean"].numpy(), cov).logpdf(diff)
    np.testing.assert_allclose(det.score_samples(digits0.X_test[:20]), expected, rtol=1e-5)
    # the Gaussian is fitted to the training rows' feature differences (Ledoit-Wolf shrinkage, sklearn)
    from sklearn.covariance import LedoitWolf

    with torch.no_grad():
        tr_real, tr_rec = det.pair_features(model_space(det, digits0.X_train))
    lw = LedoitWolf().fit((tr_real - tr_rec).double().numpy())
    np.testing.assert_allclose(gauss["mean"].numpy(), lw.location_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cov, lw.covariance_, rtol=1e-6, atol=1e-9)
    # the threshold's training scores are out of fold: each row under the Gaussian of the other 4 folds
    from sklearn.model_selection import KFold

    tr = (tr_real - tr_rec).double().numpy()
    oof = np.empty(len(tr))
    for keep, held in KFold(5).split(tr):
        fold = LedoitWolf().fit(tr[keep])
        oof[held] = -multivariate_normal(fold.location_, fold.covariance_).logpdf(tr[held])
    np.testing.assert_allclose(det.decision_scores_, oof, rtol=1e-5)
    assert (det.decision_scores_ > det.score_samples(digits0.X_train)).mean() > 0.9  # in-sample scores sit lower
    again = anomalykit.load(det.save(tmp_path / "ama.pt"))
    np.testing.assert_array_equal(again.score_samples(digits0.X_test), det.score_samples(digits0.X_test))


def test_real_features_is_the_mahalanobis_distance_of_the_real_pair_features(digits0, tmp_path):
    """score=real-features against scikit-learn: ½ × LedoitWolf's squared Mahalanobis distance of
    f(x, x) from the training rows' Gaussian, plus one constant; saved and loaded with the model."""
    from sklearn.covariance import LedoitWolf

    det = anomalykit.load_method("ama", **dict(TINY, score="real-features")).fit(digits0.X_train)
    with torch.no_grad():
        tr_real, _ = det.pair_features(model_space(det, digits0.X_train))
        te_real, _ = det.pair_features(model_space(det, digits0.X_test))
    half_maha = 0.5 * LedoitWolf().fit(tr_real.double().numpy()).mahalanobis(te_real.double().numpy())
    offset = det.score_samples(digits0.X_test) - half_maha
    np.testing.assert_allclose(offset, np.full_like(offset, offset[0]), rtol=0, atol=1e-5 * np.abs(half_maha).max())
    again = anomalykit.load(det.save(tmp_path / "ama-real.pt"))
    np.testing.assert_array_equal(again.score_samples(digits0.X_test), det.score_samples(digits0.X_test))


def test_feature_layers_all_is_the_mahalanobis_distance_of_every_layer_averaged(digits0):
    """feature_layers=all against an independent reference: forward hooks on the critic's activation
    layers, each map averaged over space, concatenated (f last), then scikit-learn's LedoitWolf
    Mahalanobis distance of f(x, x) from the training rows' Gaussian, up to one constant."""
    from sklearn.covariance import LedoitWolf

    det = anomalykit.load_method("ama", **dict(TINY, score="real-features", feature_layers="all")).fit(digits0.X_train)
    critic = det.nets["critic"]
    acts = [m for m in critic.body if isinstance(m, torch.nn.LeakyReLU)]
    assert len(acts) >= 2  # at least one conv layer before f

    def by_hooks(X):
        seen = []
        handles = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.mean((2, 3)))) for m in acts]
        try:
            with torch.no_grad():
                x = model_space(det, X)
                critic(det.critic_input(x, x))
        finally:
            for h in handles:
                h.remove()
        return torch.cat(seen, 1).double().numpy()

    tr, te = by_hooks(digits0.X_train), by_hooks(digits0.X_test)
    widths = [m.out_channels for m in critic.body if isinstance(m, torch.nn.Conv2d)]  # the strided convs, then f's
    assert tr.shape[1] == sum(widths) and widths[-1] == TINY["feature_dim"]
    half_maha = 0.5 * LedoitWolf().fit(tr).mahalanobis(te)
    offset = det.score_samples(digits0.X_test) - half_maha
    np.testing.assert_allclose(offset, np.full_like(offset, offset[0]), rtol=0, atol=1e-5 * np.abs(half_maha).max())
    # f alone is a different score: the extra layers change the ranking
    last = anomalykit.load_method("ama", **dict(TINY, score="real-features")).fit(digits0.X_train)
    assert not np.allclose(last.score_samples(digits0.X_test), det.score_samples(digits0.X_test))


def test_mlp_critic_layer_features_by_hand():
    """Flat rows: every hidden layer's LeakyReLU(0.2) activations, then f, computed layer by layer."""
    from anomalykit.sdk import MLPCritic

    torch.manual_seed(0)
    critic = MLPCritic(5, (6, 4), feature_dim=3)
    x = torch.randn(7, 5)
    linears = [m for m in critic.body if isinstance(m, torch.nn.Linear)]
    h, expected = x, []
    for lin in linears:
        h = torch.nn.functional.leaky_relu(h @ lin.weight.T + lin.bias, 0.2)
        expected.append(h)
    with torch.no_grad():
        got = critic.layer_features(x)
    torch.testing.assert_close(got, torch.cat(expected, 1).detach())
    torch.testing.assert_close(got[:, -3:], critic.features(x).detach())


def test_feature_layers_all_without_a_feature_score_is_refused(digits0):
    det = anomalykit.load_method("ama", **dict(TINY, score="a", feature_layers="all"))
    with pytest.raises(anomalykit.InputError, match="feature_layers=all needs a feature score"):
        det.fit(digits0.X_train)


def test_pixel_term_by_hand():
    x = torch.zeros(2, 1, 2, 2)
    x_rec = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 2.0]).reshape(2, 1, 2, 2)
    assert losses.pixel_reconstruction(x, x_rec) == pytest.approx((1.0 + 1.0) / 2)  # per-row pixel means 1 and 1
    terms = {"rec": torch.tensor(1.5), "pixel": torch.tensor(0.5)}
    assert losses.autoencoder_objective(terms, lambda_inter=0.2, lambda_reg=1.0, lambda_neg=0.5, lambda_rec=10.0) == pytest.approx(6.5)


def test_latent_hinge_by_hand():
    z = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1; sqrt(d) = sqrt(2)
    assert losses.latent_hinge(z) == pytest.approx((5.0 - math.sqrt(2)) / 2)


def _critic_inputs(monkeypatch):
    """Every batch any AMA critic sees while the test runs (forward of the critic class)."""
    from anomalykit.sdk import ConvCritic

    seen = []
    critic = ConvCritic((2, 8, 8))
    original = type(critic).forward

    def spy(self, inp):
        seen.append(inp.detach().clone())
        return original(self, inp)

    monkeypatch.setattr(type(critic), "forward", spy)
    return seen


def _is_training_row(t, X):
    return any(torch.equal(t, x) for x in X)


def test_negative_pairs_self_pairs_decoded_negatives_with_themselves(digits0, monkeypatch):
    X = digits0.X_train[:32]
    X_model = model_space(anomalykit.load_method("ama", **TINY).fit(X), X)  # the rows as the critic sees them
    seen = _critic_inputs(monkeypatch)
    for mode in ("self", "data"):
        seen.clear()
        anomalykit.load_method("ama", **dict(TINY, negative_pairs=mode, lipschitz="sn", simplex=False)).fit(X)
        twins = [b[:, :1] for b in seen if torch.equal(b[:, :1], b[:, 1:])]  # the critic's "real" pairs (a, a)
        foreign = [row for t in twins for row in t if not _is_training_row(row, X_model)]
        if mode == "self":  # (x_a, x_a) with x_a = G(z_neg): decoded negatives, not training rows
            assert foreign
        else:  # only (x, x) with x a training row
            assert twins and not foreign


def test_inter_vertex_heaviest_pairs_the_largest_weight(digits0, monkeypatch):
    index = torch.tensor([[0, 1, 2], [3, 4, 5]])
    weight = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    from anomalykit_plugins.ama import detector as ama_detector

    monkeypatch.setattr(ama_detector, "sample_simplex", lambda *a, **k: (index, weight))
    X = digits0.X_train[:6]
    seen = _critic_inputs(monkeypatch)
    anomalykit.load_method("ama", **dict(TINY, inter_vertex="heaviest", atypical=False, lipschitz="sn", batch_size=6)).fit(X)
    batch = seen[0][:, :1]  # the step's first critic call: the real pairs (x, x) of the shuffled batch
    firsts = [b[:, :1] for b in seen if b.shape[0] == 2]  # the interpolant pairs (x_v, x_inter)
    assert firsts and all(torch.equal(f, batch[[1, 3]]) for f in firsts)  # vertex of the largest α in each row


def test_generator_without_batchnorm_and_cosine_schedule(digits0):
    det = anomalykit.load_method("ama", **dict(TINY, generator_bn=False, lr_schedule="cosine", epochs=2)).fit(digits0.X_train)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in det.nets["generator"].modules())
    with_bn = anomalykit.load_method("ama", **dict(TINY, generator_bn=True)).fit(digits0.X_train[:40])
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.nets["generator"].modules())
    assert np.isfinite(det.score_samples(digits0.X_test)).all()


def test_max_steps_trains_and_anneals_over_the_epochs_that_fit(digits0):
    # 124 digits, batch 32: 4 batches per epoch; max_steps=9 leaves 2 of the 5 epochs, and the
    # cosine schedule must anneal over those 2 (as epochs=2 does), not over 5
    X = digits0.X_train
    assert X.shape[0] // 32 + 1 == 4
    capped = anomalykit.load_method("ama", **dict(TINY, epochs=5, max_steps=9, lr_schedule="cosine")).fit(X)
    two = anomalykit.load_method("ama", **dict(TINY, epochs=2, lr_schedule="cosine")).fit(X)
    assert capped.epochs_ == 2 and len(capped.history_) == 2
    np.testing.assert_array_equal(capped.score_samples(digits0.X_test), two.score_samples(digits0.X_test))
    five = anomalykit.load_method("ama", **dict(TINY, epochs=5, lr_schedule="cosine")).fit(X)
    assert five.epochs_ == 5 and not np.array_equal(five.score_samples(digits0.X_test), two.score_samples(digits0.X_test))


def test_recompute_batchnorm_gives_exact_statistics():
    from anomalykit.sdk import recompute_batchnorm

    bn = torch.nn.BatchNorm1d(3, momentum=0.1)
    bn.running_mean.fill_(5.0)  # stale statistics from "training"
    data = torch.randn(4, 25, 3) * torch.tensor([1.0, 2.0, 3.0]) + torch.tensor([0.5, -1.0, 2.0])
    recompute_batchnorm([bn], bn, iter(data))
    torch.testing.assert_close(bn.running_mean, data.reshape(-1, 3).mean(0))  # equal batches: mean of means
    torch.testing.assert_close(bn.running_var, data.var(1, unbiased=True).mean(0))  # mean of unbiased batch variances
    assert not bn.training and bn.momentum == 0.1


def test_bn_refresh_uses_reconstructions_of_the_training_rows(digits0):
    det = anomalykit.load_method("ama", **dict(TINY, bn_refresh=True, generator_bn=True)).fit(digits0.X_train)
    E, G = det.nets["encoder"], det.nets["generator"]
    first_bn = next(m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d))
    captured = []
    hook = first_bn.register_forward_hook(lambda m, i, o: captured.append(i[0]))
    with torch.no_grad():
        G.train()
        G(E.eval()(model_space(det, digits0.X_train)))
        G.eval()
    hook.remove()
    torch.testing.assert_close(first_bn.running_mean, captured[0].mean((0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_a_features_threshold_flags_about_the_contamination_on_new_normal_rows():
    """predict() on held-out normal rows flags about ``contamination`` of them with the out-of-fold
    threshold; the in-sample one (the Gaussian scoring its own rows) flagged far more."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X[y == 0], dtype=torch.float32).reshape(-1, 1, 8, 8) / 8 - 1
    g = torch.Generator().manual_seed(0)
    X = X[torch.randperm(len(X), generator=g)]
    det = anomalykit.load_method("ama", **dict(TINY, epochs=3, preprocess="none", contamination=0.1)).fit(X[:120])
    held = det.predict(X[120:]).mean()
    in_sample = (det.score_samples(X[120:]) > np.quantile(det.score_samples(X[:120]), 0.9)).mean()
    assert held < 0.3 and in_sample > held


# -- switches: learning-rate schedule, negatives, the non-mirrored critic ----------------------------------------
def _learning_rates(monkeypatch, per="epoch"):
    """{optimiser name: {epoch (or step, ``per="step"``): the set of learning rates it stepped with}}
    while the test runs (read from its parameter groups at each ``StepContext.update``, just before
    ``step()``)."""
    from collections import defaultdict

    from anomalykit.training import StepContext

    seen = defaultdict(lambda: defaultdict(set))
    original = StepContext.update

    def spy(self, names, loss, *, term=None):
        for name in (names,) if isinstance(names, str) else names:
            seen[name][getattr(self, per)].update(g["lr"] for g in self._trainer.optimizers[name].param_groups)
        return original(self, names, loss, term=term)

    monkeypatch.setattr(StepContext, "update", spy)
    return seen


@pytest.mark.parametrize("schedule", ["cosine", "constant", "step"])
def test_lr_schedule_sets_the_learning_rate_of_every_optimiser_per_epoch(digits0, monkeypatch, schedule):
    """lr_schedule: cosine = lr·(1 + cos(π e / E)) / 2 in epoch e of E (annealed towards 0, one value
    per epoch, the default), constant = lr throughout, step = lr·0.1^k after k of the milestones
    30%, 60%, 90% of E; for the critic, encoder and generator alike."""
    E, lr = 10, 1e-3
    expected = {
        "cosine": [lr * (1 + math.cos(math.pi * e / E)) / 2 for e in range(E)],
        "constant": [lr] * E,
        "step": [lr * 0.1 ** sum(e >= m for m in (3, 6, 9)) for e in range(E)],
    }[schedule]
    seen = _learning_rates(monkeypatch)
    params = dict(TINY, epochs=E, lr=lr, simplex=False, atypical=False, lipschitz="sn")
    if schedule != "cosine":
        params["lr_schedule"] = schedule  # cosine: the default
    anomalykit.load_method("ama", **params).fit(digits0.X_train[:64])
    assert set(seen) == {"critic", "encoder", "generator"}
    for name, per_epoch in seen.items():
        assert sorted(per_epoch) == list(range(E)), name
        for e in range(E):
            used = sorted(per_epoch[e])
            assert len(used) == 1, f"{name} stepped with several learning rates in epoch {e}: {used}"
            assert used[0] == pytest.approx(expected[e], rel=1e-9, abs=1e-15), f"{name}, epoch {e}"


@pytest.mark.parametrize("epochs, max_steps, steps", [(3, None, 6), (1, 3, 3)])
def test_cosine_steps_anneals_over_every_training_step(digits0, monkeypatch, epochs, max_steps, steps):
    """lr_schedule=cosine-steps: lr·(1 + cos(π s / S)) / 2 at step s of the S steps that run, one value
    per step, for every optimiser; with one epoch cut by max_steps it still anneals (cosine, per
    epoch, would hold lr for the whole of that one epoch)."""
    seen = _learning_rates(monkeypatch, per="step")
    lr = 1e-3
    X = digits0.X_train[:64] if max_steps is None else digits0.X_train  # 2 batches of 32, or 4 cut to 3
    det = anomalykit.load_method("ama", **dict(TINY, epochs=epochs, max_steps=max_steps, lr=lr, lr_schedule="cosine-steps",
                                               simplex=False, atypical=False, lipschitz="sn")).fit(X)
    assert det.steps_ == steps
    assert set(seen) == {"critic", "encoder", "generator"}
    for name, per_step in seen.items():
        assert sorted(per_step) == list(range(steps)), name
        for s in range(steps):
            assert sorted(per_step[s]) == [pytest.approx(lr * (1 + math.cos(math.pi * s / steps)) / 2, rel=1e-9)], f"{name}, step {s}"


def _module_calls(monkeypatch, *classes):
    """(class name, input, output) of every forward of the network classes ``classes``, in call order,
    while the test runs."""
    calls = []
    for cls in classes:
        original = cls.forward

        def spy(self, inp, _original=original, _name=cls.__name__):
            out = _original(self, inp)
            calls.append((_name, inp.detach().clone(), out.detach().clone()))
            return out

        monkeypatch.setattr(cls, "forward", spy)
    return calls


def _negative_latents(monkeypatch, X, **params):
    """Fit AMA on ``X`` (no interpolants, so every generator input is a code E(x) or a negative) and
    return [(the negative latents, the codes E(x) of the same minibatch)] for each generator call on
    latents other than the encoder's last output."""
    from anomalykit.sdk import ConvDecoder, ConvEncoder

    calls = _module_calls(monkeypatch, ConvEncoder, ConvDecoder)
    det = anomalykit.load_method("ama", **dict(TINY, simplex=False, lipschitz="sn", **params)).fit(X)
    out, last_code = [], None
    for name, inp, outp in calls:
        if name == "ConvEncoder":
            last_code = outp
        elif not torch.equal(inp, last_code):
            out.append((inp, last_code))
    return det, out


@pytest.mark.parametrize("direction, shell", [("outward", (4.0, 6.0)), ("inward", (2.0, 4.0))])
def test_annulus_negatives_fed_to_the_generator_lie_in_the_shell(digits0, monkeypatch, direction, shell):
    """negatives=annulus: the generator decodes latents with √d ≤ ‖z‖ ≤ √d + δ (outward) or
    √d − δ ≤ ‖z‖ ≤ √d (inward), d = 16 for 8x8 digits, δ = 2, whatever the codes' norms."""
    det, negatives = _negative_latents(monkeypatch, digits0.X_train[:64], negatives="annulus", delta=2.0, direction=direction)
    assert det.latent_dim_ == 16
    assert len(negatives) == 4  # 2 minibatches x (critic step, encoder/generator step)
    lo, hi = shell
    for z, codes in negatives:
        r = z.norm(dim=1)
        assert z.shape == codes.shape == (32, 16)
        assert float(r.min()) >= lo - 1e-4 and float(r.max()) <= hi + 1e-4, (float(r.min()), float(r.max()))
        assert float(r.max() - r.min()) > 0.05  # spread through the shell, not one radius


@pytest.mark.parametrize("direction, bounds", [("outward", (2.0, 1000.0)), ("inward", (1e-3, 0.5))])
def test_scaling_negatives_are_scaled_copies_of_the_codes(digits0, monkeypatch, direction, bounds):
    """negatives=scaling (the authors' code): z_neg = E(x)/α outward, α·E(x) inward, α ~ U(0, 0.5)
    (clamped at 1e-3) per row: each negative is collinear with its row's code, with a radius ratio
    in [2, 1000] or [0.001, 0.5], and the critic and encoder/generator steps of a minibatch use the same α."""
    _, negatives = _negative_latents(monkeypatch, digits0.X_train[:64], negatives="scaling", direction=direction)
    assert len(negatives) == 4
    ratios = []
    for z, codes in negatives:
        ratio = z.norm(dim=1) / codes.norm(dim=1)
        torch.testing.assert_close(z, codes * ratio.unsqueeze(1), rtol=1e-4, atol=1e-6)  # same direction, per-row factor
        lo, hi = bounds
        assert float(ratio.min()) >= lo * (1 - 1e-4) and float(ratio.max()) <= hi * (1 + 1e-4)
        assert float(ratio.max() / ratio.min()) > 1.5  # one α per row, not one per minibatch
        ratios.append(ratio)
    torch.testing.assert_close(ratios[0], ratios[1], rtol=1e-4, atol=0)  # minibatch 1: critic step, then E/G step
    torch.testing.assert_close(ratios[2], ratios[3], rtol=1e-4, atol=0)
    assert not torch.allclose(ratios[0], ratios[2])  # a fresh draw per minibatch


def test_non_mirrored_critic_sees_samples_and_reconstructions_separately(digits0, monkeypatch):
    """mirrored=False: the critic's inputs during training are single samples, either a minibatch of
    training rows or exactly a batch the generator produced (x̂), never stacked pairs; the R-score
    is then ‖f(x) − f(G(E(x)))‖₁ (score="r", checked eagerly), and the default score still separates
    the digits."""
    from sklearn.metrics import roc_auc_score

    from anomalykit.sdk import ConvCritic, ConvDecoder

    X = digits0.X_train[:64]
    plain = dict(TINY, mirrored=False, simplex=False, atypical=False, lipschitz="sn")
    calls = _module_calls(monkeypatch, ConvCritic, ConvDecoder)
    det = anomalykit.load_method("ama", **plain, score="r").fit(X)
    monkeypatch.undo()
    X_model = model_space(det, X)
    decoded = [out for name, _, out in calls if name == "ConvDecoder"]
    real = fake = 0
    for name, inp, _ in calls:
        if name != "ConvCritic":
            continue
        assert inp.shape[1:] == (1, 8, 8)
        if all(_is_training_row(row, X_model) for row in inp):
            real += 1
        else:
            assert any(torch.equal(inp, out) for out in decoded), "a critic input is neither data nor G's output"
            fake += 1
    assert (real, fake) == (4, 4)  # per minibatch: D(x) and D(x̂) in the critic step, again in the E/G step
    raw = digits0.X_test[:50]
    x = model_space(det, raw)
    E, G, D = (det.nets[k] for k in ("encoder", "generator", "critic"))
    with torch.no_grad():
        direct = (D.features(x) - D.features(G(E(x)))).abs().sum(1).double().numpy()
    np.testing.assert_allclose(det.score_samples(raw), direct, rtol=1e-5, atol=1e-6)
    assert direct.min() > 0
    default_score = anomalykit.load_method("ama", **plain).fit(X)
    assert roc_auc_score(digits0.y_test, default_score.score_samples(digits0.X_test)) > 0.9


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_digits_demo_default_pipeline_reaches_auroc_099():
    """`anomalykit run ama` with every default (digits, one-class, normal class 0, AMA's default
    parameters: 100 epochs, a-features score) through the pipeline's steps: AUROC >= 0.99
    (measured 1.0; ~15 s on one thread)."""
    from anomalykit.pipeline import RunConfig, build_detector, evaluate, fit_and_score, load_split

    cfg = RunConfig(method="ama")
    assert (cfg.data, cfg.protocol, cfg.normal_class, cfg.params) == ("digits", "one-class", 0, {})
    det, _ = build_detector(cfg.method, cfg.params)
    split = load_split(cfg, seed=det.hp.seed)
    outcome = fit_and_score(det, split, progress=False)
    metrics = evaluate(outcome.scores, split, outcome.threshold, cfg.protocol)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(split.y_test, outcome.scores))
    assert metrics["auroc"] >= 0.99, metrics


# -- losses, term by term by hand (the mutants mutation testing found surviving) -------------------------
def test_pixel_reconstruction_and_the_autoencoder_objective_by_hand():
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 2.0]]])  # (2, 2, 2)
    x_rec = torch.tensor([[[1.0, 0.0], [3.0, 5.0]], [[1.0, 0.0], [0.0, 0.0]]])
    # per row: (0 + 4 + 0 + 1)/4 = 1.25 and (1 + 0 + 0 + 4)/4 = 1.25, mean 1.25; then a lopsided pair
    assert float(losses.pixel_reconstruction(x, x_rec)) == pytest.approx(1.25)
    assert float(losses.pixel_reconstruction(x[:1], x[:1] + torch.tensor([[[2.0, 0.0], [0.0, 0.0]]]))) == pytest.approx(1.0)
    terms = {"rec": torch.tensor(1.0), "pixel": torch.tensor(2.0)}
    assert float(losses.autoencoder_objective(terms, lambda_inter=0.0, lambda_reg=0.0, lambda_neg=0.0)) == pytest.approx(1.0)
    assert float(losses.autoencoder_objective(terms, lambda_inter=0.0, lambda_reg=0.0, lambda_neg=0.0,
                                              lambda_rec=3.0)) == pytest.approx(7.0)


def test_atypical_draws_come_from_the_given_generator_only():
    """The same seeded generator gives the same negatives whatever the global RNG did in between
    (resume and DDP reproducibility rest on it), for both kinds of draw."""
    for mode in ("annulus", "scaling"):
        a = losses.draw_atypical(64, 8, mode=mode, delta=1.0, direction="inward", generator=torch.Generator().manual_seed(5))
        torch.manual_seed(123)
        torch.rand(10)
        b = losses.draw_atypical(64, 8, mode=mode, delta=1.0, direction="inward", generator=torch.Generator().manual_seed(5))
        key = "factor" if mode == "scaling" else "z"
        assert torch.equal(a[key], b[key]), mode


def test_an_inward_shell_wider_than_sqrt_d_starts_at_zero():
    """d = 4 (sqrt(d) = 2), δ = 1.5 inward: r in [0.5, 2]; δ = 3: the shell is the ball [0, 2]."""
    g = torch.Generator().manual_seed(0)
    r = losses.atypical_latents(4000, 4, delta=1.5, direction="inward", generator=g).norm(dim=1)
    assert float(r.min()) >= 0.5 - 1e-5 and float(r.min()) < 0.6
    ball = losses.atypical_latents(4000, 4, delta=3.0, direction="inward", generator=g).norm(dim=1)
    assert float(ball.min()) < 0.3 and float(ball.max()) <= 2.0 + 1e-5
