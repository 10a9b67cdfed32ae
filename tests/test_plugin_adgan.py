"""ADGAN plugin: Algorithm 1's semantics (θ reset, n_seed, k), the batched search against the
literal reference loop, the functional Adam against torch.optim.Adam, parameters, save/load."""
import copy

import numpy as np
from sklearn.metrics import roc_auc_score
import pytest
import torch
from torch.func import functional_call, grad

import anomalykit
from anomalykit import ConfigError
from anomalykit.data import make_split
from anomalykit_plugins.adgan.networks import Generator
from anomalykit_plugins.adgan.search import (
    SearchConfig,
    adam_step_,
    initial_latents,
    search_batched,
    search_reference,
)

from conftest import model_space

# small but real settings: θ adaptation strong enough that a θ leak between samples would show
TINY = dict(epochs=2, batch_size=32, n_seed=4, k=3, g_width=4, d_width=8, lr_theta=1e-2, seed=3, score="loss")


@pytest.fixture(scope="module")
def digits():
    return make_split("one-class", "digits", normal_class=0, seed=0)


@pytest.fixture(scope="module")
def fitted(digits):
    return anomalykit.load_method("adgan", **TINY).fit(digits.X_train, progress=False)


def random_generator(shape, latent_dim=6, dtype=torch.float64, seed=0):
    """A tiny generator with non-trivial BatchNorm statistics and affine parameters, eval mode."""
    torch.manual_seed(seed)
    g = Generator(latent_dim, shape, width=3, hidden=7).to(dtype)
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return g.eval()


def direct_loss(g, z, x):
    """ℓ(g(z), x) per latent with the plain module forward: Σ (g(z) − x)²."""
    return (g(z) - x).pow(2).flatten(1).sum(1)


# -- Algorithm 1 semantics ---------------------------------------------------------------------
@pytest.mark.parametrize("scoring", ["batched", "reference"])
def test_theta_is_reset_for_every_sample(fitted, digits, scoring):
    det = copy.deepcopy(fitted)
    det.hp.scoring = scoring
    x, y = digits.X_test[:1], digits.X_test[5:6]
    alone = det.score_samples(x)[0]
    together = det.score_samples(torch.cat([y, x, x, y]))
    assert together[1] == pytest.approx(alone, rel=1e-6) and together[2] == pytest.approx(alone, rel=1e-6)
    assert together[0] == pytest.approx(together[3], rel=1e-6)
    # the θ step is large enough here that carrying θ over would have changed the score
    det.hp.lr_theta = 0.0
    assert abs(det.score_samples(x)[0] - alone) > 1e-3 * alone


def test_k0_is_the_loss_at_the_starting_latents(fitted, digits):
    det = copy.deepcopy(fitted)
    det.hp.k = 0
    x = digits.X_test[:6]
    g = det.nets["generator"].eval()
    z0 = initial_latents(det.hp.n_seed, det.latent_dim_, det.hp.seed)
    with torch.no_grad():
        expected = torch.stack([direct_loss(g, z0, xi).mean() for xi in model_space(det, x)])
    np.testing.assert_allclose(det.score_samples(x), expected.numpy(), rtol=1e-5)


@pytest.mark.parametrize("theta_copies", ["seed", "sample", "none"])
def test_k1_is_one_hand_computed_adam_step(theta_copies):
    """Adam's first step is lr·g/(|g|+ε) (m̂ = g, v̂ = g²); computed here with torch.func.grad."""
    g = random_generator((1, 8, 8))
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 2 - 1
    z0 = initial_latents(3, 6, 0, dtype=torch.float64)
    cfg = SearchConfig(steps=1, lr_latent=0.25, lr_theta=1e-2, theta_copies=theta_copies)
    names = [n for n, _ in g.named_parameters()]
    theta = {n: p.detach() for n, p in g.named_parameters()}
    buffers = dict(g.named_buffers())

    def loss(params, z, xi):
        return ((functional_call(g, ({**params, **buffers},), (z,)) - xi) ** 2).sum()

    def first_step(v, gv, lr):
        return v - lr * gv / (gv.abs() + cfg.eps)

    expected = torch.empty(2, 3, dtype=torch.float64)
    for i in range(2):
        groups = [[0, 1, 2]] if theta_copies == "sample" else [[0], [1], [2]]
        for seeds in groups:
            gp, gz = grad(loss, argnums=(0, 1))(theta, z0[seeds], x[i])
            z1 = first_step(z0[seeds], gz, cfg.lr_latent)
            th1 = theta if theta_copies == "none" else {n: first_step(theta[n], gp[n], cfg.lr_theta) for n in names}
            out = functional_call(g, ({**th1, **buffers},), (z1,))
            expected[i, seeds] = ((out - x[i]) ** 2).flatten(1).sum(1)
    got = search_batched(g, x, z0, cfg)
    assert got.losses.shape == (2, 3)  # n_seed honoured
    torch.testing.assert_close(got.losses, expected, rtol=1e-10, atol=1e-10)


