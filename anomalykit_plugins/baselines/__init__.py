"""Two baselines to read every anomaly map against, registered like any method plugin.

- ``patch-knn``: no training. The distance of each (window of an) image to its nearest training
  row in raw model-space pixels, a PatchCore without a pretrained backbone: it keeps a seeded
  random bank of at most ``bank_size`` training rows; the score is the squared L2 distance to the
  nearest, the map that distance per pixel (summed over channels).
- ``patch-ae``: a plain convolutional autoencoder (three convolutions down to a 16-channel code at a
  quarter of the resolution, three back up; no adversary, no latent prior; for rows an MLP of the
  same spirit), trained with Adam on the squared error; score and map are its squared residual.

With ``patch_size`` (set by ``anomalykit run``/``bench`` on MVTec-layout folders) both train and
score exactly as the methods do in patch mode (:mod:`anomalykit.patches`), so a method's table
shows what its adversarial and latent machinery adds to patch training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anomalykit import Detector, Param, hookimpl
from anomalykit.sdk import is_image, stream_seed


class PatchKNN(Detector):
    """Nearest training row in raw (model-space) pixels; see the module docstring."""

    name = "patch-knn"
    summary = "baseline: squared distance to the nearest training (patch of an) image, raw pixels, no training"
    params = (
        Param("epochs", 0, "unused (nothing is trained)", low=0),
        Param("bank_size", 20000, "training rows kept (a seeded random subset when there are more)", low=1),
    )
    streams_training_rows = False
    map_baseline = True

    def _build(self, input_shape):
        self.bank_ = torch.zeros(0, int(torch.tensor(input_shape).prod()))  # the kept rows (extra state)

    def _fit(self, X, y):
        flat = X.reshape(X.shape[0], -1)
        #: bank position of each training row (-1: not kept), for the leave-one-out training scores
        self._bank_position = torch.arange(flat.shape[0])
        if flat.shape[0] > self.hp.bank_size:
            g = torch.Generator().manual_seed(stream_seed(self.hp.seed, "subsample"))
            kept = torch.randperm(flat.shape[0], generator=g)[: self.hp.bank_size]
            flat = flat[kept]
            self._bank_position = torch.full((X.shape[0],), -1, dtype=torch.long)
            self._bank_position[kept] = torch.arange(kept.numel())
        self.bank_ = flat.to(self.device, torch.float32).contiguous()

    def _nearest(self, x: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """The nearest bank row of each row of ``x``: argmin of ‖x‖² − 2 x·b + ‖b‖² (one matrix
        product; ``torch.cdist`` picks its algorithm by the batch size, which an exported graph
        cannot follow). ``exclude`` (n,): a bank position each row may not pick (-1: none)."""
        bank = self.bank_.to(x.device)
        flat = x.reshape(x.shape[0], -1).float()
        d = (flat * flat).sum(1, keepdim=True) - 2 * flat @ bank.T + (bank * bank).sum(1)
        if exclude is not None and bank.shape[0] > 1:
            rows = torch.nonzero(exclude >= 0).flatten()
            d[rows.to(d.device), exclude[rows].to(d.device)] = float("inf")
        return bank[d.argmin(1)]

    @staticmethod
    def _distance(x: torch.Tensor, nearest: torch.Tensor) -> torch.Tensor:
        """(n,): the squared L2 distance of each row of ``x`` to its ``nearest`` bank row."""
        return (x.reshape(x.shape[0], -1).float() - nearest).square().sum(1)

    def _score(self, X):
        return self._distance(X, self._nearest(X))

    def _training_scores(self, X):
        """Leave-one-out: each training row's distance to its nearest *other* bank row (in-sample,
        a kept row finds itself at distance 0 and the threshold would be 0)."""
        position = getattr(self, "_bank_position", None)
        if position is None or position.shape[0] != X.shape[0]:  # not the rows _fit saw
            return super()._training_scores(X)
        bs = self.hp.score_batch_size
        out = []
        for lo in range(0, X.shape[0], bs):
            x = X[lo : lo + bs].to(self.device)
            out.append(self._distance(x, self._nearest(x, exclude=position[lo : lo + bs])).cpu())
        return torch.cat(out)

    def _anomaly_map(self, x):
        if not is_image(tuple(x.shape[1:])):
            return None
        return (x.float() - self._nearest(x).reshape(x.shape)).square().sum(1)

    def _extra_state(self):
        return {"bank": self.bank_.cpu()}

    def _load_extra_state(self, state):
        if set(state) != {"bank"} or state["bank"].ndim != 2:
            raise ValueError("patch-knn: the checkpoint holds no bank of training rows")
        self.bank_ = state["bank"].float().to(self.device)


class _ConvAE(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): three convolutions down to a 16-channel code at a quarter of
    the resolution, three back up, outputs unbounded (the model-space pixels are in [-1, 1])."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.encode = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), act,
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), act,
            nn.Conv2d(2 * width, 16, 4, stride=2, padding=1))
        self.decode = nn.Sequential(
            nn.ConvTranspose2d(16, 2 * width, 4, stride=2, padding=1), act,
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), act,
            nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, x):
        out = self.decode(self.encode(x))
        return out if out.shape[-2:] == x.shape[-2:] else F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


class PatchAE(Detector):
    """A plain convolutional autoencoder; see the module docstring."""

    name = "patch-ae"
    summary = "baseline: plain convolutional autoencoder, squared reconstruction error (no adversary, no latent prior)"
    params = (
        Param("epochs", 10, "training epochs", low=0),
        Param("width", 32, "channels of the first convolution", low=1),
        Param("lr", 1e-3, "Adam learning rate", low=0.0),
    )
    streams_training_rows = True
    map_baseline = True

    def _build(self, input_shape):
        if is_image(tuple(input_shape)):
            self.nets["ae"] = _ConvAE(input_shape[0], self.hp.width)
        else:  # rows: the same idea as an MLP, D -> 4 width -> 16 -> 4 width -> D
            d, h = int(input_shape[0]), 4 * self.hp.width
            self.nets["ae"] = nn.Sequential(nn.Linear(d, h), nn.LeakyReLU(0.2), nn.Linear(h, 16), nn.LeakyReLU(0.2),
                                            nn.Linear(16, h), nn.LeakyReLU(0.2), nn.Linear(h, d))

    def _fit(self, X, y):
        ae = self.nets["ae"]
        trainer = self.trainer(optimizers={"ae": torch.optim.Adam(ae.parameters(), lr=self.hp.lr)})

        def step(x, ctx):
            loss = (ctx.nets["ae"](x) - x).square().mean()
            return {"loss": ctx.update("ae", loss, term="reconstruction")}

        trainer.run(X, step)

    def _score(self, X):
        return (self.nets["ae"](X) - X).square().flatten(1).sum(1)

    def _reconstruct(self, x):
        return self.nets["ae"](x)


@hookimpl
def anomalykit_register_methods(register):
    register(PatchKNN)
    register(PatchAE)
