"""The losses of CSI-AAE, one function per equation of the paper (section 2).

Conventions: sums over samples in the paper are means here (the scale goes into the learning
rate); ``sim`` is cosine similarity; F's representation z is the projection-head output. The
discriminators output logits, so log D(x) = -softplus(-logit) and log(1 - D(x)) = -softplus(logit).
The min-max games of eq. 7 and 9 are written as the usual two losses: the discriminator's
(binary cross-entropy, i.e. -L_D) and the generator/encoder's *non-saturating* one
(-log D(fake) instead of log(1 - D(fake))), which has the same fixed point and usable gradients
early in training.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .augment import N_ROTATIONS, random_flip, rotate, shift_batch

Augmenter = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# -- CSI (eq. 1-4) -------------------------------------------------------------------------------
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Eq. 1 (SimCLR loss built from NT-Xent terms), averaged over the 2n anchors.

    z1, z2: (n, d) representations of the two views; row i of z1 and row i of z2 are a positive
    pair, every other row of either view is a negative. For anchor a with positive p:
    -log exp(sim(a, p)/tau) / sum_{k != a} exp(sim(a, k)/tau). Returns a scalar.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


def rotation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 3: L_cls-SI = -mean log p(y = S | S(x)) over the shifted instances. logits (n, K), labels (n,)."""
    return F.cross_entropy(logits, labels)


