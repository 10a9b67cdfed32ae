"""MAE-simplex detector: a mirrored adversarial autoencoder trained with m-point simplex
interpolation (Wu, Balaji, Vinzamuri, Feizi 2020; eq. 3-5, sec. 5.2 and the supplementary's
training algorithm).

Training (one step = one minibatch x, as in the supplementary's algorithm):

1. ``n_critic`` critic updates on the same minibatch (x_hat = G(E(x)) fixed, a fresh simplex
   draw each time): D_recon minimises eq. (4) negated + gp_weight * gradient penalty, D_inter
   minimises eq. (3); one loss D_total = both, stepping both critics.
2. One E/G update on eq. (5): lambda * sum_i alpha_i ||D_inter(x_i, x_hat_inter)||^2
   - D_recon(x, x_hat) + max(||E(x)|| - sqrt(d), 0). The interpolation term is NOT detached:
   it trains E and G (the authors' public code detaches it; see SPEC section 8).
3. Model selection ("pick best model"): at the end of every epoch from ``select_after`` on,
   the mean training feature-L1 ||f(x,x) - f(x,G(E(x)))||_1 over a fixed subset of training
   rows is measured; the weights of the epoch with the smallest value are kept (a snapshot in
   the trainer's ``extra`` state, so it survives ``--resume``). Unsupervised: no labels used.

Score (sec. 5.2): ||f(x, x) - f(x, G(E(x)))||_1, f = D_recon's penultimate features; higher =
more anomalous.

Budgets. Default run (digits, normal class 0, 124 training images, 60 epochs): about 15-20 s of
training single-threaded on a 2-core CPU. Fashion-MNIST one-class on a CPU:
``--max-train 2000 --epochs 10``, 4-6 minutes per class (docs/methods/mae-simplex.md has the
measured numbers); with more images, cap the steps (``max_steps=320``, what ``--budget small``
sets): more steps lower the OOD score at 50,000-60,000 images.
Paper budget (GPU): all ~6000 images of the class, 50 epochs (MNIST table) or 100 (CIFAR),
batch 256, width 64, hidden 1024, latent 64, n_critic 5, select after 60% of the epochs:
``--epochs 50 --batch-size 256 --set width=64 --set hidden=1024 --set n_critic=5``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from anomalykit import Detector, InputError, Param
from anomalykit.sdk import (
    SIMPLEX_SCHEMES,
    FeatureGaussian,
    RenamedParam,
    frozen,
    gp_weight_param,
    gradient_penalty,
    is_image,
    lipschitz_param,
    sample_simplex,
    simplex_mix,
    simplex_k_param,
    stack_pair,
)

from . import losses
from .networks import build_networks


class MAESimplex(Detector):
    """Mirrored adversarial autoencoder + m-point simplex interpolation (see module docstring)."""

    name = "mae-simplex"
    streams_training_rows = True  # _fit and _training_scores only index, slice and map_batches X
    summary = "Mirrored adversarial autoencoder with m-point simplex interpolation critic (Wu et al. 2020)"
    #: names of anomalykit 0.1.0 (the same idea has the same name in every method since 0.2.0)
    renamed_params = (RenamedParam("m", "simplex_k", 3), RenamedParam("lambda_gp", "gp_weight", 10.0))
    params = (
        Param("epochs", 60, "training epochs", low=0),
        Param("batch_size", 64, "training batch size (paper: 256)", low=2),
        Param("latent_dim", None, "latent size d (None = 64 for images as in the paper's MNIST table; "
              "for tabular rows the power of two nearest F/4 in [4, 64])", type=int, low=1),
        Param("width", 32, "image nets: channels of the first conv (doubling per stride-2 conv; paper 64)", low=1),
        Param("hidden", 256, "image nets: dense width = D_recon feature size (paper 1024)", low=1),
        simplex_k_param(3, allow_off=True, paper_name="m; 0 also drops D_inter"),
        Param("lambda_inter", 0.5, "weight lambda of the interpolation term in eq. 5", low=0.0),
        Param("latent_reg", True, "latent regulariser max(||E(x)|| - sqrt(d), 0) on/off (sec. 4.2)"),
        Param("simplex_scheme", "normalized", "simplex weights: normalized = alpha_i ~ U(0, 0.5] divided by their "
              "sum (the paper's text); residual = the authors' code (last alpha = 1 - the others)",
              choices=SIMPLEX_SCHEMES),
        lipschitz_param("gp", help="D_recon Lipschitz constraint: gp (gradient penalty), sn (spectral norm), or both (authors' code)"),
        gp_weight_param(10.0),
        Param("n_critic", 2, "critic updates per E/G update, on the same minibatch (paper's tfd; authors: 5)", low=1),
        Param("lr", None, "Adam learning rate of G, D_recon and D_inter (None = 1e-4 for images, the paper's "
              "MNIST table; 3e-4 for tabular rows, the paper's main text)", type=float, low=0.0),
        Param("lr_encoder", None, "Adam learning rate of E (None = the same as lr)", type=float, low=0.0),
        Param("beta1", 0.0, "Adam beta1 of G, D_recon and D_inter", low=0.0, high=0.999),
        Param("beta1_encoder", 0.5, "Adam beta1 of E", low=0.0, high=0.999),
        Param("beta2", 0.999, "Adam beta2 of all nets", low=0.0, high=0.9999),
        Param("select_best", True, "keep the epoch with the smallest mean training feature-L1 (else the last)"),
        Param("select_after", None, "first epoch index eligible for model selection "
              "(None = 60% of the epochs, the paper's 60 of 100)", type=int, low=0),
        Param("select_rows", 2048, "training rows (fixed seeded subset) averaged for model selection", low=1),
        Param("score", "feature-gaussian", "feature-gaussian (default, chosen on the validation split): -log density of the "
              "difference f(x,x) - f(x,x_hat) under a Gaussian fitted to the training rows (Ledoit-Wolf); feature-l1: the "
              "paper's ||f(x,x) - f(x,x_hat)||_1 (sec. 5.2), which stays the model-selection criterion either way",
              choices=("feature-l1", "feature-gaussian")),
    )

    #: Read when scoring (``Detector.score_params``).
    score_params = frozenset({"score"})

    #: Parameter overrides for ``anomalykit bench --budget``: ``small`` is the CPU budget measured
    #: in docs/methods/mae-simplex.md: 10 epochs capped at 320 steps (the 10 epochs of 2,000
    #: images; 3 epochs of a whole Fashion-MNIST class, 320 batches of one epoch at 60,000 images;
    #: the cap chosen on the validation split, where more steps lower the OOD score); ``paper`` is
    #: the paper's MNIST schedule and widths with the authors' n_critic (for a GPU).
    budgets = {
        "small": {"epochs": 10, "max_steps": 320},
        "paper": {"epochs": 50, "batch_size": 256, "width": 64, "hidden": 1024, "n_critic": 5},
    }

    # -- networks ------------------------------------------------------------------------------
    def _build(self, input_shape):
        self.image_ = is_image(input_shape)
        nets, self.latent_dim_ = build_networks(
            input_shape,
            latent_dim=self.hp.latent_dim,
            width=self.hp.width,
            hidden=self.hp.hidden,
            spectral_norm=self.hp.lipschitz in ("sn", "both"),
            image=self.image_,
        )
        if self.hp.simplex_k == 0:
            del nets["d_inter"]
        self.nets.update(nets)
        self.selected_epoch_: int | None = None
        self.feature_gaussian_: FeatureGaussian | None = None

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        hp = self.hp
        lr = hp.lr if hp.lr is not None else (1e-4 if self.image_ else 3e-4)
        lr_e = hp.lr_encoder if hp.lr_encoder is not None else lr
        betas, betas_e = (hp.beta1, hp.beta2), (hp.beta1_encoder, hp.beta2)
        opts = {
            "encoder": torch.optim.Adam(self.nets["encoder"].parameters(), lr=lr_e, betas=betas_e),
            "generator": torch.optim.Adam(self.nets["generator"].parameters(), lr=lr, betas=betas),
            "d_recon": torch.optim.Adam(self.nets["d_recon"].parameters(), lr=lr, betas=betas),
        }
        if "d_inter" in self.nets:
            opts["d_inter"] = torch.optim.Adam(self.nets["d_inter"].parameters(), lr=lr, betas=betas)
        return opts

    # -- pieces of a step ----------------------------------------------------------------------
    def _draw_simplex(self, n: int, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        """(index (n, m), alpha (n, m)): m vertices from the minibatch of n rows, alpha on the simplex."""
        return sample_simplex(n, self.hp.simplex_k, n_latents=n, generator=ctx.generator, device=self.device,
                              scheme=self.hp.simplex_scheme)

    @staticmethod
    def _inter_outputs(d_inter: nn.Module, x: torch.Tensor, x_inter: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """D_inter(x_i, x_hat_inter) for every vertex i, one batched call: (n, m)."""
        n, m = index.shape
        vertices = x[index.t().reshape(-1)]  # (m*n, ...), vertex-major
        pairs = stack_pair(vertices, x_inter.repeat((m,) + (1,) * (x_inter.dim() - 1)))
        return d_inter(pairs).reshape(m, n).t()

    def _critic_step(self, x: torch.Tensor, ctx) -> dict[str, float]:
        # E and G are fixed here (plain modules); the critics are trained, so they are called
        # through ctx.nets (DistributedDataParallel under torchrun, the modules otherwise).
        enc, gen = self.nets["encoder"], self.nets["generator"]
        d_recon, d_inter = ctx.nets["d_recon"], ctx.nets.get("d_inter")
        hp = self.hp
        with torch.no_grad():
            z = enc(x)
            x_hat = gen(z)
        real, fake = stack_pair(x, x), stack_pair(x, x_hat)
        names = ("d_recon", "d_inter") if hp.simplex_k else ("d_recon",)
        out: dict[str, float] = {}
        n = x.shape[0]
        for _ in range(hp.n_critic):
            d_pairs = d_recon(torch.cat([real, fake]))  # one call for (x, x) and (x, x_hat)
            w_loss = losses.recon_critic_loss(d_pairs[:n], d_pairs[n:])
            total = w_loss
            gp = None
            if hp.lipschitz in ("gp", "both") and hp.gp_weight > 0:
                gp = gradient_penalty(d_recon, real, fake, generator=ctx.generator)
                total = total + hp.gp_weight * gp
            inter = None
            if hp.simplex_k:
                index, alpha = self._draw_simplex(x.shape[0], ctx)
                with torch.no_grad():
                    x_inter = gen(simplex_mix(z, index, alpha))
                inter = losses.inter_critic_loss(self._inter_outputs(d_inter, x, x_inter, index), alpha)
                total = total + inter
            ctx.update(names, total, term="critic (D_recon + D_inter)")
        out["wasserstein"] = -float(w_loss.detach())
        if gp is not None:
            out["gp"] = float(gp.detach())
        if inter is not None:
            out["d_inter"] = float(inter.detach())
        return out

    def _generator_step(self, x: torch.Tensor, ctx) -> dict[str, float]:
        # E and G are trained (ctx.nets); the critics are frozen, so their plain modules are used.
        enc, gen, d_recon = ctx.nets["encoder"], ctx.nets["generator"], self.nets["d_recon"]
        hp = self.hp
        critics = [self.nets[k] for k in ("d_recon", "d_inter") if k in self.nets]
        with frozen(*critics):
            z = enc(x)
            d_inter = alpha = None
            if hp.simplex_k:
                index, alpha = self._draw_simplex(x.shape[0], ctx)
                both = gen(torch.cat([z, simplex_mix(z, index, alpha)]))  # one G call for x_hat and x_hat_inter
                x_hat, x_inter = both[: x.shape[0]], both[x.shape[0]:]
                d_inter = self._inter_outputs(self.nets["d_inter"], x, x_inter, index)
            else:
                x_hat = gen(z)
            terms = losses.generator_objective(
                d_recon(stack_pair(x, x_hat)), z, d_inter, alpha,
                lambda_inter=hp.lambda_inter, latent_reg=hp.latent_reg,
            )
            ctx.update(("encoder", "generator"), terms["total"], term="encoder/generator (eq. 5)")
        return {f"g_{k}": float(v.detach()) for k, v in terms.items()}

    # -- model selection -----------------------------------------------------------------------
    def _selection_start(self) -> int:
        if self.hp.select_after is not None:
            return self.hp.select_after
        return int(math.floor(0.6 * self.epochs_))

    def _on_epoch_end(self, X_sel: torch.Tensor):
        def hook(epoch: int, ctx) -> dict[str, float]:
            # (the trainer has already synchronised BatchNorm statistics across ranks here)
            self.nets.eval()
            value = float(self.map_batches(lambda x: losses.feature_l1(*self._pair_features(x)), X_sel, desc="select").mean())
            self.nets.train()
            best = ctx.extra.get("best")
            eligible = self.hp.select_best and epoch >= self._selection_start()
            if eligible and (best is None or value < best["feat_l1"]):
                state = {k: v.detach().clone() for k, v in self.nets.state_dict().items()}
                ctx.extra["best"] = best = {"epoch": epoch, "feat_l1": value, "state": state}
            logged = {"select_feat_l1": value}
            if best is not None:
                logged["best_epoch"] = float(best["epoch"])
            return logged

        return hook

    # -- fit / score -----------------------------------------------------------------------------
    def _fit(self, X, y):
        if X.shape[0] < 2:
            raise InputError("mae-simplex needs at least 2 training rows")
        g = torch.Generator().manual_seed(self.hp.seed)
        X_sel = X[torch.randperm(X.shape[0], generator=g)[: self.hp.select_rows]]
        trainer = self.trainer(optimizers=self._optimizers())

        def step(x, ctx):
            logged = self._critic_step(x, ctx)
            logged.update(self._generator_step(x, ctx))
            return logged

        trainer.run(X, step, on_epoch_end=self._on_epoch_end(X_sel))
        best = trainer.extra.get("best")
        if best is not None:
            self.nets.load_state_dict(best["state"])
            self.selected_epoch_ = int(best["epoch"])
        else:
            self.selected_epoch_ = self.epochs_ - 1 if self.epochs_ else None
        self.nets.eval()
        if self.hp.score == "feature-gaussian":
            self.feature_gaussian_ = FeatureGaussian.fit(self._differences(X))

    def _differences(self, X: torch.Tensor) -> torch.Tensor:
        """f(x, x) − f(x, G(E(x))) of rows X, in batches: (N, F)."""
        return self.map_batches(lambda x: torch.sub(*self._pair_features(x)), X, desc="score statistics")

    def _training_scores(self, X: torch.Tensor) -> torch.Tensor:
        """feature-gaussian: each training row under the Gaussian of the other folds (in-sample
        scores flag too much on new data); feature-l1: the score itself."""
        if self.hp.score == "feature-gaussian":
            return FeatureGaussian.cross_fitted_scores(self._differences(X))
        return super()._training_scores(X)

    def _pair_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f(x, x) and f(x, G(E(x))), one D_recon call on the 2N stacked pairs."""
        x_hat = self.nets["generator"](self.nets["encoder"](x))
        f = self.nets["d_recon"].features(torch.cat([stack_pair(x, x), stack_pair(x, x_hat)]))
        return f[: x.shape[0]], f[x.shape[0]:]

    @torch.no_grad()
    def _score(self, X):
        f_real, f_fake = self._pair_features(X)
        if self.hp.score == "feature-gaussian":
            return self.feature_gaussian_.neg_log_density(f_real - f_fake)
        return losses.feature_l1(f_real, f_fake)

    def _reconstruct(self, x):
        return self.nets["generator"](self.nets["encoder"](x))

    def _extra_state(self) -> dict:
        return {"selected_epoch": -1 if self.selected_epoch_ is None else int(self.selected_epoch_),
                **FeatureGaussian.optional_state(self.feature_gaussian_)}

    def _load_extra_state(self, state: dict) -> None:
        epoch = int(state.get("selected_epoch", -1))
        self.selected_epoch_ = None if epoch < 0 else epoch
        self.feature_gaussian_ = FeatureGaussian.from_optional_state(state, required=self.hp.score == "feature-gaussian",
                                                                     score=self.hp.score)
