"""The plugin SDK: every name a method plugin may rely on, in one place.

A plugin imports from ``anomalykit`` (``Detector``, ``Param``, ``hookimpl``, the errors) and from
this module; nothing else in the package is a promise. The built-in plugins use exactly these
names (a test checks it), and docs/writing-a-plugin.md lists them.

Networks (shape-adaptive; images (C, H, W) of any side >= 4, rows (F,)):

- :class:`ConvEncoder` (N, C, H, W) -> (N, d); :class:`ConvDecoder` (N, d) -> (N, C, H, W) in
  [-1, 1], whose ``net`` is the ``nn.Sequential`` of its layers (for code that runs them with
  other parameters); :class:`ConvCritic` / :class:`MLPCritic` with ``features(x)`` = the
  penultimate features f and ``forward(x)`` = the critic value; ``ConvCritic.body`` is the conv
  trunk up to f (reusable as an encoder trunk); :func:`mlp`; :func:`stack_pair` (the mirrored
  critic's input); :func:`is_image`, :func:`flat_dim`.

Training: :func:`frozen` (no gradient into some networks for one update),
:func:`gradient_penalty` (WGAN-GP), :func:`recompute_batchnorm`; ``Detector.trainer(...)`` returns
a :class:`Trainer` whose ``run(X, step)`` runs the loop (checkpoints, resume, divergence checks,
DDP) and calls ``step(x, ctx)`` with a :class:`StepContext` (``ctx.update``, ``ctx.nets``,
``ctx.generator``, ``ctx.extra``...: :mod:`anomalykit.contract` lists what it offers).

Randomness: :func:`stream_seed` (``anomalykit.seeds``) derives every random stream from the run's seed.

Data: :class:`Dataset` is what a dataset plugin's loader returns (``anomalykit_register_datasets``).

The contract a method class keeps: :mod:`anomalykit.contract` (checked when a plugin loads);
:func:`anomalykit.testing.check_method` checks a method's behaviour (run it in a plugin's tests).

Speed (docs/performance.md): :func:`speedups_enabled` reads the one switch
(``ANOMALYKIT_SPEEDUPS``, :func:`anomalykit.speedups.speedups`) a plugin's own math-preserving
fast paths should obey; :func:`channels_last_` stores a network's convolution weights in the
layout the CPU convolution library runs fastest (call it when the network is built; the core's
networks already do).

Ops (fused kernels with a reference fallback): :func:`pair_feature_l1`, :func:`simplex_mix`,
:func:`sample_simplex` (schemes :data:`SIMPLEX_SCHEMES`), :func:`annulus_sample`; and
:func:`outer_adam_step_`, an Adam step from the factors of outer-product gradients (a
memory-traffic saver for per-copy parameters, as in ADGAN's latent search).

Scores: :class:`FeatureGaussian` (a Gaussian fitted to training feature vectors, scored as
−log density; Ledoit-Wolf covariance).

Parameter presets, so the same idea has the same name everywhere: :func:`lipschitz_param`,
:func:`gp_weight_param`, :func:`latent_dim_param`, :func:`simplex_k_param`; :class:`RenamedParam`
keeps a renamed parameter's old name working for a deprecation period (``renamed_params``).

Precision: the core runs training steps and scoring under the ``precision`` parameter's autocast
(:mod:`anomalykit.precision`); :func:`full_precision` runs a part of a plugin's forward in float32.
"""
from __future__ import annotations

from .nn import (
    ConvCritic,
    ConvDecoder,
    ConvEncoder,
    MLPCritic,
    channels_last_,
    flat_dim,
    frozen,
    gradient_penalty,
    is_image,
    mlp,
    recompute_batchnorm,
    stack_pair,
)
from .data.datasets import Dataset
from .deprecation import RenamedParam
from .training import StepContext, Trainer
from .ops import SIMPLEX_SCHEMES, annulus_sample, outer_adam_step_, pair_feature_l1, sample_simplex, simplex_mix
from .params import Param
from .scores import FeatureGaussian
from .seeds import stream_seed
from .precision import full_precision
from .speedups import enabled as speedups_enabled

__all__ = [
    "ConvCritic", "ConvDecoder", "ConvEncoder", "MLPCritic", "flat_dim", "frozen", "gradient_penalty", "is_image", "mlp",
    "recompute_batchnorm", "stack_pair", "channels_last_", "speedups_enabled",
    "SIMPLEX_SCHEMES", "annulus_sample", "pair_feature_l1", "sample_simplex", "simplex_mix", "FeatureGaussian", "outer_adam_step_",
    "lipschitz_param", "gp_weight_param", "latent_dim_param", "simplex_k_param", "StepContext", "Trainer", "Dataset", "stream_seed",
    "RenamedParam", "full_precision",
]


def lipschitz_param(default: str = "gp", choices: tuple[str, ...] = ("gp", "sn", "both"), help: str = "") -> Param:
    """``lipschitz``: how a Wasserstein critic is kept 1-Lipschitz (gp = gradient penalty,
    sn = spectral norm, both; a method may offer others such as clip)."""
    text = help or "critic Lipschitz constraint: " + ", ".join(
        {"gp": "gp (gradient penalty)", "sn": "sn (spectral norm)", "both": "both", "clip": "clip (weight clipping)"}.get(c, c)
        for c in choices)
    return Param("lipschitz", default, text, choices=choices)


def gp_weight_param(default: float = 10.0) -> Param:
    """``gp_weight``: the gradient-penalty weight λ (10 in WGAN-GP and in the papers)."""
    return Param("gp_weight", default, "gradient penalty weight λ_gp (when the gradient penalty is on)", low=0.0)


def latent_dim_param(auto_rule: str) -> Param:
    """``latent_dim``: the latent size d; None = the method's automatic rule, described by ``auto_rule``."""
    return Param("latent_dim", None, f"latent size d; None = auto: {auto_rule}", type=int, low=1)


def simplex_k_param(default: int = 3, *, allow_off: bool = False, paper_name: str = "k") -> Param:
    """``simplex_k``: how many latents one simplex interpolant mixes (the papers' k or m)."""
    if allow_off:
        return Param("simplex_k", default, f"latents mixed per simplex interpolant (the paper's {paper_name}; 0 = no "
                     "interpolation)", choices=(0, 2, 3))
    return Param("simplex_k", default, f"latents mixed per simplex interpolant (the paper's {paper_name})", low=2)
