"""AMA detector: training schedule (eq. 2-4) and scoring (eq. 5-6).

Each step on a minibatch x:

1. critic, ``n_critic`` times on the same minibatch (as the authors do): maximise the
   Wasserstein estimates W_rec (eq. 1), λ_inter·W_inter (sec. 3.2) and λ_neg·W_neg (eq. 4) with a
   gradient penalty (λ_gp = 10) and/or spectral norm;
2. encoder + generator, once: minimise W_rec + λ_inter·W_inter + λ_reg·E‖E(x)‖ − λ_neg·W_neg
   (eq. 2-3). The interpolation term trains E and G (the authors' code detaches it; the
   paper's min_G does not).

Interpolants: x̂_inter = G(Σ α_i E(x_i)) for k = 3 batch samples, α_i ~ U[0, 0.5] normalised
(``simplex_mix`` + ``sample_simplex``), paired with the first vertex x_1. Negatives: z_neg
uniform in the shell between √d and √d ± δ (``annulus_sample``); in semi-supervised mode
(``fit(X, y)`` with some y == 1) the labelled anomalies x_a replace them: pairs (x_a, G(E(x_a))).

Scores: R(x) = ‖f(x, x) − f(x, G(E(x)))‖₁ (eq. 5) with f the critic's penultimate layer; the
A-score (eq. 6) is the density of R(x) under N(μ, σ²) fitted to the training R-scores, and
``score_samples`` returns **−log A(x)** (higher = more anomalous), or R(x) with ``score="r"``.
Model selection is unsupervised: the weights after the last epoch are used; no anomaly labels.

Budgets. CPU (2 cores): digits class 0, the defaults, under a minute; Fashion-MNIST one class
(6,000 images): ``--epochs 15`` ≈ several minutes per class. Paper (GPU): latent_dim 128,
width 64, epochs 100, batch_size 256, lr_schedule step.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from anomalykit import Detector, InputError, Param
from anomalykit.sdk import (
    FeatureGaussian,
    RenamedParam,
    flat_dim,
    frozen,
    gp_weight_param,
    gradient_penalty,
    latent_dim_param,
    lipschitz_param,
    recompute_batchnorm,
    sample_simplex,
    simplex_k_param,
    simplex_mix,
    stack_pair,
)

from . import losses
from .networks import build_networks

#: the scores that fit a Gaussian (Ledoit-Wolf) to critic feature vectors of the training rows
FEATURE_SCORES = ("a-features", "real-features")


class AMADetector(Detector):
    """Adversarial Mirrored AutoEncoder (see the module docstring for the schedule and scores)."""

    name = "ama"
    supports_labels = True  # semi-supervised mode: labelled anomalies replace the synthetic negatives
    streams_training_rows = True  # _fit and _training_scores only index, slice and map_batches X
    summary = "Adversarial Mirrored AutoEncoder: mirrored Wasserstein critic, simplex interpolation, atypical negatives, A-score"
    #: names of anomalykit 0.1.0: lr_decay=true was the step schedule; ema (weight averaging) lowered AUROC and was removed
    renamed_params = (
        RenamedParam("lr_decay", "lr_schedule", False, values={True: "step", False: "constant"}),
        RenamedParam("ema", None, 0.0, note="weight averaging lowered the critic features' AUROC and was removed"),
    )
    params = (
        Param("epochs", 100, "training epochs (paper: 100)", low=0),
        Param("batch_size", 64, "training batch size", low=2),
        latent_dim_param("16 up to 256 input values, 64 up to 1024, else 128 (paper: 128)"),
        Param("width", 32, "base channel width of the conv nets (paper: 64)", low=1),
        Param("feature_dim", 256, "critic penultimate features f (R-score space; authors: 128)", low=1),
        Param("hidden", 256, "hidden width of the MLPs used for flat (tabular) inputs", low=4),
        Param("lr", 3e-4, "Adam learning rate of all networks", low=0.0),
        Param("lr_schedule", "cosine", "learning rates over the epochs: cosine (annealed to 0, one value per epoch; chosen on "
              "the validation split), cosine-steps (the same curve over the training steps, one value per step: a run of one "
              "epoch, e.g. one cut by max_steps, anneals too), constant (the paper's text), or step (x0.1 at 30%, 60% and 90% "
              "of the epochs, the authors' MultiStepLR 30/60/90 of 100)",
              choices=("constant", "step", "cosine", "cosine-steps")),
        Param("n_critic", 2, "critic steps per encoder/generator step, on the same minibatch (authors: 5)", low=1),
        lipschitz_param("both"),
        gp_weight_param(10.0),
        Param("mirrored", True, "mirrored Wasserstein loss on stacked pairs (False: plain critic on x vs x̂; Table 1 ablation)"),
        Param("simplex", True, "simplex interpolation term (Table 1 ablation)"),
        Param("lambda_inter", 0.2, "weight λ_inter of the interpolation term", low=0.0),
        simplex_k_param(3),
        Param("simplex_scheme", "normalized", "α draw: normalized (paper: α_i~U[0,0.5], /Σα) or residual (authors: α3 = 1-α1-α2)", choices=("normalized", "residual")),
        Param("atypical", True, "atypical-selection negatives (Table 1 ablation)"),
        Param("lambda_neg", 0.1, "weight λ_neg of the negative term (authors' code: 5)", low=0.0),
        Param("negatives", "annulus-codes", "atypical latents: annulus (paper: shell √d..√d±δ), annulus-codes (the same shell "
              "rescaled to the batch's mean code norm) or scaling (authors' code: αE(x) inward, E(x)/α outward, α~U(0,0.5))",
              choices=("annulus", "annulus-codes", "scaling")),
        Param("delta", 2.0, "shell thickness δ around √d for negatives", low=0.0),
        Param("direction", "outward", "negatives from √d..√d+δ (outward) or √d−δ..√d (inward)", choices=("outward", "inward")),
        Param("negative_pairs", "data", "critic pairs of the negatives: data = (x, G(z_neg)) with x a normal row; self = "
              "(x_a, x_a) vs (x_a, G(E(x_a))) with x_a = G(z_neg), as real anomalies are used in the semi-supervised mode",
              choices=("data", "self")),
        Param("lambda_rec", 0.0, "weight of a pixel reconstruction term λ_rec·E[(x − x̂)²] for E and G (not in the paper; 0 = "
              "off, the paper's purely adversarial autoencoder)", low=0.0),
        Param("latent_reg", True, "latent regulariser λ_reg‖E(x)‖"),
        Param("latent_reg_form", "norm", "norm: λ_reg E‖E(x)‖ (paper eq. 3); hinge: λ_reg E[max(‖E(x)‖ − √d, 0)] "
              "(keeps the codes inside the √d sphere the annulus is drawn around, as MAE-simplex)", choices=("norm", "hinge")),
        Param("lambda_reg", 0.05, "weight λ_reg of the latent regulariser (authors' code: 1)", low=0.0),
        Param("inter_vertex", "first", "the simplex vertex x_i an interpolant is paired with: first (x_1) or heaviest (largest α_i)",
              choices=("first", "heaviest")),
        Param("generator_bn", False, "BatchNorm in the generator (the authors' SN-GAN generator has it; off by default: its "
              "running statistics mix reconstructions, interpolants and negatives, measured on the validation split)"),
        Param("bn_refresh", False, "after training, re-estimate E's and G's BatchNorm statistics on G(E(x)) over the training "
              "rows (training decodes interpolants and negatives too, which skews the running statistics)"),
        Param("score", "a-features", "a-features (default): −log density of the feature difference f(x,x) − f(x,x̂) under a "
              "Gaussian fitted to the training rows (eq. 6 on the vector whose L1 norm is R; Ledoit-Wolf); a: the paper's −log "
              "A-score (eq. 6, a Gaussian on the R-score); r: R-score (eq. 5; Table 1 ablation); real-features (not the "
              "paper's): the same Gaussian on the real pair's features f(x,x) alone, no reconstruction (as ADGAN's default)",
              choices=("a", "r", "a-features", "real-features")),
        Param("feature_layers", "last", "critic layers the feature scores' Gaussian sees: last (f, the penultimate layer) or "
              "all (not the paper's: every conv layer's spatially averaged activations, then f; a multi-layer feature "
              "ensemble, Lee et al. 2018); only with score=a-features or real-features", choices=("last", "all")),
    )

    #: Read when scoring (``Detector.score_params``): the score and the critic layers its Gaussian sees.
    score_params = frozenset({"score", "feature_layers"})

    #: Parameter overrides for ``anomalykit bench --budget``: ``small`` fits one Fashion-MNIST
    #: class in a few minutes on 2 CPU cores; ``paper`` is the authors' schedule (for a GPU).
    budgets = {
        # Fashion-MNIST, 2,000 images: 10 epochs of 32 steps, ~1.5-2 min on 2 cores; more images train fewer
        # epochs (320 steps at most; one epoch longer than that stops after 320): AMA's score degrades with the steps, not
        # the data (validation split, docs/methods/ama.md)
        "small": {"epochs": 10, "batch_size": 64, "max_steps": 320},
        "paper": {"epochs": 100, "batch_size": 256, "width": 64, "latent_dim": 128, "feature_dim": 128,
                  "n_critic": 5, "lr_schedule": "step"},
    }

    # -- networks --------------------------------------------------------------------------------
    @property
    def latent_dim_(self) -> int:
        """The latent size d actually used (``latent_dim``, or the automatic choice)."""
        if self.hp.latent_dim is not None:
            return self.hp.latent_dim
        n = flat_dim(self.input_shape_)
        return 16 if n <= 256 else 64 if n <= 1024 else 128

    def _build(self, input_shape):
        hp = self.hp
        nets = build_networks(
            input_shape,
            latent_dim=self.latent_dim_,
            width=hp.width,
            feature_dim=hp.feature_dim,
            mirrored=hp.mirrored,
            spectral_norm=hp.lipschitz in ("sn", "both"),
            hidden=hp.hidden,
            generator_bn=hp.generator_bn,
        )
        self.nets.update(nets)
        self.r_mean_ = 0.0
        self.r_std_ = 1.0
        self.feature_gaussian_: FeatureGaussian | None = None
        if hp.feature_layers == "all" and hp.score not in FEATURE_SCORES:
            raise InputError(f"ama feature_layers=all needs a feature score; got score={hp.score}; "
                             f"set score=a-features or real-features, or feature_layers=last")

    def critic_input(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """The critic's view of the pair (x, other): stacked channels, or ``other`` alone if not mirrored."""
        return stack_pair(x, other) if self.hp.mirrored else other

    # -- training --------------------------------------------------------------------------------
    def _fit(self, X, y):
        hp, nets = self.hp, self.nets
        anomalies = None
        if y is not None and bool((y == 1).any()):
            anomalies = X[y == 1].to(self.device)  # semi-supervised: real anomalies replace negatives
            X = X[y == 0]
        opt = {
            "critic": torch.optim.Adam(nets["critic"].parameters(), lr=hp.lr, betas=(0.0, 0.9)),
            "generator": torch.optim.Adam(nets["generator"].parameters(), lr=hp.lr, betas=(0.0, 0.9)),
            "encoder": torch.optim.Adam(nets["encoder"].parameters(), lr=hp.lr, betas=(0.5, 0.9)),
        }
        schedulers, interval = {}, "epoch"
        epochs = self.epochs_  # hp.epochs, or fewer under max_steps
        if hp.lr_schedule == "step" and epochs > 0:
            milestones = sorted({max(1, round(epochs * f)) for f in (0.3, 0.6, 0.9)})
            schedulers = {k: torch.optim.lr_scheduler.MultiStepLR(o, milestones, gamma=0.1) for k, o in opt.items()}
        elif hp.lr_schedule == "cosine" and epochs > 0:
            schedulers = {k: torch.optim.lr_scheduler.CosineAnnealingLR(o, epochs) for k, o in opt.items()}
        elif hp.lr_schedule == "cosine-steps" and self.steps_:
            total = self.steps_  # every step that runs: epochs_ x the (possibly cut) epoch's batches
            factor = lambda s: (1 + math.cos(math.pi * min(s, total) / total)) / 2  # noqa: E731
            schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, factor) for k, o in opt.items()}
            interval = "step"
        trainer = self.trainer(optimizers=opt, schedulers=schedulers, scheduler_interval=interval)
        trainer.run(X, lambda x, ctx: self._train_step(x, ctx, anomalies))
        if hp.bn_refresh:
            self._refresh_batchnorm(X)
        self._fit_score_statistics(X)

    def _refresh_batchnorm(self, X: torch.Tensor) -> None:
        """BatchNorm statistics of E and G from G(E(x)) over the training rows only (see ``bn_refresh``)."""
        E, G = self.nets["encoder"], self.nets["generator"]
        bs = self.hp.score_batch_size
        batches = (X[i : i + bs].to(self.device) for i in range(0, X.shape[0], bs))
        recompute_batchnorm([E, G], lambda x: G(E(x)), batches)  # every rank holds all X: same statistics

    def _train_step(self, x: torch.Tensor, ctx, anomalies: torch.Tensor | None) -> dict[str, float]:
        hp = self.hp
        # DDP-wrapped networks under torchrun (gradients averaged across ranks), the modules otherwise
        E, G, D = ctx.nets["encoder"], ctx.nets["generator"], ctx.nets["critic"]
        B = x.shape[0]
        use_inter = hp.simplex and hp.lambda_inter > 0
        use_neg = (hp.atypical or anomalies is not None) and hp.lambda_neg > 0
        gp_on = hp.lipschitz in ("gp", "both") and hp.gp_weight > 0
        if use_inter:
            index, weight = sample_simplex(B, hp.simplex_k, generator=ctx.generator, device=x.device, scheme=hp.simplex_scheme)
            vertex = index[:, 0] if hp.inter_vertex == "first" else index.gather(1, weight.argmax(1, keepdim=True)).squeeze(1)
            x_vertex = x[vertex]
        # negatives: pairs (x_neg_base, x_neg_base) vs (x_neg_base, G(E(x_neg_base))) for real anomalies and for
        # negative_pairs="self" (x_neg_base = G(z_neg)); pairs (x, G(z_neg)) for negative_pairs="data"
        pair_negatives = use_neg and (anomalies is not None or hp.negative_pairs == "self")
        if use_neg:
            if anomalies is not None:
                pick = torch.randint(anomalies.shape[0], (B,), generator=ctx.generator, device=x.device)
                x_neg_base = anomalies[pick]
            else:
                draw = losses.draw_atypical(B, self.latent_dim_, mode=hp.negatives, delta=hp.delta, direction=hp.direction,
                                            generator=ctx.generator, device=x.device)
                x_neg_base = x
                if pair_negatives:
                    with torch.no_grad():  # synthetic anomalies: fixed images, like real ones
                        x_neg_base = G(losses.atypical_from_draw(draw, E(x)))

        def fakes(z: torch.Tensor) -> dict[str, torch.Tensor]:
            out = {"rec": G(z)}
            if use_inter:
                out["inter"] = G(simplex_mix(z, index, weight.to(z.dtype)))
            if use_neg:
                out["neg"] = G(E(x_neg_base)) if pair_negatives else G(losses.atypical_from_draw(draw, z.detach()))
            return out

        def wasserstein_terms(x_fake: dict[str, torch.Tensor], D: nn.Module) -> dict[str, torch.Tensor]:
            d_real = D(self.critic_input(x, x))
            terms = {"rec": losses.mirrored_wasserstein(d_real, D(self.critic_input(x, x_fake["rec"])))}
            if use_inter:
                terms["inter"] = losses.interpolation_term(d_real[vertex], D(self.critic_input(x_vertex, x_fake["inter"])))
            if use_neg:
                d_real_neg = D(self.critic_input(x_neg_base, x_neg_base)) if pair_negatives else d_real
                terms["neg"] = losses.negative_term(d_real_neg, D(self.critic_input(x_neg_base, x_fake["neg"])))
            return terms

        # 1. critic: n_critic steps on this minibatch, against fixed E/G outputs
        with torch.no_grad():
            x_fake = fakes(E(x))
        for _ in range(hp.n_critic):
            terms = wasserstein_terms(x_fake, D)
            loss_d = losses.critic_objective(terms, lambda_inter=hp.lambda_inter, lambda_neg=hp.lambda_neg)
            if gp_on:
                loss_d = loss_d + hp.gp_weight * self._gradient_penalty(D, x, x_fake, ctx.generator, vertex if use_inter else None,
                                                                         x_neg_base if use_neg else None)
            ctx.update("critic", loss_d, term="critic")

        # 2. encoder + generator: one step of eq. 2-3
        critic = self.nets["critic"]  # the plain module: it is frozen in this update
        with frozen(critic):
            z = E(x)
            fake = fakes(z)
            terms = wasserstein_terms(fake, critic)
            if hp.latent_reg and hp.lambda_reg > 0:
                terms["reg"] = (losses.latent_regulariser(z) if hp.latent_reg_form == "norm" else losses.latent_hinge(z))
            if hp.lambda_rec > 0:
                terms["pixel"] = losses.pixel_reconstruction(x, fake["rec"])
            loss_ae = losses.autoencoder_objective(terms, lambda_inter=hp.lambda_inter, lambda_reg=hp.lambda_reg,
                                                   lambda_neg=hp.lambda_neg, lambda_rec=hp.lambda_rec)
            ctx.update(("encoder", "generator"), loss_ae, term="autoencoder")
        logged = {"critic": loss_d.detach(), "autoencoder": loss_ae.detach(), "w_rec": terms["rec"].detach()}
        logged.update({f"w_{k}": v.detach() for k, v in terms.items() if k in ("inter", "neg")})
        if "reg" in terms:
            logged["latent_norm"] = terms["reg"].detach()
        if "pixel" in terms:
            logged["pixel_mse"] = terms["pixel"].detach()
        return logged

    def _gradient_penalty(self, critic, x, x_fake, generator, vertex, x_neg_base) -> torch.Tensor:
        """WGAN-GP over every kind of fake pair the critic separates from real pairs.

        Each row of the batch takes one fake source (reconstruction, interpolation or negative)
        at random, so one penalty batch covers all of them; without this the critic is
        unconstrained around the negatives and W_neg diverges.
        """
        real, fake = [self.critic_input(x, x)], [self.critic_input(x, x_fake["rec"])]
        if "inter" in x_fake:
            xv = x[vertex]
            real.append(self.critic_input(xv, xv))
            fake.append(self.critic_input(xv, x_fake["inter"]))
        if "neg" in x_fake:
            real.append(self.critic_input(x_neg_base, x_neg_base))
            fake.append(self.critic_input(x_neg_base, x_fake["neg"]))
        if len(real) > 1:
            B = x.shape[0]
            source = torch.randint(len(real), (B,), generator=generator, device=x.device)
            rows = torch.arange(B, device=x.device)
            real = [torch.stack(real)[source, rows]]
            fake = [torch.stack(fake)[source, rows]]
        return gradient_penalty(critic, real[0], fake[0], generator=generator)

    # -- scoring ---------------------------------------------------------------------------------
    @torch.no_grad()
    def pair_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f(x, x) and f(x, G(E(x))) for a batch on ``self.device``: two (B, F) tensors (with
        ``feature_layers=all`` every critic layer's averaged activations, then f: (B, F_all))."""
        E, G, D = self.nets["encoder"], self.nets["generator"], self.nets["critic"]
        x_rec = G(E(x))
        features = D.layer_features if self.hp.feature_layers == "all" else D.features
        return features(self.critic_input(x, x)), features(self.critic_input(x, x_rec))

    def r_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 5 for a batch on ``self.device``: (B,) R-scores."""
        return losses.r_score(*self.pair_features(x))

    def feature_vectors(self, f_real: torch.Tensor, f_rec: torch.Tensor) -> torch.Tensor:
        """What the feature Gaussian sees, (B, F): the difference f(x,x) − f(x,x̂) (``a-features``) or
        the real pair's features f(x,x) (``real-features``)."""
        return f_real if self.hp.score == "real-features" else f_real - f_rec

    def _r_and_differences(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """R-scores (N,) and the feature vectors of :meth:`feature_vectors` (N, F) of rows X, float64, in batches."""
        self.nets.eval()

        def stats(x):
            f_real, f_rec = self.pair_features(x)
            return torch.cat([losses.r_score(f_real, f_rec).unsqueeze(1), self.feature_vectors(f_real, f_rec)], 1)

        both = self.map_batches(stats, X, desc="score statistics").double()
        return both[:, 0], both[:, 1:]

    def _fit_score_statistics(self, X: torch.Tensor) -> None:
        """Fit the score's Gaussian to the training rows (streamed in batches; all ranks see all rows):
        N(μ, σ²) of the R-scores (eq. 6), and for the feature scores (``a-features``,
        ``real-features``) N(μ, Σ) of the feature vectors."""
        r, diff = self._r_and_differences(X)
        self.r_mean_ = float(r.mean())
        self.r_std_ = float(r.std(unbiased=False)) if r.numel() > 1 else 1.0
        if not math.isfinite(self.r_mean_) or not math.isfinite(self.r_std_) or not bool(torch.isfinite(diff).all()):
            raise ValueError("training R-scores are not finite; the model diverged")
        self.feature_gaussian_ = FeatureGaussian.fit(diff) if self.hp.score in FEATURE_SCORES else None

    def _training_scores(self, X: torch.Tensor) -> torch.Tensor:
        """The training rows scored as new rows are: for the feature scores each row under the Gaussian of
        the other folds (``FeatureGaussian.cross_fitted_scores``; in-sample scores flag too much)."""
        r, diff = self._r_and_differences(X)
        if self.feature_gaussian_ is not None:
            return FeatureGaussian.cross_fitted_scores(diff)
        return self._scores_from(r, diff)

    def _scores_from(self, r: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
        if self.hp.score == "r":
            return r.double()
        if self.hp.score in FEATURE_SCORES:  # eq. 6 on the vector whose L1 norm is R (eq. 5), or on f(x,x)
            return self.feature_gaussian_.neg_log_density(diff)
        return losses.neg_log_a_score(r, self.r_mean_, self.r_std_)

    @torch.no_grad()
    def _score(self, X):
        f_real, f_rec = self.pair_features(X)
        return self._scores_from(losses.r_score(f_real, f_rec), self.feature_vectors(f_real, f_rec))

    def _reconstruct(self, x):
        return self.nets["generator"](self.nets["encoder"](x))

    def _extra_state(self):
        return {"r_mean": self.r_mean_, "r_std": self.r_std_, **FeatureGaussian.optional_state(self.feature_gaussian_)}

    def _load_extra_state(self, state):
        self.r_mean_ = float(state["r_mean"])
        self.r_std_ = float(state["r_std"])
        self.feature_gaussian_ = FeatureGaussian.from_optional_state(state, required=self.hp.score in FEATURE_SCORES, score=self.hp.score)
