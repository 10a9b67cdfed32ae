"""ADGAN detector: WGAN training (eq. 2) and the latent-search score (Algorithm 1).

Training: a WGAN on the normal data. Each trainer step is one critic step on a fresh minibatch
(maximise E[d(x)] − E[d(g(z))], z ~ N(0, I)) under a gradient penalty (λ = 10, Adam betas
(0.5, 0.9)) or weight clipping (c = 0.01, RMSprop, as in the original WGAN); every ``n_critic``-th
step also takes one generator step. All noise comes from the trainer's seeded generator. The
critic is kept: the default score (``critic-gaussian``: −log density of its features f(x) under a
Gaussian fitted to the training rows, no search) and ``residual-gaussian`` (the same on
f(x) − f(x̂) of the search's best x̂), neither of them the paper's, use its features; the
``score="critic"`` ablation its value; Algorithm 1's ``score="loss"`` does not use it.

Starting point of the search (``start``): ``prior`` is Algorithm 1 (n_seed draws from p_z, the
same for every sample); ``encoder`` follows the paper's section 5 ("initializing from an
approximate inversion of the generator as in ALI"): after the WGAN, an encoder E is trained with
g_θ and the critic fixed to invert g_θ on the normal data (f-AnoGAN's izi_f objective,
:func:`.losses.encoder_loss`), and the search starts from E(x) (more seeds: E(x) plus
``start_noise`` times the seeded draws). The loss may also be the Laplacian pyramid loss the
paper names (``loss="laplacian"``, images).

Scoring. The default, ``score="critic-gaussian"``, is not the paper's: −log density of the trained
critic's features f(x) under a Gaussian (Ledoit-Wolf) fitted to the training rows' features, with
no search (chosen on the validation split, 3 seeds: 0.902 against 0.851 for Algorithm 1 over
five Fashion-MNIST classes, above it on every one, at a thirtieth of the scoring time;
docs/methods/adgan.md). The paper's score is one switch away,
``score="loss"`` (Algorithm 1): for each test sample, ``n_seed`` starting latents, ``k``
Adam steps (lr γ for z, γ_θ for θ, betas (0.5, 0.999)) on ℓ(g_θ(z), x), θ reset to the trained
weights for every sample; the score is the mean final loss over the seeds (higher = more
anomalous). ``theta_copies`` says who owns a θ copy (``seed``: Algorithm 1; ``sample``: one per
sample, shared by its seeds; ``none``: θ fixed) and ``scoring`` picks the implementation
(``batched``, ``vmap``, or the literal ``reference`` loop); see :mod:`.search`. The starting
latents are one seeded draw shared by all samples, so scores are reproducible and independent
of batching. The report's reconstructions are g_{θ_k}(z_k) of each sample's best seed.

Budgets. CPU (2 cores): digits class 0 with the defaults in about a minute. Fashion-MNIST one
class (6,000 images, 10,000 test): the search is the cost (n_seed·k generator passes with their own
θ per sample); a CPU run is practical with e.g. ``--max-train 2000 --epochs 20 --set n_seed=8``
(see docs/methods/adgan.md for measured times). Paper (GPU): latent_dim 256, g_width 64 /
d_width 64 (DCGAN), n_seed 64, k 5, epochs until the WGAN converges.
"""
from __future__ import annotations

import math

import torch

from anomalykit import Detector, InputError, Param
from anomalykit.sdk import FeatureGaussian, frozen, gp_weight_param, latent_dim_param, lipschitz_param

from . import losses
from .networks import build_networks
from .search import IMPLEMENTATIONS, THETA_COPIES, SearchConfig, initial_latents, search


#: ``score`` choices; the Gaussian ones are not the paper's (see ``ADGANDetector._fit_feature_gaussian``)
GAUSSIAN_SCORES = ("critic-gaussian", "residual-gaussian")
#: the scores that are a forward pass of the critic (no latent search)
NO_SEARCH_SCORES = ("critic", "critic-gaussian")
SCORES = ("loss", "loss-features", "latent-prior", "critic", *GAUSSIAN_SCORES)