def test_n_seed_and_k_change_the_search(fitted, digits):
    det = copy.deepcopy(fitted)
    x = digits.X_test[:3]
    r = det.latent_search(x)
    assert r.losses.shape == (3, det.hp.n_seed) and r.latents.shape == (3, det.hp.n_seed, det.latent_dim_)
    det.hp.n_seed = 7
    assert det.latent_search(x).losses.shape == (3, 7)
    det.hp.n_seed = fitted.hp.n_seed
    by_k = {}
    for k in (0, 1, 3):
        det.hp.k = k
        by_k[k] = det.latent_search(x).scores()
    assert (by_k[1] < by_k[0]).all() and (by_k[3] < by_k[1]).all()  # each step improves the fit


# -- batched implementations equal the literal loop ------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 6, 6), (5,)], ids=["8x8", "6x6-conv", "tabular"])
@pytest.mark.parametrize("theta_copies", ["seed", "sample", "none"])
@pytest.mark.parametrize("implementation", ["batched", "vmap"])
def test_batched_search_equals_reference_float64(shape, theta_copies, implementation):
    g = random_generator(shape)
    x = torch.rand(3, *shape, dtype=torch.float64) * 2 - 1
    z0 = initial_latents(4, 6, 1, dtype=torch.float64)
    cfg = SearchConfig(steps=4, lr_theta=1e-2, theta_copies=theta_copies)
    ref = search_reference(g, x, z0, cfg, keep_outputs=True)
    for chunk in (0, 1, 5):  # chunking never changes a result
        got = search_batched(g, x, z0, cfg, implementation=implementation, chunk=chunk, keep_outputs=True)
        torch.testing.assert_close(got.losses, ref.losses, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got.latents, ref.latents, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got.outputs, ref.outputs, rtol=1e-10, atol=1e-10)


def test_theta_copies_modes_differ_as_documented():
    """seed ≠ sample (shared θ couples the seeds) ≠ none (θ fixed) once θ moves."""
    g = random_generator((1, 8, 8))
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 2 - 1
    z0 = initial_latents(3, 6, 0, dtype=torch.float64)
    res = {m: search_batched(g, x, z0, SearchConfig(steps=3, lr_theta=1e-2, theta_copies=m)).losses for m in ("seed", "sample", "none")}
    assert (res["seed"] - res["sample"]).abs().max() > 1e-6 and (res["seed"] - res["none"]).abs().max() > 1e-6
    # with one seed, sharing θ across the seeds of a sample is the same as a θ per seed
    z1 = z0[:1]
    one = {m: search_batched(g, x, z1, SearchConfig(steps=3, lr_theta=1e-2, theta_copies=m)).losses for m in ("seed", "sample")}
    torch.testing.assert_close(one["seed"], one["sample"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 6, 6), (5,)])
def test_forward_copies_matches_the_module_per_copy(shape):
    g = random_generator(shape)
    copies = []
    for c in range(3):  # three different parameter sets
        gc = random_generator(shape, seed=10 + c)
        gc.load_state_dict({**gc.state_dict(), **{k: v for k, v in g.state_dict().items() if "running" in k}})
        copies.append(gc)
    params = [torch.stack(ps) for ps in zip(*[list(gc.parameters()) for gc in copies])]
    z = torch.randn(3, 5, 6, dtype=torch.float64)
    out = g.forward_copies(params, z)
    for c, gc in enumerate(copies):
        torch.testing.assert_close(out[c], gc(z[c]).detach(), rtol=1e-12, atol=1e-12)


def test_detector_batched_vmap_reference_agree_float32(fitted, digits):
    x = digits.X_test[:8]
    scores = {}
    for impl in ("batched", "vmap", "reference"):
        det = copy.deepcopy(fitted)
        det.hp.scoring = impl
        scores[impl] = det.score_samples(x)
    np.testing.assert_allclose(scores["batched"], scores["reference"], rtol=1e-4)
    np.testing.assert_allclose(scores["vmap"], scores["reference"], rtol=1e-4)


