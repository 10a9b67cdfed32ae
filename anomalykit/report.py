"""Report files of a run: ROC curve, score densities, reconstructions, training curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_roc(path: Path, scores: np.ndarray, labels: np.ndarray, title: str) -> None:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
    ax.plot(fpr, tpr, lw=2, label=f"AUROC {roc_auc_score(labels, scores):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_score_density(path: Path, scores: np.ndarray, labels: np.ndarray, title: str, train_scores=None) -> None:
    """Densities of test scores, normal vs anomalous (like AMA Fig. 4), plus training scores."""
    from scipy.stats import gaussian_kde

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    lo, hi = np.percentile(scores, [0.5, 99.5])
    if train_scores is not None and len(train_scores):
        lo, hi = min(lo, np.percentile(train_scores, 0.5)), max(hi, np.percentile(train_scores, 99.5))
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    grid = np.linspace(lo - pad, hi + pad, 400)
    groups = [("normal (test)", scores[labels == 0], "tab:blue"), ("anomalous (test)", scores[labels == 1], "tab:red")]
    if train_scores is not None:
        groups.insert(0, ("train", np.asarray(train_scores), "tab:grey"))
    for name, s, colour in groups:
        if len(s) > 1 and np.ptp(s) > 0:
            ax.fill_between(grid, gaussian_kde(s)(grid), alpha=0.3, color=colour, label=f"{name} (n={len(s)})")
        elif len(s):
            ax.axvline(float(s[0]), color=colour, label=f"{name} (n={len(s)})")
    ax.set(xlabel="anomaly score (higher = more anomalous)", ylabel="density", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _to_image(x: torch.Tensor) -> np.ndarray:
    img = ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return img[..., 0] if img.shape[-1] == 1 else img


def plot_reconstructions(path: Path, rows: list[tuple[str, torch.Tensor]], title: str) -> None:
    """A grid: each row a label and a (k, C, H, W) batch (inputs above their reconstructions)."""
    plt = _plt()
    k = max(r[1].shape[0] for r in rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(1.1 * k + 1.4, 1.15 * len(rows) + 0.4), dpi=110, squeeze=False)
    for i, (label, batch) in enumerate(rows):
        for j in range(k):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < batch.shape[0]:
                ax.imshow(_to_image(batch[j]), cmap="gray", vmin=0, vmax=1)
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_maps(path: Path, images: torch.Tensor, maps: np.ndarray, masks: np.ndarray | None, title: str) -> None:
    """Overlays, one column per image: the input (model space, [-1, 1]), its anomaly map over it,
    and the ground-truth mask where known."""
    plt = _plt()
    k = images.shape[0]
    rows = 3 if masks is not None else 2
    fig, axes = plt.subplots(rows, k, figsize=(1.2 * k + 1.2, 1.25 * rows + 0.4), dpi=110, squeeze=False)
    lo, hi = float(np.percentile(maps, 1)), float(np.percentile(maps, 99.5))
    for j in range(k):
        img = _to_image(images[j])
        cmap = "gray" if img.ndim == 2 else None
        axes[0][j].imshow(img, cmap=cmap, vmin=0, vmax=1)
        axes[1][j].imshow(img, cmap=cmap, vmin=0, vmax=1)
        axes[1][j].imshow(maps[j], cmap="jet", alpha=0.5, vmin=lo, vmax=hi if hi > lo else lo + 1)
        if masks is not None:
            axes[2][j].imshow(masks[j], cmap="gray", vmin=0, vmax=1)
        for r in range(rows):
            axes[r][j].set_xticks([])
            axes[r][j].set_yticks([])
    for r, label in enumerate(["input", "anomaly map", "mask"][:rows]):
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_history(path: Path, history: list[dict[str, float]], title: str) -> None:
    plt = _plt()
    keys = sorted({k for h in history for k in h})
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for k in keys:
        ys = [h.get(k, np.nan) for h in history]
        ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=2, label=k)
    ax.set(xlabel="epoch", ylabel="mean per step", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_plots(out: Path, det, split, scores: np.ndarray, title: str, maps: tuple | None = None) -> list[str]:
    """Write roc.png, scores.png, recon.png (if the method reconstructs), maps.png (anomaly-map
    overlays of anomalous test images, if ``maps`` = (test rows, their maps) is given) and training.png."""
    labels = split.y_test
    written = []
    plot_roc(out / "roc.png", scores, labels, title)
    written.append("roc.png")
    plot_score_density(out / "scores.png", scores, labels, title, det.decision_scores_)
    written.append("scores.png")
    if split.X_test.ndim == 4:
        k = 8
        normal = split.X_test[torch.from_numpy(np.flatnonzero(labels == 0)[:k])].float()
        anomalous = split.X_test[torch.from_numpy(np.flatnonzero(labels == 1)[:k])].float()
        with torch.no_grad():
            rec_n, rec_a = det.reconstruct(normal), det.reconstruct(anomalous)
        if rec_n is not None and rec_a is not None:
            shown = det.preprocessor_.transform  # inputs and reconstructions in the networks' [-1, 1]
            plot_reconstructions(
                out / "recon.png",
                [("normal", shown(normal)), ("recon.", shown(rec_n.cpu())), ("anomalous", shown(anomalous)),
                 ("recon.", shown(rec_a.cpu()))],
                title,
            )
            written.append("recon.png")
    if maps is not None:
        rows, values = maps
        pick = np.flatnonzero(labels[rows] == 1)[:8]
        shown = rows[pick]
        plot_maps(out / "maps.png", det.preprocessor_.transform(split.X_test[torch.from_numpy(shown)].float()), values[pick],
                  None if split.masks_test is None else split.masks_test[shown], title)
        written.append("maps.png")
    if det.history_:
        plot_history(out / "training.png", det.history_, title)
        written.append("training.png")
    return written
