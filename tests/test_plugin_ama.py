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
    codes = torch.full((8, 16), 0.1)  # norm 0.4
    draw = losses.draw_atypical(8, 16, mode="annulus-codes", delta=1.5, direction="outward", generator=g)
    rel = losses.atypical_from_draw(draw, codes).norm(dim=1)
    assert rel.min() >= 0.4 - 1e-5 and rel.max() <= 0.4 * 5.5 / 4.0 + 1e-5


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
