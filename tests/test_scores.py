"""FeatureGaussian (anomalykit.scores, SDK): the Ledoit-Wolf Gaussian of training feature vectors,
scored as -log density, checked against scipy's multivariate normal and by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.covariance import LedoitWolf

from anomalykit.scores import FeatureGaussian


def features(n=60, f=5, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(f, f))
    return torch.from_numpy(rng.normal(size=(n, f)) @ mix + rng.normal(size=f) * 3)


def test_neg_log_density_is_scipys_logpdf_under_the_ledoit_wolf_gaussian():
    train, new = features(seed=0), features(n=9, seed=1)
    lw = LedoitWolf().fit(train.numpy())
    expected = -multivariate_normal(mean=lw.location_, cov=lw.covariance_).logpdf(new.numpy())
    got = FeatureGaussian.fit(train).neg_log_density(new)
    assert got.dtype == torch.float64 and got.shape == (9,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_a_one_dimensional_gaussian_by_hand():
    """F = 1: Ledoit-Wolf leaves a 1x1 covariance alone, so -log N(v; mean, var) with the
    population variance, written out."""
    train = torch.tensor([[1.0], [2.0], [3.0], [6.0]], dtype=torch.float64)
    mean, var = 3.0, ((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 4
    v = torch.tensor([[3.0], [5.0]], dtype=torch.float64)
    expected = [0.5 * (x - mean) ** 2 / var + 0.5 * np.log(2 * np.pi * var) for x in (3.0, 5.0)]
    np.testing.assert_allclose(FeatureGaussian.fit(train).neg_log_density(v).numpy(), expected, rtol=1e-12)


def test_cross_fitted_scores_score_each_fold_with_the_others():
    """Five contiguous folds: the rows of each fold scored by the Gaussian fitted to the rest,
    refitted here fold by fold with scikit-learn and scipy."""
    train = features(n=23, seed=2)
    got = FeatureGaussian.cross_fitted_scores(train, folds=5).numpy()
    expected = np.empty(23)
    for held in np.array_split(np.arange(23), 5):
        rest = np.setdiff1d(np.arange(23), held)
        lw = LedoitWolf().fit(train.numpy()[rest])
        expected[held] = -multivariate_normal(mean=lw.location_, cov=lw.covariance_).logpdf(train.numpy()[held])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    # held-out scores are higher than in-sample ones on average (the reason they exist)
    assert got.mean() > FeatureGaussian.fit(train).neg_log_density(train).numpy().mean()


def test_fewer_than_four_rows_are_scored_in_sample():
    train = features(n=3, seed=3)
    np.testing.assert_array_equal(FeatureGaussian.cross_fitted_scores(train).numpy(),
                                  FeatureGaussian.fit(train).neg_log_density(train).numpy())


def test_state_round_trip_and_optional_state():
    gauss = FeatureGaussian.fit(features(seed=4))
    again = FeatureGaussian.from_state({k: v.clone() for k, v in gauss.state().items()})
    v = features(n=4, seed=5)
    assert torch.equal(again.neg_log_density(v), gauss.neg_log_density(v))
    assert set(gauss.state()) == {"mean", "precision", "logdet"}
    assert FeatureGaussian.optional_state(None) == {}
    restored = FeatureGaussian.from_optional_state(FeatureGaussian.optional_state(gauss), required=True, score="x")
    assert torch.equal(restored.neg_log_density(v), gauss.neg_log_density(v))
    assert FeatureGaussian.from_optional_state({}, required=False, score="x") is None
    with pytest.raises(ValueError, match="score='a-features' needs the fitted feature Gaussian"):
        FeatureGaussian.from_optional_state({}, required=True, score="a-features")
