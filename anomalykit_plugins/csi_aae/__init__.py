"""csi-aae: CSI contrastive learning joined with an adversarial autoencoder (Yu & Chiu).

Read top to bottom: ``augment.py`` (shifts S and augmentations T), ``networks.py`` (F, E, G,
D, D'), ``losses.py`` (one function per equation 1-11), ``detector.py`` (Algorithm 1 and the
score). Registered only through the ``anomalykit.methods`` entry point.
"""
from anomalykit import hookimpl


@hookimpl
def anomalykit_register_methods(register):
    from .detector import CSIAAE

    register(CSIAAE)
