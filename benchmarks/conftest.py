"""Shared fixtures of the benchmarks (pytest-benchmark; run with ``--benchmark-only``)."""
import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def bench_threads():
    """torch.set_num_threads(ANOMALYKIT_BENCH_THREADS) for each benchmark module, when set (> 0)."""
    requested, before = int(os.environ.get("ANOMALYKIT_BENCH_THREADS", "0")), torch.get_num_threads()
    if requested > 0:
        torch.set_num_threads(requested)
    yield
    torch.set_num_threads(before)
