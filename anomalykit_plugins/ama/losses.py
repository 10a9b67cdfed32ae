"""AMA's loss terms and scores, one function per equation of the paper.

Notation: D is the critic on stacked pairs, ``d_real`` = D(x, x), ``d_rec`` = D(x, x̂) with
x̂ = G(E(x)), ``d_inter`` = D(x_v, x̂_inter) with x_v the first simplex vertex, ``d_neg`` =
D(x, x̂_neg) with x̂_neg = G(z_neg). Each is a (B,) tensor; E[.] is the batch mean.

How eq. 2 is optimised. Each bracket D(x, x) − D(x, ·) is the critic's estimate of a
Wasserstein distance, so the critic *maximises every one of them* (it separates real pairs
from reconstructions, interpolations and negatives), while E and G minimise
L_normal − λ_neg·L_neg: they pull reconstructions and interpolations towards the data and push
the decoded negatives away from it. Reading eq. 2 literally for the critic (maximising −λ_neg·L_neg)
would, with the paper's λ_neg = 5, give D(x, x) a net negative weight and undo the mirrored
loss; the authors' training (negatives weight 5 beside a working critic) matches the reading here.
"""
from __future__ import annotations

import math

import torch

from anomalykit.sdk import annulus_sample, pair_feature_l1


def mirrored_wasserstein(d_real: torch.Tensor, d_rec: torch.Tensor) -> torch.Tensor:
    """Eq. 1: E[D(x, x) − D(x, x̂)] (the critic's estimate of W(P_{X,X}, P_{X,X̂}))."""
    return (d_real - d_rec).mean()


def interpolation_term(d_real_vertex: torch.Tensor, d_inter: torch.Tensor) -> torch.Tensor:
    """Sec. 3.2 (inside eq. 3): E[D(x, x) − D(x, x̂_inter)], x̂_inter = G(Σ α_i E(x_i)) / Σ α_i."""
    return (d_real_vertex - d_inter).mean()


def latent_regulariser(z: torch.Tensor) -> torch.Tensor:
    """Eq. 3's last term: E[‖E(x)‖₂] (unsquared norm, as in the authors' code)."""
    return z.norm(dim=1).mean()


def latent_hinge(z: torch.Tensor) -> torch.Tensor:
    """``latent_reg_form="hinge"``: E[max(‖E(x)‖₂ − √d, 0)] (MAE-simplex's regulariser): codes may
    use the ball of radius √d but not leave it, so the annulus around √d lies just outside them."""
    return torch.relu(z.norm(dim=1) - math.sqrt(z.shape[1])).mean()


def negative_term(d_real: torch.Tensor, d_neg: torch.Tensor) -> torch.Tensor:
    """Eq. 4: L_neg = E[D(x, x) − D(x, x̂_neg)] over atypical (or real anomalous) samples."""
    return (d_real - d_neg).mean()


def critic_objective(terms: dict[str, torch.Tensor], *, lambda_inter: float, lambda_neg: float) -> torch.Tensor:
    """What the critic minimises: −(W_rec + λ_inter·W_inter + λ_neg·W_neg) (see module docstring).

    ``terms`` holds "rec" (eq. 1), and when enabled "inter" and "neg" (eq. 4) critic estimates.
    The gradient penalty is added by the caller.
    """
    total = terms["rec"]
    if "inter" in terms:
        total = total + lambda_inter * terms["inter"]
    if "neg" in terms:
        total = total + lambda_neg * terms["neg"]
    return -total


def pixel_reconstruction(x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
    """``lambda_rec`` (not in the paper): E[mean over pixels/features of (x − x̂)²]."""
    return (x - x_rec).pow(2).flatten(1).mean(1).mean()


def autoencoder_objective(
    terms: dict[str, torch.Tensor], *, lambda_inter: float, lambda_reg: float, lambda_neg: float, lambda_rec: float = 0.0
) -> torch.Tensor:
    """Eq. 2-3 for E and G: L_normal − λ_neg·L_neg = W_rec + λ_inter·W_inter + λ_reg·E‖E(x)‖ − λ_neg·W_neg
    (+ λ_rec·E[(x − x̂)²] when "pixel" is in ``terms``, the optional pixel term).

    (The D(x, x) parts are constants for E and G; they are kept so the logged value is eq. 2's.)
    """
    total = terms["rec"]
    if "pixel" in terms:
        total = total + lambda_rec * terms["pixel"]
    if "inter" in terms:
        total = total + lambda_inter * terms["inter"]
    if "reg" in terms:
        total = total + lambda_reg * terms["reg"]
    if "neg" in terms:
        total = total - lambda_neg * terms["neg"]
    return total


def atypical_latents(n: int, d: int, *, delta: float, direction: str, generator=None, device=None) -> torch.Tensor:
    """Sec. 3.2 atypical selection: z uniform in the shell √d ≤ ‖z‖ ≤ √d + δ ("outward") or
    √d − δ ≤ ‖z‖ ≤ √d ("inward"), via the fused ``annulus_sample``. Returns (n, d)."""
    r = math.sqrt(d)
    r_in, r_out = (r, r + delta) if direction == "outward" else (max(r - delta, 0.0), r)
    return annulus_sample(n, d, r_in, r_out, generator=generator, device=device)


def draw_atypical(n: int, d: int, *, mode: str, delta: float, direction: str, generator=None, device=None) -> dict:
    """The random part of a batch of atypical latents, drawn before the codes are known.

    ``annulus``/``annulus-codes``: points of the paper's shell (:func:`atypical_latents`);
    ``scaling``: the authors' factors α ~ U(0, 0.5).
    """
    if mode == "scaling":
        alpha = torch.rand(n, 1, generator=generator, device=device) * 0.5
        return {"mode": mode, "factor": alpha.clamp_min(1e-3) if direction == "inward" else 1.0 / alpha.clamp_min(1e-3)}
    return {"mode": mode, "z": atypical_latents(n, d, delta=delta, direction=direction, generator=generator, device=device)}


def atypical_from_draw(draw: dict, codes: torch.Tensor) -> torch.Tensor:
    """Atypical latents (n, d) from a :func:`draw_atypical` draw and the batch's codes E(x).

    ``annulus``: the shell around √d as drawn. ``annulus-codes``: the same points scaled by
    mean‖E(x)‖/√d, i.e. the shell around the radius where the codes actually live (uniformity
    in volume is kept by scaling). ``scaling``: α·E(x) or E(x)/α.
    """
    if draw["mode"] == "scaling":
        return codes * draw["factor"]
    z = draw["z"]
    if draw["mode"] == "annulus-codes":
        z = z * (codes.norm(dim=1).mean() / math.sqrt(z.shape[1]))
    return z


def r_score(f_real: torch.Tensor, f_rec: torch.Tensor) -> torch.Tensor:
    """Eq. 5: R(x) = ‖f(x, x) − f(x, G(E(x)))‖₁ from (B, F) critic features, via ``pair_feature_l1``."""
    return pair_feature_l1(f_real, f_rec)


def neg_log_a_score(r: torch.Tensor, mu: float, sigma: float) -> torch.Tensor:
    """Eq. 6 as a score: −log A(x) = (R(x) − μ)² / (2σ²) + log(σ√(2π)).

    A(x) is the Gaussian density of R(x) under N(μ, σ²) fitted to the training R-scores; low A
    means anomalous, so −log A is an anomaly score (higher = more anomalous). Unlike the raw
    density it never underflows to ties far in the tails.
    """
    sigma = max(float(sigma), 1e-12)
    return (r.double() - mu) ** 2 / (2 * sigma**2) + math.log(sigma * math.sqrt(2 * math.pi))
