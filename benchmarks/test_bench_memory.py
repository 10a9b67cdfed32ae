"""Bounded memory: scoring all 70,000 Fashion-MNIST images streams in batches.

    pytest benchmarks/test_bench_memory.py --benchmark-only -s

Runs in a fresh subprocess and reports peak RSS (resource.getrusage) before and after scoring.
The bound checked: scoring adds at most SCORING_BUDGET_MB to the peak reached by loading the data
and fitting (the 70k images themselves are 220 MB as float32).
"""
import json
import subprocess
import sys

import pytest

SCORING_BUDGET_MB = 150

SCRIPT = r"""
import json, resource, time, torch
import anomalykit
from anomalykit.data import load_dataset
mb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
ds = load_dataset("fashion-mnist")
X = torch.cat([ds.X_train, ds.X_test])
del ds
det = anomalykit.load_method("ama", epochs=1, width=8, feature_dim=16, n_critic=1).fit(X[:512])
before = mb()
t = time.perf_counter()
scores = det.score_samples(X)
print(json.dumps({"rows": int(X.shape[0]), "peak_before_mb": before, "peak_after_mb": mb(),
                  "score_seconds": time.perf_counter() - t, "finite": bool((scores == scores).all())}))
"""


def test_scoring_70k_images_has_bounded_peak_memory(benchmark):
    pytest.importorskip("anomalykit")
    from anomalykit.errors import DatasetError
    from anomalykit.data import load_dataset

    try:
        load_dataset("fashion-mnist")
    except DatasetError as exc:
        pytest.skip(str(exc))

    def run():
        out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=1800)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    growth = result["peak_after_mb"] - result["peak_before_mb"]
    benchmark.extra_info.update(result, scoring_growth_mb=growth)
    print(f"\nscored {result['rows']} images in {result['score_seconds']:.1f} s; peak RSS {result['peak_before_mb']:.0f} MB "
          f"before scoring, {result['peak_after_mb']:.0f} MB after (+{growth:.0f} MB)")
    assert result["finite"]
    assert growth <= SCORING_BUDGET_MB
