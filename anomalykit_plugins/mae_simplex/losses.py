"""The losses of MAE-simplex, one function per equation of the paper (Wu et al., 2020).

Shapes: ``d_real``/``d_fake`` are (N,) outputs of D_recon; ``d_inter`` is (N', m), column i
holding D_inter(x_i, x_hat_inter) for vertex i of each simplex; ``alpha`` is (N', m) with rows
summing to 1; ``z`` is (N, d). Every function returns a scalar averaged over the batch.
"""
from __future__ import annotations

import math

import torch

from anomalykit.sdk import pair_feature_l1


def inter_critic_loss(d_inter: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Eq. (3) (eq. (2) for m = 2): D_inter regresses each vertex's distance to the interpolant,

    mean over simplices of  sum_i || D_inter(x_i, x_hat_inter) - (1 - alpha_i) ||^2 .
    """
    return (d_inter - (1.0 - alpha)).pow(2).sum(1).mean()


def inter_generator_loss(d_inter: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Eq. (5), interpolation term of min_{E,G} (before the weight lambda):

    mean over simplices of  sum_i alpha_i || D_inter(x_i, x_hat_inter) ||^2 .
    Gradient flows to E and G through x_hat_inter = G(sum_i alpha_i E(x_i)).
    """
    return (alpha * d_inter.pow(2)).sum(1).mean()


def recon_critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. (4), negated for minimisation: D_recon maximises E[D(x, x)] - E[D(x, x_hat)], so it
    minimises  E[D(x, x_hat)] - E[D(x, x)]  (the Wasserstein estimate with the sign flipped)."""
    return d_fake.mean() - d_real.mean()


def recon_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Eq. (5), autoencoder term of min_{E,G}:  E[-D_recon(x, G(E(x)))]."""
    return -d_fake.mean()


def latent_regulariser(z: torch.Tensor) -> torch.Tensor:
    """Sec. 4.2, R(E) = E[max(||E(x)||_2 - sqrt(d), 0)]: pulls codes back inside the sphere of
    radius sqrt(d) (the printed formula's ||E(x) - sqrt(d)|| inside max(., 0) is read as the
    norm minus sqrt(d), as in SPEC section 5; a norm alone is never negative)."""
    return torch.relu(z.norm(dim=1) - math.sqrt(z.shape[1])).mean()


def generator_objective(
    d_fake: torch.Tensor,
    z: torch.Tensor,
    d_inter: torch.Tensor | None,
    alpha: torch.Tensor | None,
    *,
    lambda_inter: float,
    latent_reg: bool,
) -> dict[str, torch.Tensor]:
    """Eq. (5), min_{E,G}: lambda * inter + (-D_recon(x, x_hat)) + R(E); switched-off terms are 0.

    Returns the terms and their sum under "total" (the supplementary's loss_3, loss_2, loss_1).
    """
    zero = d_fake.new_zeros(())
    terms = {
        "recon": recon_generator_loss(d_fake),
        "inter": inter_generator_loss(d_inter, alpha) if d_inter is not None else zero,
        "latent": latent_regulariser(z) if latent_reg else zero,
    }
    terms["total"] = terms["recon"] + lambda_inter * terms["inter"] + terms["latent"]
    return terms


def feature_l1(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    """Sec. 5.2, the anomaly score (N,):  || f(x, x) - f(x, G(E(x))) ||_1  with f the
    penultimate features of D_recon (the fused ``pair_feature_l1`` op). Also the model-selection
    criterion of the supplementary ("pick best model"), averaged over training rows."""
    return pair_feature_l1(f_real, f_fake)
