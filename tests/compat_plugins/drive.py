"""Drive one installed plugin through what its users do with it, in one process; print a JSON report.

    python drive.py METHOD DATA OUT [PARAMS_JSON] [PLUGIN_TEST_FILE]

Run by tests/test_compat_plugins.py with only the plugin's own install folder (and anomalykit) on
the path. Every check runs even if an earlier one failed; the last stdout line is
``COMPAT-REPORT {...}``: ``checks`` (name -> "ok" or the one-line failure) and ``deprecations``
(the message of every AnomalykitDeprecationWarning the process emitted, in order).
"""
from __future__ import annotations

import json
import sys
import traceback
import warnings
from pathlib import Path


def main() -> None:
    method, data, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    params = json.loads(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else {}
    plugin_test = sys.argv[5] if len(sys.argv) > 5 else ""
    checks: dict[str, str] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import numpy as np
        from click.testing import CliRunner

        import anomalykit
        from anomalykit.cli import cli

        sets = [a for k, v in params.items() for a in ("--set", f"{k}={v}")]
        runner = CliRunner()

        def cli_ok(*args: str) -> str:
            res = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
            if res.exit_code != 0:
                raise AssertionError(f"`anomalykit {' '.join(map(str, args))}` exited {res.exit_code}: "
                                     f"{(res.stderr if hasattr(res, 'stderr') else res.output).strip()[-300:]}")
            return res.stdout

        def check(name, fn):
            try:
                fn()
                checks[name] = "ok"
            except BaseException as exc:  # noqa: BLE001 -- the report names it
                checks[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                traceback.print_exc()

        def listed():
            info = json.loads(cli_ok("list", "--json"))
            assert info["failed_plugins"] == [], info["failed_plugins"]
            assert method in [m["name"] for m in info["methods"]], f"{method} not listed"

        def datasets():
            if data != "digits":
                assert data in cli_ok("datasets"), f"dataset {data} not listed"

        def kit():
            from anomalykit.testing import check_method

            check_method(method, params=params)

        run = out / "run"

        def run_cli():
            cli_ok("run", method, "--data", data, "--out", run, "-q", "--seed", "0", *sets)
            metrics = json.loads((run / "metrics.json").read_text())
            assert metrics["method"] == method and metrics["auroc"] > 0.6, metrics.get("auroc")
            if anomalykit.load(run).reconstruct(np.zeros((1, *anomalykit.load(run).fit_input_[0]), np.float32)) is not None:
                assert (run / "recon.png").exists(), "the method reconstructs but the report has no recon.png"

        def same_weights():  # the same seed trains the same weights, in a second run
            cli_ok("run", method, "--data", data, "--out", out / "run2", "-q", "--seed", "0", *sets)
            a = anomalykit.load(run).nets.state_dict()
            b = anomalykit.load(out / "run2").nets.state_dict()
            assert all(bool((a[k] == b[k]).all()) for k in a), "two runs with one seed differ"

        def resume():  # a run stopped before its report: --resume finishes it with the same result
            before = json.loads((run / "metrics.json").read_text())["auroc"]
            (run / "metrics.json").unlink()
            cli_ok("run", "--resume", run, "-q")
            assert json.loads((run / "metrics.json").read_text())["auroc"] == before

        scores_file = out / "scores.npy"

        def score():
            cli_ok("score", run, data, "--out", scores_file)
            from anomalykit.data import load_dataset

            rows = load_dataset(data).rows_in_source_order()
            expected = anomalykit.load(run).score_samples(rows)
            got = np.load(scores_file)
            assert got.shape == expected.shape and np.allclose(got, expected, rtol=1e-6, atol=1e-6)

        def save_load():
            from anomalykit.data import load_dataset

            det = anomalykit.load(run)
            X = load_dataset(data).X_test
            det.save(out / "copy.pt")
            again = anomalykit.load(out / "copy.pt")
            assert np.array_equal(det.score_samples(X), again.score_samples(X))
            assert np.array_equal(det.predict(X), again.predict(X))

        def export():
            exported = out / "model.torchscript.pt"
            cli_ok("export", run, "--format", "torchscript", "--out", exported)
            cli_ok("score", exported, data, "--out", out / "exported.npy")
            assert np.allclose(np.load(out / "exported.npy"), np.load(scores_file), rtol=1e-4, atol=1e-5)

        def bench():
            cli_ok("bench", "--methods", method, "--data", data, "--classes", "0", "--seeds", "0", "--budget", "default",
                   "--out", out / "bench", *sets)
            rows = (out / "bench" / "results.csv").read_text().splitlines()
            assert len(rows) == 2 and ",ok," in rows[1], rows

        def plugin_tests():
            import pytest

            code = pytest.main(["-q", "-p", "no:cacheprovider", plugin_test])
            assert code == 0, f"the plugin's own tests exited {code}"

        for name, fn in [("list", listed), ("datasets", datasets), ("check_method", kit), ("run", run_cli),
                         ("same weights", same_weights), ("resume", resume), ("score", score),
                         ("save/load", save_load), ("export", export), ("bench", bench)]:
            check(name, fn)
        if plugin_test:
            check("plugin's own tests", plugin_tests)
        deprecations = [str(w.message) for w in caught if issubclass(w.category, anomalykit.AnomalykitDeprecationWarning)]
    print("COMPAT-REPORT " + json.dumps({"checks": checks, "deprecations": deprecations}))


if __name__ == "__main__":
    main()
