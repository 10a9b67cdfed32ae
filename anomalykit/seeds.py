"""Every random stream anomalykit derives from a run's ``seed``, in one table.

A run has one ``seed`` (the ``seed`` parameter, ``--seed``; bench cells use their seed). Each
consumer of randomness draws from its own stream, so adding draws to one never shifts another
(e.g. more training batches do not change the test-time starting latents). :func:`stream_seed`
is the only place the offsets live; the values are those the project has always used, so results
stay reproducible across versions.
"""
from __future__ import annotations

#: stream name -> (offset, multiplier): the seed of the stream is ``seed * multiplier + offset + index``
STREAMS: dict[str, tuple[int, int]] = {
    "weights": (0, 1),               # torch/numpy/random global seeding in fit (network initialisation)
    "training-noise": (7919, 1),     # the trainer's torch.Generator: shuffling noise, latents, negatives
    "subsample": (0, 1),             # --max-train: the training rows kept
    "tabular-split": (0, 1),         # tabular-topk: the 50/50 split of the pooled rows
    "ood-anomalies": (1, 1),         # ood protocol: which rows of dataset B are the anomalies
    "validation-holdout": (2, 1),    # --eval-split val: which normal training rows are held out
    "validation-anomalies": (3, 1),  # --eval-split val, one-class: which other-class rows are anomalies
    "search-starts": (0x5EED, 1),    # test-time search starting points (ADGAN's z_{j,0})
    "score-transforms": (0, 7919),   # fixed transformations of an ensemble score (index = the transformation)
    "calibration": (4, 1),           # calibration > 0: which normal training rows are held out for calibration
    "patches": (5, 1),               # patch_size set: where the training crops are cut
}


def stream_seed(seed: int, stream: str, index: int = 0) -> int:
    """The seed of ``stream`` (a name of :data:`STREAMS`) for a run seeded ``seed``; ``index``
    numbers the members of a stream (e.g. the r-th fixed transformation)."""
    try:
        offset, multiplier = STREAMS[stream]
    except KeyError:
        raise KeyError(f"unknown random stream {stream!r}; known: {', '.join(STREAMS)}") from None
    return int(seed) * multiplier + offset + int(index)
