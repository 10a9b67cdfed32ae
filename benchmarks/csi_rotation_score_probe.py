"""CSI-AAE's rotation head as an anomaly score, beside eq. 11, on the same trained network (a probe,
issue 25, stop 38; not a detector switch).

Trains one cell exactly as ``anomalykit bench --eval-split val --data fashion-mnist --methods
csi-aae --budget small --seeds 0`` does (``fit_and_score`` with the bench's ``method_params``),
then scores the validation split's test rows six ways from that one network:

- ``eq11``: the detector's score (eq. 11, the default: backbone features, no norm factor);
- ``cls``: CSI's s_cls-SI (Tack et al. 2020, eq. 7): -sum_S logit_S(F(S x)) / mean over the
  training rows of that logit (the rotation head's logit of the rotation applied);
- ``csi-sum``: eq11 + cls, CSI's s_CSI with eq. 11 in place of s_con-SI (whose per-shift weight is 1
  for cosines without the norm factor);
- ``z-sum``: eq11 and cls each standardised by its training rows' mean and standard deviation
  (eq. 11's leave-one-out ``decision_scores_``), then summed;
- ``logp``: -sum_S log p(S | S x), the rotation classifier's log-likelihood (GEOM's score);
- ``z-sum-logp``: eq11 and logp standardised on the training rows, then summed.

    python benchmarks/csi_rotation_score_probe.py CLASS [MAX_TRAIN|full]

Prints one line per cell (the lines in ``benchmarks/results/fmnist-val-full/csi-aae-rotation-score/log.txt``)
and saves the scores to /tmp/probe/scores-cCLASS-MAX_TRAIN.npz.
"""
import os, sys, time, numpy as np, torch
from sklearn.metrics import roc_auc_score
from anomalykit.bench.plan import BenchConfig, method_params
from anomalykit.pipeline import RunConfig, build_detector, fit_and_score, load_split
from anomalykit_plugins.csi_aae.augment import rotate


def main() -> None:
    torch.set_num_threads(1)
    cls = int(sys.argv[1]); mt = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "full" else None
    cfg = BenchConfig(data="fashion-mnist", eval_split="val", classes=str(cls), methods="csi-aae", seeds="0", budget="small", max_train=mt, device="cpu")
    run = RunConfig(method="", data=cfg.data, protocol=cfg.protocol, ood_data=cfg.ood_data, max_train=cfg.max_train, eval_split="val", normal_class=cls)
    split = load_split(run, seed=0); torch.manual_seed(0); np.random.seed(0)
    det, _ = build_detector("csi-aae", method_params("csi-aae", cfg, 0))
    t = time.time(); out = fit_and_score(det, split, progress=False); print("train", time.time() - t, flush=True)
    F = det.nets["F"]; F.eval()
    def lg(xb):
        n = xb.shape[0]
        xs = torch.cat([rotate(xb, k) for k in range(4)])
        _, l, _ = F(xs)
        l = l.view(4, n, 4)
        return torch.stack([l[k] for k in range(4)], 1)  # (n, S, 4)
    with torch.no_grad():
        Lte = torch.as_tensor(det.map_inputs(lg, split.X_test, what="probe")).double()
        Ltr = torch.as_tensor(det.map_inputs(lg, split.X_train, what="probe")).double()
    idx = torch.arange(4)
    cte, ctr = Lte[:, idx, idx], Ltr[:, idx, idx]
    pte = torch.log_softmax(Lte, 2)[:, idx, idx].sum(1); ptr = torch.log_softmax(Ltr, 2)[:, idx, idx].sum(1)
    s_con = np.asarray(out.scores); s_con_tr = np.asarray(det.decision_scores_)
    s_cls = -(cte / ctr.mean(0)).sum(1).numpy(); s_cls_tr = -(ctr / ctr.mean(0)).sum(1).numpy()
    s_lp = -pte.numpy(); s_lp_tr = -ptr.numpy()
    z = lambda s, tr: (s - tr.mean()) / tr.std()
    y = split.y_test
    os.makedirs("/tmp/probe", exist_ok=True)
    np.savez(f"/tmp/probe/scores-c{cls}-{mt}.npz", y=y, s_con=s_con, s_con_tr=s_con_tr, Lte=Lte.numpy(), Ltr=Ltr.numpy())
    r = lambda s: f"{roc_auc_score(y, s):.4f}"
    print(f"class {cls}: eq11 {r(s_con)} cls {r(s_cls)} csi-sum {r(s_con + s_cls)} z-sum {r(z(s_con, s_con_tr) + z(s_cls, s_cls_tr))} "
          f"logp {r(s_lp)} z-sum-logp {r(z(s_con, s_con_tr) + z(s_lp, s_lp_tr))}", flush=True)


if __name__ == "__main__":
    main()
