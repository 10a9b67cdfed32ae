"""AMA: Adversarial Mirrored AutoEncoder (Somepalli et al., UAI 2021).

Read top to bottom: ``networks.py`` (encoder, generator, mirrored critic), ``losses.py`` (the
paper's equations 1-6, one function each), ``detector.py`` (training schedule and scoring).
Registered only through the ``anomalykit.methods`` entry point, like any third-party plugin.
"""
from anomalykit import hookimpl

from .detector import AMADetector

__all__ = ["AMADetector"]


@hookimpl
def anomalykit_register_methods(register):
    register(AMADetector)
