"""Frozen compatibility plugins: every example plugin the plugin guide ever showed (taken from git
history exactly as a reader saw it), a plugin written from the first guide alone, and a plugin
that uses each deprecated member, each installed as its own distribution into a folder of its own
and driven in its own process through list, the conformance kit, run, a second run with the same
seed, resume, score, save/load, export and bench (and its own test file, where the guide showed
one). Each must pass every check and emit exactly the deprecation warnings listed here: a change
that breaks one without a deprecation fails here (docs/plugin-api.md, CHANGELOG.md).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anomalykit.deprecation import DEPRECATIONS

COMPAT = Path(__file__).parent / "compat_plugins"


def deprecated(key: str, subject: str = "", detail: str = "") -> str:
    return DEPRECATIONS[key].message(subject, detail)


DAE, LEGACY = "anomalykit_dae.DAE", "anomalykit_legacy.LegacyMembers"
PCA = dict(method="pca-recon", data="digits", params={"n_components": 8}, deprecations=[])
CASES = {
    "guide_c19a854": PCA,
    "guide_89f492a": {**PCA, "plugin_test": "test_pca_plugin_contract.py"},
    "guide_dd41dd2": {**PCA, "plugin_test": "test_pca_plugin_contract.py"},
    "dae_c19a854": dict(method="dae", data="dae-bars", params={"epochs": 15}, deprecations=[
        deprecated("reconstruct-override", DAE),
        deprecated("threshold-sample", DAE),
        deprecated("labels-without-supports-labels", DAE),
    ]),
    "legacy_members": dict(method="legacy-members", data="digits", params={"epochs": 4}, deprecations=[
        deprecated("data-lazy"),
        deprecated("weight-average"),
        deprecated("core-owned-override", LEGACY, "predict"),
        deprecated("trainer-average", LEGACY),
        deprecated("forward-with-features", "", "MLPCritic"),
        deprecated("decision-scores-in-fit", LEGACY),
    ]),
}


@pytest.mark.parametrize("plugin", sorted(CASES))
def test_frozen_plugin_still_works_with_its_deprecations(plugin, tmp_path):
    case = CASES[plugin]
    src = shutil.copytree(COMPAT / plugin, tmp_path / "src")  # build outside the repository
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps",
                    "--no-build-isolation", "--no-cache-dir", "--target", str(site), str(src)],
                   check=True, capture_output=True, timeout=300)
    plugin_test = str(src / case["plugin_test"]) if case.get("plugin_test") else ""
    env = dict(os.environ, PYTHONPATH=str(site), ANOMALYKIT_DATA=os.environ.get("ANOMALYKIT_DATA", ""))
    res = subprocess.run([sys.executable, str(COMPAT / "drive.py"), case["method"], case["data"], str(tmp_path / "out"),
                          json.dumps(case["params"]), plugin_test],
                         capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("COMPAT-REPORT ")]
    assert res.returncode == 0 and lines, res.stderr[-3000:]
    report = json.loads(lines[-1][len("COMPAT-REPORT "):])
    failed = {k: v for k, v in report["checks"].items() if v != "ok"}
    assert not failed, f"{plugin}: {failed}\n{res.stderr[-3000:]}"
    assert report["deprecations"] == case["deprecations"]
