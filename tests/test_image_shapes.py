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
        # the same images as a camera stores them (N, H, W, C) mean the same thing
        np.testing.assert_allclose(det.score_samples(X[32:].transpose(0, 2, 3, 1)), scores, rtol=1e-5, atol=1e-6,
                                   err_msg=method)
        # a row's score does not depend on the rows scored with it (no batch statistics at scoring)
        np.testing.assert_allclose(det.score_samples(X[35:37]), scores[3:5], rtol=1e-4, atol=1e-5, err_msg=method)
        # the colour channels are not averaged away: another channel order is another image
        assert not np.allclose(det.score_samples(X[32:, ::-1]), scores, rtol=1e-6, atol=0), method
