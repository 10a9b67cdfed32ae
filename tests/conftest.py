import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS / "plugins" / "pca_plugin"))


@pytest.fixture
def registry():
    from anomalykit.registry import get_registry

    return get_registry()


@pytest.fixture
def pca_method(registry):
    """The example plugin 'pca-recon' registered in-process (unless already installed)."""
    added = False
    if "pca-recon" not in registry.methods:
        module = importlib.import_module("anomalykit_pca")
        assert registry.add_plugin(module, name="pca-recon-inprocess")
        added = True
    yield "pca-recon"
    if added:
        registry.remove_plugin("pca-recon-inprocess")


@pytest.fixture
def blobs():
    """Tabular toy data: 200 normal rows around 0, 20 anomalies far away; labels 1 = anomaly."""
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(200, 6, generator=g)
    anomalous = torch.randn(20, 6, generator=g) * 0.5 + 6.0
    X = torch.cat([normal, anomalous])
    y = np.r_[np.zeros(200, int), np.ones(20, int)]
    return X, y