# -- functional Adam ------------------------------------------------------------------------------
@pytest.mark.parametrize("use_scratch", [False, True])
@pytest.mark.parametrize("lr, betas", [(0.25, (0.5, 0.999)), (1e-3, (0.9, 0.99))])
def test_functional_adam_matches_torch_optim_adam_bitwise(lr, betas, use_scratch):
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen)]
    target = torch.randn(5, 7, generator=gen)
    ours = [t.clone() for t in a]
    theirs = [t.clone().requires_grad_(True) for t in a]
    opt = torch.optim.Adam(theirs, lr=lr, betas=betas)
    m = [torch.zeros_like(t) for t in ours]
    v = [torch.zeros_like(t) for t in ours]

    def loss(p):  # a toy non-quadratic problem
        return (torch.tanh(p[0] @ p[0].T).sum() - (p[0].sum(1, keepdim=True) * p[1] - target).pow(2).sum()).pow(2)

    for step in range(1, 6):
        opt.zero_grad()
        loss(theirs).backward()
        grads = [t.grad.clone() for t in theirs]  # identical gradients for both
        opt.step()
        adam_step_(ours, grads, m, v, step=step, lr=lr, betas=betas, scratch=[torch.empty_like(t) for t in ours] if use_scratch else None)
        for o, t in zip(ours, theirs):
            assert torch.equal(o, t.detach())
        for o_m, o_v, t in zip(m, v, theirs):
            assert torch.equal(o_m, opt.state[t]["exp_avg"]) and torch.equal(o_v, opt.state[t]["exp_avg_sq"])
        with torch.no_grad():  # next gradients at the (shared) new point
            for o, t in zip(ours, theirs):
                t.copy_(o)


# -- parameters, scores, persistence ----------------------------------------------------------------
@pytest.mark.parametrize("bad, fragment", [({"n_seed": 0}, "'n_seed' must be >= 1"), ({"k": -1}, "'k' must be >= 0")])
def test_bad_search_parameters_are_rejected(bad, fragment):
    with pytest.raises(ConfigError) as err:
        anomalykit.load_method("adgan", **bad)
    assert fragment in str(err.value)


def test_ablation_scores(fitted, digits):
    det = copy.deepcopy(fitted)
    x = digits.X_test[:4]
    r = det.latent_search(model_space(det, x))
    det.hp.score = "latent-prior"
    np.testing.assert_allclose(det.score_samples(x), (0.5 * r.latents.pow(2).sum(-1)).mean(1).numpy(), rtol=1e-5)
    det.hp.score = "critic"
    with torch.no_grad():
        np.testing.assert_allclose(det.score_samples(x), (-det.nets["critic"](model_space(det, x))).numpy(), rtol=1e-6)


@pytest.fixture(scope="module", params=["critic-gaussian", "residual-gaussian"])
def gaussian_scored(request, digits):
    return anomalykit.load_method("adgan", **{**TINY, "score": request.param}).fit(digits.X_train, progress=False)


def test_gaussian_scores_are_the_mahalanobis_distance_of_critic_features(gaussian_scored, digits):
    """score=critic-gaussian / residual-gaussian against scikit-learn: ½ × LedoitWolf's squared
    Mahalanobis distance of v = f(x) (or f(x) − f(x̂), x̂ the reconstruction ``reconstruct`` returns)
    from the training rows' Gaussian, plus one constant (½ log|Σ| + F/2 log 2π)."""
    from sklearn.covariance import LedoitWolf

    det = gaussian_scored
    critic = det.nets["critic"].eval()

    def vectors(x):
        with torch.no_grad():
            f = critic.features(model_space(det, x))
            if det.hp.score == "residual-gaussian":
                f = f - critic.features(model_space(det, det.reconstruct(x)))
        return f.double().numpy()

    test = digits.X_test[:60]
    half_maha = 0.5 * LedoitWolf().fit(vectors(digits.X_train)).mahalanobis(vectors(test))
    offset = det.score_samples(test) - half_maha
    np.testing.assert_allclose(offset, np.full_like(offset, offset[0]), rtol=0, atol=1e-4 * np.abs(half_maha).max())
    assert np.isfinite(det.threshold_)


