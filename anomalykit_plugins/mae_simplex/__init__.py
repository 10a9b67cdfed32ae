"""MAE-simplex: mirrored adversarial autoencoder with m-point simplex interpolation.

Paper: Wu, Balaji, Vinzamuri, Feizi, "Mirrored Autoencoders with Simplex Interpolation for
Unsupervised Anomaly Detection" (2020). Read ``networks.py`` (E, G, D_recon, D_inter),
``losses.py`` (eq. 3-5, the latent regulariser, the feature-L1 score), then ``detector.py``
(training step, model selection, scoring). Registered through the ``anomalykit.methods``
entry point ``mae-simplex``.
"""
from anomalykit import hookimpl


@hookimpl
def anomalykit_register_methods(register):
    from .detector import MAESimplex

    register(MAESimplex)
