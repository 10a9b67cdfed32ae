"""ADGAN's objectives and scores, one function per equation of the paper.

Training is a WGAN (eq. 2); the test-time search minimises the reconstruction loss ℓ of
Algorithm 1; the alternatives the paper compares against in section 3.2 / 4.3 (the critic's value,
the prior likelihood of the final latents) are here as scores too, for the ablations.
"""
from __future__ import annotations

import torch

from anomalykit.sdk import gradient_penalty

__all__ = [
    "critic_loss",
    "generator_loss",
    "gradient_penalty",
    "clip_weights_",
    "reconstruction_loss",
    "latent_prior_nll",
    "critic_score",
]


def critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 2, critic side: the critic maximises W = E_x[d(x)] − E_z[d(g(z))]; returns −W to minimise.

    The Lipschitz constraint ω ∈ Ω is imposed by the caller: a gradient penalty (WGAN-GP,
    λ·E[(‖∇d(x̃)‖₂ − 1)²], :func:`gradient_penalty`) or weight clipping (:func:`clip_weights_`).
    """
    return d_fake.mean() - d_real.mean()


def generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. 2, generator side: min_θ −E_z[d(g_θ(z))] (the E_x term does not depend on θ)."""
    return -d_fake.mean()


@torch.no_grad()
def clip_weights_(module: torch.nn.Module, c: float) -> None:
    """Eq. 2's Ω as in the original WGAN: clamp every critic weight to [−c, c] after each step."""
    for p in module.parameters():
        p.clamp_(-c, c)


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "l2", *, batch_dims: int = 1) -> torch.Tensor:
    """Algorithm 1's ℓ(g_θ(z), x), one value per reconstruction.

    ``x_hat`` has ``batch_dims`` leading batch dimensions followed by the sample shape; ``x``
    broadcasts against it. "l2" = squared L2 distance Σ (x̂ − x)² (the paper's default), "l1" = Σ |x̂ − x|.
    """
    diff = x_hat - x
    per = diff.square() if kind == "l2" else diff.abs()
    return per.flatten(batch_dims).sum(-1)


def latent_prior_nll(z: torch.Tensor) -> torch.Tensor:
    """Sec. 3.2 / 4.3 alternative score: −log p_z(z) of the final latents, up to a constant: ½‖z‖²
    (p_z = N(0, I)), over the last dimension."""
    return 0.5 * z.square().sum(-1)


def critic_score(d_x: torch.Tensor) -> torch.Tensor:
    """Sec. 3.2 / 4.3 alternative score: the critic's value, negated (a high d(x) means "real",
    so −d(x) is higher for anomalies)."""
    return -d_x
