"""Build script: packages plus the optional native extension ``anomalykit._C``.

The extension is built with ``torch.utils.cpp_extension``: a ``CppExtension`` always, a
``CUDAExtension`` (adding the ``.cu`` kernels) when torch has CUDA and nvcc is found.
If the build fails (no compiler, unsupported platform) the install still succeeds and
anomalykit uses its pure-PyTorch reference ops, saying so once at first use.

Environment switches:
  ANOMALYKIT_NO_EXTENSION=1   skip the native build entirely
  ANOMALYKIT_USE_CUDA=0       build the CPU extension only, even when CUDA is available
  ANOMALYKIT_DEBUG=1          -O0 -g builds
  ANOMALYKIT_REQUIRE_EXTENSION=1   fail the install if the native ops do not build (CI sets it,
                                   so a broken .cpp cannot pass as "skipped native tests")
"""
import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# Stable ABI floor = requires-python (3.10); recent torch adds the same define itself.
PY_LIMITED_API = "-DPy_LIMITED_API=0x030A0000"


def _packages():
    """The core ``anomalykit`` and the built-in plugins ``anomalykit_plugins`` (folder = import name)."""
    return find_packages(include=["anomalykit", "anomalykit.*", "anomalykit_plugins", "anomalykit_plugins.*"])


def _extension_kwargs():
    if os.environ.get("ANOMALYKIT_NO_EXTENSION", "0") == "1":
        return {}
    try:
        import torch
        from torch.utils.cpp_extension import (
            CUDA_HOME,
            BuildExtension,
            CppExtension,
            CUDAExtension,
        )
    except Exception as exc:  # torch missing at build time: pure-Python install
        print(f"anomalykit: torch not importable at build time ({exc}); skipping native ops", file=sys.stderr)
        return {}

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    if not sources:
        return {}
    use_cuda = (
        os.environ.get("ANOMALYKIT_USE_CUDA", "1") != "0"
        and torch.cuda.is_available()
        and CUDA_HOME is not None
    )
    debug = os.environ.get("ANOMALYKIT_DEBUG", "0") == "1"
    # -fno-math-errno lets sqrt and friends vectorise (PyTorch builds with it too). No -march flags:
    # the wheel must run on any x86-64; the hot RNG loops carry AVX2/AVX-512 variants chosen at run
    # time instead.
    cxx_opt = ["-O0", "-g"] if debug else ["-O3", "-fno-math-errno"]
    extra = {"cxx": cxx_opt + ["-fopenmp", "-Wno-psabi", PY_LIMITED_API]}
    kind = CppExtension
    if use_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        # no --use_fast_math: curand's Box-Muller and the radius formula keep full-precision log/sincos
        extra["nvcc"] = ["-O3", "-lineinfo", PY_LIMITED_API] if not debug else ["-O0", "-g", "-G", PY_LIMITED_API]
        kind = CUDAExtension
    ext = kind(
        "anomalykit._C",
        sources,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )

    required = os.environ.get("ANOMALYKIT_REQUIRE_EXTENSION", "0") == "1"

    class OptionalBuildExt(BuildExtension):
        """Build the native ops, but never fail the install because of them (unless
        ANOMALYKIT_REQUIRE_EXTENSION=1)."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # compiler missing or broken
                self._skipped(exc)

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:
                self._skipped(exc)

        @staticmethod
        def _skipped(exc):
            if required:
                raise RuntimeError(f"anomalykit: native ops failed to build ({exc}) and ANOMALYKIT_REQUIRE_EXTENSION=1") from exc
            print(f"anomalykit: native ops not built ({exc}); the pure-PyTorch reference ops will be used", file=sys.stderr)

    return {"ext_modules": [ext], "cmdclass": {"build_ext": OptionalBuildExt.with_options(use_ninja=True)}}


setup(
    packages=_packages(),
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
    **_extension_kwargs(),
)
