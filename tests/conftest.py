import importlib
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from tqdm import tqdm

TESTS = Path(__file__).parent
#: no tqdm monitor thread: a process forked while it holds tqdm's lock (mutation testing forks
#: one per mutant) would wait for that lock for ever
tqdm.monitor_interval = 0
#: and a per-process lock: tqdm's default one includes a multiprocessing lock, which forked
#: processes share, so a test process killed while holding it (a mutant timed out) left every
#: later one waiting for ever
tqdm.set_lock(threading.RLock())
#: frozen plugins of earlier releases: tests/test_compat_plugins.py installs and drives each one in
#: its own process (their own test files import their own copy of the plugin)
collect_ignore = ["compat_plugins"]
sys.path.insert(0, str(TESTS / "plugins" / "pca_plugin"))


def counting_npy_rows(path):
    """``NpyRows`` of the ``.npy`` at ``path`` that record the file rows of every read in
    ``rows.reads`` (one array per read; views made from it share the list)."""
    from anomalykit.lazy_rows import NpyRows

    class CountingNpyRows(NpyRows):
        def _read(self, rows):
            self.reads.append(np.asarray(rows).reshape(-1).copy())
            return super()._read(rows)

    rows = CountingNpyRows(str(path))
    rows.reads = []
    return rows


def _compiler() -> str | None:
    """The C++ compiler torch.utils.cpp_extension would build the native ops with, if any."""
    import os
    import shutil

    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


# -- skips CI did not expect ------------------------------------------------------------------
_SKIPPED: list[tuple[str, str]] = []


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def pytest_collectreport(report):
    if report.skipped:  # a whole module skipped at import (e.g. importorskip)
        _SKIPPED.append((report.nodeid, _skip_reason(report)))


def pytest_runtest_logreport(report):
    if report.skipped and report.when in ("setup", "call"):
        _SKIPPED.append((report.nodeid, _skip_reason(report)))


def unexpected_skips(skipped, rules_text: str) -> list[tuple[str, str]]:
    """The skips no rule of ``rules_text`` ("NODE-ID GLOB | REASON REGEX" lines) allows."""
    import fnmatch
    import re

    rules = []
    for line in rules_text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            glob, _, pattern = line.partition("|")
            rules.append((glob.strip(), re.compile(pattern.strip())))
    return [(node, reason) for node, reason in skipped
            if not any(fnmatch.fnmatchcase(node, glob) and rx.search(reason) for glob, rx in rules)]


def pytest_sessionfinish(session, exitstatus):
    """With ANOMALYKIT_EXPECTED_SKIPS=FILE (CI sets it): fail the run if any test skipped for a
    reason the file does not list, naming each one."""
    path = os.environ.get("ANOMALYKIT_EXPECTED_SKIPS")
    if not path:
        return
    unexpected = unexpected_skips(_SKIPPED, Path(path).read_text())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    say = (lambda line, **kw: reporter.write_line(line, **kw)) if reporter is not None else (lambda line, **kw: print(line))
    if reporter is not None:
        reporter.write_sep("-", "skip check")
    if unexpected:
        say(f"{len(unexpected)} unexpected skip(s) (not in {path}):", red=True)
        for node, reason in unexpected:
            say(f"  {node}: {reason}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        say(f"skips: {len(_SKIPPED)}, all expected ({path})")


def pytest_configure(config):
    config.addinivalue_line("markers", "native(op): needs the native CPU kernel of op; skipped only without a C++ compiler")


def pytest_runtest_setup(item):
    """``@pytest.mark.native("op")``: a missing native kernel is a skip only where it cannot be
    built (no C++ compiler: the documented pure-PyTorch fallback); with a compiler on PATH it is a
    broken build, and the test fails naming why the extension did not load."""
    for mark in item.iter_markers("native"):
        from anomalykit.ops import _native

        op = mark.args[0]
        if _native.has_kernel(op, "cpu"):
            continue
        if _compiler() is None:
            pytest.skip(f"no C++ compiler, so the native {op} kernel cannot be built (the reference ops are used)")
        pytest.fail(f"a C++ compiler is here ({_compiler()}) but the native {op} kernel did not load: "
                    f"{_native.LOAD_ERROR or 'the extension lacks the kernel'}; rebuild with "
                    "pip install --no-build-isolation -e .", pytrace=False)


@pytest.fixture
def registry():
    from anomalykit.registry import get_registry

    return get_registry()


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a test module: tiny networks run fastest single-threaded, and on a
    shared 2-core CPU two threads spend most of their time in hand-offs (a plugin test file took
    ~20 s with one thread and minutes with two on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def pca_method(registry):
    """The example plugin 'pca-recon' registered in-process (unless already installed)."""
    added = False
    if "pca-recon" not in registry.methods:
        module = importlib.import_module("anomalykit_pca")
        assert registry.add_plugin(module, name="pca-recon-inprocess")
        added = True
    yield "pca-recon"
    if added:
        registry.remove_plugin("pca-recon-inprocess")


@pytest.fixture
def blobs():
    """Tabular toy data: 200 normal rows around 0, 20 anomalies far away; labels 1 = anomaly."""
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(200, 6, generator=g)
    anomalous = torch.randn(20, 6, generator=g) * 0.5 + 6.0
    X = torch.cat([normal, anomalous])
    y = np.r_[np.zeros(200, int), np.ones(20, int)]
    return X, y


#: Small, fast settings per method for tests that fit every installed method (a method missing
#: here, e.g. a newly installed third-party plugin, is fitted with ``epochs=1``).
TINY_PARAMS = {
    "ama": dict(epochs=2, width=8, feature_dim=16, n_critic=1, batch_size=32),
    "mae-simplex": dict(epochs=2, width=8, hidden=32, latent_dim=8, batch_size=32, n_critic=1),
    # score=loss: the latent search, the heavy path (gradient steps in the score, TorchScript-only
    # export); the default score (critic-gaussian, a forward pass) has its own tests
    "adgan": dict(epochs=2, batch_size=32, n_seed=4, k=3, g_width=4, d_width=8, lr_theta=1e-2, score="loss"),
    "csi-aae": dict(epochs=1, f_width=4, f_stages=2, proj_dim=8, latent_dim=4, ae_width=4, aae_every=1),
    "pca-recon": dict(n_components=4),
    "patch-knn": dict(bank_size=500),
    "patch-ae": dict(epochs=1, width=4),
}


def tiny_params(method: str, **overrides) -> dict:
    params = dict(TINY_PARAMS.get(method, {"epochs": 1}))
    params.update(overrides)
    return params


@pytest.fixture
def installed_methods(registry, pca_method):
    """Every installed method name, the example third-party plugin included."""
    return sorted(registry.methods)


def model_space(det, X) -> torch.Tensor:
    """User rows ``X`` as the plugin's internals (``_score``, ``nets``, ``r_scores``...) see them:
    validated and scaled by the detector's fitted preprocessor (the one owner of input scaling)."""
    from anomalykit.validation import as_input_tensor

    return det.preprocessor_.transform(as_input_tensor(X))
