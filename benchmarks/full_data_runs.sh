#!/usr/bin/env bash
# The full-data runs of the second quality round (issue 25): every training image of the class
# (no --max-train), one torch thread per process, small budget. Resumable: rerun to continue.
# Each line writes one folder under benchmarks/results/ (RESULTS=DIR writes under DIR instead, e.g.
# when the runs go from a frozen checkout of the code); merge with benchmarks/merge_results.py.
#   bash benchmarks/full_data_runs.sh [STEP ...]     (default: every step, in order)
# A step whose bench command fails (e.g. a failed cell) is reported and the next step runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OC="anomalykit bench --data fashion-mnist --classes 0-9 --budget small --threads 1"
OOD="anomalykit bench --protocol ood --data fashion-mnist --ood-data mnist-5k --budget small --threads 1"
R=${RESULTS:-benchmarks/results}
ABL="anomalykit bench --protocol ood --eval-split val --data fashion-mnist --ood-data mnist-5k --max-train 2000 --budget small --threads 1 --seeds 0-2"
VAL="anomalykit bench --eval-split val --data fashion-mnist --classes 0,2,4,6,8 --max-train 2000 --budget small --threads 1 --seeds 0"
# set_args METHOD "k1=v1+k2=v2": sets=(--set METHOD.k1=v1 --set METHOD.k2=v2), name=k1-v1-k2-v2
set_args() {
    local pairs p
    sets=()
    IFS=+ read -ra pairs <<< "$2"
    for p in "${pairs[@]}"; do sets+=(--set "$1.$p"); done
    name=$(echo "$2" | tr '=+' '--')
}
step() {
    case "$1" in
        oc-baselines) $OC --methods '' --baselines iforest,ocsvm,autoencoder --seeds 0 --out $R/fmnist-oc-full/baselines-seed0 ;;
        oc-ama)       $OC --methods ama --seeds 0 --out $R/fmnist-oc-full/ama-seed0 ;;
        oc-mae)       $OC --methods mae-simplex --seeds 0 --out $R/fmnist-oc-full/mae-simplex-seed0 ;;
        oc-csi)       $OC --methods csi-aae --seeds 0 --out $R/fmnist-oc-full/csi-aae-seed0 ;;
        oc-adgan)     $OC --methods adgan --seeds 0 --out $R/fmnist-oc-full/adgan-seed0 ;;
        ood-baselines) $OOD --methods '' --baselines iforest,autoencoder --seeds 0 --out $R/fmnist-vs-mnist-full/baselines-seed0 ;;
        ood-ama)      $OOD --methods ama --seeds 0 --out $R/fmnist-vs-mnist-full/ama-seed0 ;;
        ood-csi)      $OOD --methods csi-aae --seeds 0 --out $R/fmnist-vs-mnist-full/csi-aae-seed0 ;;
        # issue 25, round 3: ADGAN's new small budget (30 epochs, n_seed 2) on test seeds 1-2 at 2,000
        # images, at full data and on OOD; AMA's OOD fall at 60,000 images checked on the validation split
        oc2k-adgan-s1) $OC --max-train 2000 --methods adgan --seeds 1 --out $R/fmnist-oc-2k/adgan-e30-n2-seed1 ;;
        oc2k-adgan-s2) $OC --max-train 2000 --methods adgan --seeds 2 --out $R/fmnist-oc-2k/adgan-e30-n2-seed2 ;;
        oc-adgan-e30-n2) $OC --methods adgan --seeds 0 --out $R/fmnist-oc-full/adgan-e30-n2-seed0 ;;
        ood-adgan-e30-n2) $OOD --methods adgan --seeds 0 --out $R/fmnist-vs-mnist-full/adgan-e30-n2-seed0 ;;
        val-adgan-e60-n2)    $VAL --methods adgan --set adgan.epochs=60 --set adgan.n_seed=2 --out $R/fmnist-val/adgan-prior-e60-n2 ;;
        val-adgan-e60-n2-s1) $VAL --methods adgan --set adgan.epochs=60 --set adgan.n_seed=2 --seeds 1 --out $R/fmnist-val/adgan-prior-e60-n2-seed1 ;;
        val-adgan-e60-n2-s2) $VAL --methods adgan --set adgan.epochs=60 --set adgan.n_seed=2 --seeds 2 --out $R/fmnist-val/adgan-prior-e60-n2-seed2 ;;
        # the same number of steps as val-ood-ama-e3 (50,000 images x 3 epochs) on 2,000 images: steps or data?
        val-ood-ama-2k-e75) $OOD --eval-split val --max-train 2000 --methods ama --seeds 0 --set ama.epochs=75 --out $R/fmnist-vs-mnist-full-val/ama-2k-epochs75 ;;
        # the test split once with the epochs the validation split chose for 60,000 images (1: the steps of ~2,500 x 10)
        ood-ama-e1) $OOD --methods ama --seeds 0 --set ama.epochs=1 --out $R/fmnist-vs-mnist-full/ama-epochs1-seed0 ;;
        # issue 25, round 4: AMA one-class with all the class's images on the validation split, at 10 epochs
        # (the small budget) and at 3 (the images shown at 2,000 x 10): does the OOD fall with steps hold here?
        val-oc-ama-e*) local e=${1#val-oc-ama-e}
            $OC --eval-split val --classes 0,2,4,6,8 --methods ama --seeds 0 --set ama.epochs=$e --out $R/fmnist-val-full/ama-epochs$e ;;
        # the test split once with the small budget's max_steps (320: 3 epochs at 6,000 images, 1 at 60,000)
        oc-ama-max-steps)  $OC --methods ama --seeds 0 --out $R/fmnist-oc-full/ama-max-steps-seed0 ;;
        ood-ama-max-steps) $OOD --methods ama --seeds 0 --out $R/fmnist-vs-mnist-full/ama-max-steps-seed0 ;;
        val-ood-ama-e*) local e=${1#val-ood-ama-e}
            $OOD --eval-split val --methods ama --seeds 0 --set ama.epochs=$e --out $R/fmnist-vs-mnist-full-val/ama-epochs$e ;;
        # issue 25, round 5: CSI-AAE with all the class's images on the validation split (5,000 images,
        # 1,000 held out): the small budget's 10 epochs against 20, plain CSI (F only) at 20, and single parameters
        val-oc-csi-e[0-9]*) local e=${1#val-oc-csi-e}
            $OC --eval-split val --classes 0,2,4,6,8 --methods csi-aae --seeds 0 --set csi-aae.epochs=$e --out $R/fmnist-val-full/csi-aae-epochs$e ;;
        val-oc-csi-plain-e[0-9]*) local e=${1#val-oc-csi-plain-e}
            $OC --eval-split val --classes 0,2,4,6,8 --methods csi-aae --seeds 0 --set csi-aae.epochs=$e --set csi-aae.variant=csi --out $R/fmnist-val-full/csi-aae-plain-csi-epochs$e ;;
        val-oc-csi-seed1) $OC --eval-split val --classes 0,2,4,6,8 --methods csi-aae --seeds 1 --set csi-aae.epochs=10 --out $R/fmnist-val-full/csi-aae-epochs10-seed1 ;;  # the seed noise
        val-oc-baselines) $OC --eval-split val --classes 0,2,4,6,8 --methods '' --baselines iforest,ocsvm,autoencoder --seeds 0 --out $R/fmnist-val-full/baselines-seed0 ;;
        # one or more CSI-AAE parameters at 10 epochs, e.g. val-oc-csi-crop_scale=0.2 or
        # val-oc-csi-f_width=32+lr_f=0.0005 (folder csi-aae-crop_scale-0.2, csi-aae-f_width-32-lr_f-0.0005)
        # the same with another seed, e.g. val-oc-csi-seed1-score=gaussian (folder csi-aae-score-gaussian-seed1)
        val-oc-csi-seed[0-9]*-*=*) local rest=${1#val-oc-csi-seed} seed kv sets name
            seed=${rest%%-*} kv=${rest#*-}
            set_args csi-aae "$kv"
            $OC --eval-split val --classes 0,2,4,6,8 --methods csi-aae --seeds "$seed" "${sets[@]}" --out $R/fmnist-val-full/csi-aae-$name-seed$seed ;;
        val-oc-csi-*=*) local kv=${1#val-oc-csi-} sets name
            set_args csi-aae "$kv"
            $OC --eval-split val --classes 0,2,4,6,8 --methods csi-aae --seeds 0 "${sets[@]}" --out $R/fmnist-val-full/csi-aae-$name ;;
        # one or more AMA parameters on the OOD validation split at 2,000 images, seeds 0-2 (the
        # ablation table's set-up; its full-score-default folder is the default's row), e.g.
        # val-ood-ama-2k-width=64 (folder ama-ood-val-2k/width-64)
        val-ood-ama-2k-*=*) local kv=${1#val-ood-ama-2k-} sets name
            set_args ama "$kv"
            $ABL --methods ama "${sets[@]}" --out $R/ama-ood-val-2k/$name ;;
        # AMA OOD at 50,000 images: is it the steps or the data? the same ~300 steps from 20,000 images
        # (1 epoch), and one epoch of 50,000 at batch 256 (196 steps)
        val-ood-ama-20k-e1) $OOD --eval-split val --max-train 20000 --methods ama --seeds 0 --set ama.epochs=1 --out $R/fmnist-vs-mnist-full-val/ama-20k-epochs1 ;;
        val-ood-ama-bs256) $OOD --eval-split val --methods ama --seeds 0 --set ama.epochs=1 --set ama.batch_size=256 --out $R/fmnist-vs-mnist-full-val/ama-epochs1-batch256 ;;
        # max_steps now cuts an epoch longer than the cap: the small budget at 50,000 images trains 320
        # steps of its one epoch (validation, 3 seeds), then the test split once at 60,000
        val-ood-ama-cut) $OOD --eval-split val --methods ama --seeds 0-2 --out $R/fmnist-vs-mnist-full-val/ama-max-steps-cut ;;
        ood-ama-cut) $OOD --methods ama --seeds 0 --out $R/fmnist-vs-mnist-full/ama-max-steps-cut-seed0 ;;
        # ADGAN's OOD fall at 60,000 images (0.787 vs 0.927 at 2,000): the steps too? on the validation
        # split, 2,000 images (30 epochs: 1,890 steps) against 50,000 at the budget's 30 epochs and capped at
        # those 1,890 steps (one epoch)
        val-ood-adgan-2k) $OOD --eval-split val --max-train 2000 --methods adgan --seeds 0 --out $R/fmnist-vs-mnist-full-val/adgan-2k ;;
        val-ood-adgan-full) $OOD --eval-split val --methods adgan --seeds 0 --out $R/fmnist-vs-mnist-full-val/adgan-epochs30 ;;
        val-ood-adgan-cap) $OOD --eval-split val --methods adgan --seeds 0 --set adgan.max_steps=1890 --out $R/fmnist-vs-mnist-full-val/adgan-max-steps-1890 ;;
        # issue 24: CSI-AAE's score chosen on the validation split (eq. 11's two departures, alone and together)
        val-csi-default)    $VAL --methods csi-aae --out $R/fmnist-val/csi-aae-score-default ;;
        val-csi-norm)       $VAL --methods csi-aae --set csi-aae.score_norm=true --out $R/fmnist-val/csi-aae-score-norm ;;
        val-csi-projection) $VAL --methods csi-aae --set csi-aae.score_space=projection --out $R/fmnist-val/csi-aae-score-projection ;;
        val-csi-eq11)       $VAL --methods csi-aae --set csi-aae.score_space=projection --set csi-aae.score_norm=true --out $R/fmnist-val/csi-aae-score-eq11 ;;
        # issue 24: the validation-split comparisons behind AMA's and MAE-simplex's defaults, committed
        val-ama-default)    $VAL --methods ama --out $R/fmnist-val/ama-default ;;
        val-ama-score-a)    $VAL --methods ama --set ama.score=a --out $R/fmnist-val/ama-score-a ;;
        val-ama-generator-bn) $VAL --methods ama --set ama.generator_bn=true --out $R/fmnist-val/ama-generator-bn ;;
        val-ama-constant-lr) $VAL --methods ama --set ama.lr_schedule=constant --out $R/fmnist-val/ama-lr-constant ;;
        val-mae-default)    $VAL --methods mae-simplex --out $R/fmnist-val/mae-simplex-default ;;
        val-mae-feature-l1) $VAL --methods mae-simplex --set mae-simplex.score=feature-l1 --out $R/fmnist-val/mae-simplex-feature-l1 ;;
        val-adgan-default)  $VAL --methods adgan --out $R/fmnist-val/adgan-default ;;
        # issue 25: ADGAN's section-5 leads on the validation split (start from an encoder, Laplacian loss, capacity)
        val-adgan-enc-k5)   $VAL --methods adgan --set adgan.start=encoder --set adgan.n_seed=1 --out $R/fmnist-val/adgan-encoder-n1-k5 ;;
        val-adgan-enc-k0)   $VAL --methods adgan --set adgan.start=encoder --set adgan.n_seed=1 --set adgan.k=0 --out $R/fmnist-val/adgan-encoder-n1-k0 ;;
        val-adgan-enc-n4)   $VAL --methods adgan --set adgan.start=encoder --set adgan.n_seed=4 --out $R/fmnist-val/adgan-encoder-n4-k5 ;;
        val-adgan-enc-lap)  $VAL --methods adgan --set adgan.start=encoder --set adgan.n_seed=1 --set adgan.loss=laplacian --out $R/fmnist-val/adgan-encoder-n1-k5-laplacian ;;
        val-adgan-enc-k0-feat) $VAL --methods adgan --set adgan.start=encoder --set adgan.n_seed=1 --set adgan.k=0 --set adgan.score=loss-features --out $R/fmnist-val/adgan-encoder-n1-k0-loss-features ;;
        val-adgan-n2)       $VAL --methods adgan --set adgan.n_seed=2 --out $R/fmnist-val/adgan-prior-n2 ;;
        val-adgan-g16)      $VAL --methods adgan --set adgan.g_width=16 --out $R/fmnist-val/adgan-prior-g16 ;;
        val-adgan-e30)      $VAL --methods adgan --set adgan.epochs=30 --out $R/fmnist-val/adgan-prior-e30 ;;
        val-adgan-enc-lr005) $VAL --methods adgan --set adgan.start=encoder --set adgan.n_seed=1 --set adgan.lr_latent=0.05 --out $R/fmnist-val/adgan-encoder-n1-k5-lr005 ;;
        # issue 25: the scoring-time target (n_seed 2 against the default 8) and a longer WGAN, seeds 1-2 / 0-2
        val-adgan-default-s12) $VAL --methods adgan --seeds 1-2 --out $R/fmnist-val/adgan-default-seeds12 ;;
        val-adgan-n2-s12)   $VAL --methods adgan --set adgan.n_seed=2 --seeds 1-2 --out $R/fmnist-val/adgan-prior-n2-seeds12 ;;
        val-adgan-e30-n2)   $VAL --methods adgan --set adgan.epochs=30 --set adgan.n_seed=2 --out $R/fmnist-val/adgan-prior-e30-n2 ;;
        val-adgan-e30-n2-s1) $VAL --methods adgan --set adgan.epochs=30 --set adgan.n_seed=2 --seeds 1 --out $R/fmnist-val/adgan-prior-e30-n2-seed1 ;;
        val-adgan-e30-n2-s2) $VAL --methods adgan --set adgan.epochs=30 --set adgan.n_seed=2 --seeds 2 --out $R/fmnist-val/adgan-prior-e30-n2-seed2 ;;
        val-adgan-enc-g16)  $VAL --methods adgan --set adgan.start=encoder --set adgan.n_seed=1 --set adgan.g_width=16 --out $R/fmnist-val/adgan-encoder-n1-k5-g16 ;;
        val-adgan-enc-e30)  $VAL --methods adgan --set adgan.start=encoder --set adgan.n_seed=1 --set adgan.epochs=30 --out $R/fmnist-val/adgan-encoder-n1-k5-e30 ;;
        # ADGAN with score=critic-gaussian (its default since issue 25), the test split, run once
        oc2k-adgan-cg)     $OC --max-train 2000 --methods adgan --seeds 0-1 --out $R/fmnist-oc-2k/adgan-critic-gaussian-seeds01 ;;
        oc2k-adgan-cg-s2)  $OC --max-train 2000 --methods adgan --seeds 2 --out $R/fmnist-oc-2k/adgan-critic-gaussian-seed2 ;;
        oc-adgan-cg)       $OC --methods adgan --seeds 0 --out $R/fmnist-oc-full/adgan-critic-gaussian-seed0 ;;
        ood2k-adgan-cg)    $OOD --max-train 2000 --methods adgan --seeds 0-2 --out $R/fmnist-vs-mnist-adgan-critic-gaussian ;;
        ood-adgan-cg)      $OOD --methods adgan --seeds 0 --out $R/fmnist-vs-mnist-full/adgan-critic-gaussian-seed0 ;;
        # the test split, more seeds at full data with every method's current default: oc-seedS-METHOD
        # (folder fmnist-oc-full/seedS/METHOD), and MAE-simplex on the OOD protocol with all 60,000 images
        oc-seed[0-9]*-*) local rest=${1#oc-seed} seed method
            seed=${rest%%-*} method=${rest#*-}
            $OC --methods "$method" --seeds "$seed" --out $R/fmnist-oc-full/seed$seed/$method ;;
        # the OOD test split with all 60,000 images, more seeds with a method's current default:
        # ood-seedS-METHOD (folder fmnist-vs-mnist-full/seedS/METHOD)
        ood-seed[0-9]*-*) local rest=${1#ood-seed} seed method
            seed=${rest%%-*} method=${rest#*-}
            $OOD --methods "$method" --seeds "$seed" --out $R/fmnist-vs-mnist-full/seed$seed/$method ;;
        # the test split at full data, seed 0, with one or more CSI-AAE parameters chosen on the
        # validation split, e.g. oc-csi-score=gaussian (folder fmnist-oc-full/csi-aae-score-gaussian-seed0)
        oc-csi-*=*) local kv=${1#oc-csi-} sets name
            set_args csi-aae "$kv"
            $OC --methods csi-aae --seeds 0 "${sets[@]}" --out $R/fmnist-oc-full/csi-aae-$name-seed0 ;;
        ood-mae) $OOD --methods mae-simplex --seeds 0 --out $R/fmnist-vs-mnist-full/mae-simplex-seed0 ;;
        # MAE-simplex's small budget capped at 320 steps (issue 25, stop 38): the one-class test split at full data, run once
        oc-mae-max-steps) $OC --methods mae-simplex --seeds 0 --out $R/fmnist-oc-full/mae-simplex-max-steps-seed0 ;;
        ood-mae-max-steps) $OOD --methods mae-simplex --seeds 0 --out $R/fmnist-vs-mnist-full/mae-simplex-max-steps-seed0 ;;
        # MAE-simplex on the OOD validation split, seeds 0-2: at 2,000 images (the reference), and with all
        # 50,000 images and one or more parameters, e.g. val-ood-mae-max_steps=320 (folder
        # fmnist-vs-mnist-full-val/mae-simplex-max_steps-320); ood-mae-KEY=VALUE is the test split, seed 0
        # MAE-simplex on the one-class validation split with all the class's images, classes 0,2,4,6,8, seed 0:
        # val-oc-mae-default, or with parameters, e.g. val-oc-mae-max_steps=320 (folder fmnist-val-full/mae-simplex-max_steps-320)
        val-oc-mae-default) $OC --eval-split val --classes 0,2,4,6,8 --methods mae-simplex --seeds 0 --out $R/fmnist-val-full/mae-simplex-default ;;
        val-oc-mae-*=*) local kv=${1#val-oc-mae-} sets name
            set_args mae-simplex "$kv"
            $OC --eval-split val --classes 0,2,4,6,8 --methods mae-simplex --seeds 0 "${sets[@]}" --out $R/fmnist-val-full/mae-simplex-$name ;;
        val-ood-mae-2k) $OOD --eval-split val --max-train 2000 --methods mae-simplex --seeds 0-2 --out $R/fmnist-vs-mnist-full-val/mae-simplex-2k ;;
        val-ood-mae-*=*) local kv=${1#val-ood-mae-} sets name
            set_args mae-simplex "$kv"
            $OOD --eval-split val --methods mae-simplex --seeds 0-2 "${sets[@]}" --out $R/fmnist-vs-mnist-full-val/mae-simplex-$name ;;
        ood-mae-*=*) local kv=${1#ood-mae-} sets name
            set_args mae-simplex "$kv"
            $OOD --methods mae-simplex --seeds 0 "${sets[@]}" --out $R/fmnist-vs-mnist-full/mae-simplex-$name-seed0 ;;
        # one or more AMA parameters on the one-class validation split at 2,000 images, seed 0, e.g.
        # val-ama-score=real-features (folder fmnist-val/ama-score-real-features; fmnist-val/ama-default is the default's)
        val-ama-*=*) local kv=${1#val-ama-} sets name
            set_args ama "$kv"
            $VAL --methods ama "${sets[@]}" --out $R/fmnist-val/ama-$name ;;
        # AMA on the OOD test split with all 60,000 images and a parameter, e.g. ood-ama-cut-score=real-features
        ood-ama-cut-*=*) local kv=${1#ood-ama-cut-} sets name
            set_args ama "$kv"
            $OOD --methods ama --seeds 0 "${sets[@]}" --out $R/fmnist-vs-mnist-full/ama-max-steps-cut-$name-seed0 ;;
        # AMA on the OOD validation split with all 50,000 images (the budget's 320-step cut), seeds 0-2,
        # and a parameter, e.g. val-ood-ama-cut-score=real-features (fmnist-vs-mnist-full-val/ama-max-steps-cut is the default's)
        val-ood-ama-cut-*=*) local kv=${1#val-ood-ama-cut-} sets name
            set_args ama "$kv"
            $OOD --eval-split val --methods ama --seeds 0-2 "${sets[@]}" --out $R/fmnist-vs-mnist-full-val/ama-max-steps-cut-$name ;;
        # one or more ADGAN parameters on the one-class validation split at 2,000 images, seeds 0-2,
        # e.g. val-adgan-score=critic-gaussian (folder fmnist-val/adgan-score-critic-gaussian)
        val-adgan-*=*) local kv=${1#val-adgan-} sets name
            set_args adgan "$kv"
            $VAL --methods adgan "${sets[@]}" --seeds 0-2 --out $R/fmnist-val/adgan-$name ;;
        # issue 25: AMA's Table 1 ablations on the OOD validation split (held-out Fashion-MNIST training
        # rows vs MNIST-5k training rows), 3 seeds, with the default score and the paper's A-score;
        # ROW full, no-mirrored, no-simplex, no-atypical, each optionally with -lneg5 (e.g. ablation-no-atypical-lneg5-score-a)
        ablation-*)
            local row=${1#ablation-} score=${1##*-score-} sets=()
            row=${row%-score-*}
            [ "$score" = "default" ] || sets+=(--set "ama.score=$score")
            case "$row" in  # a -lneg5 suffix: the authors' code's lambda_neg = 5 instead of 0.1
                *-lneg5) sets+=(--set ama.lambda_neg=5) ; row_base=${row%-lneg5} ;;
                *) row_base=$row ;;
            esac
            case "$row_base" in
                full) ;;
                no-mirrored) sets+=(--set ama.mirrored=false) ;;
                no-simplex) sets+=(--set ama.simplex=false) ;;
                no-atypical) sets+=(--set ama.atypical=false) ;;
                *) echo "unknown ablation row $row" >&2; return 2 ;;
            esac
            $ABL --methods ama "${sets[@]}" --out $R/ama-ablations-val/$row-score-$score ;;
        *) echo "unknown step $1" >&2; exit 2 ;;
    esac
}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(oc-baselines oc-ama oc-mae oc-csi ood-baselines ood-ama ood-csi oc-adgan)
for s in "${steps[@]}"; do
    echo "== $s $(date -u +%FT%TZ)"
    step "$s" || echo "== step $s exited with status $?"
done
