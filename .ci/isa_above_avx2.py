"""Print the CPU features above AVX2 that the CI's AVX2 pass forces off, space-separated (empty
when there are none, i.e. the CPU's own ceiling is AVX2 and the forced pass would repeat the first).

The features are the ones ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN's avx2_vnni, avx2_vnni_2, the
AVX-512 and AMX ISAs) and ``ATEN_CPU_CAPABILITY=avx2`` (ATen's and anomalykit's AVX-512 kernels)
cut off, as Linux names them in /proc/cpuinfo. Where /proc/cpuinfo is unreadable (not Linux),
it prints ``unknown`` so the pass runs.
"""
from __future__ import annotations

ABOVE_AVX2 = ("avx512f", "avx_vnni", "avx_vnni_int8", "avx_ne_convert", "amx_tile")


def features_above_avx2(cpuinfo: str) -> list[str]:
    """The ``ABOVE_AVX2`` flags on the first ``flags`` line of a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in ABOVE_AVX2 if f in flags]
    return ["unknown"]


if __name__ == "__main__":
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        text = ""
    print(" ".join(features_above_avx2(text)))
