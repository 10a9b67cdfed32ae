"""CSI-AAE: contrastive learning on shifted instances (CSI) joined with an adversarial autoencoder.

Paper: Yu & Chiu, "Boosting Semi-Supervised Anomaly Detection via Contrasting Synthetic
Images" (``papers/csi-aae-contrasting-synthetic-images.txt``), section 2, eq. 1-11, Algorithm 1.

Training (Algorithm 1), for every batch X:

1. F step on L_CSI(X) (eq. 4 = eq. 2 + eq. 3);
2. every ``aae_every`` (N = 5) batches, with h ~ N(0, I):
   D step on eq. 7 and the adversarial G, E step; G step on L_CSI-S = L_CSI(G(h)) (eq. 6);
   D' step on eq. 9 and the adversarial E step; G, E step on L_REC (eq. 8); E step on
   L_LREC (eq. 10); F step on L_JOINT = L_CSI(X u G(h)) (eq. 5).

Score (eq. 11): M(x) = sum_S sim(F(S x), F(S x-check)) [* ||F(S x)||] over the four rotations
S, x-check the training sample with the largest sum_S sim; **the public score is -M(x)**
(higher = more anomalous). Defaults: pooled backbone features and no norm factor
(``score_space=backbone score_norm=false``); the paper's exact score is ``score_norm=true
score_space=projection``; at CPU training lengths anomalies get *larger* feature norms, and the
norm factor costs 5-18 AUROC points (measured in docs/methods/csi-aae.md). ``score=gaussian`` (not
the paper's) replaces the search by a Ledoit-Wolf Gaussian per shift S on the unit training
features, the score being sum_S -log N(F(S x) / ||F(S x)||; mu_S, Sigma_S). The training features
F(S x) are kept as fitted state, so a saved model scores without the training data.
``decision_scores_`` (the training scores behind ``threshold_``) are leave-one-out: each
training sample is matched to its nearest *other* training sample, otherwise it would always
find itself and the threshold would be meaninglessly low. Scoring applies the same rule to a
query whose features equal a training row's (a training row scored again, or an exact copy), so
``predict(X_train)`` flags about ``contamination`` of the training rows, like every method.

Budgets (2-core CPU): the defaults run the digits demo (8x8, ~125 training images, 40 epochs)
in well under a minute. Fashion-MNIST one-class (28x28): ``--epochs 3`` on a whole class (6,000
images; ~4-5 min on a busy 2-core machine, AUROC 0.83-0.94 on classes 0/2/6/8), or
``--max-train 2000 --epochs 5`` for a quick look. Paper budget on a GPU: ResNet-18
(``f_width=64 f_stages=4 f_blocks=2 f_stem_stride=1``), batch 32, hundreds of epochs (CSI trains
500 on CIFAR-10 with LARS; this paper uses Adam 2e-4).
"""
from __future__ import annotations


import torch
from torch import nn

from anomalykit import Detector, InputError, Param
from anomalykit.sdk import ConvDecoder, ConvEncoder, FeatureGaussian, frozen, is_image, stream_seed

from .augment import N_ROTATIONS, Augment
from .losses import (
    csi_loss,
    discriminator_loss,
    encoder_latent_adversarial_loss,
    generator_adversarial_loss,
    latent_discriminator_loss,
    latent_reconstruction_loss,
    nearest_neighbour_score,
    reconstruction_loss,
    shifted_features,
)
from .networks import FeatureExtractor, ImageDiscriminator, LatentDiscriminator

VARIANTS = ("full", "generator", "csi")
#: ``score`` choices: eq. 11's nearest neighbour (the paper) or a Gaussian per shift (not the paper's)
SCORES = ("nearest", "gaussian")


