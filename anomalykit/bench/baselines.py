"""PyOD baselines for ``anomalykit bench``: the detectors by name and the inputs they see.

Baselines are PyOD detectors with their defaults on flattened inputs (images mapped to [0, 1]);
they are called, never reimplemented.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from ..preprocess import Preprocessor
from ..validation import as_input_tensor, source_is_uint8


def _pyod(name: str, n_features: int, seed: int):
    try:
        if name == "iforest":
            from pyod.models.iforest import IForest

            return IForest(random_state=seed)
        if name == "ocsvm":
            from pyod.models.ocsvm import OCSVM

            return OCSVM()
        if name == "autoencoder":
            from pyod.models.auto_encoder import AutoEncoder

            return AutoEncoder(random_state=seed, verbose=0)
        if name == "deepsvdd":
            from pyod.models.deep_svdd import DeepSVDD

            return DeepSVDD(n_features=n_features, random_state=seed, verbose=0)
        if name == "pca":
            from pyod.models.pca import PCA

            return PCA(random_state=seed)
        if name == "kde-pca":  # KDE on a 20-d PCA projection (ADGAN paper, Table 1)
            from pyod.models.kde import KDE
            from sklearn.decomposition import PCA as SkPCA
            from sklearn.pipeline import make_pipeline

            return _SklearnPipelineDetector(make_pipeline(SkPCA(n_components=min(20, n_features), random_state=seed)), KDE())
    except ImportError:
        raise ConfigError("baselines need PyOD: `pip install pyod` (or `pip install anomalykit[baselines]`)") from None
    raise ConfigError(f"unknown baseline {name!r}; use one of {', '.join(BASELINES)}")


class _SklearnPipelineDetector:
    """A PyOD detector applied after a fitted scikit-learn transform."""

    def __init__(self, transform, detector):
        self.transform, self.detector = transform, detector

    def fit(self, X):
        self.detector.fit(self.transform.fit_transform(X))
        return self

    def decision_function(self, X):
        return self.detector.decision_function(self.transform.transform(X))


BASELINES = ("iforest", "ocsvm", "autoencoder", "deepsvdd", "pca", "kde-pca")


def baseline_inputs(X_train: torch.Tensor, X_test: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """What the PyOD baselines see, scaled by the same fitted preprocessor (``preprocess=auto``)
    our detectors use: images onto [-1, 1] (uint8 pixels x/127.5 - 1, other images their training
    range), then flattened to [0, 1] pixels (what the PyOD reference numbers used); rows by
    median / IQR of the training rows. Lazy rows are read whole here: the estimators take arrays."""
    prep = Preprocessor.fit(as_input_tensor(X_train), "auto", uint8=source_is_uint8(X_train))
    scaled = lambda X: prep.transform(as_input_tensor(X)).reshape(X.shape[0], -1).numpy().astype(np.float64)  # noqa: E731
    if X_train.ndim == 4:
        return (scaled(X_train) + 1.0) / 2.0, (scaled(X_test) + 1.0) / 2.0
    return scaled(X_train), scaled(X_test)
