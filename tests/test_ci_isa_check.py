"""The CI's decision to run its AVX2 pass (.ci/isa_above_avx2.py), on hand-written /proc/cpuinfo
texts of the CPUs it meets: AVX2-only (the pass would repeat the first one), AVX-512, AVX-VNNI."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "isa_above_avx2.py"
spec = importlib.util.spec_from_file_location("isa_above_avx2", SCRIPT)
isa = importlib.util.module_from_spec(spec)
spec.loader.exec_module(isa)

ZEN3 = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni"
SKYLAKE_SP = ZEN3 + " avx512f avx512dq avx512cd avx512bw avx512vl"
ALDER_LAKE = ZEN3 + " avx_vnni"


def cpuinfo(flags: str) -> str:
    return f"processor\t: 0\nvendor_id\t: X\nflags\t\t: {flags}\nbugs\t\t: spectre_v1\n\nprocessor\t: 1\nflags\t\t: {flags}\n"


@pytest.mark.parametrize("flags, above", [
    (ZEN3, []),
    (SKYLAKE_SP, ["avx512f"]),
    (ALDER_LAKE, ["avx_vnni"]),
    (SKYLAKE_SP + " avx_vnni amx_tile amx_bf16", ["avx512f", "avx_vnni", "amx_tile"]),
])
def test_features_above_avx2(flags, above):
    assert isa.features_above_avx2(cpuinfo(flags)) == above


def test_flag_names_are_whole_words():
    """avx512 sub-features alone (no avx512f) or a flag merely starting with avx_vnni don't count."""
    assert isa.features_above_avx2(cpuinfo(ZEN3 + " avx512_bf16 avx_vnnix")) == []


def test_unreadable_cpuinfo_runs_the_pass():
    assert isa.features_above_avx2("") == ["unknown"]


def test_script_prints_this_cpus_features():
    """The script on this machine, against the rule read off /proc/cpuinfo here: the first flags
    line's whole words avx512f, avx_vnni and amx_tile, in that order."""
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True).stdout.split()
    cpu = Path("/proc/cpuinfo")
    if not cpu.exists():
        assert out == ["unknown"]
        return
    flags = next(line.split(":", 1)[1].split() for line in cpu.read_text().splitlines() if line.startswith("flags"))
    assert out == [f for f in ("avx512f", "avx_vnni", "amx_tile") if f in flags]


def test_the_skip_check_names_skips_no_rule_allows():
    """CI's skip check (tests/conftest.py, .ci/expected_skips.txt): a CUDA test skipped for want of a
    GPU is expected; the same test skipped for another reason, or a module skipped at import, is not."""
    from conftest import unexpected_skips

    rules = (Path(__file__).resolve().parents[1] / ".ci" / "expected_skips.txt").read_text()
    skipped = [
        ("tests/test_ops_simplex_mix.py::test_cuda_matches_reference[float32]", "needs a CUDA GPU"),
        ("tests/test_ops_frontend.py::test_forcing_an_isa_the_cpu_lacks_falls_back[avx512]",
         "this CPU has avx512, so forcing it is no fallback here; the *-hidden cases simulate a CPU without it"),
        ("tests/test_ops_simplex_mix.py::test_cuda_matches_reference[float16]", "no C++ compiler"),
        ("tests/test_export.py", "could not import 'onnxruntime': No module named 'onnxruntime'"),
        ("tests/test_cli.py::test_run", "needs a CUDA GPU"),
    ]
    assert unexpected_skips(skipped, rules) == skipped[2:]
