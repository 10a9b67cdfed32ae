"""Training speed of the methods: the plain eager path vs the speed-ups, interleaved in one run.

    pytest benchmarks/test_bench_training.py --benchmark-only -s --benchmark-json=out.json
    ANOMALYKIT_BENCH_THREADS=1 ...   # torch threads (default: torch's choice)
    ANOMALYKIT_BENCH_TRAIN_ROWS=512  # training rows per timed fit (default 512)
    ANOMALYKIT_BENCH_ROUNDS=4        # interleaved rounds (default 4)

Fashion-MNIST one-class (class 0, 28x28), each method with its ``small`` budget's batch size and
architecture, one epoch over ``TRAIN_ROWS`` images per timed fit. Each round fits once with the
plain eager path (``anomalykit.speedups.speedups(False)``) and once with the speed-ups, in
alternating order (ABBA), from the same seed; the benchmark's own statistics are per pair, the
figures that matter are in ``extra_info``: seconds and samples/s per path (median over rounds),
the speed-up as the median of the per-round ratios, for wall time and for this process's CPU
time (on a shared machine CPU time is the steadier of the two). Samples/s is epochs x rows / fit
seconds, as ``metrics.json`` reports it (the fit includes the method's post-training passes).
The first fit of each path (allocator, oneDNN primitive caches) is timed separately as warm-up;
nothing is compiled.

``test_same_auroc_two_classes`` trains the small budget on two classes (validation split: held-out
training rows, never the test split) with both paths and checks AUROC within 0.01.
docs/performance.md has the numbers and the profile behind them.
"""
from __future__ import annotations

import os
import platform
import time

import numpy as np
import pytest
import torch

import anomalykit
from anomalykit.speedups import speedups

METHODS = ("ama", "mae-simplex", "csi-aae")
TRAIN_ROWS = int(os.environ.get("ANOMALYKIT_BENCH_TRAIN_ROWS", "512"))
ROUNDS = int(os.environ.get("ANOMALYKIT_BENCH_ROUNDS", "4"))
TARGET = 1.5
AUROC_TOLERANCE = 0.01
_results: dict[str, dict] = {}


def fmnist_split(normal_class: int, max_train: int, eval_split: str = "test"):
    from anomalykit.data import make_split
    from anomalykit.errors import DatasetError

    try:
        return make_split("one-class", "fashion-mnist", normal_class=normal_class, max_train=max_train, seed=0, eval_split=eval_split)
    except DatasetError as exc:
        pytest.skip(f"Fashion-MNIST not available: {exc}")


def small_budget(method: str, **overrides) -> dict:
    params = dict(type(anomalykit.load_method(method)).budgets["small"])
    params.update(overrides)
    return params


