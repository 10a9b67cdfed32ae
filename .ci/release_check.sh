#!/usr/bin/env bash
# Release check: `python -m build --sdist` makes the sdist; a fresh venv set up the README's way
# (torch pinned first, no build isolation) builds the wheel from that sdist, installs it, imports
# it outside the repository and runs `anomalykit run ama --epochs 1`. A file missing from the
# sdist (a header, a package, package data) fails here instead of on a user's machine.
# Run from the CI venv (it needs setuptools, wheel and torch to run setup.py for the sdist).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python -m pip install -q build
had_egg_info=$(ls -d ./*.egg-info 2>/dev/null || true)
python -m build --sdist --no-isolation --outdir "$work/dist" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
# setuptools leaves anomalykit.egg-info in the checkout; a stale one there shadows the installed
# entry points for anything run from the repository root, so remove what this build made
[ -z "$had_egg_info" ] && rm -rf ./*.egg-info
sdist=$(ls "$work"/dist/anomalykit-*.tar.gz)
echo "sdist: $(basename "$sdist") ($(tar -tzf "$sdist" | wc -l) files)"

python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q torch==2.13.0 setuptools wheel ninja
ANOMALYKIT_REQUIRE_EXTENSION=1 "$py" -m pip wheel -q --no-build-isolation --no-deps -w "$work/dist" "$sdist"
wheel=$(ls "$work"/dist/anomalykit-*.whl)
echo "wheel: $(basename "$wheel")"
"$py" -m pip install -q "$wheel"

cd "$work"  # not the repository: only the installed files are importable
"$py" - <<'PY'
import anomalykit, anomalykit.ops as ops
print("installed", anomalykit.__version__, "plugin API", anomalykit.PLUGIN_API_VERSION, "from", anomalykit.__file__)
assert "/venv/" in anomalykit.__file__, "imported the repository, not the installed package"
status = ops.extension_status()
assert status.startswith("native extension loaded"), f"the wheel's native extension did not load: {status}"
# every built-in method and map baseline registers through the wheel's entry points
assert anomalykit.list_methods() == ["adgan", "ama", "csi-aae", "mae-simplex", "patch-ae", "patch-knn"], anomalykit.list_methods()
PY
"$work/venv/bin/anomalykit" run ama --epochs 1 -q --out "$work/run" | tail -3
test -f "$work/run/metrics.json" && test -f "$work/run/model.pt"
cd "$repo"
echo "release check passed"
