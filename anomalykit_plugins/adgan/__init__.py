"""ADGAN: Image Anomaly Detection with Generative Adversarial Networks (Deecke et al., ECML 2018).

Read top to bottom: ``networks.py`` (generator g_θ and WGAN critic, plus the generator with
stacked per-copy parameters), ``losses.py`` (eq. 2 and Algorithm 1's ℓ, one function each),
``search.py`` (Algorithm 1: reference loop, batched and torch.func implementations, functional
Adam), ``detector.py`` (training schedule and scores). Registered only through the
``anomalykit.methods`` entry point, like any third-party plugin.
"""
from anomalykit import hookimpl

from .detector import ADGANDetector

__all__ = ["ADGANDetector"]


@hookimpl
def anomalykit_register_methods(register):
    register(ADGANDetector)
