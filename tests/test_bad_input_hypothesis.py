"""Property-based bad-input suite: malformed data and parameters thrown at the public API and CLI.

Each input either works correctly (finite scores of the right shape) or raises one of the
documented anomalykit exceptions with a one-line message: never a crash, hang, NaN score, or a
half-written run folder.
"""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import anomalykit
from anomalykit import AnomalyKitError, ConfigError, InputError
from anomalykit.cli import cli

DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_, np.complex64])
SPECIAL = st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, 3.0e38])


@st.composite
def arrays(draw, shapes=()):
    """Arrays of every rank, dtype and layout; with ``shapes``, half of them take one of those
    shapes (so inputs a fitted detector must accept are drawn often)."""
    if shapes and draw(st.booleans()):
        shape = draw(st.sampled_from(shapes))
    else:
        ndim = draw(st.integers(0, 5))
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim)))
    dtype = draw(DTYPES)
    arr = draw(hnp.arrays(dtype=np.float64, shape=shape, elements=st.floats(-10, 10)))
    if arr.size and draw(st.booleans()):
        flat = arr.reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(SPECIAL)
    with np.errstate(all="ignore"):
        arr = arr.astype(dtype)
    layout = draw(st.sampled_from(["numpy", "tensor", "channels_last", "strided", "list"]))
    if layout == "list":
        return arr.tolist()
    if dtype in (np.complex64, np.uint8) or layout == "numpy":
        return arr
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if layout == "channels_last" and t.ndim == 4:
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided" and t.ndim >= 2 and t.shape[-1] > 1:
        return t[..., ::2]
    return t


def assert_documented(exc: BaseException) -> None:
    assert isinstance(exc, AnomalyKitError), f"undocumented {type(exc).__name__}: {exc}"
    msg = str(exc)
    assert msg and "\n" not in msg


def must_accept(X, sample_shapes=None) -> bool:
    """Whether the documented contract says ``X`` is valid, decided here from the raw input alone:
    real numbers (bool, integer or float), rank 2-4, no empty axis, every value finite and within
    float32's range, and (for a fitted detector) one of its sample shapes."""
    arr = np.asarray(X)
    if arr.dtype.kind not in "biuf" or arr.ndim not in (2, 3, 4) or 0 in arr.shape:
        return False
    if sample_shapes is not None and tuple(arr.shape[1:]) not in sample_shapes:
        return False
    values = arr.astype(np.float64)
    return bool(np.isfinite(values).all() and (np.abs(values) <= np.finfo(np.float32).max).all())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(X=arrays())
def test_fit_on_anything(pca_method, X):
    det = anomalykit.load_method(pca_method, n_components=2)
    try:
        det.fit(X)
    except Exception as exc:  # noqa: BLE001
        assert not must_accept(X), f"valid input refused: {type(exc).__name__}: {exc}"
        assert_documented(exc)
        return
    scores = det.score_samples(X)
    n = len(X) if isinstance(X, list) else X.shape[0]
    assert scores.shape == (n,) and np.isfinite(scores).all()


@pytest.fixture(scope="module")
def fitted_images():
    from anomalykit.registry import get_registry

    # a small fitted detector on 1x6x6 images, shared by the scoring properties
    import importlib

    reg = get_registry()
    added = "pca-recon" not in reg.methods
    if added:
        reg.add_plugin(importlib.import_module("anomalykit_pca"), name="pca-recon-hypothesis")
    X = torch.rand(40, 1, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    yield anomalykit.load_method("pca-recon", n_components=3).fit(X)
    if added:  # leave the process-wide registry as we found it for later test modules
        reg.remove_plugin("pca-recon-hypothesis")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(X=arrays(shapes=((3, 1, 6, 6), (2, 6, 6), (1, 1, 6, 6))))
def test_score_anything(fitted_images, X):
    try:
        scores = fitted_images.score_samples(X)
    except Exception as exc:  # noqa: BLE001
        assert not must_accept(X, {(1, 6, 6), (6, 6)}), f"valid input refused: {type(exc).__name__}: {exc}"
        assert_documented(exc)
        return
    assert np.isfinite(scores).all() and scores.shape == (np.asarray(X).shape[0],)


def test_mismatched_channels_between_fit_and_score(fitted_images):
    with pytest.raises(InputError, match=r"sample shape \(3, 6, 6\) but the detector was fitted on \(1, 6, 6\)"):
        fitted_images.score_samples(torch.zeros(4, 3, 6, 6))


def test_huge_but_finite_values_give_finite_scores(fitted_images):
    scores = fitted_images.score_samples(torch.full((3, 1, 6, 6), 1e15))
    assert np.isfinite(scores).all()


@settings(max_examples=100, deadline=None)
@given(key=st.text(min_size=1, max_size=12), value=st.text(max_size=12))
def test_params_from_text_never_crash(key, value):
    try:
        anomalykit.load_method("ama", **{key: value})
    except Exception as exc:  # noqa: BLE001
        assert_documented(exc)
        assert isinstance(exc, ConfigError)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    option=st.sampled_from(["--normal-class", "--epochs", "--batch-size", "--seed", "--max-train", "--set", "--data", "--device"]),
    value=st.sampled_from(["-1", "abc", "1e9", "", "nan", "10", "=", "n_critic=0", "lr=-1", "x.npy", "cuda:3"]),
)
def test_cli_run_bad_options_fail_cleanly_before_writing(tmp_path_factory, option, value):
    out = tmp_path_factory.mktemp("cli") / "run"
    res = CliRunner().invoke(cli, ["run", "ama", option, value, "--epochs", "0", "--out", str(out), "-q"], catch_exceptions=True)
    if res.exit_code == 0:
        assert (out / "metrics.json").exists()  # it was valid after all: the run completed
        return
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and ("error:" in res.stderr or "Error:" in res.stderr)
    assert not (out / "metrics.json").exists()
