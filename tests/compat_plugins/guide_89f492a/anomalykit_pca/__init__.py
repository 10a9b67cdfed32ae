"""A complete third-party anomalykit method: PCA reconstruction error.

score(x) = || (x - mean) - P P^T (x - mean) ||^2, P = the top ``n_components`` principal
directions of the training data. No training loop, so ``epochs`` is unused.
"""
import torch
from torch import nn

from anomalykit import Detector, Param, hookimpl


class Projection(nn.Module):
    """Holds the fitted mean (D,) and principal directions (D, K) as buffers (saved with the model)."""

    def __init__(self, dim: int, k: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.zeros(dim, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N,) squared reconstruction error."""
        centred = x - self.mean
        recon = centred @ self.components @ self.components.T
        return (centred - recon).pow(2).sum(1)


class PCAReconstruction(Detector):
    name = "pca-recon"
    summary = "PCA reconstruction error (example third-party plugin)"
    params = (
        Param("n_components", 8, "principal components kept", low=1),
        Param("epochs", 0, "unused (PCA is fitted in closed form)", low=0),
    )

    def _build(self, input_shape):
        dim = 1
        for s in input_shape:
            dim *= s
        self.nets["proj"] = Projection(dim, min(self.hp.n_components, dim))

    def _fit(self, X, y):
        flat = X.reshape(X.shape[0], -1).to(self.device)
        proj = self.nets["proj"]
        proj.mean.copy_(flat.mean(0))
        k = proj.components.shape[1]
        _, _, v = torch.linalg.svd(flat - proj.mean, full_matrices=False)
        proj.components.zero_()
        proj.components[:, : min(k, v.shape[0])] = v[:k].T

    def _score(self, X):
        return self.nets["proj"](X.reshape(X.shape[0], -1))


@hookimpl
def anomalykit_register_methods(register):
    register(PCAReconstruction)
