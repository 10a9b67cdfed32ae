"""A plugin's own test: the conformance kit on the method class (no install needed)."""
from anomalykit.testing import check_method

from anomalykit_pca import PCAReconstruction


def test_pca_recon_keeps_the_anomalykit_contract():
    check_method(PCAReconstruction, params={"n_components": 4})
