"""Every installed method fits and scores colour and larger images: (N, 3, 32, 32) and (N, 3, 64, 64),
uint8 as a camera gives them (tiny widths; the networks adapt to the shape)."""
from __future__ import annotations

import numpy as np
import pytest

import anomalykit

from conftest import tiny_params


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 64, 64)])
def test_every_method_on_colour_images(shape, installed_methods, one_thread):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(40, *shape)).astype(np.uint8)
    for method in installed_methods:
        det = anomalykit.load_method(method, **tiny_params(method, device="cpu", epochs=1)).fit(X[:32])
        scores = det.score_samples(X[32:])
        assert scores.shape == (8,) and np.isfinite(scores).all(), method
        assert det.input_shape_ == shape and det.fit_input_ == (shape, "uint8"), method
