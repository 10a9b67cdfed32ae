"""The speed-up switch (anomalykit.speedups): every fast path computes what the plain eager path
computes. Checked in float64 on fixed batches: one training step of each method (losses, every
gradient, the parameters after the optimiser steps), the core networks with spectral norm and the
gradient penalty's double backward, and ADGAN's latent search against the literal Algorithm 1.
"""
import math

import numpy as np
import pytest
import torch

import anomalykit
from anomalykit.detector import seed_everything
from anomalykit.errors import ConfigError
from anomalykit.nn import ConvCritic, ConvDecoder, ConvEncoder, WholeConv2d, WholeConvTranspose2d, gradient_penalty
from anomalykit.speedups import ENV_VAR, enabled, speedups, status


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


# -- the switch --------------------------------------------------------------------------------------
def test_switch_reads_the_environment_and_the_context_manager_wins(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert enabled()
    monkeypatch.setenv(ENV_VAR, "off")
    assert not enabled()
    with speedups(True):
        assert enabled() and "speedups() block" in status()
        with speedups(False):
            assert not enabled()
        assert enabled()
    assert not enabled() and "ANOMALYKIT_SPEEDUPS=off" in status()
    monkeypatch.setenv(ENV_VAR, "fastest")
    with pytest.raises(ConfigError, match="ANOMALYKIT_SPEEDUPS='fastest' is not one of on, off"):
        enabled()


def test_layout_follows_the_switch_at_build_time():
    with speedups(True):
        fast = ConvCritic((2, 28, 28), 16, width=8)
    with speedups(False):
        plain = ConvCritic((2, 28, 28), 16, width=8)
    first = lambda m: next(l for l in m.modules() if isinstance(l, torch.nn.Conv2d))  # noqa: E731
    assert first(fast).weight.is_contiguous(memory_format=torch.channels_last) and not first(fast).weight.is_contiguous()
    assert first(plain).weight.is_contiguous()
    last = [l for l in fast.modules() if isinstance(l, WholeConv2d)]
    assert len(last) == 1 and last[0].weight.is_contiguous()  # the matrix-product layer keeps its layout
    assert set(fast.state_dict()) == set(plain.state_dict())  # same checkpoints either way


# -- core networks, float64 ----------------------------------------------------------------------
def _core_losses(on: bool, sn: bool):
    with speedups(on):
        torch.manual_seed(0)
        critic = ConvCritic((2, 28, 28), 32, width=8, spectral_norm=sn).double()
        decoder = ConvDecoder(8, (1, 28, 28), width=8).double()
        encoder = ConvEncoder((1, 28, 28), 8, width=8).double()
        g = torch.Generator().manual_seed(1)
        x = torch.rand(6, 1, 28, 28, generator=g, dtype=torch.float64) * 2 - 1
        x_hat = decoder(encoder(x))
        real, fake = torch.cat([x, x], 1), torch.cat([x, x_hat], 1)
        gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(2))
        loss = critic(fake).mean() - critic(real).mean() + 10 * gp + 1e-2 * critic.features(fake).abs().sum()
        params = [*critic.parameters(), *decoder.parameters(), *encoder.parameters()]
        grads = torch.autograd.grad(loss, params)
        return loss.detach(), grads, [b.clone() for b in critic.buffers()]


@pytest.mark.parametrize("sn", [False, True], ids=["plain", "spectral-norm"])
def test_core_networks_same_loss_gradients_and_power_iteration(sn):
    loss0, grads0, buffers0 = _core_losses(False, sn)
    loss1, grads1, buffers1 = _core_losses(True, sn)
    torch.testing.assert_close(loss1, loss0, rtol=1e-12, atol=0)
    for a, b in zip(grads1, grads0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    for a, b in zip(buffers1, buffers0):  # spectral norm's u, v: one power iteration per call on both paths
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_whole_input_layers_fall_back_when_the_input_is_larger():
    """The matrix-product path only applies where it is exact; other inputs take the convolution."""
    conv = WholeConv2d(3, 4, 5).double()
    convt = WholeConvTranspose2d(3, 4, 5).double()
    x, z = torch.randn(2, 3, 9, 9, dtype=torch.float64), torch.randn(2, 3, 2, 2, dtype=torch.float64)
    for on in (True, False):
        with speedups(on):
            torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias))
            torch.testing.assert_close(convt(z), torch.nn.functional.conv_transpose2d(z, convt.weight, convt.bias))


