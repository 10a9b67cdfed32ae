"""Input scaling owned by the core: fitted in ``fit`` on the training rows, saved with the model,
applied identically wherever a detector meets user data (score, predict, reconstruct, export).

Every kind is an affine map per channel (images (N, C, H, W)) or per feature (rows (N, F)),
``x_model = (x - shift) / scale``, so it is exact, invertible and trivially part of an
exported graph. Kinds (the ``preprocess`` parameter):

- ``auto`` (default): ``uint8`` for uint8 images, ``range`` for other images, ``robust`` for rows;
- ``uint8``: x / 127.5 - 1 (pixel values 0..255 onto [-1, 1], what the networks' tanh outputs);
- ``range``: the training minimum and maximum of each channel / feature onto [-1, 1];
- ``robust``: (x - median) / IQR per feature (PyOD standardises too); a feature with zero IQR
  uses its standard deviation, a constant feature maps to 0;
- ``none``: the data are already prepared (identity).

Values outside the training range are kept (never clipped): they are what anomalies look like.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import CheckpointError, ConfigError

KINDS = ("auto", "none", "uint8", "range", "robust")


@dataclass
class Preprocessor:
    """A fitted affine input map; ``shift``/``scale`` have shape (C,) for images, (F,) for rows."""

    kind: str = "none"
    shift: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    # -- fitting -----------------------------------------------------------------------------
    @classmethod
    def fit(cls, X, kind: str = "auto", *, uint8: bool = False) -> "Preprocessor":
        """Fit on validated float32 training rows ``X`` ((N, F) or (N, C, H, W)), a tensor or
        :class:`~anomalykit.lazy_rows.LazyRows` (read in one streaming pass of batches, which also
        validates float rows; ``robust`` needs exact quantiles, so lazy rows are read whole for it:
        tabular rows, small next to images).

        ``uint8`` says the user's array was uint8 before conversion (``auto`` then picks ``uint8``).
        """
        from .lazy_rows import LazyRows

        if kind not in KINDS:
            raise ConfigError(f"preprocess must be one of {', '.join(KINDS)}; got {kind!r}")
        image = len(X.shape) == 4
        if kind == "auto":
            kind = ("uint8" if uint8 else "range") if image else "robust"
        lazy = isinstance(X, LazyRows)
        if lazy and kind == "robust":
            X, lazy = X.materialize(), False
        channels = X.shape[1]
        if lazy and (kind == "range" or not uint8):  # one pass: the range statistics; validates float rows
            lo = torch.full((channels,), float("inf"), dtype=torch.float64)
            hi = torch.full((channels,), float("-inf"), dtype=torch.float64)
            for batch in X.iter_batches(0, len(X), 4096):
                cols = batch.transpose(0, 1).reshape(channels, -1).double()
                lo, hi = torch.minimum(lo, cols.min(1).values), torch.maximum(hi, cols.max(1).values)
        if kind == "none":
            return cls("none")
        if kind == "uint8":
            return cls(kind, torch.full((channels,), 127.5), torch.full((channels,), 127.5))
        if not lazy:  # per channel (images) or per feature (rows): one column per channel
            cols = X.transpose(0, 1).reshape(channels, -1).double()
        if kind == "range":
            if not lazy:
                lo, hi = cols.min(1).values, cols.max(1).values
            shift, scale = (hi + lo) / 2, (hi - lo) / 2
        else:  # robust
            q = torch.quantile(cols, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=1) if cols.shape[1] <= 16_000_000 \
                else _quantiles_numpy(cols)
            shift, scale = q[1], q[2] - q[0]
            std = cols.std(1, unbiased=False) if cols.shape[1] > 1 else torch.zeros(channels, dtype=torch.float64)
            scale = torch.where(scale > 0, scale, std)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant channel maps to 0
        return cls(kind, shift.float(), scale.float())

    def transform_rows(self, X):
        """:meth:`transform` of a tensor, or a lazy view of lazy rows that transforms each batch read."""
        from .lazy_rows import LazyRows, TransformedRows

        return TransformedRows(X, self.transform) if isinstance(X, LazyRows) else self.transform(X)

    # -- applying ----------------------------------------------------------------------------
    def _view(self, t: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (X.dim() - 2)
        return t.to(X.device, X.dtype if X.is_floating_point() else torch.float32).reshape(shape)

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        """User space -> model space (float32, same shape); ``X`` float32 or uint8 (validated rows)."""
        if self.kind == "none":
            return X if X.is_floating_point() else X.to(torch.float32)
        self._check_width(X)
        if self.kind == "uint8":  # the same float32 operations as the usual hand scaling x / 127.5 - 1
            return X / 127.5 - 1.0
        return (X - self._view(self.shift, X)) / self._view(self.scale, X)

    def inverse_transform(self, X: torch.Tensor) -> torch.Tensor:
        """Model space -> user space (e.g. reconstructions, to compare with the inputs)."""
        if self.kind == "none":
            return X
        self._check_width(X)
        if self.kind == "uint8":
            return (X + 1.0) * 127.5
        return X * self._view(self.scale, X) + self._view(self.shift, X)

    def _check_width(self, X: torch.Tensor) -> None:
        if X.shape[1] != self.shift.shape[0]:
            raise ConfigError(f"the preprocessor was fitted on {self.shift.shape[0]} channels/features; got {X.shape[1]}")

    # -- state -------------------------------------------------------------------------------
    def state(self) -> dict:
        """Plain data and tensors (checkpoint-safe with ``torch.load(weights_only=True)``)."""
        out: dict = {"kind": self.kind}
        if self.kind != "none":
            out.update(shift=self.shift.detach().cpu(), scale=self.scale.detach().cpu())
        return out

    @classmethod
    def from_state(cls, state: dict | None) -> "Preprocessor":
        """The preprocessor of a checkpoint; checkpoints from before preprocessing existed load as ``none``."""
        if not state:
            return cls("none")
        kind = state.get("kind")
        if kind == "none":
            return cls("none")
        if kind not in KINDS or kind == "auto" or not all(isinstance(state.get(k), torch.Tensor) for k in ("shift", "scale")):
            raise CheckpointError(f"the checkpoint's preprocessor state is not valid (kind {kind!r})")
        return cls(kind, state["shift"].float(), state["scale"].float())

    def describe(self) -> str:
        return self.kind


def _quantiles_numpy(cols: torch.Tensor) -> torch.Tensor:
    """Quartiles of very long columns (torch.quantile refuses inputs above 16M values)."""
    return torch.from_numpy(np.quantile(cols.numpy(), [0.25, 0.5, 0.75], axis=1))
