"""Score statistics shared by methods (part of the plugin SDK, :mod:`anomalykit.sdk`)."""
from __future__ import annotations

import math

import torch


class FeatureGaussian:
    """N(μ, Σ) fitted to training feature vectors (N, F), scored as −log density.

    Σ is the Ledoit-Wolf shrinkage estimate (scikit-learn), so it stays invertible and well
    conditioned when F is comparable to N. ``neg_log_density(v)`` =
    ½ (v − μ)ᵀ Σ⁻¹ (v − μ) + ½ log|Σ| + F/2 log 2π, float64; it ranks like the Mahalanobis
    distance. The fitted state is three tensors (checkpoint-safe, exportable as constants).
    """

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor, logdet: torch.Tensor):
        self.mean, self.precision, self.logdet = mean.double(), precision.double(), logdet.double()

    @classmethod
    def fit(cls, features: torch.Tensor) -> "FeatureGaussian":
        from sklearn.covariance import LedoitWolf

        fit = LedoitWolf(assume_centered=False).fit(features.detach().double().cpu().numpy())
        cov = torch.from_numpy(fit.covariance_)
        return cls(torch.from_numpy(fit.location_), torch.linalg.inv(cov), torch.linalg.slogdet(cov)[1])

    @classmethod
    def cross_fitted_scores(cls, features: torch.Tensor, folds: int = 5) -> torch.Tensor:
        """(N, F) -> (N,) float64: each row's −log density under a Gaussian fitted to the *other*
        folds (contiguous folds; ``min(folds, N)`` of them), i.e. the training rows scored as new
        rows would be. A row scored by the Gaussian fitted to it sits too close to the mean when F
        is comparable to N, so thresholds taken from those in-sample scores flag far more than the
        contamination on new data. With fewer than 4 rows the in-sample scores are returned."""
        n = features.shape[0]
        if n < 4:
            return cls.fit(features).neg_log_density(features)
        out = torch.empty(n, dtype=torch.float64, device=features.device)
        for held in torch.arange(n, device=features.device).tensor_split(min(folds, n)):
            keep = torch.ones(n, dtype=torch.bool, device=features.device)
            keep[held] = False
            out[held] = cls.fit(features[keep]).neg_log_density(features[held])
        return out

    def neg_log_density(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B,) float64."""
        centred = features.double() - self.mean.to(features.device)
        maha = (centred @ self.precision.to(features.device) * centred).sum(1)
        return 0.5 * maha + 0.5 * self.logdet.to(features.device) + 0.5 * features.shape[1] * math.log(2 * math.pi)

    def state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "precision": self.precision, "logdet": self.logdet}

    @classmethod
    def from_state(cls, state: dict) -> "FeatureGaussian":
        return cls(state["mean"], state["precision"], torch.as_tensor(state["logdet"]))

    @staticmethod
    def optional_state(gauss: "FeatureGaussian | None") -> dict:
        """``{"feature_gaussian": state}`` for a method's ``_extra_state`` ({} without one)."""
        return {} if gauss is None else {"feature_gaussian": gauss.state()}

    @classmethod
    def from_optional_state(cls, extra: dict, *, required: bool, score: str) -> "FeatureGaussian | None":
        """The Gaussian of a method's ``_extra_state`` (see :meth:`optional_state`); a checkpoint
        whose ``score`` needs one (``required``) but lacks it is a ValueError (the core turns it
        into a one-line CheckpointError)."""
        state = extra.get("feature_gaussian")
        if state is None and required:
            raise ValueError(f"score={score!r} needs the fitted feature Gaussian, which this checkpoint lacks")
        return None if state is None else cls.from_state(state)
