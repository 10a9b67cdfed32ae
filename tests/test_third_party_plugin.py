"""A third-party plugin installed with pip is discovered through its entry point, listed and run;
a plugin whose import fails is reported (name, distribution, reason) and skipped."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "plugins"
ANOMALYKIT = [sys.executable, "-m", "anomalykit.cli"]


def pip(*args):
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)


@pytest.fixture(scope="module")
def installed_plugins():
    for name in ("pca_plugin", "broken_plugin"):
        pip("install", "--no-deps", "--no-build-isolation", "--no-cache-dir", str(HERE / name))
    try:
        yield
    finally:
        pip("uninstall", "-y", "anomalykit-pca-example", "anomalykit-broken-example")


def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH="")  # only what pip installed is visible
    return subprocess.run([*ANOMALYKIT, *map(str, args)], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


def test_installed_plugin_is_listed_and_broken_one_is_reported(installed_plugins, tmp_path):
    res = cli("list", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    pca = next(m for m in data["methods"] if m["name"] == "pca-recon")
    assert pca["distribution"] == "anomalykit-pca-example" and pca["version"] == "0.1.0"
    broken = [f for f in data["failed_plugins"] if f["plugin"] == "broken"]
    assert broken and broken[0]["distribution"] == "anomalykit-broken-example"
    assert "broken on purpose" in broken[0]["reason"]
    warnings = [line for line in res.stderr.splitlines() if "broken" in line]
    assert len(warnings) == 1 and "skipped" in warnings[0]


def test_installed_plugin_runs_through_the_cli(installed_plugins, tmp_path):
    out = tmp_path / "run"
    res = cli("run", "pca-recon", "--data", "digits", "--out", out, "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "pca-recon" and metrics["plugin"]["distribution"] == "anomalykit-pca-example"
    assert metrics["auroc"] > 0.9