def latent_size(input_shape, requested: int | None) -> int:
    """d': ``requested``, or the paper's 256 for inputs of at least 784 values (28x28, the paper's
    smallest images) and d/4 below: the generator maps a space of much lower dimension than the
    data (paper, footnote 5), and a 256-d latent for 64-pixel digits can reconstruct anything."""
    if requested is not None:
        return int(requested)
    d = math.prod(input_shape)
    return 256 if d >= 784 else max(2, d // 4)


class ADGANDetector(Detector):
    """Anomaly detection with GANs by latent search (see the module docstring)."""

    name = "adgan"
    streams_training_rows = True  # _fit and _training_scores only index, slice and map_batches X
    summary = ("ADGAN: WGAN; score = a Gaussian on the critic's features (default) or Algorithm 1's loss after k Adam steps "
               "on latents and a copy of θ from n_seed starts (score=loss)")
    params = (
        Param("epochs", 300, "training epochs (one critic step per minibatch)", low=0),
        Param("batch_size", 32, "training batch size", low=2),
        Param("score_batch_size", 64, "test samples per scoring batch (each runs n_seed searches)", low=1),
        latent_dim_param("the paper's d' = 256 for inputs of >= 784 values (MNIST-sized), d/4 below (16 for 8x8 digits)"),
        Param("g_width", 8, "base channel width of the generator (paper, DCGAN: 64); the search cost grows with it", low=1),
        Param("d_width", 32, "base channel width of the critic (paper, DCGAN: 64)", low=1),
        Param("hidden", 128, "hidden width of the MLPs used for flat (tabular) inputs", low=4),
        Param("lr", None, "training learning rate; None: 1e-3 with gp (Adam, betas 0.5/0.9; CPU budget, WGAN-GP paper 1e-4), 5e-5 with clip (RMSprop, WGAN paper)", type=float, low=0.0),
        Param("n_critic", 2, "critic steps per generator step (CPU budget; WGAN papers: 5)", low=1),
        lipschitz_param("gp", choices=("gp", "clip")),
        gp_weight_param(10.0),
        Param("clip_value", 0.01, "weight clipping bound c", low=0.0),
        Param("n_seed", 64, "starting latents per test sample (paper: 64)", low=1),
        Param("k", 5, "Adam steps of each search (paper: 5); 0 scores the starting latents", low=0),
        Param("lr_latent", 0.25, "search learning rate γ of the latents (paper: 0.25)", low=0.0),
        Param("lr_theta", 5e-5, "search learning rate γ_θ of the generator copy (paper: 5e-5)", low=0.0),
        Param("search_beta1", 0.5, "search Adam β₁ (paper: 0.5)", low=0.0, high=0.999999),
        Param("search_beta2", 0.999, "search Adam β₂ (paper: 0.999)", low=0.0, high=0.999999),
        Param("loss", "l2", "reconstruction loss ℓ: l2 (squared L2, paper default), l1, or laplacian (Laplacian pyramid L1, "
              "images; the paper's section 5)", choices=("l2", "l1", "laplacian")),
        Param("start", "prior", "search start: prior (Algorithm 1: n_seed seeded draws from p_z) or encoder (E(x), an "
              "approximate inversion of g trained after the WGAN; the paper's section 5)", choices=("prior", "encoder")),
        Param("start_noise", 0.5, "start=encoder: seeds after the first start at E(x) + start_noise x a seeded N(0, I) draw", low=0.0),
        Param("encoder_epochs", None, "start=encoder: epochs of the encoder phase (None = epochs)", type=int, low=0),
        Param("e_width", 32, "start=encoder: base channel width of the encoder", low=1),
        Param("kappa", 1.0, "weight κ of the critic-feature term of the encoder's loss (start=encoder) and of score=loss-features "
              "(f-AnoGAN izi_f)", low=0.0),
        Param("theta_copies", "seed", "who owns a θ copy: seed (Algorithm 1), sample (shared by a sample's seeds), none (θ fixed; ablation)", choices=THETA_COPIES),
        Param("score", "critic-gaussian", "loss (Algorithm 1), loss-features (the search's result scored as f-AnoGAN scores: pixel "
              "residual / n + kappa x critic-feature residual / n_f, mean over seeds), latent-prior (−log p_z of the final "
              "latents), critic (−d(x); sec. 4.3 ablations); not the paper's: critic-gaussian (no search: −log density of the "
              "critic's features f(x) under a Gaussian fitted to the training rows, Ledoit-Wolf, the score AMA and "
              "MAE-simplex take on their critics; the default, chosen on the validation split) or residual-gaussian (the "
              "same Gaussian on f(x) − f(x̂), x̂ the search's best reconstruction)", choices=SCORES),
        Param("scoring", "batched", "search implementation: batched (stacked θ copies, bmm), vmap (torch.func), reference (literal loop)", choices=IMPLEMENTATIONS),
        Param("search_chunk", 0, "θ copies per batched pass; 0 = automatic (fits a pass in cache)", low=0),
    )

    #: Read when scoring (``Detector.score_params``): the score and every setting of the latent
    #: search (its starts are drawn from the seed); not ``scoring``/``search_chunk``, which change
    #: how the search runs, not its result.
    score_params = frozenset({"score", "n_seed", "k", "lr_latent", "lr_theta", "search_beta1", "search_beta2", "loss",
                              "start", "start_noise", "kappa", "theta_copies", "seed"})

    #: ``anomalykit bench --budget``: ``small`` trains 30 epochs and, where the score searches
    #: (``score=loss``), searches from 2 seeds (chosen on the validation split, 3 seeds: 0.851
    #: against 0.835 for 15 epochs / 8 seeds, at a quarter of the scoring time,
    #: docs/methods/adgan.md; the search cost is linear in n_seed); ``paper`` is Algorithm 1 as
    #: published: its score, n_seed = 64, k = 5, and longer training (for a GPU; the paper gives
    #: no epoch count).
    budgets = {"small": {"epochs": 30, "n_seed": 2}, "paper": {"epochs": 300, "n_seed": 64, "k": 5, "score": "loss"}}

    @property
    def score_needs_grad(self) -> bool:
        """Every score but the critic's own two takes Adam steps per sample (the search): exported
        as a TorchScript graph recorded with its gradient steps, a block of samples at a time (no
        ONNX; see anomalykit.export). ``critic`` and ``critic-gaussian`` are forward passes and
        export to both formats."""
        return self.hp.score not in NO_SEARCH_SCORES

    # -- networks --------------------------------------------------------------------------------
    def _build(self, input_shape):
        hp = self.hp
        self.latent_dim_ = latent_size(input_shape, hp.latent_dim)
        if hp.loss == "laplacian" and len(input_shape) != 3:
            raise InputError(f"adgan loss=laplacian needs images (N, C, H, W); got samples of shape {tuple(input_shape)}; use loss=l2")
        self.nets.update(build_networks(input_shape, latent_dim=self.latent_dim_, g_width=hp.g_width, d_width=hp.d_width, hidden=hp.hidden,
                                        encoder=hp.start == "encoder", e_width=hp.e_width))

    @property
    def search_config(self) -> SearchConfig:
        hp = self.hp
        return SearchConfig(
            steps=hp.k,
            lr_latent=hp.lr_latent,
            lr_theta=hp.lr_theta,
            betas=(hp.search_beta1, hp.search_beta2),
            loss=hp.loss,
            theta_copies=hp.theta_copies,
        )

    # -- training --------------------------------------------------------------------------------
    def _fit(self, X, y):
        hp, nets = self.hp, self.nets
        if hp.lipschitz == "gp":
            lr = 1e-3 if hp.lr is None else hp.lr
            make = lambda m: torch.optim.Adam(m.parameters(), lr=lr, betas=(0.5, 0.9))  # noqa: E731
        else:
            lr = 5e-5 if hp.lr is None else hp.lr
            make = lambda m: torch.optim.RMSprop(m.parameters(), lr=lr)  # noqa: E731
        trainer = self.trainer(modules={k: nets[k] for k in ("generator", "critic")},
                               optimizers={"critic": make(nets["critic"]), "generator": make(nets["generator"])})
        trainer.run(X, self._train_step)
        if hp.start == "encoder":
            nets["generator"].eval()  # g_θ and the critic are fixed while E learns to invert g_θ
            nets["critic"].eval()
            lr = 1e-3 if hp.lr is None or hp.lipschitz == "clip" else hp.lr
            enc = self.trainer(modules={"encoder": nets["encoder"]}, phase="encoder",
                               optimizers={"encoder": torch.optim.Adam(nets["encoder"].parameters(), lr=lr, betas=(0.5, 0.9))},
                               epochs=hp.encoder_epochs)  # None: the main training's length
            enc.run(X, self._encoder_step)
        # last: residual-gaussian searches from E(x) when start=encoder, so E must be trained first
        self._fit_feature_gaussian(X)

    def _encoder_step(self, x: torch.Tensor, ctx) -> dict[str, torch.Tensor]:
        """One step of E on izi_f (f-AnoGAN): reconstruct x through g_θ(E(x)), pixels and critic features."""
        G, critic = self.nets["generator"], self.nets["critic"]
        with frozen(G), frozen(critic):
            x_rec = G(ctx.nets["encoder"](x))
            with torch.no_grad():
                f_x = critic.features(x)
            loss = losses.encoder_loss(x, x_rec, f_x, critic.features(x_rec), kappa=self.hp.kappa)
            ctx.update("encoder", loss, term="encoder")
        return {"encoder": loss.detach()}

    def _train_step(self, x: torch.Tensor, ctx) -> dict[str, torch.Tensor]:
        hp = self.hp
        # ctx.nets: DDP-wrapped under torchrun (gradients averaged across ranks), the modules otherwise;
        # a network that is not updated in a step is called as the plain module
        n = x.shape[0]
        # critic: max_ω E[d(x)] − E[d(g(z))] (eq. 2), Lipschitz by gradient penalty or clipping
        D = ctx.nets["critic"]
        z = torch.randn(n, self.latent_dim_, generator=ctx.generator, device=x.device)
        with torch.no_grad():
            fake = self.nets["generator"](z)
        loss_d = losses.critic_loss(D(x), D(fake))
        logged = {"wasserstein": -loss_d.detach()}
        if hp.lipschitz == "gp" and hp.gp_weight > 0:
            gp = losses.gradient_penalty(D, x, fake, generator=ctx.generator)
            loss_d = loss_d + hp.gp_weight * gp
            logged["gp"] = gp.detach()
        ctx.update("critic", loss_d, term="critic")
        if hp.lipschitz == "clip":
            losses.clip_weights_(self.nets["critic"], hp.clip_value)
        # generator: min_θ −E[d(g_θ(z))], every n_critic-th step
        if (ctx.step + 1) % hp.n_critic == 0:
            z = torch.randn(n, self.latent_dim_, generator=ctx.generator, device=x.device)
            critic = self.nets["critic"]
            with frozen(critic):
                loss_g = losses.generator_loss(critic(ctx.nets["generator"](z)))
                ctx.update("generator", loss_g, term="generator")
            logged["generator"] = loss_g.detach()
        return logged

    # -- scoring ---------------------------------------------------------------------------------
    def starting_latents(self) -> torch.Tensor:
        """The n_seed starting latents z_{j,0} shared by every test sample (seeded by ``seed``);
        drawn once per (n_seed, d', seed, device) and kept, so an exported score holds them as a
        constant instead of a random draw."""
        key = (self.hp.n_seed, self.latent_dim_, self.hp.seed, str(self.device))
        if getattr(self, "_z0_key", None) != key:
            self._z0 = initial_latents(self.hp.n_seed, self.latent_dim_, self.hp.seed, device=self.device)
            self._z0_key = key
        return self._z0

    def search_starts(self, X: torch.Tensor) -> torch.Tensor:
        """The starting latents of the search for a batch ``X`` (model space): the shared
        (n_seed, d') draws (``start="prior"``) or (N, n_seed, d') around E(x) (``start="encoder"``:
        the first seed E(x) itself, the others E(x) + start_noise · the seeded draws)."""
        if self.hp.start == "prior":
            return self.starting_latents()
        with torch.no_grad():
            e = self.nets["encoder"].eval()(X)  # (N, d')
        z = e.unsqueeze(1).expand(e.shape[0], self.hp.n_seed, e.shape[1])
        if self.hp.n_seed == 1 or self.hp.start_noise == 0:
            return z.contiguous()
        noise = self.starting_latents().clone()
        noise[0] = 0  # seed 0 is E(x) itself
        return z + self.hp.start_noise * noise.unsqueeze(0)

    def latent_search(self, X: torch.Tensor, *, keep_outputs: bool = False):
        """Algorithm 1 on a batch ``X`` (on ``self.device``): a :class:`~.search.SearchResult`."""
        G = self.nets["generator"].eval()
        return search(
            G, X, self.search_starts(X), self.search_config,
            implementation=self.hp.scoring, chunk=self.hp.search_chunk, keep_outputs=keep_outputs,
        )

    def score_features(self, X: torch.Tensor) -> torch.Tensor:
        """The vectors the Gaussian scores see, for a batch ``X`` (model space, on ``self.device``):
        f(x) (``critic-gaussian``) or f(x) − f(x̂) with x̂ = g_{θ_k}(z_k) of the best seed
        (``residual-gaussian``), f the critic's penultimate features: (N, F) float64."""
        critic = self.nets["critic"].eval()
        x_hat = self.latent_search(X, keep_outputs=True).best_outputs() if self.hp.score == "residual-gaussian" else None
        with torch.no_grad():
            f = critic.features(X)
            return (f if x_hat is None else f - critic.features(x_hat)).double()

    def _fit_feature_gaussian(self, X: torch.Tensor) -> None:
        """The Gaussian scores (``score`` critic-gaussian or residual-gaussian): fit N(μ, Σ)
        (Ledoit-Wolf, :class:`~anomalykit.sdk.FeatureGaussian`) to :meth:`score_features` of the
        training rows; the score is −log N(v; μ, Σ). Not in the ADGAN paper (whose score is
        Algorithm 1's search loss): it is AMA's eq. 6 on feature vectors and MAE-simplex's score,
        applied to the WGAN critic that ADGAN trains anyway."""
        self.feature_gaussian_ = None
        if self.hp.score in GAUSSIAN_SCORES:
            v = self.map_batches(self.score_features, X, desc="score features")
            if not bool(torch.isfinite(v).all()):
                raise ValueError("the critic's features of the training rows are not finite; the WGAN diverged")
            self.feature_gaussian_ = FeatureGaussian.fit(v)

    def _training_scores(self, X: torch.Tensor) -> torch.Tensor:
        """Gaussian scores: each training row under the Gaussian of the other folds (in-sample
        scores sit too close to the mean and would set too low a threshold); else the core's rule."""
        if self.hp.score in GAUSSIAN_SCORES:
            return FeatureGaussian.cross_fitted_scores(self.map_batches(self.score_features, X, desc="threshold"))
        return super()._training_scores(X)

    def _extra_state(self) -> dict:
        return FeatureGaussian.optional_state(self.feature_gaussian_)

    def _load_extra_state(self, state: dict) -> None:
        self.feature_gaussian_ = FeatureGaussian.from_optional_state(state, required=self.hp.score in GAUSSIAN_SCORES,
                                                                     score=self.hp.score)

    def _score(self, X):
        if self.hp.score in GAUSSIAN_SCORES:
            return self.feature_gaussian_.neg_log_density(self.score_features(X))
        if self.hp.score == "critic":
            with torch.no_grad():
                return losses.critic_score(self.nets["critic"](X))
        if self.hp.score == "loss-features":
            result = self.latent_search(X, keep_outputs=True)
            n, S = X.shape[0], result.outputs.shape[1]
            with torch.no_grad():
                critic = self.nets["critic"].eval()
                f_x = critic.features(X)
                f_rec = critic.features(result.outputs.reshape(n * S, *X.shape[1:])).reshape(n, S, -1)
            return losses.feature_score(result.losses, f_x, f_rec, X[0].numel(), self.hp.kappa)
        result = self.latent_search(X)
        if self.hp.score == "latent-prior":
            return losses.latent_prior_nll(result.latents).mean(1)
        return result.scores()

    def _export_params(self):
        """Export records the ``batched`` search: the tracer cannot record the convolution
        gradients of ``vmap``/``reference`` (the three give the same scores up to summation order)."""
        return {"scoring": "batched"}

    def _reconstruct(self, x):
        """g_{θ_k}(z_k) from each sample's best seed (lowest final loss), same shape as ``x``."""
        return self.latent_search(x, keep_outputs=True).best_outputs()
