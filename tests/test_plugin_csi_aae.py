"""Tests of the csi-aae plugin against independent references (explicit loops, hand examples,
torch's affine_grid/grid_sample) and of its detector contract (ablations, save/load, seeds)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import anomalykit
from anomalykit import InputError
from anomalykit.data import make_split
from anomalykit_plugins.csi_aae.augment import Augment, gaussian_blur, random_resized_crop, rotate, shift_batch
from anomalykit_plugins.csi_aae.losses import csi_loss, nearest_neighbour_score, nt_xent, shifted_features

from conftest import model_space

TINY = dict(epochs=1, f_width=4, f_stages=2, proj_dim=8, latent_dim=4, ae_width=4, aae_every=1, progress=None)


def tiny(**kw):
    params = {k: v for k, v in TINY.items() if k != "progress"}
    params.update(kw)
    return anomalykit.load_method("csi-aae", **params)


# tiny nets run fastest single-threaded (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits0():
    split = make_split("one-class", "digits", normal_class=0, seed=0)
    return split


@pytest.fixture(scope="module")
def fitted(digits0):
    return tiny().fit(digits0.X_train, progress=False)


# -- eq. 1: NT-Xent ----------------------------------------------------------------------------
def _nt_xent_loops(z1, z2, tau):
    """SimCLR loss written out: for every anchor, -log(exp(cos(a, p)/tau) / sum_{k != a} exp(cos(a, k)/tau))."""
    rows = [list(map(float, r)) for r in torch.cat([z1, z2])]
    n = len(z1)

    def cos(u, v):
        dot = sum(a * b for a, b in zip(u, v))
        return dot / math.sqrt(sum(a * a for a in u)) / math.sqrt(sum(b * b for b in v))

    total = 0.0
    for a in range(2 * n):
        p = a + n if a < n else a - n
        num = math.exp(cos(rows[a], rows[p]) / tau)
        den = sum(math.exp(cos(rows[a], rows[k]) / tau) for k in range(2 * n) if k != a)
        total += -math.log(num / den)
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_nt_xent_matches_explicit_formula(tau):
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g, dtype=torch.float64)
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(_nt_xent_loops(z1, z2, tau), rel=1e-10)


def test_nt_xent_prefers_matching_views():
    z = torch.eye(4, dtype=torch.float64)
    assert float(nt_xent(z, z)) < float(nt_xent(z, z.roll(1, 0)))


# -- eq. 2/3: shifted instances ----------------------------------------------------------------
def test_rotation_by_90_on_a_hand_example():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]).view(1, 1, 3, 3)
    # counter-clockwise quarter turn: the right column becomes the top row
    expected = torch.tensor([[3.0, 6.0, 9.0], [2.0, 5.0, 8.0], [1.0, 4.0, 7.0]]).view(1, 1, 3, 3)
    assert torch.equal(rotate(x, 1), expected)
    assert torch.equal(rotate(x, 1), torch.rot90(x, 1, dims=(2, 3)))
    assert torch.equal(rotate(x, 2), x.flip(2).flip(3))


def test_four_rotations_give_back_the_image():
    x = torch.randn(2, 3, 6, 6)
    y = x
    for _ in range(4):
        y = rotate(y, 1)
    assert torch.equal(y, x)
    assert not torch.equal(rotate(x, 1), x)


def test_shift_batch_groups_rows_by_shift():
    x = torch.randn(3, 1, 5, 5)
    out, labels = shift_batch(x)
    assert out.shape == (12, 1, 5, 5)
    assert labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for k in range(4):
        assert torch.equal(out[3 * k : 3 * k + 3], torch.rot90(x, k, dims=(2, 3)))


def test_csi_loss_terms_and_plain_simclr():
    from anomalykit_plugins.csi_aae.networks import FeatureExtractor

    torch.manual_seed(0)
    f = FeatureExtractor((1, 8, 8), width=4, stages=2, proj_dim=8)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        total, terms = csi_loss(f, x, torch.Generator().manual_seed(0), Augment())
    assert set(terms) == {"con_si", "cls_si"}
    assert float(total) == pytest.approx(float(terms["con_si"] + terms["cls_si"]))
    # chance level of a 4-way classifier is log 4; an untrained head is near it
    assert abs(float(terms["cls_si"]) - math.log(4)) < 0.5
    with torch.no_grad():
        _, plain = csi_loss(f, x, torch.Generator().manual_seed(0), Augment(), n_shifts=1)
    assert set(plain) == {"con_si"}


# -- augmentations -----------------------------------------------------------------------------
def test_resized_crop_matches_grid_sample():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 2, 9, 9)
    out = random_resized_crop(x, g, scale=(0.1, 1.0))
    # redraw the same parameters and sample with torch's affine_grid/grid_sample
    g = torch.Generator().manual_seed(1)
    n = 6
    area = 0.1 + 0.9 * torch.rand(n, generator=g)
    log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(n, generator=g)
    w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1)
    h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1)
    cx = (1 - w) * (2 * torch.rand(n, generator=g) - 1)
    cy = (1 - h) * (2 * torch.rand(n, generator=g) - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(out, ref, atol=1e-5)


def test_full_crop_and_no_blur_are_identity():
    x = torch.randn(3, 1, 7, 7)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(random_resized_crop(x, g, scale=(1.0, 1.0), ratio=(1.0, 1.0)), x, atol=1e-6)
    assert torch.allclose(gaussian_blur(x, g, p=0.0), x, atol=1e-6)


def test_blur_preserves_constant_images_and_smooths():
    g = torch.Generator().manual_seed(0)
    const = torch.full((2, 1, 8, 8), 0.3)
    assert torch.allclose(gaussian_blur(const, g, p=1.0), const, atol=1e-6)
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    y = gaussian_blur(x, g, sigma=(1.0, 1.0), p=1.0)
    # an impulse in the middle spreads as a Gaussian of sigma 1 pixel, symmetrically
    assert float(y[0, 0, 4, 5] / y[0, 0, 4, 4]) == pytest.approx(math.exp(-0.5), rel=1e-2)
    assert float(y[0, 0, 6, 4] / y[0, 0, 4, 4]) == pytest.approx(math.exp(-2.0), rel=1e-2)
    assert torch.allclose(y, y.flip(2)) and torch.allclose(y, y.transpose(2, 3))


def test_augment_is_seeded_and_in_range():
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    a = Augment()
    y1 = a(x, torch.Generator().manual_seed(5))
    y2 = a(x, torch.Generator().manual_seed(5))
    assert torch.equal(y1, y2)
    assert float(y1.min()) >= -1 - 1e-6 and float(y1.max()) <= 1 + 1e-6


# -- eq. 11: nearest-neighbour score -----------------------------------------------------------
def _eq11_loops(feats, train_feats, weight_by_norm=True):
    """Eq. 11 written out with a loop over training samples."""
    out = []
    for q in feats:
        best, best_j = -float("inf"), -1
        for j, t in enumerate(train_feats):
            s = sum(float(F.cosine_similarity(q[k], t[k], dim=0)) for k in range(q.shape[0]))
            if s > best:
                best, best_j = s, j
        t = train_feats[best_j]
        m = sum(float(F.cosine_similarity(q[k], t[k], dim=0)) * (float(q[k].norm()) if weight_by_norm else 1.0) for k in range(q.shape[0]))
        out.append((m, best_j))
    return out


@pytest.mark.parametrize("chunk", [3, 1000])
@pytest.mark.parametrize("weight_by_norm", [True, False])
def test_nearest_neighbour_score_matches_loops(chunk, weight_by_norm):
    g = torch.Generator().manual_seed(0)
    train = torch.randn(11, 4, 6, generator=g, dtype=torch.float64)
    test = torch.randn(5, 4, 6, generator=g, dtype=torch.float64)
    m, idx = nearest_neighbour_score(test, F.normalize(train, dim=2), chunk=chunk, weight_by_norm=weight_by_norm)
    ref = _eq11_loops(test, train, weight_by_norm)
    assert idx.tolist() == [j for _, j in ref]
    assert m.tolist() == pytest.approx([v for v, _ in ref], rel=1e-10)


def test_exclude_skips_own_row():
    train = torch.randn(7, 4, 3, dtype=torch.float64)
    bank = F.normalize(train, dim=2)
    _, idx = nearest_neighbour_score(train, bank, chunk=2)
    assert idx.tolist() == list(range(7))
    _, loo = nearest_neighbour_score(train, bank, chunk=2, exclude=torch.arange(7))
    assert all(i != j for i, j in zip(loo.tolist(), range(7)))


def test_training_sample_finds_itself(fitted, digits0):
    X = digits0.X_train[:10]
    assert fitted.nearest_training_index(X).tolist() == list(range(10))
    assert fitted.score_samples(digits0.X_test).min() >= -4.0 - 1e-4


def test_training_rows_scored_again_score_as_their_threshold_scores(fitted, digits0):
    # a training row (or an exact copy) is matched to its nearest *other* row, the leave-one-out
    # rule behind decision_scores_, so predict() on the training rows flags ~contamination
    scores = fitted.score_samples(digits0.X_train)
    np.testing.assert_allclose(scores, fitted.decision_scores_, atol=1e-4)
    assert abs(fitted.predict(digits0.X_train).mean() - fitted.hp.contamination) <= 0.03
    # identical features (mean cosine 1) are skipped; the nearest other row is found instead
    train = torch.randn(5, 4, 3, dtype=torch.float64)
    bank = F.normalize(train, dim=2)
    m, idx = nearest_neighbour_score(train, bank, skip_identical=True, weight_by_norm=False)
    _, loo = nearest_neighbour_score(train, bank, exclude=torch.arange(5), weight_by_norm=False)
    assert idx.tolist() == loo.tolist() and bool((m < 4.0 - 1e-9).all())


def _eq11_numpy(query: torch.Tensor, bank: torch.Tensor, *, leave_one_out: bool = False):
    """Eq. 11's neighbour search in numpy, from (n, K, d) query and (N, K, d) bank features (both
    normalised per shift here): sim[i, j] = sum over the K shifts of cos(F(S q_i), F(S b_j));
    x-check = argmax_j sim[i, j], skipping the query itself (``leave_one_out``: query i is bank row
    i) and any bank row with the query's features (mean cosine within 1e-5 of 1, the method's rule
    for a training row scored again). Returns (the K cosines with x-check (n, K), its index (n,))."""
    q = query.double().numpy()
    b = bank.double().numpy()
    q = q / np.linalg.norm(q, axis=2, keepdims=True)
    b = b / np.linalg.norm(b, axis=2, keepdims=True)
    k = q.shape[1]
    sim = np.einsum("isd,jsd->ij", q, b)
    if leave_one_out:
        np.fill_diagonal(sim, -np.inf)
    sim[sim >= k * (1 - 1e-5)] = -np.inf
    j = sim.argmax(1)
    return np.einsum("isd,isd->is", q, b[j]), j


def test_score_norm_uses_feature_norms(digits0):
    """score_norm=True: eq. 11 with each cosine weighted by ||F(S x)||, x-check found by numpy."""
    det = tiny(score_norm=True).fit(digits0.X_train[:40], progress=False)
    X = digits0.X_train[:5]
    with torch.no_grad():
        feats = shifted_features(det.nets["F"], model_space(det, X).to(det.device), 4, "backbone")
    # a row matched to itself: K cosines of 1, each weighted by ||F(S x)||
    m, _ = nearest_neighbour_score(feats, F.normalize(feats, dim=2), weight_by_norm=True)
    assert m.double().numpy() == pytest.approx(feats.norm(dim=2).sum(1).double().numpy(), rel=1e-4)
    # the detector scores with the weighted form: x-check found by a numpy search over the training
    # rows' own features (not the detector's index), then the cosines with it times ||F(S x)||
    with torch.no_grad():
        test_feats = shifted_features(det.nets["F"], model_space(det, digits0.X_test[:5]).to(det.device), 4, "backbone")
        train_feats = shifted_features(det.nets["F"], model_space(det, digits0.X_train[:40]).to(det.device), 4, "backbone")
    cos, idx = _eq11_numpy(test_feats, train_feats)
    expected = -(cos * test_feats.norm(dim=2).double().numpy()).sum(1)
    assert det.score_samples(digits0.X_test[:5]) == pytest.approx(expected, rel=1e-4)
    assert det.nearest_training_index(digits0.X_test[:5]).tolist() == idx.tolist()


@pytest.mark.parametrize("score_norm", [False, True])
def test_threshold_scores_are_leave_one_out(fitted, digits0, score_norm):
    """decision_scores_ = -M of each training row against its nearest *other* training row (numpy
    search over the stored unit features ``_bank``), cosines weighted by ||F(S x)|| with score_norm;
    the bank holds the training rows' per-shift features, normalised."""
    det = fitted if not score_norm else tiny(score_norm=True).fit(digits0.X_train, progress=False)
    with torch.no_grad():
        feats = det._features(model_space(det, digits0.X_train))  # (N, 4, d) F(S x)
    norms = feats.norm(dim=2).double().numpy()
    np.testing.assert_allclose(det._bank.double().numpy(), (feats / feats.norm(dim=2, keepdim=True)).double().numpy(),
                               rtol=1e-5, atol=1e-6)
    cos, j = _eq11_numpy(det._bank, det._bank, leave_one_out=True)
    assert (j != np.arange(len(j))).all() and cos.shape == (digits0.X_train.shape[0], 4)
    expected = -((cos * norms) if score_norm else cos).sum(1)
    assert det.decision_scores_.shape == expected.shape
    np.testing.assert_allclose(det.decision_scores_, expected, rtol=1e-5, atol=1e-5)