class CSIAAE(Detector):
    """CSI feature extractor trained jointly with an adversarial autoencoder; nearest-neighbour score.

    See the module docstring for the algorithm, the score's sign and the CPU/GPU budgets.
    Ablations of the paper (section 3.2): ``variant=csi`` (plain CSI, no generative model),
    ``variant=generator`` (CSI + generator G and discriminator D, no encoder), ``variant=full``.
    Every loss term is a switch: ``shift_rotations`` (eq. 2), ``rotation_cls`` (eq. 3),
    ``joint`` (eq. 5), ``csi_s`` (eq. 6), ``image_adv`` (eq. 7), ``rec_sim``/``lambda_rec``
    (eq. 8), ``latent_adv`` (eq. 9), ``latent_rec`` (eq. 10).
    """

    name = "csi-aae"
    streams_training_rows = True  # _fit and _training_scores only index, slice and map_batches X
    summary = "CSI contrastive learning on shifted instances + adversarial autoencoder (Yu & Chiu)"
    params = (
        Param("epochs", 40, "training epochs (passes over the normal training images)", low=0),
        Param("batch_size", 32, "real images per batch (x4 rotations x2 views go through F)", low=2),
        Param("variant", "full", "full = CSI + AAE; generator = CSI + G/D only (no encoder); csi = plain CSI", choices=VARIANTS),
        # F: small ResNet
        Param("f_width", 16, "ResNet width of the first stage (doubles per stage; ResNet-18: 64)", low=1),
        Param("f_stages", 3, "ResNet stages (each after the first halves the side; ResNet-18: 4)", low=1),
        Param("f_stem_stride", None, "stride of F's stem conv (None = 2 for sides >= 16, else 1; CIFAR ResNets: 1)", type=int, low=1, high=4),
        Param("f_blocks", 1, "basic blocks per stage (ResNet-18: 2)", low=1),
        Param("proj_dim", 128, "output size of the SimCLR projection head (the z of eq. 1 and 11)", low=1),
        Param("lr_f", 1e-3, "Adam learning rate of F", low=0.0),
        # CSI
        Param("temperature", 0.5, "NT-Xent temperature tau (eq. 1)", low=1e-6),
        Param("shift_rotations", True, "eq. 2: rotations 0/90/180/270 as shifted instances (off = plain SimCLR and a 1-shift score)"),
        Param("rotation_cls", True, "eq. 3: rotation classification loss"),
        Param("crop_scale", 0.5, "augmentation T: smallest random-resized-crop area fraction (SimCLR: 0.08; 1 = no crop)", low=0.01, high=1.0),
        Param("jitter", 0.4, "augmentation T: brightness/contrast jitter strength (0 = off)", low=0.0, high=1.0),
        Param("blur_sigma", 1.0, "augmentation T: largest Gaussian blur sigma in pixels (0 = off)", low=0.0),
        # AAE
        Param("aae_every", 5, "N of Algorithm 1: AAE and joint steps every N batches", low=1),
        Param("latent_dim", 32, "size of the AAE code h", low=1),
        Param("ae_width", 32, "width of E, G and D (doubles per down-sampling)", low=1),
        Param("n_synthetic", None, "synthetic images G(h) per AAE step (None = batch size)", type=int, low=1),
        Param("lr", 2e-4, "Adam learning rate of E, G, D, D' (paper: 2e-4)", low=0.0),
        Param("beta1", 0.9, "Adam beta1 of every optimiser (paper: 0.9)", low=0.0, high=0.999),
        Param("spectral_norm", True, "spectral norm in the image discriminator D (SN-GAN, as the paper's [23])"),
        Param("image_adv", True, "eq. 7: image discriminator D on real vs G(h) vs G(E(x))"),
        Param("csi_s", True, "eq. 6: G step on L_CSI(G(h))"),
        Param("joint", True, "eq. 5: F step on L_CSI(X u G(h))"),
        Param("lambda_rec", 100.0, "eq. 8: weight of the pixel reconstruction error (0 = off)", low=0.0),
        Param("rec_sim", True, "eq. 8: feature term -sim(F(T1 x), F(T2 G(E(x))))"),
        Param("latent_adv", True, "eq. 9: latent discriminator D' on N(0, I) vs E(x)"),
        Param("latent_rec", True, "eq. 10: latent reconstruction ||E(G(h)) - h||^2"),
        # score
        Param("score", "nearest", "nearest = eq. 11 (cosine similarity to the nearest training row, summed over the shifts); "
              "gaussian = not the paper's: a Gaussian fitted to each shift's unit training features, -log densities "
              "summed over the shifts (SSD, Sehwag et al. 2021, on CSI's shifts)", choices=SCORES),
        Param("score_space", "backbone", "features of eq. 11: backbone (pooled ResNet) or projection (z, as CSI)", choices=("projection", "backbone")),
        Param("score_ensemble", 0, "M_ens (sec. 2.3): features averaged over this many fixed random transformations T_r ~ T "
              "(drawn once from the seed, the same for every image, test and training alike); 0 = the plain score M", low=0),
        Param("score_neighbours", 1, "score=nearest: training rows averaged in eq. 11's similarity; 1 = the paper's x-check "
              "alone, k > 1 = the mean over the k nearest (not the paper's: DN2's k-NN score, Bergman et al. 2020)", low=1),
        Param("score_norm", False, "eq. 11: weight each similarity by ||F(S x)|| (the paper; hurts at CPU training lengths, see docs)"),
        Param("bank_chunk", 4096, "training rows per block of the nearest-neighbour search (bounds memory)", low=1),
    )

    #: Read when scoring (``Detector.score_params``): the score, its feature space and transforms
    #: (drawn from the seed), the norm weighting and the neighbours averaged.
    score_params = frozenset({"score", "score_space", "score_ensemble", "score_norm", "score_neighbours", "seed"})

    #: ``anomalykit bench --budget``: ``small`` = 10 epochs (Fashion-MNIST, 2,000 images of a class:
    #: about 2 minutes on 2 CPU cores; chosen on the validation split, docs/methods/csi-aae.md);
    #: ``paper`` = a GPU-length schedule (the paper gives no epoch count).
    budgets = {"small": {"epochs": 10}, "paper": {"epochs": 100, "batch_size": 128}}

    @property
    def export_unsupported(self) -> str | None:
        """The ensemble score draws its fixed transformations (crop, jitter, blur) from seeded
        generators at scoring time, which an exported graph cannot reproduce."""
        if self.hp.score_ensemble > 0:
            return ("score_ensemble > 0 draws its transformations at scoring time; export a model fitted with "
                    "score_ensemble=0")
        return None

    # -- networks ------------------------------------------------------------------------------
    @property
    def n_shifts(self) -> int:
        return N_ROTATIONS if self.hp.shift_rotations else 1

    def _build(self, input_shape):
        if not is_image(input_shape):
            raise InputError(f"csi-aae needs images (N, C, H, W) with sides >= 4; got samples of shape {tuple(input_shape)}")
        c, h, w = input_shape
        if h != w and self.hp.shift_rotations:
            raise InputError(f"csi-aae rotates images by 90 degrees, which needs square images; got {h}x{w} (or set shift_rotations=false)")
        hp = self.hp
        if hp.score == "gaussian" and hp.score_norm:
            raise InputError("csi-aae score_norm=true weights eq. 11's similarities, which score=gaussian has none of; "
                             "set score_norm=false or score=nearest")
        if hp.score == "gaussian" and hp.score_neighbours > 1:
            raise InputError(f"csi-aae score_neighbours={hp.score_neighbours} averages eq. 11's nearest training rows, which "
                             "score=gaussian has none of; set score_neighbours=1 or score=nearest")
        stem = hp.f_stem_stride if hp.f_stem_stride is not None else (2 if min(h, w) >= 16 else 1)
        rot_head = N_ROTATIONS if (hp.rotation_cls and hp.shift_rotations) else 0
        self.nets["F"] = FeatureExtractor(input_shape, hp.f_width, hp.f_stages, hp.f_blocks, hp.proj_dim, rot_head, stem)
        if hp.variant != "csi":
            self.nets["G"] = ConvDecoder(hp.latent_dim, input_shape, width=hp.ae_width)
            if hp.image_adv:
                self.nets["D"] = ImageDiscriminator(input_shape, hp.ae_width, hp.spectral_norm)
            if hp.variant == "full":
                self.nets["E"] = ConvEncoder(input_shape, hp.latent_dim, width=hp.ae_width)
                if hp.latent_adv:
                    self.nets["D_lat"] = LatentDiscriminator(hp.latent_dim)
        self._bank: torch.Tensor | None = None  # (N, K, d) per-shift unit training features
        self.shift_gaussians_: list[FeatureGaussian] | None = None  # score=gaussian: one per shift

    def _augment(self) -> Augment:
        return Augment(self.hp.crop_scale, self.hp.jitter, self.hp.blur_sigma)

    def _csi(self, f: nn.Module, x: torch.Tensor, g: torch.Generator):
        return csi_loss(
            f, x, g, self._augment(),
            n_shifts=self.n_shifts, temperature=self.hp.temperature, rotation_cls=self.hp.rotation_cls,
        )

    # -- training (Algorithm 1) ----------------------------------------------------------------
    def _fit(self, X, y):
        hp = self.hp
        opts = {
            name: torch.optim.Adam(net.parameters(), lr=hp.lr_f if name == "F" else hp.lr, betas=(hp.beta1, 0.999))
            for name, net in self.nets.items()
        }
        trainer = self.trainer(optimizers=opts)

        def step(x, ctx):
            loss, terms = self._csi(ctx.nets["F"], x, ctx.generator)
            log = {"csi": ctx.update("F", loss, term="L_CSI (eq. 4)"), **{k: float(v.detach()) for k, v in terms.items()}}
            if "G" in self.nets and (ctx.step + 1) % hp.aae_every == 0:
                log.update(self._aae_step(x, ctx))
            return log

        trainer.run(X, step)
        self.nets.eval()
        self._fit_bank(X)

    def _aae_step(self, x: torch.Tensor, ctx) -> dict[str, float]:
        """The "every N batches" block of Algorithm 1, in the paper's order.

        Networks updated by a step are called through ``ctx.nets`` (DDP-wrapped under torchrun);
        networks that are fixed in it through ``self.nets`` (the plain modules).
        """
        hp, nets, g = self.hp, self.nets, ctx.generator
        train = ctx.nets
        has_e = "E" in nets
        coders = ("G", "E") if has_e else ("G",)
        n = x.shape[0]
        h = torch.randn(hp.n_synthetic or n, hp.latent_dim, generator=g, device=g.device)
        log: dict[str, float] = {}

        if "D" in nets:  # eq. 7: D on x vs G(h) vs G(E(x)); then G, E fool D
            codes = torch.cat([h, train["E"](x)]) if has_e else h
            fakes = train["G"](codes)  # one generator pass: [G(h); G(E(x))]
            x_syn, x_rec = (fakes[: h.shape[0]], fakes[h.shape[0]:]) if has_e else (fakes, None)
            loss = discriminator_loss(train["D"], x, x_syn.detach(), None if x_rec is None else x_rec.detach())
            log["d"] = ctx.update("D", loss, term="L_D discriminator (eq. 7)")
            with frozen(nets["D"]):
                loss = generator_adversarial_loss(nets["D"], x_syn, x_rec)
            log["adv"] = ctx.update(coders, loss, term="L_D generator (eq. 7)")

        if hp.csi_s:  # eq. 6: G learns from the contrastive loss on its samples (F fixed)
            with frozen(nets["F"]):
                loss, _ = self._csi(nets["F"], train["G"](h), g)
            log["csi_s"] = ctx.update("G", loss, term="L_CSI-S (eq. 6)")

        if has_e:
            if "D_lat" in nets:  # eq. 9: D' on h vs E(x); then E fools D'
                code = train["E"](x)
                loss = latent_discriminator_loss(train["D_lat"], h, code.detach())
                log["d_lat"] = ctx.update("D_lat", loss, term="L_LD discriminator (eq. 9)")
                with frozen(nets["D_lat"]):
                    loss = encoder_latent_adversarial_loss(nets["D_lat"], code)
                log["adv_lat"] = ctx.update("E", loss, term="L_LD encoder (eq. 9)")
            if hp.lambda_rec > 0 or hp.rec_sim:  # eq. 8
                with frozen(nets["F"]):
                    x_rec = train["G"](train["E"](x))
                    loss, terms = reconstruction_loss(nets["F"], x, x_rec, g, self._augment(), lam=hp.lambda_rec, feature_term=hp.rec_sim)
                log["rec"] = ctx.update(coders, loss, term="L_REC (eq. 8)")
                log.update({k: float(v.detach()) for k, v in terms.items()})
            if hp.latent_rec:  # eq. 10: only E learns (G(h) is a fixed input here)
                with torch.no_grad():
                    x_syn = nets["G"](h)
                log["lrec"] = ctx.update("E", latent_reconstruction_loss(train["E"](x_syn), h), term="L_LREC (eq. 10)")

        if hp.joint:  # eq. 5: F on real and synthetic images together
            with torch.no_grad():
                x_syn = nets["G"](h)
            loss, _ = self._csi(train["F"], torch.cat([x, x_syn]), g)
            log["joint"] = ctx.update("F", loss, term="L_JOINT (eq. 5)")
        return log

    # -- scoring (eq. 11) ----------------------------------------------------------------------
    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """F(S x) for the shifts S: (n, C, H, W) -> (n, K, d); with ``score_ensemble = R`` the mean
        of F(S T_r x) over R fixed transformations T_r (M_ens of sec. 2.3, as CSI's code averages
        features over augmented copies). Deterministic: T_r is drawn from (seed, r) alone."""
        f, R = self.nets["F"], self.hp.score_ensemble
        if R == 0:
            return shifted_features(f, x, self.n_shifts, self.hp.score_space)
        augment, total = self._augment(), 0.0
        for r in range(R):
            g = torch.Generator(device=x.device).manual_seed(stream_seed(self.hp.seed, "score-transforms", r))
            total = total + shifted_features(f, augment(x, g, shared=True), self.n_shifts, self.hp.score_space)
        return total / R

    def _fit_bank(self, X: torch.Tensor) -> None:
        """Store the per-shift unit training features (the bank eq. 11 searches); with
        ``score=gaussian`` fit one Gaussian to each shift's column of it."""
        self._bank = torch.nn.functional.normalize(self.map_batches(self._features, X, desc="features"), dim=2)
        self._require_bank_rows(self.hp.score_neighbours + 1)  # leave-one-out threshold: k rows besides each
        self.shift_gaussians_ = None
        if self.hp.score == "gaussian":
            if not bool(torch.isfinite(self._bank).all()):
                raise ValueError("F's features of the training rows are not finite; training diverged")
            self.shift_gaussians_ = [FeatureGaussian.fit(self._bank[:, s]) for s in range(self.n_shifts)]

    def _gaussian_score(self, feats: torch.Tensor) -> torch.Tensor:
        """score=gaussian: sum over the shifts S of -log N(u_S; mu_S, Sigma_S), u_S = F(S x) / ||F(S x)||
        and (mu_S, Sigma_S) the Ledoit-Wolf Gaussian of the training rows' u_S: (n, K, d) -> (n,) float64."""
        unit = torch.nn.functional.normalize(feats, dim=2)
        return sum(g.neg_log_density(unit[:, s]) for s, g in enumerate(self.shift_gaussians_))

    def _training_scores(self, X: torch.Tensor) -> torch.Tensor:
        """Leave-one-out: each training row matched to its nearest *other* row of the bank (a new
        row never finds itself there); one row alone is scored as a new row. ``score=gaussian``:
        each row under the Gaussians of the other folds (:meth:`FeatureGaussian.cross_fitted_scores`
        per shift, summed), for the same reason."""
        feats = self.map_batches(self._features, X, desc="features")
        if self.hp.score == "gaussian":
            unit = torch.nn.functional.normalize(feats, dim=2)
            return sum(FeatureGaussian.cross_fitted_scores(unit[:, s]) for s in range(self.n_shifts))
        if feats.shape[0] < 2:
            return super()._training_scores(X)
        dev = self.device
        feats_d, bank_d = feats.to(dev), self._bank.to(dev)

        def loo(idx: torch.Tensor) -> torch.Tensor:
            m, _ = nearest_neighbour_score(feats_d[idx], bank_d, chunk=self.hp.bank_chunk, exclude=idx,
                                           weight_by_norm=self.hp.score_norm, skip_identical=True,
                                           neighbours=self.hp.score_neighbours)
            return -m

        return self.map_batches(loo, torch.arange(feats.shape[0]), desc="threshold").double()

    @torch.no_grad()
    def _score(self, X: torch.Tensor) -> torch.Tensor:
        if self.hp.score == "gaussian":
            return self._gaussian_score(self._features(X))
        self._require_bank_rows(self.hp.score_neighbours)
        bank = self._bank_on(X.device)
        m, _ = nearest_neighbour_score(self._features(X), bank, chunk=self.hp.bank_chunk, weight_by_norm=self.hp.score_norm,
                                       skip_identical=True, neighbours=self.hp.score_neighbours)
        return -m

    def _require_bank_rows(self, rows: int) -> None:
        if self.hp.score == "nearest" and self._bank.shape[0] < rows:
            raise InputError(f"csi-aae score_neighbours={self.hp.score_neighbours} needs at least {rows} training rows; "
                             f"got {self._bank.shape[0]} (lower score_neighbours or train on more rows)")

    def _bank_on(self, device: torch.device) -> torch.Tensor:
        if self._bank.device != device:
            self._bank = self._bank.to(device)
        return self._bank

    @torch.no_grad()
    def nearest_training_index(self, X) -> torch.Tensor:
        """Index (into the training data) of x-check, the nearest neighbour of eq. 11, per row of
        ``X`` (user rows, as for ``score_samples``): int64 (N,)."""
        return self.map_inputs(
            lambda xb: nearest_neighbour_score(self._features(xb), self._bank_on(xb.device), chunk=self.hp.bank_chunk)[1], X,
            what="nearest_training_index",
        )

    def _extra_state(self) -> dict:
        state = {"train_features": self._bank.detach().cpu()}
        if self.shift_gaussians_ is not None:
            state["shift_gaussians"] = [g.state() for g in self.shift_gaussians_]
        return state

    def _load_extra_state(self, state: dict) -> None:
        bank = state["train_features"]
        if not isinstance(bank, torch.Tensor) or bank.dim() != 3 or bank.shape[1] != self.n_shifts:
            raise ValueError(f"train_features must be (N, {self.n_shifts}, d)")
        self._bank = bank.float()
        gaussians = state.get("shift_gaussians")
        if self.hp.score == "gaussian" and (not isinstance(gaussians, list) or len(gaussians) != self.n_shifts):
            raise ValueError(f"score='gaussian' needs {self.n_shifts} fitted shift Gaussians, which this checkpoint lacks")
        self.shift_gaussians_ = [FeatureGaussian.from_state(g) for g in gaussians] if self.hp.score == "gaussian" else None

    def _reconstruct(self, x) -> torch.Tensor | None:
        """G(E(x)) (variant full only; the other variants have no encoder)."""
        return self.nets["G"](self.nets["E"](x)) if "E" in self.nets else None