# -- one training step of each method, float64 -------------------------------------------------
TINY = {
    "ama": dict(width=8, feature_dim=16, latent_dim=8),  # lipschitz both: spectral norm + gradient penalty
    "mae-simplex": dict(width=8, hidden=16, latent_dim=8, lipschitz="both"),
    "csi-aae": dict(f_width=4, f_stages=2, ae_width=8, latent_dim=8, proj_dim=8, aae_every=1),
    "adgan": dict(g_width=4, d_width=8, latent_dim=8, n_critic=1, n_seed=2, k=1),
}


def _train_float64(method: str, X: torch.Tensor, on: bool):
    """One epoch of one batch (= one step) in float64; returns the logged losses, the gradients left
    by the last update of each network and the parameters after training."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with speedups(on):
            det = anomalykit.load_method(method, epochs=1, batch_size=X.shape[0], preprocess="none", **TINY[method])
            seed_everything(det.hp.seed)
            det.input_shape_ = tuple(X.shape[1:])
            det.epochs_ = det.hp.epochs  # what fit resolves before _fit (no max_steps here)
            det._build(det.input_shape_)
            det.nets.double()
            det._trainers = []
            det._fit(X, None)
    finally:
        torch.set_default_dtype(before)
    history = det._trainers[0].history
    grads = {n: p.grad.detach().clone() for n, p in det.nets.named_parameters() if p.grad is not None}
    params = {n: p.detach().clone() for n, p in det.nets.named_parameters()}
    return history, grads, params


@pytest.mark.parametrize("method", sorted(TINY))
def test_one_training_step_same_losses_and_gradients_float64(method):
    g = torch.Generator().manual_seed(0)
    X = torch.rand(12, 1, 28, 28, generator=g, dtype=torch.float64) * 2 - 1
    hist0, grads0, params0 = _train_float64(method, X, on=False)
    hist1, grads1, params1 = _train_float64(method, X, on=True)
    assert hist0[0].keys() == hist1[0].keys()
    for k in hist0[0]:
        assert hist1[0][k] == pytest.approx(hist0[0][k], rel=1e-9, abs=1e-12), k
    assert grads0.keys() == grads1.keys() and grads0
    for n in grads0:
        torch.testing.assert_close(grads1[n], grads0[n], rtol=1e-8, atol=1e-12, msg=lambda m: f"{method} {n}: {m}")
    for n in params0:
        torch.testing.assert_close(params1[n], params0[n], rtol=1e-8, atol=1e-10, msg=lambda m: f"{method} {n}: {m}")


# -- ADGAN's latent search ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 28, 28), (5,)], ids=["28x28", "tabular"])
@pytest.mark.parametrize("theta_copies", ["seed", "sample", "none"])
def test_adgan_search_equals_algorithm_1_on_both_paths_float64(shape, theta_copies):
    from anomalykit_plugins.adgan.networks import Generator
    from anomalykit_plugins.adgan.search import SearchConfig, initial_latents, search_batched, search_reference

    torch.manual_seed(0)
    gen = Generator(6, shape, width=4, hidden=8).double().eval()
    for m in gen.modules():  # non-trivial BatchNorm statistics and affine parameters
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.2, 0.2)
    x = torch.rand(3, *shape, dtype=torch.float64) * 2 - 1
    z0 = initial_latents(4, 6, 1, dtype=torch.float64)
    cfg = SearchConfig(steps=4, lr_theta=1e-2, theta_copies=theta_copies)
    ref = search_reference(gen, x, z0, cfg, keep_outputs=True)
    for on in (False, True):
        with speedups(on):
            for chunk in (0, 5):
                got = search_batched(gen, x, z0, cfg, chunk=chunk, keep_outputs=True)
                torch.testing.assert_close(got.losses, ref.losses, rtol=1e-10, atol=1e-10)
                torch.testing.assert_close(got.latents, ref.latents, rtol=1e-10, atol=1e-10)
                torch.testing.assert_close(got.outputs, ref.outputs, rtol=1e-10, atol=1e-10)


def test_adgan_scores_agree_float32_between_paths():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    X = torch.rand(64, 1, 28, 28, generator=g) * 2 - 1
    det = anomalykit.load_method("adgan", epochs=1, batch_size=32, n_seed=3, k=3, score="loss", preprocess="none").fit(X[:32], progress=False)
    with speedups(False):
        eager = det.score_samples(X[32:])
    with speedups(True):
        fast = det.score_samples(X[32:])
    np.testing.assert_allclose(fast, eager, rtol=1e-4)
    assert spearmanr(fast, eager).statistic >= 0.999
    assert math.isfinite(float(fast.sum()))
