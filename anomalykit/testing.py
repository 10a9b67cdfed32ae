"""A conformance kit for method plugins (in spirit like scikit-learn's ``check_estimator``).

    from anomalykit.testing import check_method

    def test_my_method_keeps_the_contract():
        check_method("my-method", params={"epochs": 1, "width": 8})   # or the Detector subclass

:func:`check_method` fits the method on small synthetic data of each kind it accepts (uint8
images (N, H, W), float images (N, C, H, W), tabular rows (N, F); a kind it refuses with one
``InputError`` line is skipped, at least one must work) and checks, against independent
computations (numpy, scikit-learn), what the core and the users rely on:

- the class keeps :mod:`anomalykit.contract` (what the registry checks at load time);
- ``get_params``/``set_params``/``sklearn.base.clone``; unknown parameters are refused;
- ``fit`` returns the detector; ``decision_scores_`` and ``labels_`` hold one value per training
  row; ``threshold_`` is the (1 − contamination) quantile of ``decision_scores_`` and ``labels_``
  flags the rows above it; changing ``contamination`` re-derives both;
- ``score_samples`` gives (N,) finite float64 scores, **higher = more anomalous** (rows far from
  the training data score higher than held-out normal rows: AUROC >= ``min_auroc``);
  ``predict`` is ``score > threshold_``; ``predict_proba`` rows are probabilities;
  ``reconstruct`` is None or has the input's shape;
- the same seed gives the same scores; ``save`` -> ``anomalykit.load`` gives the same scores;
- bad input (NaN, another sample shape, no rows, scoring before ``fit``) raises the documented
  one-line errors;
- where the method exports, the exported graph reproduces ``score_samples``.

It raises :class:`AssertionError` listing every failed check (one line each) and returns the
list of checks that passed.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import first_line


def _data(kind: str, seed: int = 0):
    """(train, held-out normal, anomalies) of one kind: smooth blobs / correlated rows as the
    normal data, uniform noise over the same range as the anomalies."""
    rng = np.random.default_rng(seed)
    if kind == "rows":
        mix = rng.normal(size=(4, 10))
        normal = rng.normal(size=(260, 4)) @ mix * 3.0 + 20.0
        noise = rng.uniform(normal.min(), normal.max(), size=(30, 10))
        return normal[:200], normal[200:], noise
    yy, xx = np.mgrid[0:8, 0:8]
    centres = rng.uniform(2, 6, size=(260, 2))
    blobs = np.exp(-((yy[None] - centres[:, :1, None]) ** 2 + (xx[None] - centres[:, 1:, None]) ** 2) / 4.0)
    noise = rng.uniform(0, 1, size=(30, 8, 8))
    if kind == "uint8-images":
        return (np.round(blobs[:200] * 255).astype(np.uint8), np.round(blobs[200:] * 255).astype(np.uint8),
                np.round(noise * 255).astype(np.uint8))
    f = lambda a: (a * 16).astype(np.float32)[:, None]  # noqa: E731 -- (N, 1, 8, 8), values 0..16 like digits
    return f(blobs[:200]), f(blobs[200:]), f(noise)


KINDS = ("uint8-images", "float-images", "rows")


def check_method(method, *, params: dict[str, Any] | None = None, kinds=KINDS, min_auroc: float = 0.75,
                 export: bool = True) -> list[str]:
    """Check a method (its registered name or its Detector subclass); see the module docstring.
    ``params``: settings that keep it small and fast (e.g. ``epochs=1``); ``kinds``: the data kinds
    to try; ``min_auroc``: the floor for "anomalies score higher"."""
    from sklearn.base import clone
    from sklearn.metrics import roc_auc_score

    import anomalykit
    from .contract import check_method_class
    from .errors import ConfigError, InputError, NotFittedError

    cls = anomalykit.load_method(method).__class__ if isinstance(method, str) else method
    params = {"device": "cpu", **(params or {})}
    passed: list[str] = []
    failed: list[str] = []

    def check(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except AssertionError as exc:
            failed.append(f"{name}: {first_line(exc, default='assertion failed')}")
        except Exception as exc:  # noqa: BLE001 -- any error is a failed check, reported in one line
            failed.append(f"{name}: {type(exc).__name__}: {first_line(exc, default='')}")
        else:
            passed.append(name)

    def contract():
        problem = check_method_class(cls)
        assert problem is None, problem

    check("contract", contract)
    if failed:
        raise AssertionError(f"{cls.__name__} fails the method contract:\n  " + "\n  ".join(failed))

    def params_api():
        det = cls(**params)
        got = det.get_params()
        assert all(got[k] == v for k, v in params.items()), "get_params does not return the parameters given"
        twin = clone(det)
        assert type(twin) is cls and twin.get_params() == got, "sklearn.base.clone changed the parameters"
        det.set_params(contamination=0.2)
        assert det.get_params()["contamination"] == 0.2, "set_params(contamination=0.2) did not take"
        try:
            cls(**params, no_such_parameter=1)
        except ConfigError:
            pass
        else:
            raise AssertionError("an unknown parameter was accepted silently")

    check("parameters", params_api)

    worked = []
    for kind in kinds:
        X_train, X_normal, X_anom = _data(kind)
        try:
            det = cls(**params)
            returned = det.fit(X_train)
        except InputError as exc:  # the method does not take this kind of data: one line, skipped
            if "\n" in str(exc):
                failed.append(f"fit [{kind}]: refused with a message of several lines")
            continue
        except Exception as exc:  # noqa: BLE001 -- a fit that breaks is a failed check
            failed.append(f"fit [{kind}]: {type(exc).__name__}: {first_line(exc, default='')}")
            worked.append(kind)
            continue
        worked.append(kind)
        X_test = np.concatenate([X_normal, X_anom])
        y_test = np.r_[np.zeros(len(X_normal)), np.ones(len(X_anom))]
        tag = f"[{kind}]"

        def fitted_state():
            assert returned is det, "fit() must return the detector"
            n = X_train.shape[0]
            assert np.shape(det.decision_scores_) == (n,), f"decision_scores_ has shape {np.shape(det.decision_scores_)}, not ({n},)"
            assert np.shape(det.labels_) == (n,), f"labels_ has shape {np.shape(det.labels_)}, not ({n},)"
            q = float(np.quantile(np.asarray(det.decision_scores_, np.float64), 1 - det.hp.contamination))
            assert np.isclose(det.threshold_, q, rtol=1e-12, atol=1e-12), f"threshold_ {det.threshold_} is not the quantile {q}"
            assert np.array_equal(det.labels_, (np.asarray(det.decision_scores_) > q).astype(int)), \
                "labels_ is not decision_scores_ > threshold_"

        def scores():
            s = det.score_samples(X_test)
            assert isinstance(s, np.ndarray) and s.shape == (len(X_test),) and s.dtype == np.float64, "scores must be float64 (N,)"
            assert np.isfinite(s).all(), "non-finite scores"
            assert np.array_equal(det.decision_function(X_test), s), "decision_function differs from score_samples"
            assert np.array_equal(det.predict(X_test), (s > det.threshold_).astype(int)), "predict is not score > threshold_"
            p = det.predict_proba(X_test)
            assert p.shape == (len(X_test), 2) and np.allclose(p.sum(1), 1) and ((p >= 0) & (p <= 1)).all(), "predict_proba"
            c = det.predict_confidence(X_test)
            assert c.shape == (len(X_test),) and ((c >= 0) & (c <= 1)).all(), "predict_confidence outside [0, 1]"
            auroc = roc_auc_score(y_test, s)
            assert auroc >= min_auroc, (f"noise rows do not score higher than normal rows (AUROC {auroc:.3f} < {min_auroc}): "
                                        "is the sign 'higher = more anomalous'?")

        def contamination():
            twin = cls(**params).fit(X_train)
            twin.set_params(contamination=0.3)
            q = float(np.quantile(np.asarray(twin.decision_scores_, np.float64), 0.7))
            assert np.isclose(twin.threshold_, q), "set_params(contamination=...) did not re-derive threshold_"
            assert np.array_equal(twin.labels_, (np.asarray(twin.decision_scores_) > q).astype(int)), \
                "labels_ was not re-derived with the new contamination"

        def reconstruct():
            r = det.reconstruct(X_test[:3])
            if r is not None:
                want = (3, *det.input_shape_)
                assert tuple(r.shape) == want, f"reconstruct returned {tuple(r.shape)}, expected {want}"

        def determinism():
            again = cls(**params).fit(X_train)
            assert np.array_equal(again.score_samples(X_test), det.score_samples(X_test)), \
                "two fits with the same seed score differently"

        def lazy_rows():
            from .lazy_rows import NpyRows

            with tempfile.TemporaryDirectory() as tmp:
                np.save(Path(tmp) / "x.npy", np.asarray(X_train))
                lazy = cls(**params).fit(NpyRows(str(Path(tmp) / "x.npy")))
                assert np.array_equal(lazy.score_samples(X_test), det.score_samples(X_test)), (
                    "fit on lazy rows (a memory-mapped .npy) trains a different model: _fit may only index, slice and "
                    "map_batches its X (anomalykit.contract, _fit)")

        def save_load():
            from .checkpoint import safe_load
            from .registry import get_registry

            registered = get_registry().methods.get(cls.name)
            with tempfile.TemporaryDirectory() as tmp:
                path = det.save(Path(tmp) / "m.pt")
                if registered is not None and registered.cls is cls:
                    back = anomalykit.load(path)
                else:  # a class not (yet) registered: load through it
                    back = cls.from_checkpoint(safe_load(path, kind="detector"), path=path)
            assert type(back) is cls and back.get_params() == det.get_params(), "load() changed the class or parameters"
            assert np.array_equal(back.score_samples(X_test), det.score_samples(X_test)), "scores after load differ"
            assert back.threshold_ == det.threshold_, "threshold_ after load"

        def bad_input():
            bad = np.array(X_test[:4], dtype=np.float64)
            bad[1].flat[0] = np.nan
            for what, X, err in (("NaN", bad, InputError), ("another sample shape", np.zeros((3, 5)), InputError),
                                 ("no rows", X_test[:0], InputError)):
                try:
                    det.score_samples(X)
                except err as exc:
                    assert "\n" not in str(exc), f"{what}: the error is not one line"
                else:
                    raise AssertionError(f"{what} was scored without an error")
            try:
                cls(**params).score_samples(X_test)
            except NotFittedError:
                pass
            else:
                raise AssertionError("an unfitted detector scored rows")

        def exported():
            from .errors import ExportError
            from .export import load_scorer

            if getattr(det, "export_unsupported", None):
                return
            formats = ["torchscript"] + ([] if det.score_needs_grad or not _has("onnxruntime") or not _has("onnxscript") else ["onnx"])
            ref = det.score_samples(X_test)
            with tempfile.TemporaryDirectory() as tmp:
                for fmt in formats:
                    try:
                        path = det.export(Path(tmp) / f"m.{fmt}", format=fmt)
                    except ExportError as exc:
                        raise AssertionError(f"{fmt} export failed: {exc}") from None
                    got = load_scorer(path).score_samples(X_test)
                    dev = float(np.abs(got - ref).max()) / max(float(np.abs(ref).max()), 1e-12)
                    assert dev <= 1e-4, f"{fmt} graph differs from score_samples by {dev:.1e} of the largest score"

        for name, fn in (("fitted state", fitted_state), ("scores", scores), ("contamination", contamination),
                         ("reconstruct", reconstruct), ("determinism", determinism), ("lazy rows", lazy_rows), ("save/load", save_load),
                         ("bad input", bad_input)) + ((("export", exported),) if export else ()):
            check(f"{name} {tag}", fn)
    if not worked:
        failed.append(f"fit: the method accepted none of the data kinds {', '.join(kinds)}")
    if failed:
        raise AssertionError(f"{cls.__name__} ({getattr(cls, 'name', '?')}) failed {len(failed)} check(s):\n  " + "\n  ".join(failed))
    return passed


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
