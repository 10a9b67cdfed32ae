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
    "laplacian_pyramid_l1",
    "encoder_loss",
    "feature_score",
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
    broadcasts against it. "l2" = squared L2 distance Σ (x̂ − x)² (the paper's default), "l1" =
    Σ |x̂ − x|, "laplacian" = :func:`laplacian_pyramid_l1` (images; the paper's section 5 names
    the Laplacian pyramid loss as the better ℓ to try).
    """
    if kind == "laplacian":
        shape = x_hat.shape[batch_dims:]
        lead = x_hat.shape[:batch_dims]
        target = x.expand_as(x_hat).reshape(-1, *shape)
        return laplacian_pyramid_l1(x_hat.reshape(-1, *shape), target).reshape(lead)
    diff = x_hat - x
    per = diff.square() if kind == "l2" else diff.abs()
    return per.flatten(batch_dims).sum(-1)


_BINOMIAL5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable 5-tap binomial blur [1 4 6 4 1]/16 per channel, reflect padding (Burt & Adelson)."""
    c = x.shape[1]
    k = x.new_tensor(_BINOMIAL5) / 16.0
    x = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return torch.nn.functional.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def laplacian_pyramid_l1(x_hat: torch.Tensor, x: torch.Tensor, levels: int | None = None) -> torch.Tensor:
    """Lap1(x̂, x) = Σ_j 4^j ‖L^j(x̂) − L^j(x)‖₁ over the levels of the Laplacian pyramid (Bojanowski
    et al., "Optimizing the latent space of generative networks", eq. 3; the pyramid of Burt &
    Adelson: L^j = G^j − up(G^{j+1}), G^{j+1} = blur(G^j) subsampled by 2, the last level G^J
    itself). The 4^j weight compensates for the 4x fewer values of each coarser level. (N, C, H, W)
    -> (N,). ``levels`` = J + 1; None: as many as keep the coarsest side >= 4 (3 for 28x28)."""
    side = min(x.shape[-2:])
    if levels is None:
        levels = 1
        while side // 2 ** levels >= 4:
            levels += 1
    total = x.new_zeros(x.shape[0])
    a, b = x_hat, x
    for j in range(levels):
        if j == levels - 1:
            la, lb = a, b
        else:
            da, db = _blur(a)[..., ::2, ::2], _blur(b)[..., ::2, ::2]
            up = lambda t, like: torch.nn.functional.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
            la, lb = a - up(da, a), b - up(db, b)
            a, b = da, db
        total = total + (4.0 ** j) * (la - lb).abs().flatten(1).sum(1)
    return total


def encoder_loss(x: torch.Tensor, x_rec: torch.Tensor, f_x: torch.Tensor, f_rec: torch.Tensor, kappa: float = 1.0) -> torch.Tensor:
    """The encoder's objective with g_θ and the critic fixed, izi_f of f-AnoGAN (Schlegl et al.,
    2019, eq. 5): (1/n) ‖x − g(E(x))‖² + κ (1/n_f) ‖f(x) − f(g(E(x)))‖², f the critic's features,
    n and n_f the pixel and feature counts; a mean over the batch. Trains E as an approximate
    inverse of g_θ on the normal data (ADGAN's section 5: start the search from it)."""
    pixel = (x - x_rec).square().flatten(1).mean(1)
    feature = (f_x - f_rec).square().flatten(1).mean(1)
    return (pixel + kappa * feature).mean()


def latent_prior_nll(z: torch.Tensor) -> torch.Tensor:
    """Sec. 3.2 / 4.3 alternative score: −log p_z(z) of the final latents, up to a constant: ½‖z‖²
    (p_z = N(0, I)), over the last dimension."""
    return 0.5 * z.square().sum(-1)


def critic_score(d_x: torch.Tensor) -> torch.Tensor:
    """Sec. 3.2 / 4.3 alternative score: the critic's value, negated (a high d(x) means "real",
    so −d(x) is higher for anomalies)."""
    return -d_x


def feature_score(pixel_losses: torch.Tensor, f_x: torch.Tensor, f_rec: torch.Tensor, n_pixels: int, kappa: float = 1.0) -> torch.Tensor:
    """f-AnoGAN's anomaly score (Schlegl et al., 2019, eq. 6) of the search's results, averaged over
    the seeds: (1/S) Σ_j [ℓ_j / n + κ ‖f(x) − f(x̂_j)‖² / n_f], ℓ_j the search's final loss of seed j
    ((N, S)), f the critic's features of x ((N, F)) and of x̂_j ((N, S, F)), n the pixels per sample."""
    feature = (f_rec - f_x.unsqueeze(1)).square().mean(-1)
    return (pixel_losses / n_pixels + kappa * feature).mean(1)