def test_gaussian_training_scores_are_cross_fitted(gaussian_scored, digits):
    """The threshold's training scores: each row under a Gaussian fitted without its fold, so they
    exceed the in-sample scores on average (a row pulls its own Gaussian towards it)."""
    in_sample = gaussian_scored.score_samples(digits.X_train)
    assert gaussian_scored.decision_scores_.shape == in_sample.shape
    assert (gaussian_scored.decision_scores_ - in_sample).mean() > 0


def test_gaussian_scores_survive_save_and_load_and_need_their_state(gaussian_scored, digits, tmp_path):
    again = anomalykit.load(gaussian_scored.save(tmp_path / "adgan-gaussian.pt"))
    np.testing.assert_array_equal(again.score_samples(digits.X_test[:10]), gaussian_scored.score_samples(digits.X_test[:10]))
    with pytest.raises(ValueError, match="needs the fitted feature Gaussian"):
        copy.deepcopy(gaussian_scored)._load_extra_state({})


def test_reconstruct_is_the_best_seed_output(fitted, digits):
    x = digits.X_test[:3]
    rec = fitted.reconstruct(x)  # in the input's units (digits: 0..16)
    xm = model_space(fitted, x)
    r = fitted.latent_search(xm, keep_outputs=True)
    assert rec.shape == x.shape
    best = r.losses.argmin(1)
    rec_model = model_space(fitted, rec)
    torch.testing.assert_close(rec_model, r.outputs[torch.arange(3), best], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(((rec_model - xm) ** 2).flatten(1).sum(1), r.losses.min(1).values, rtol=1e-4, atol=1e-4)


def test_save_load_gives_identical_scores(fitted, digits, tmp_path):
    path = fitted.save(tmp_path / "adgan.pt")
    again = anomalykit.load(path)
    x = digits.X_test[:10]
    np.testing.assert_array_equal(again.score_samples(x), fitted.score_samples(x))
    assert again.threshold_ == fitted.threshold_


def test_weight_clipping_keeps_the_critic_in_the_box(digits):
    det = anomalykit.load_method("adgan", **{**TINY, "lipschitz": "clip", "clip_value": 0.02, "epochs": 1})
    det.fit(digits.X_train[:40], progress=False)
    assert max(p.abs().max().item() for p in det.nets["critic"].parameters()) <= 0.02


def test_one_epoch_fit_on_digits_scores_finite_with_a_threshold(digits):
    """The default networks, one epoch: finite scores and a threshold (fit time:
    benchmarks/test_bench_fit_seconds.py)."""
    det = anomalykit.load_method("adgan", epochs=1).fit(digits.X_train, progress=False)
    scores = det.score_samples(digits.X_test)
    assert np.isfinite(scores).all()
    # the threshold rule, recomputed with numpy: the (1 - contamination) quantile of one training
    # score per training row, and predict flags the scores above it
    assert det.decision_scores_.shape == (len(digits.X_train),)
    assert det.threshold_ == pytest.approx(np.quantile(det.decision_scores_, 1 - det.hp.contamination), rel=1e-12)
    np.testing.assert_array_equal(det.predict(digits.X_test), (scores > det.threshold_).astype(int))
    # one epoch of the default networks already ranks digit 0 above the other digits
    assert roc_auc_score(digits.y_test, scores) > 0.8


# -- the losses against independent numpy/scipy computations -----------------------------------------
from anomalykit_plugins.adgan import losses as adgan_losses  # noqa: E402


def _np_blur(a):
    """[1 4 6 4 1]/16 along H then W, edge values repeated (scipy)."""
    from scipy.ndimage import convolve1d

    k = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    return convolve1d(convolve1d(a, k, axis=-1, mode="nearest"), k, axis=-2, mode="nearest")


def _np_bilinear(a, size):
    """Bilinear resize with half-pixel centres (align_corners=False), written out."""
    def axis_weights(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        w = src - lo
        m = np.zeros((n_out, n_in))
        m[np.arange(n_out), lo] += 1 - w
        m[np.arange(n_out), hi] += w
        return m

    mh, mw = axis_weights(a.shape[-2], size[0]), axis_weights(a.shape[-1], size[1])
    return np.einsum("oh,nchw,pw->ncop", mh, a, mw)


def _np_pyramid_l1(x_hat, x, levels):
    total, a, b = np.zeros(x.shape[0]), x_hat, x
    for j in range(levels):
        if j == levels - 1:
            la, lb = a, b
        else:
            da, db = _np_blur(a)[..., ::2, ::2], _np_blur(b)[..., ::2, ::2]
            la, lb = a - _np_bilinear(da, a.shape[-2:]), b - _np_bilinear(db, b.shape[-2:])
            a, b = da, db
        total += 4.0**j * np.abs(la - lb).reshape(len(x), -1).sum(1)
    return total


def test_the_blur_and_the_laplacian_pyramid_against_numpy():
    rng = np.random.default_rng(0)
    x, x_hat = rng.normal(size=(3, 2, 28, 28)), rng.normal(size=(3, 2, 28, 28))
    got_blur = adgan_losses._blur(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got_blur, _np_blur(x), rtol=1e-10, atol=1e-12)
    for levels in (None, 1, 2):
        got = adgan_losses.laplacian_pyramid_l1(torch.from_numpy(x_hat), torch.from_numpy(x), levels).numpy()
        np.testing.assert_allclose(got, _np_pyramid_l1(x_hat, x, 3 if levels is None else levels), rtol=1e-9)
    # levels=None keeps the coarsest side >= 4: 28 -> 3 levels (7), 8 -> 2 (4)
    x8, y8 = rng.normal(size=(2, 1, 8, 8)), rng.normal(size=(2, 1, 8, 8))
    np.testing.assert_allclose(adgan_losses.laplacian_pyramid_l1(torch.from_numpy(x8), torch.from_numpy(y8)).numpy(),
                               _np_pyramid_l1(x8, y8, 2), rtol=1e-9)
    # two constant images: every level but the last is 0, the last weighs 4^(J-1) over 1/4^(J-1) of the pixels
    c = adgan_losses.laplacian_pyramid_l1(torch.full((1, 3, 16, 16), 2.0, dtype=torch.float64),
                                          torch.full((1, 3, 16, 16), 0.5, dtype=torch.float64))
    assert float(c) == pytest.approx(1.5 * 3 * 16 * 16)


def test_reconstruction_loss_kinds_and_batch_dims():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 1, 8, 8))
    x_hat = rng.normal(size=(2, 3, 1, 8, 8))  # (N, seeds, ...) with batch_dims=2
    xt, ht = torch.from_numpy(x), torch.from_numpy(x_hat)
    l2 = adgan_losses.reconstruction_loss(ht, xt[:, None], "l2", batch_dims=2).numpy()
    l1 = adgan_losses.reconstruction_loss(ht, xt[:, None], "l1", batch_dims=2).numpy()
    lap = adgan_losses.reconstruction_loss(ht, xt[:, None], "laplacian", batch_dims=2).numpy()
    np.testing.assert_allclose(l2, ((x_hat - x[:, None]) ** 2).reshape(2, 3, -1).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(l1, np.abs(x_hat - x[:, None]).reshape(2, 3, -1).sum(-1), rtol=1e-12)
    expected = _np_pyramid_l1(x_hat.reshape(6, 1, 8, 8), np.repeat(x, 3, axis=0), 2).reshape(2, 3)
    np.testing.assert_allclose(lap, expected, rtol=1e-9)


def test_wgan_encoder_and_feature_scores_by_hand():
    d_real, d_fake = torch.tensor([1.0, 3.0]), torch.tensor([0.5, -0.5])
    assert float(adgan_losses.critic_loss(d_real, d_fake)) == pytest.approx(0.0 - 2.0)  # E d(fake) - E d(real)
    assert float(adgan_losses.generator_loss(torch.tensor([1.0, 2.0]))) == pytest.approx(-1.5)
    x, x_rec = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])
    f_x, f_rec = torch.tensor([[2.0]]), torch.tensor([[0.0]])
    # pixels (1 + 4)/2 = 2.5, features 4/1 = 4: 2.5 + 0.5 * 4 = 4.5
    assert float(adgan_losses.encoder_loss(x, x_rec, f_x, f_rec, kappa=0.5)) == pytest.approx(4.5)
    pixel = torch.tensor([[8.0, 4.0]])  # (N=1, seeds=2)
    f_rec2 = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])  # (1, 2, F=2)
    f_x2 = torch.tensor([[0.0, 0.0]])
    # seed 0: 8/4 + 2 * (4 + 0)/2 = 6; seed 1: 4/4 + 0 = 1; mean 3.5
    assert float(adgan_losses.feature_score(pixel, f_x2, f_rec2, n_pixels=4, kappa=2.0)) == pytest.approx(3.5)
    assert torch.equal(adgan_losses.latent_prior_nll(torch.tensor([[3.0, 4.0]])), torch.tensor([12.5]))
    assert torch.equal(adgan_losses.critic_score(torch.tensor([2.0])), torch.tensor([-2.0]))
