#!/usr/bin/env bash
# Compile-only check of anomalykit's CUDA kernels, for machines without a GPU.
#
#   .ci/cuda_compile_check.sh [VENV_DIR]
#
# The CPU torch's headers cannot compile CUDA code (c10/cuda/impl/cuda_cmake_macros.h is missing),
# so this uses a separate venv with the CUDA build of torch (created in VENV_DIR, default a temp
# dir, when it has no torch yet) and nvcc from $CUDA_HOME (default /usr/local/cuda). It compiles
# every csrc/cuda/*.cu for the architectures in $CUDA_ARCHS (default "90") and every C++ source
# against those headers, then links the objects with -Wl,--no-undefined so a symbol missing from
# torch's CUDA libraries also fails. Nothing is run. Any error fails the script (exit status != 0).
# Environment: CUDA_HOME, CUDA_ARCHS ("80 90" adds A100), JOBS, SOURCES (a subset, for quick checks).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$(mktemp -d)/cuda-venv}"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
CUDA_ARCHS="${CUDA_ARCHS:-90}"
JOBS="${JOBS:-$(nproc)}"
TORCH_CUDA_VERSION="${TORCH_CUDA_VERSION:-2.14.1}"
start=$(date +%s)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "== creating $VENV with torch==$TORCH_CUDA_VERSION (CUDA build)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "torch==$TORCH_CUDA_VERSION"
fi
PY="$VENV/bin/python"
"$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 'torch in $VENV has no CUDA')"

# Flags as torch.utils.cpp_extension would pass them for this extension.
read -r -d '' FLAGS_PY <<'PYEOF' || true
import os, sysconfig, torch
from torch.utils import cpp_extension as ce
site = os.path.dirname(os.path.dirname(torch.__file__))
nv = os.path.join(site, "nvidia", "cu13")
includes = ce.include_paths(device_type="cuda") + [os.path.join(nv, "include"), sysconfig.get_paths()["include"]]
defines = ["-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C", "-DPy_LIMITED_API=0x030A0000",
           f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
print("INCLUDES=" + repr(" ".join("-I" + p for p in includes)))
print("DEFINES=" + repr(" ".join(defines)))
print("NVCC_COMMON=" + repr(" ".join(ce.COMMON_NVCC_FLAGS)))
print("TORCH_LIB=" + repr(os.path.join(os.path.dirname(torch.__file__), "lib")))
print("CUDA_LIBDIRS=" + repr(" ".join("-L" + p for p in (os.path.join(nv, "lib"), os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "lib64")))))
print("PY_LDFLAGS=" + repr(f"-L{sysconfig.get_config_var('LIBDIR')} -lpython{sysconfig.get_config_var('LDVERSION')}"))
PYEOF
eval "$(CUDA_HOME="$CUDA_HOME" PYTHONWARNINGS=ignore "$PY" -c "$FLAGS_PY" 2>/dev/null)"

OUT="$(mktemp -d)"
GENCODE=""
for arch in $CUDA_ARCHS; do GENCODE+=" -gencode arch=compute_${arch},code=sm_${arch}"; done

compile() {  # one source -> one object
  local src="$1" obj="$OUT/$(echo "$1" | tr '/' '_').o"
  case "$src" in
    *.cu) "$CUDA_HOME/bin/nvcc" -c "$ROOT/$src" -o "$obj" -std=c++20 -O3 -lineinfo $GENCODE $NVCC_COMMON \
            --compiler-options '-fPIC' $DEFINES $INCLUDES ;;
    *)    g++ -c "$ROOT/$src" -o "$obj" -std=c++20 -O3 -fno-math-errno -Wno-psabi -fopenmp -fPIC -DUSE_CUDA $DEFINES $INCLUDES \
            -I"$CUDA_HOME/include" ;;
  esac && echo "   ok  $src"
}
export -f compile
export ROOT OUT CUDA_HOME GENCODE NVCC_COMMON DEFINES INCLUDES

cd "$ROOT"
SOURCES="${SOURCES:-$(ls csrc/cuda/*.cu csrc/*.cpp csrc/cpu/*.cpp)}"  # override to check a subset
echo "== compiling $(echo $SOURCES | wc -w) sources for sm_${CUDA_ARCHS// /, sm_} with $($CUDA_HOME/bin/nvcc --version | tail -1) ($JOBS jobs)"
if ! printf '%s\n' $SOURCES | xargs -P "$JOBS" -I{} bash -c 'compile {}'; then
  echo "CUDA compile check FAILED" >&2
  exit 1
fi

echo "== linking with -Wl,--no-undefined"
g++ -shared "$OUT"/*.o -o "$OUT/_C.so" -fopenmp -Wl,--no-undefined -L"$TORCH_LIB" $CUDA_LIBDIRS \
  -lc10 -lc10_cuda -ltorch -ltorch_cpu -ltorch_cuda -lcudart $PY_LDFLAGS
echo "CUDA compile check passed in $(( $(date +%s) - start )) s (objects in $OUT)"
