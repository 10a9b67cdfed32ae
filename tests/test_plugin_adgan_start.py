"""ADGAN's section-5 extensions: the search started from an encoder's approximate inversion of
g_θ (``start="encoder"``) and the Laplacian pyramid loss (``loss="laplacian"``); Algorithm 1
itself (``start="prior"``, ``loss="l2"``) is tested in test_plugin_adgan.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import anomalykit
from anomalykit import InputError
from anomalykit.data import make_split
from anomalykit_plugins.adgan import losses
from anomalykit_plugins.adgan.networks import Generator
from anomalykit_plugins.adgan.search import SearchConfig, search_batched, search_reference

from conftest import model_space


TINY = dict(epochs=2, batch_size=32, g_width=4, d_width=8, lr_theta=1e-2, seed=3, device="cpu", score="loss")


@pytest.fixture(scope="module")
def digits():
    return make_split("one-class", "digits", normal_class=0, seed=0)


@pytest.fixture(scope="module")
def encoder_model(digits):
    return anomalykit.load_method("adgan", **TINY, start="encoder", n_seed=3, k=2).fit(digits.X_train, progress=False)


# -- the Laplacian pyramid loss ----------------------------------------------------------------------
def test_laplacian_pyramid_l1_of_a_constant_offset_is_the_plain_l1():
    """A constant difference lives only in the coarsest level (the band-pass levels of a constant
    are zero), where 4^J x (H W / 4^J) |δ| = H W |δ|: the pixel L1 of the whole image."""
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for levels in (1, 2, 3):
        got = losses.laplacian_pyramid_l1(x + 0.25, x, levels=levels)
        torch.testing.assert_close(got, torch.full((2,), 0.25 * 3 * 16 * 16), rtol=1e-5, atol=1e-4)


def test_laplacian_pyramid_l1_one_level_is_l1_and_levels_weight_coarse_detail():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 1, 28, 28, generator=g), torch.randn(4, 1, 28, 28, generator=g)
    torch.testing.assert_close(losses.laplacian_pyramid_l1(a, b, levels=1), (a - b).abs().flatten(1).sum(1))
    assert torch.equal(losses.laplacian_pyramid_l1(a, a), torch.zeros(4))
    # default depth for 28x28: 28 -> 14 -> 7 (three levels)
    torch.testing.assert_close(losses.laplacian_pyramid_l1(a, b), losses.laplacian_pyramid_l1(a, b, levels=3))
    # the band-pass levels of white noise carry its detail: more levels, a different (larger) loss
    assert bool((losses.laplacian_pyramid_l1(a, b, levels=3) > losses.laplacian_pyramid_l1(a, b, levels=1)).all())


def test_reconstruction_loss_laplacian_broadcasts_like_the_others():
    g = torch.Generator().manual_seed(2)
    x_hat, x = torch.randn(3, 2, 1, 8, 8, generator=g), torch.randn(3, 1, 1, 8, 8, generator=g)
    got = losses.reconstruction_loss(x_hat, x, "laplacian", batch_dims=2)
    want = torch.stack([torch.stack([losses.laplacian_pyramid_l1(x_hat[i, j:j + 1], x[i]) [0] for j in range(2)]) for i in range(3)])
    torch.testing.assert_close(got, want)


def test_laplacian_needs_images(blobs):
    X, _ = blobs
    with pytest.raises(InputError, match="loss=laplacian needs images") as err:
        anomalykit.load_method("adgan", **TINY, loss="laplacian").fit(X[:64])
    assert "\n" not in str(err.value)


# -- the encoder's objective ---------------------------------------------------------------------
def test_encoder_loss_by_hand():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    x_rec = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    f_x, f_rec = torch.tensor([[3.0], [1.0]]), torch.tensor([[1.0], [1.0]])
    # rows: pixel means (0 + 4) / 2 = 2 and (1 + 1) / 2 = 1; feature 4 and 0; κ = 0.5
    assert float(losses.encoder_loss(x, x_rec, f_x, f_rec, kappa=0.5)) == pytest.approx(((2 + 0.5 * 4) + (1 + 0)) / 2)


# -- searches from per-sample starts ---------------------------------------------------------------
@pytest.mark.parametrize("theta_copies", ["seed", "sample", "none"])
def test_per_sample_starts_batched_equals_the_literal_loop(theta_copies):
    torch.manual_seed(0)
    G = Generator(6, (1, 8, 8), width=4).double().eval()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64) * 2 - 1
    z0 = torch.randn(3, 2, 6, dtype=torch.float64)  # (N, S, d'): each sample its own starts
    cfg = SearchConfig(steps=3, lr_latent=0.1, lr_theta=1e-2, theta_copies=theta_copies)
    ref = search_reference(G, x, z0, cfg, keep_outputs=True)
    for impl in ("batched", "vmap"):
        got = search_batched(G, x, z0, cfg, implementation=impl, chunk=2, keep_outputs=True)
        torch.testing.assert_close(got.losses, ref.losses, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(got.latents, ref.latents, rtol=1e-9, atol=1e-10)
    # a sample's result depends on its own starts only: moving sample 0's starts leaves 1 and 2 alone
    z1 = z0.clone()
    z1[0] += 1.0
    moved = search_reference(G, x, z1, cfg)
    assert not torch.allclose(moved.losses[0], ref.losses[0]) and torch.equal(moved.losses[1:], ref.losses[1:])


# -- the detector with start="encoder" ----------------------------------------------------------------
def test_encoder_start_is_e_of_x_then_seeded_neighbours(encoder_model, digits):
    det = encoder_model
    x = model_space(det, digits.X_test[:5])
    starts = det.search_starts(x)
    with torch.no_grad():
        e = det.nets["encoder"](x)
    assert starts.shape == (5, 3, det.latent_dim_)
    torch.testing.assert_close(starts[:, 0], e)
    torch.testing.assert_close(starts[:, 1:], e.unsqueeze(1) + det.hp.start_noise * det.starting_latents()[1:].unsqueeze(0))


def test_encoder_start_with_no_steps_scores_the_reconstruction_g_of_e_of_x(digits):
    det = anomalykit.load_method("adgan", **TINY, start="encoder", n_seed=1, k=0).fit(digits.X_train, progress=False)
    x = model_space(det, digits.X_test[:20])
    with torch.no_grad():
        rec = det.nets["generator"].eval()(det.nets["encoder"].eval()(x))
    np.testing.assert_allclose(det.score_samples(digits.X_test[:20]), (rec - x).square().flatten(1).sum(1).numpy(), rtol=1e-5)


def test_encoder_is_trained_after_the_wgan_with_g_and_the_critic_fixed(digits):
    det = anomalykit.load_method("adgan", **TINY, start="encoder", encoder_epochs=3)
    plain = anomalykit.load_method("adgan", **TINY)
    det.fit(digits.X_train, progress=False)
    plain.fit(digits.X_train, progress=False)
    # the WGAN phase is the same computation as without an encoder (same seed): identical g and critic
    for k in ("generator", "critic"):
        for (name, a), b in zip(det.nets[k].state_dict().items(), plain.nets[k].state_dict().values()):
            assert torch.equal(a, b), f"{k}.{name} changed in the encoder phase"
    phases = [h for h in det.history_ if "encoder/encoder" in h]
    assert len(phases) == 3 and phases[-1]["encoder/encoder"] < phases[0]["encoder/encoder"]  # E learns


def test_encoder_start_saves_loads_and_exports(encoder_model, digits, tmp_path):
    det = encoder_model
    X = digits.X_test[:16]
    again = anomalykit.load(det.save(tmp_path / "m.pt"))
    np.testing.assert_array_equal(again.score_samples(X), det.score_samples(X))
    path = det.export(tmp_path / "m.torchscript.pt", format="torchscript")  # parity-checked inside
    from anomalykit.export import load_scorer

    got = load_scorer(path).score_samples(X)
    ref = det.score_samples(X)
    assert float(np.abs(got - ref).max()) <= 1e-4 * float(np.abs(ref).max())


def test_feature_score_by_hand():
    """f-AnoGAN's score of the search's results: mean over seeds of ℓ/n + κ ‖f(x) − f(x̂_j)‖² / n_f."""
    pixel = torch.tensor([[8.0, 4.0]])  # (N=1, S=2) final losses over n = 4 pixels
    f_x = torch.tensor([[1.0, 1.0]])
    f_rec = torch.tensor([[[1.0, 3.0], [1.0, 1.0]]])  # seed 0: residual (0, 2) -> mean 2; seed 1: 0
    got = losses.feature_score(pixel, f_x, f_rec, n_pixels=4, kappa=0.5)
    assert float(got) == pytest.approx(((8 / 4 + 0.5 * 2) + (4 / 4 + 0)) / 2)


def test_loss_features_score_is_the_f_anogan_score_of_g_of_e_of_x(digits):
    det = anomalykit.load_method("adgan", **{**TINY, "score": "loss-features"}, start="encoder", n_seed=1, k=0, kappa=2.0).fit(
        digits.X_train, progress=False)
    x = model_space(det, digits.X_test[:10])
    with torch.no_grad():
        rec = det.nets["generator"].eval()(det.nets["encoder"].eval()(x))
        critic = det.nets["critic"]
        want = (rec - x).square().flatten(1).mean(1) + 2.0 * (critic.features(x) - critic.features(rec)).square().mean(1)
    np.testing.assert_allclose(det.score_samples(digits.X_test[:10]), want.numpy(), rtol=1e-5)


def test_residual_gaussian_is_fitted_with_the_trained_encoder(digits):
    """With start=encoder the residual Gaussian is fitted after E is trained: its mean is the mean
    of the residual vectors the fitted model computes for its training rows (Ledoit-Wolf's
    location is the sample mean)."""
    det = anomalykit.load_method("adgan", **{**TINY, "score": "residual-gaussian"}, start="encoder", n_seed=1, k=1)
    det.fit(digits.X_train, progress=False)
    v = det.score_features(model_space(det, digits.X_train))
    np.testing.assert_allclose(det.feature_gaussian_.mean.numpy(), v.mean(0).numpy(), rtol=1e-5, atol=1e-6)
