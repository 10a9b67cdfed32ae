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


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a test module: tiny networks run fastest single-threaded, and on a
    shared 2-core CPU two threads spend most of their time in hand-offs (a plugin test file took
    ~20 s with one thread and minutes with two on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