def _knn_loops(test_feats, train_feats, neighbours, weight_by_norm, exclude=None):
    """The k-NN form of eq. 11 written out: for each query, every training row's sum over the shifts of
    cosine similarities, the `neighbours` largest kept (the excluded row left out), M = the mean over
    them of sum_S cos (each times ||F(S x)|| when weighting). Returns [(M, index of the best row)]."""
    out = []
    for i, q in enumerate(test_feats):
        sims = []
        for j, t in enumerate(train_feats):
            if exclude is not None and j == int(exclude[i]):
                continue
            cos = [float(F.cosine_similarity(q[k], t[k], dim=0)) for k in range(q.shape[0])]
            sims.append((sum(cos), j, cos))
        top = sorted(sims, key=lambda r: -r[0])[:neighbours]
        w = [float(q[k].norm()) if weight_by_norm else 1.0 for k in range(q.shape[0])]
        out.append((float(np.mean([sum(c * wk for c, wk in zip(cos, w)) for _, _, cos in top])), top[0][1]))
    return out


@pytest.mark.parametrize("chunk", [3, 1000])
@pytest.mark.parametrize("weight_by_norm", [True, False])
@pytest.mark.parametrize("leave_one_out", [False, True])
def test_k_nearest_neighbours_score_matches_loops(chunk, weight_by_norm, leave_one_out):
    g = torch.Generator().manual_seed(1)
    train = torch.randn(11, 4, 6, generator=g, dtype=torch.float64)
    test = train[:5] if leave_one_out else torch.randn(5, 4, 6, generator=g, dtype=torch.float64)
    exclude = torch.arange(5) if leave_one_out else None
    m, idx = nearest_neighbour_score(test, F.normalize(train, dim=2), chunk=chunk, weight_by_norm=weight_by_norm,
                                     exclude=exclude, neighbours=3)
    ref = _knn_loops(test, train, 3, weight_by_norm, exclude)
    assert idx.tolist() == [j for _, j in ref]
    assert m.tolist() == pytest.approx([v for v, _ in ref], rel=1e-10)
    # one neighbour is eq. 11's nearest-neighbour score exactly
    m1, idx1 = nearest_neighbour_score(test, F.normalize(train, dim=2), chunk=chunk, weight_by_norm=weight_by_norm,
                                       exclude=exclude, neighbours=1)
    ref1 = _knn_loops(test, train, 1, weight_by_norm, exclude)
    assert idx1.tolist() == [j for _, j in ref1] and m1.tolist() == pytest.approx([v for v, _ in ref1], rel=1e-10)