def timed_fit(method: str, params: dict, X, on: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fit with the speed-ups on or off."""
    with speedups(on):
        det = anomalykit.load_method(method, **params)
        w, c = time.perf_counter(), time.process_time()
        det.fit(X, progress=False)
        return time.perf_counter() - w, time.process_time() - c


def machine_info() -> dict:
    return dict(torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.processor() or platform.machine(),
                cpus=os.cpu_count(), load_avg_1min=round(os.getloadavg()[0], 2))


@pytest.mark.benchmark(group="training")
@pytest.mark.parametrize("method", METHODS)
def test_training_throughput(benchmark, method):
    split = fmnist_split(0, TRAIN_ROWS)
    X = split.X_train[:TRAIN_ROWS]
    params = small_budget(method, epochs=1)
    warm = {on: timed_fit(method, params, X, on)[0] for on in (False, True)}  # first fits: warm-up, reported apart
    times = {False: [], True: []}
    rounds = iter(range(10**6))

    def pair():
        r = next(rounds)
        for on in ((False, True) if r % 2 == 0 else (True, False)):  # ABBA: drift cancels
            times[on].append(timed_fit(method, params, X, on))

    benchmark.pedantic(pair, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    wall = {on: np.array([t[0] for t in v]) for on, v in times.items()}
    cpu = {on: np.array([t[1] for t in v]) for on, v in times.items()}
    ratio_wall = float(np.median(wall[False] / wall[True]))
    ratio_cpu = float(np.median(cpu[False] / cpu[True]))
    n = X.shape[0] * params["epochs"]
    info = dict(
        method=method, rows=int(X.shape[0]), epochs=params["epochs"], batch_size=anomalykit.load_method(method, **params).hp.batch_size,
        rounds=ROUNDS,
        eager_s=round(float(np.median(wall[False])), 3), fast_s=round(float(np.median(wall[True])), 3),
        eager_samples_per_s=round(n / float(np.median(wall[False])), 1), fast_samples_per_s=round(n / float(np.median(wall[True])), 1),
        speedup_wall=round(ratio_wall, 3), speedup_cpu=round(ratio_cpu, 3),
        eager_cpu_s=round(float(np.median(cpu[False])), 3), fast_cpu_s=round(float(np.median(cpu[True])), 3),
        warmup_eager_s=round(warm[False], 3), warmup_fast_s=round(warm[True], 3), compile_s=0.0, **machine_info(),
    )
    benchmark.extra_info.update(info)
    _results[method] = info
    print(f"\n{method}: eager {info['eager_samples_per_s']} samples/s, speed-ups {info['fast_samples_per_s']} samples/s; "
          f"speed-up {ratio_wall:.2f}x wall, {ratio_cpu:.2f}x CPU time (median of {ROUNDS} interleaved rounds; "
          f"target {TARGET}x); first fits {warm[False]:.2f} s / {warm[True]:.2f} s; threads {torch.get_num_threads()}")


@pytest.mark.benchmark(group="training-quality")
@pytest.mark.parametrize("method", METHODS)
def test_same_auroc_two_classes(benchmark, method):
    """The small budget on classes 0 and 6 (1,000 training rows, validation split), eager vs
    speed-ups from the same seed: AUROC within 0.01 (the paths agree to rounding, which GAN
    training can amplify, so equality is not expected)."""
    from sklearn.metrics import roc_auc_score

    params = small_budget(method)
    aurocs = {}

    def both():
        for c in (0, 6):
            split = fmnist_split(c, 1000, eval_split="val")
            for on in (False, True):
                with speedups(on):
                    det = anomalykit.load_method(method, **params).fit(split.X_train, progress=False)
                    aurocs[(c, on)] = float(roc_auc_score(split.y_test, det.score_samples(split.X_test)))

    benchmark.pedantic(both, rounds=1, iterations=1, warmup_rounds=0)
    diffs = {c: abs(aurocs[(c, True)] - aurocs[(c, False)]) for c in (0, 6)}
    benchmark.extra_info.update(method=method, **{f"auroc_class{c}_{'fast' if on else 'eager'}": round(v, 4) for (c, on), v in aurocs.items()},
                                max_abs_diff=round(max(diffs.values()), 4), **machine_info())
    print(f"\n{method}: AUROC (validation split) class 0 eager {aurocs[(0, False)]:.4f} fast {aurocs[(0, True)]:.4f}; "
          f"class 6 eager {aurocs[(6, False)]:.4f} fast {aurocs[(6, True)]:.4f}; max |diff| {max(diffs.values()):.4f}")
    assert max(diffs.values()) <= AUROC_TOLERANCE


@pytest.mark.benchmark(group="training")
def test_digits_demo_not_slower(benchmark):
    """The default demo (digits, class 0, AMA defaults) end to end, eager vs speed-ups interleaved:
    the speed-ups must not make it slower (nothing to compile, no warm-up of their own)."""
    from anomalykit.data import make_split

    split = make_split("one-class", "digits", normal_class=0, seed=0)
    times = {False: [], True: []}

    def pair():
        for on in (False, True) if len(times[False]) % 2 == 0 else (True, False):
            with speedups(on):
                t = time.perf_counter()
                det = anomalykit.load_method("ama").fit(split.X_train, progress=False)
                det.score_samples(split.X_test)
                times[on].append(time.perf_counter() - t)

    benchmark.pedantic(pair, rounds=2, iterations=1, warmup_rounds=0)
    ratio = float(np.median(np.array(times[False]) / np.array(times[True])))
    benchmark.extra_info.update(eager_s=round(float(np.median(times[False])), 2), fast_s=round(float(np.median(times[True])), 2),
                                speedup_wall=round(ratio, 3), **machine_info())
    print(f"\ndigits demo (ama defaults, fit + score): eager {np.median(times[False]):.1f} s, speed-ups {np.median(times[True]):.1f} s ({ratio:.2f}x)")
    assert ratio > 0.9  # not slower, beyond the noise of a shared machine