def csi_views(x: torch.Tensor, g: torch.Generator, augment: Augmenter, n_shifts: int = N_ROTATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs of eq. 2: two augmented views of every shifted instance of the batch.

    x (n, C, H, W) -> views (2 * n_shifts * n, C, H, W) = [T1(S x) for all S, x; T2(S x) ...] and
    shift labels (2 * n_shifts * n,). Each view is flipped at random first (before the
    rotation, as CSI's code does), then every (shift, sample) gets its own T.
    """
    v1, labels = shift_batch(random_flip(x, g), n_shifts)
    v2, _ = shift_batch(random_flip(x, g), n_shifts)
    views = augment(torch.cat([v1, v2]), g)
    return views, torch.cat([labels, labels])


def csi_loss(
    f: nn.Module,
    x: torch.Tensor,
    g: torch.Generator,
    augment: Augmenter,
    *,
    n_shifts: int = N_ROTATIONS,
    temperature: float = 0.5,
    rotation_cls: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 4: L_CSI(X) = L_con-SI(X) (eq. 2) + L_cls-SI(X) (eq. 3).

    L_con-SI is the SimCLR loss (eq. 1) over X and its shifted instances X^S, each shifted
    instance a separate sample (a negative of every other one). ``n_shifts = 1`` is plain
    SimCLR; ``rotation_cls=False`` drops eq. 3 (it is meaningless without shifts anyway).
    Returns the total and its terms.
    """
    views, labels = csi_views(x, g, augment, n_shifts)
    z, logits, _ = f(views)
    z1, z2 = z.chunk(2)
    con = nt_xent(z1, z2, temperature)
    terms = {"con_si": con}
    total = con
    if rotation_cls and n_shifts > 1 and logits is not None:
        cls = rotation_loss(logits, labels)
        terms["cls_si"] = cls
        total = total + cls
    return total, terms


# -- Adversarial autoencoder (eq. 7-10) ---------------------------------------------------------
def discriminator_loss(d: nn.Module, x: torch.Tensor, x_syn: torch.Tensor, x_rec: torch.Tensor | None) -> torch.Tensor:
    """Eq. 7, discriminator side: minimise -L_D = -[log D(x) + log(1 - D(x~)) + log(1 - D(x^))].

    x real, x_syn = G(h), x_rec = G(E(x)) (None in the generator-only ablation); the fakes
    should be detached by the caller.
    """
    loss = F.softplus(-d(x)).mean() + F.softplus(d(x_syn)).mean()
    if x_rec is not None:
        loss = loss + F.softplus(d(x_rec)).mean()
    return loss


def generator_adversarial_loss(d: nn.Module, x_syn: torch.Tensor, x_rec: torch.Tensor | None) -> torch.Tensor:
    """Eq. 7, generator/encoder side (non-saturating): -log D(x~) - log D(x^)."""
    loss = F.softplus(-d(x_syn)).mean()
    if x_rec is not None:
        loss = loss + F.softplus(-d(x_rec)).mean()
    return loss


def reconstruction_loss(
    f: nn.Module,
    x: torch.Tensor,
    x_rec: torch.Tensor,
    g: torch.Generator,
    augment: Augmenter,
    *,
    lam: float = 100.0,
    feature_term: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 8: L_REC = lam * ||x - x^||^2 - sim(F(T1 x), F(T2 x^)).

    The pixel term is the mean squared error per pixel (so lam = 100 balances it against a
    cosine similarity in [-1, 1]); T1, T2 are drawn independently per sample; F is evaluated
    once on the stacked batch [T1 x; T2 x^]. Returns the total and its terms.
    """
    pixel = (x - x_rec).pow(2).flatten(1).mean(1).mean()
    terms = {"rec_pixel": pixel}
    total = lam * pixel
    if feature_term:
        views = augment(torch.cat([x, x_rec]), g)
        z, _, _ = f(views)
        z_x, z_rec = z.chunk(2)
        sim = F.cosine_similarity(z_x, z_rec, dim=1).mean()
        terms["rec_sim"] = sim
        total = total - sim
    return total, terms


def latent_discriminator_loss(d_lat: nn.Module, h: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Eq. 9, latent discriminator side: minimise -[log D'(h) + log(1 - D'(E(x)))] (code detached by the caller)."""
    return F.softplus(-d_lat(h)).mean() + F.softplus(d_lat(code)).mean()


def encoder_latent_adversarial_loss(d_lat: nn.Module, code: torch.Tensor) -> torch.Tensor:
    """Eq. 9, encoder side (non-saturating): -log D'(E(x))."""
    return F.softplus(-d_lat(code)).mean()


def latent_reconstruction_loss(code_of_syn: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Eq. 10: L_LREC = ||E(G(h)) - h||^2, mean over latent dimensions and samples."""
    return (code_of_syn - h).pow(2).mean()


# -- Outlier score (eq. 11) ---------------------------------------------------------------------
def shifted_features(f: nn.Module, x: torch.Tensor, n_shifts: int = N_ROTATIONS, space: str = "projection") -> torch.Tensor:
    """F(S x) for every shift S: (n, C, H, W) -> (n, n_shifts, d).

    ``space="projection"`` uses z (the representation trained by eq. 1), ``"backbone"`` the
    pooled ResNet features before the projection head.
    """
    n = x.shape[0]
    xs = torch.cat([rotate(x, k) for k in range(n_shifts)])
    z, _, h = f(xs)
    feats = z if space == "projection" else h
    return feats.view(n_shifts, n, -1).transpose(0, 1)


#: Cosine tolerance under which two feature vectors count as identical (see ``skip_identical``).
IDENTICAL_TOL = 1e-5


def nearest_neighbour_score(
    feats: torch.Tensor,
    bank: torch.Tensor,
    *,
    chunk: int = 4096,
    exclude: torch.Tensor | None = None,
    weight_by_norm: bool = True,
    skip_identical: bool = False,
    neighbours: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 11: M(x, x') = sum_S sim(F(S x), F(S x')) * ||F(S x)||, with x' = x-check, the
    training sample maximising sum_S sim(F(S x), F(S x')).

    feats: (n, K, d) test features F(S x); bank: (N, K, d) training features, each row already
    L2-normalised per shift. The search is a matrix product of the per-shift-normalised,
    flattened features ((n, K*d) @ (K*d, N) = sum over S of cosine similarities), over blocks
    of ``chunk`` training rows with a running maximum (bounded memory, no loop over samples).
    ``exclude`` (n,) int64: for each query a bank row to skip (leave-one-out scores of the
    training data), or -1 for none. ``weight_by_norm=False`` drops the factor ||F(S x)||
    (M = sum_S cosine similarity). ``skip_identical``: a bank row whose features equal the
    query's (mean cosine over the shifts >= 1 - IDENTICAL_TOL) is skipped too, so a training row
    scored again (or an exact copy of one) is matched to its nearest *other* training row, the
    leave-one-out rule that set the threshold. ``neighbours = k > 1`` (not the paper's: the k-NN
    score of DN2, Bergman et al. 2020): M is the mean of the per-shift sum over the k bank rows with
    the largest sum_S sim, x-check the first of them. Returns (M (n,), index of x-check (n,)).
    """
    n, k, d = feats.shape
    norms = feats.norm(dim=2)  # (n, K): ||F(S x)||
    unit = feats / norms.clamp_min(1e-12).unsqueeze(2)
    q = unit.reshape(n, k * d)
    flat_bank = bank.reshape(bank.shape[0], k * d)
    if flat_bank.shape[0] < neighbours:
        raise ValueError(f"{neighbours} neighbours asked of a bank of {flat_bank.shape[0]} rows")
    # running best `neighbours` similarities (n, k_nn), largest first, and their bank rows
    best = torch.full((n, neighbours), float("-inf"), device=feats.device, dtype=feats.dtype)
    arg = torch.zeros(n, neighbours, dtype=torch.long, device=feats.device)
    for lo in range(0, flat_bank.shape[0], chunk):
        s = q @ flat_bank[lo : lo + chunk].T  # (n, chunk): sum over S of cosine similarities
        cols = torch.arange(lo, lo + s.shape[1], device=s.device)
        if exclude is not None:
            s = s.masked_fill(exclude.view(-1, 1) == cols.view(1, -1), float("-inf"))
        if skip_identical:
            s = s.masked_fill(s >= k * (1.0 - IDENTICAL_TOL), float("-inf"))
        if neighbours == 1:  # a running max (the earlier row wins a tie)
            val, idx = s.max(1, keepdim=True)
            better = val > best
            best = torch.where(better, val, best)
            arg = torch.where(better, idx + lo, arg)
        else:
            best, pos = torch.cat([best, s], 1).topk(neighbours, dim=1)
            arg = torch.cat([arg, cols.expand(n, -1)], 1).gather(1, pos)
    cos = (unit.unsqueeze(1) * bank[arg]).sum(3)  # (n, k_nn, K): sim(F(S x), F(S x'_j))
    m = ((cos * norms.unsqueeze(1)) if weight_by_norm else cos).sum(2).mean(1)
    return m, arg[:, 0]