def _knn_numpy(query, bank, neighbours, *, leave_one_out=False):
    """-(mean of the `neighbours` largest sum_S cos(F(S q_i), F(S b_j))) in numpy (an independent
    search: a full similarity matrix, sorted), skipping the query itself (``leave_one_out``) and
    rows with the query's features, as :func:`_eq11_numpy`."""
    q = query.double().numpy()
    b = bank.double().numpy()
    q = q / np.linalg.norm(q, axis=2, keepdims=True)
    b = b / np.linalg.norm(b, axis=2, keepdims=True)
    sim = np.einsum("isd,jsd->ij", q, b)
    if leave_one_out:
        np.fill_diagonal(sim, -np.inf)
    sim[sim >= q.shape[1] * (1 - 1e-5)] = -np.inf
    return -np.sort(sim, axis=1)[:, ::-1][:, :neighbours].mean(1)


def test_score_neighbours_scores_and_threshold_match_numpy(digits0, tmp_path):
    """score_neighbours=3: test scores and leave-one-out threshold scores are minus the mean of the 3
    largest sums of cosines with the stored training features (numpy); loading a model fitted with
    one neighbour with score_neighbours=3 scores the same way from its stored features."""
    det = tiny(score_neighbours=3).fit(digits0.X_train, progress=False)
    with torch.no_grad():
        test_feats = det._features(model_space(det, digits0.X_test))
    np.testing.assert_allclose(det.score_samples(digits0.X_test), _knn_numpy(test_feats, det._bank, 3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(det.decision_scores_, _knn_numpy(det._bank, det._bank, 3, leave_one_out=True),
                               rtol=1e-5, atol=1e-5)
    one = tiny().fit(digits0.X_train, progress=False)
    reloaded = anomalykit.load(one.save(tmp_path / "m.pt"), score_neighbours=3)
    with torch.no_grad():
        feats = one._features(model_space(one, digits0.X_test))
    np.testing.assert_allclose(reloaded.score_samples(digits0.X_test), _knn_numpy(feats, one._bank, 3), rtol=1e-5, atol=1e-5)
    assert not np.allclose(reloaded.score_samples(digits0.X_test), one.score_samples(digits0.X_test))


def test_score_neighbours_refusals(digits0):
    with pytest.raises(InputError, match=r"score_neighbours=3 averages .* set score_neighbours=1 or score=nearest"):
        tiny(score="gaussian", score_neighbours=3).fit(digits0.X_train[:20], progress=False)
    with pytest.raises(InputError, match=r"score_neighbours=20 needs at least 21 training rows; got 20"):
        tiny(score_neighbours=20).fit(digits0.X_train[:20], progress=False)


# -- detector contract -------------------------------------------------------------------------
def test_plain_csi_ablation_has_no_generative_model(digits0):
    det = tiny(variant="csi").fit(digits0.X_train[:40], progress=False)
    assert set(det.nets) == {"F"}
    assert det.reconstruct(digits0.X_test[:2]) is None
    assert set(det.history_[0]) == {"csi", "con_si", "cls_si"}
    assert np.isfinite(det.score_samples(digits0.X_test[:5])).all()


def test_generator_only_ablation_has_no_encoder(digits0):
    det = tiny(variant="generator").fit(digits0.X_train[:40], progress=False)
    assert set(det.nets) == {"F", "G", "D"}
    assert {"d", "adv", "csi_s", "joint"} <= set(det.history_[0])
    assert det.reconstruct(digits0.X_test[:2]) is None


def test_full_model_logs_every_term_and_reconstructs(fitted, digits0):
    assert set(fitted.nets) == {"F", "G", "D", "E", "D_lat"}
    assert {"d", "adv", "csi_s", "d_lat", "adv_lat", "rec", "rec_pixel", "rec_sim", "lrec", "joint"} <= set(fitted.history_[0])
    rec = fitted.reconstruct(digits0.X_test[:3])  # in the inputs' units: G's tanh range [-1, 1] mapped back
    assert rec.shape == (3, 1, 8, 8) and float(model_space(fitted, rec).abs().max()) <= 1.0 + 1e-6
    assert float(rec.min()) >= float(digits0.X_train.min()) - 1e-4 and float(rec.max()) <= float(digits0.X_train.max()) + 1e-4


def test_switches_turn_terms_off(digits0):
    det = tiny(image_adv=False, latent_adv=False, latent_rec=False, csi_s=False, joint=False, rec_sim=False,
               rotation_cls=False).fit(digits0.X_train[:40], progress=False)
    assert set(det.nets) == {"F", "G", "E"}
    assert set(det.history_[0]) == {"csi", "con_si", "rec", "rec_pixel"}


def test_save_load_round_trip(fitted, digits0, tmp_path):
    path = fitted.save(tmp_path / "m.pt")
    loaded = anomalykit.load(path)
    assert loaded.nets.keys() == fitted.nets.keys()
    X = digits0.X_test
    assert np.array_equal(loaded.score_samples(X), fitted.score_samples(X))
    assert loaded.threshold_ == fitted.threshold_


def test_fit_is_deterministic_per_seed(digits0):
    """The same seed gives the same scores, another seed others (fit time: benchmarks/test_bench_fit_seconds.py)."""
    a = tiny(seed=1).fit(digits0.X_train, progress=False).score_samples(digits0.X_test)
    b = tiny(seed=1).fit(digits0.X_train, progress=False).score_samples(digits0.X_test)
    c = tiny(seed=2).fit(digits0.X_train, progress=False).score_samples(digits0.X_test)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_short_training_separates_digits(digits0):
    from sklearn.metrics import roc_auc_score

    det = anomalykit.load_method("csi-aae", variant="csi", epochs=3).fit(digits0.X_train, progress=False)
    assert roc_auc_score(digits0.y_test, det.score_samples(digits0.X_test)) > 0.9


def test_rejects_tabular_and_non_square_inputs():
    with pytest.raises(InputError, match="needs images"):
        tiny().fit(np.random.rand(20, 5).astype(np.float32), progress=False)
    with pytest.raises(InputError, match="square"):
        tiny().fit(np.random.rand(20, 1, 8, 6).astype(np.float32), progress=False)


def test_resume_reproduces_uninterrupted_training(digits0, tmp_path):
    X = digits0.X_train[:64]
    straight = tiny(epochs=2, batch_size=16, aae_every=3).fit(X, progress=False).score_samples(digits0.X_test[:20])
    tiny(epochs=1, batch_size=16, aae_every=3).fit(X, checkpoint_dir=tmp_path, progress=False)
    resumed = tiny(epochs=2, batch_size=16, aae_every=3).fit(X, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert np.array_equal(resumed.score_samples(digits0.X_test[:20]), straight)


def test_score_ensemble_averages_features_over_fixed_transformations(digits0):
    """M_ens (sec. 2.3): features of R fixed transformations T_r (one draw for every row, seeded by
    (seed, r)), averaged; the bank is built the same way, and scoring is deterministic."""
    det = tiny(score_ensemble=2, seed=3).fit(digits0.X_train, progress=False)
    x = det.preprocessor_.transform(digits0.X_test[:16])
    f, augment = det.nets["F"].eval(), Augment(crop_scale=0.5, jitter=0.4, blur_sigma=1.0)  # the detector defaults
    with torch.no_grad():
        views = [augment(x, torch.Generator().manual_seed(3 * 7919 + r), shared=True) for r in range(2)]
        expected = sum(shifted_features(f, v, det.n_shifts, "backbone") for v in views) / 2
    torch.testing.assert_close(det._features(x), expected)
    one = augment(x[:1].expand(3, -1, -1, -1), torch.Generator().manual_seed(0), shared=True)
    torch.testing.assert_close(one[0], one[2])  # shared=True: the same T_r for every row
    # the bank is the training rows' ensemble features; scores are -M against it (numpy search)
    with torch.no_grad():
        xt = det.preprocessor_.transform(digits0.X_train)
        train_views = [augment(xt, torch.Generator().manual_seed(3 * 7919 + r), shared=True) for r in range(2)]
        train_feats = sum(shifted_features(f, v, det.n_shifts, "backbone") for v in train_views) / 2
    cos, _ = _eq11_numpy(expected, train_feats)
    np.testing.assert_allclose(det.score_samples(digits0.X_test[:16]), -cos.sum(1), rtol=1e-5, atol=1e-5)
    plain = tiny(seed=3).fit(digits0.X_train, progress=False)
    assert not np.allclose(plain.score_samples(digits0.X_test), det.score_samples(digits0.X_test))


def test_score_ensemble_is_refused_by_export_with_the_fix(digits0, tmp_path):
    from anomalykit.export import ExportError

    det = tiny(score_ensemble=1).fit(digits0.X_train[:40], progress=False)
    with pytest.raises(ExportError, match="export a model fitted with score_ensemble=0"):
        det.export(tmp_path / "csi.pt")


# -- score=gaussian (not the paper's) ----------------------------------------------------------
def _shift_gaussian_numpy(train_unit: np.ndarray, query_unit: np.ndarray) -> np.ndarray:
    """Sum over the shifts of -log N(u; mu_S, Sigma_S), scikit-learn's Ledoit-Wolf fitted to each
    shift's (N, d) training column: 1/2 Mahalanobis^2 + 1/2 log|Sigma| + d/2 log 2 pi."""
    from sklearn.covariance import LedoitWolf

    total = np.zeros(query_unit.shape[0])
    d = train_unit.shape[2]
    for s in range(train_unit.shape[1]):
        lw = LedoitWolf().fit(train_unit[:, s])
        total += 0.5 * lw.mahalanobis(query_unit[:, s]) + 0.5 * np.linalg.slogdet(lw.covariance_)[1] + 0.5 * d * math.log(2 * math.pi)
    return total


def _unit_features(det, X) -> np.ndarray:
    with torch.no_grad():
        feats = shifted_features(det.nets["F"], model_space(det, X).to(det.device), 4, "backbone")
    return F.normalize(feats, dim=2).double().numpy()


@pytest.fixture(scope="module")
def fitted_gaussian(digits0):
    return tiny(score="gaussian").fit(digits0.X_train, progress=False)


def test_gaussian_score_matches_sklearn_per_shift(fitted_gaussian, digits0):
    """score=gaussian: the test rows' unit features under scikit-learn's Ledoit-Wolf Gaussian of
    each shift's unit training features, -log densities summed over the 4 rotations."""
    det = fitted_gaussian
    expected = _shift_gaussian_numpy(_unit_features(det, digits0.X_train), _unit_features(det, digits0.X_test))
    np.testing.assert_allclose(det.score_samples(digits0.X_test), expected, rtol=1e-4, atol=1e-3)
    # not eq. 11's score of the same network
    unit_test, unit_train = _unit_features(det, digits0.X_test), _unit_features(det, digits0.X_train)
    assert not np.allclose(det.score_samples(digits0.X_test), -np.einsum("isd,jsd->ij", unit_test, unit_train).max(1))


def test_gaussian_threshold_scores_are_cross_fitted(fitted_gaussian, digits0):
    """decision_scores_ = each training row under the per-shift Gaussians of the other 4 of 5
    contiguous folds (scikit-learn), not under the Gaussians fitted to it; they are higher
    (worse) than the in-sample scores, which would set too low a threshold."""
    det = fitted_gaussian
    unit = _unit_features(det, digits0.X_train)
    n = unit.shape[0]
    expected = np.empty(n)
    for held in np.array_split(np.arange(n), 5):
        keep = np.setdiff1d(np.arange(n), held)
        expected[held] = _shift_gaussian_numpy(unit[keep], unit[held])
    np.testing.assert_allclose(det.decision_scores_, expected, rtol=1e-4, atol=1e-3)
    assert det.decision_scores_.mean() > _shift_gaussian_numpy(unit, unit).mean()


def test_gaussian_score_save_load_round_trip(fitted_gaussian, digits0, tmp_path):
    loaded = anomalykit.load(fitted_gaussian.save(tmp_path / "g.pt"))
    assert np.array_equal(loaded.score_samples(digits0.X_test), fitted_gaussian.score_samples(digits0.X_test))
    assert loaded.threshold_ == fitted_gaussian.threshold_


def test_a_checkpoint_without_the_gaussians_is_refused_for_score_gaussian(fitted, tmp_path):
    """A model fitted with eq. 11 has no shift Gaussians: loading it as score=gaussian is a one-line
    CheckpointError, not a crash at scoring time."""
    from anomalykit import CheckpointError

    with pytest.raises(CheckpointError, match="needs 4 fitted shift Gaussians") as err:
        anomalykit.load(fitted.save(tmp_path / "m.pt"), score="gaussian")
    assert "\n" not in str(err.value)


def test_gaussian_score_refuses_score_norm(digits0):
    with pytest.raises(InputError, match="score_norm=false or score=nearest"):
        tiny(score="gaussian", score_norm=True).fit(digits0.X_train[:40], progress=False)


def test_loading_with_another_score_param_refuses_predict(fitted, digits0, tmp_path):
    """A model loaded with score_neighbours=3 scores with 3 neighbours, but its saved threshold came
    from one: predict refuses in one line; an override that does not change the scores (bank_chunk)
    keeps predict as saved."""
    path = fitted.save(tmp_path / "m.pt")
    reloaded = anomalykit.load(path, score_neighbours=3)
    assert np.isfinite(reloaded.score_samples(digits0.X_test[:5])).all()
    with pytest.raises(InputError, match=r"score_neighbours=3 changes the scores, but threshold_ comes from the training "
                                         r"scores with score_neighbours=1; refit before predict\(\)"):
        reloaded.predict(digits0.X_test[:5])
    same = anomalykit.load(path, bank_chunk=7)
    np.testing.assert_array_equal(same.predict(digits0.X_test), fitted.predict(digits0.X_test))
