"""anomalykit's fused ops: native C++/CUDA kernels with a pure-PyTorch reference fallback.

    from anomalykit import ops
    r = ops.pair_feature_l1(f_real, f_fake)              # (B,)   R(x) of AMA eq. 5
    index, weight = ops.sample_simplex(B, k=3, generator=g)
    z = ops.simplex_mix(latents, index, weight)          # (B, d) simplex interpolation
    z_neg = ops.annulus_sample(n, d, d**0.5, d**0.5 + delta, generator=g)

Which implementation runs is chosen at every call by the environment variable
``ANOMALYKIT_KERNELS``:

- ``auto`` (default): the native kernel when the extension is built and has a kernel for the
  inputs' device, else the reference (warning once if the extension is not built at all);
- ``native``: the native kernel, or a RuntimeError saying how to build it;
- ``reference``: always the pure-PyTorch reference (``anomalykit.ops.reference``, which is also
  the documentation of the semantics).

``active_kernels(device)`` and ``extension_status()`` report the choice, ``cpu_isa_status()`` the
instruction set of the native CPU loops (``anomalykit info``).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterator

import torch

from ..errors import ConfigError, InputError
from . import _native, gate, reference
from .reference import SIMPLEX_SCHEMES, sample_simplex

__all__ = [
    "pair_feature_l1", "simplex_mix", "sample_simplex", "annulus_sample", "SIMPLEX_SCHEMES", "outer_adam_step_",
    "active_kernels", "extension_status", "cpu_isa_status", "kernels_mode", "reference", "gate", "KERNEL_MODES", "NATIVE_OPS",
]

ENV_VAR = "ANOMALYKIT_KERNELS"
KERNEL_MODES = ("auto", "native", "reference")
NATIVE_OPS = _native.NATIVE_OPS
BUILD_HINT = "build it with `pip install --no-build-isolation -e .` (needs a C++ compiler and ninja)"

_fallback_warned = False
_override: str | None = None


def kernels_mode() -> str:
    """The kernel choice (auto, native or reference), read at every call: the innermost
    :func:`kernels` block, else ``ANOMALYKIT_KERNELS``."""
    if _override is not None:
        return _override
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in KERNEL_MODES:
        raise ConfigError(f"{ENV_VAR}={mode!r} is not one of {', '.join(KERNEL_MODES)}")
    return mode


@contextlib.contextmanager
def kernels(mode: str) -> Iterator[None]:
    """Inside the block the ops use ``mode`` (auto, native or reference), whatever
    ``ANOMALYKIT_KERNELS`` says (e.g. export records the reference math)."""
    global _override
    if mode not in KERNEL_MODES:
        raise ConfigError(f"kernels mode {mode!r} is not one of {', '.join(KERNEL_MODES)}")
    before, _override = _override, mode
    try:
        yield
    finally:
        _override = before


def _use_native(op: str, device: torch.device, dtype: torch.dtype | None = None) -> bool:
    """Whether ``op`` on ``device`` runs natively; raises if ANOMALYKIT_KERNELS=native cannot be honoured.

    ``auto`` on a gated device (CUDA) also needs the op's first-use check for this device and
    ``dtype`` to have passed (:mod:`anomalykit.ops.gate`); ``native`` forces the kernel regardless."""
    mode = kernels_mode()
    if mode == "reference":
        return False
    if _native.has_kernel(op, device.type):
        return mode == "native" or dtype is None or gate.allows(op, device, dtype)
    if mode == "native":
        if not _native.loaded():
            raise RuntimeError(
                f"{ENV_VAR}=native but the anomalykit native extension is not built ({_native.LOAD_ERROR}); "
                f"{BUILD_HINT}, or set {ENV_VAR}=auto"
            )
        raise RuntimeError(
            f"{ENV_VAR}=native but anomalykit.{op} has no native kernel for device {device} "
            f"(built for {', '.join(_native.backends()) or 'nothing'}); set {ENV_VAR}=auto to use the reference"
        )
    if not _native.loaded():
        _warn_fallback_once()
    return False


def _warn_fallback_once() -> None:
    global _fallback_warned
    if not _fallback_warned:
        _fallback_warned = True
        warnings.warn(
            f"anomalykit native ops are not built ({_native.LOAD_ERROR}); using the pure-PyTorch reference ops. "
            f"To get the fast kernels, {BUILD_HINT}.",
            RuntimeWarning,
            stacklevel=4,
        )


def active_kernels(device) -> dict[str, str]:
    """Op name -> "native" or "reference": what a call on ``device`` would use now.

    With ANOMALYKIT_KERNELS=native and no kernel for ``device`` the entry is "unavailable"
    (a call would raise RuntimeError). ``sample_simplex`` is pure Python and not listed. On a
    device the first-use gate covers, "native" holds once the op's check passed; until then it
    reads "native (checked at first use)", after a failed check "reference (failed its check: ...)".
    """
    device = torch.device(device)
    mode = kernels_mode()
    verdicts = gate.verdicts()
    result = {}
    for op in NATIVE_OPS:
        if mode != "reference" and _native.has_kernel(op, device.type):
            result[op] = "native"
            if mode == "auto" and gate.gated(device):
                mine = {k: v for k, v in verdicts.items() if k[0] == op and k[1] == str(device)}
                failed = [f"{k[2].replace('torch.', '')}: {v}" for k, v in mine.items() if v]
                if failed:
                    result[op] = "reference (failed its first-use check, " + "; ".join(failed) + ")"
                elif not mine:
                    result[op] = "native (checked at first use)"
        else:
            result[op] = "unavailable" if mode == "native" else "reference"
    return result


def extension_status() -> str:
    """One line on the native extension, e.g. "native extension loaded (CPU, CUDA)"."""
    if _native.loaded():
        return f"native extension loaded ({', '.join(_native.backends()) or 'no kernels'})"
    return f"native extension not built ({_native.LOAD_ERROR}); using reference ops"


def cpu_isa_status() -> str:
    """One line on the instruction set the native CPU loops run, e.g. "avx2".

    ATen's CPU capability (``ATEN_CPU_CAPABILITY=default|avx2|avx512`` when set) picks the variant,
    clamped to what the CPU supports; a clamped choice says so, e.g.
    "avx2 (ATen capability asks for avx512; this CPU supports up to avx2)".
    """
    isa = _native.cpu_isa()
    if isa is None:
        return "no native CPU kernels" if not _native.loaded() else "unknown (extension built without cpu_isa; rebuild it)"
    used, requested, supported = isa
    if used == requested:
        return used
    return f"{used} (ATen capability asks for {requested}; this CPU supports up to {supported})"


# ----------------------------------------------------------------------------------------------
# the ops (docstrings of the reference functions state the semantics)
# ----------------------------------------------------------------------------------------------

def _autocast_promote(a, b):
    """Inside an autocast region (mixed precision, :mod:`anomalykit.precision`) tensors of two float
    dtypes meet here (a bfloat16 network output and a float32 one): both take the wider dtype, as
    autocast's own "promote" ops do. Outside autocast a mismatch stays an input error."""
    if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype != b.dtype and a.is_floating_point()
            and b.is_floating_point() and torch.is_autocast_enabled(a.device.type)):
        wide = torch.promote_types(a.dtype, b.dtype)
        return a.to(wide), b.to(wide)
    return a, b


def pair_feature_l1(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    """Row-wise L1 distance of two (B, F) feature matrices -> (B,); R(x) of AMA eq. 5.

    Any float dtype (float16/bfloat16 accumulate in float32; output has the input dtype).
    Differentiable in both inputs with subgradient sign(f_real - f_fake) (0 where equal).
    """
    f_real, f_fake = _autocast_promote(f_real, f_fake)
    reference.check_pair_feature_l1_inputs(f_real, f_fake)
    if _use_native("pair_feature_l1", f_real.device, f_real.dtype):
        return _native.op("pair_feature_l1")(f_real, f_fake)
    return reference.pair_feature_l1(f_real, f_fake)


def simplex_mix(latents: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """out[b] = sum_i weight[b, i] * latents[index[b, i]] -> (B', d); AMA sec. 3.2.

    latents (B, d) float, index (B', k) int64 in [0, B), weight (B', k) of the latents' dtype.
    Weights are used as given (``sample_simplex`` already normalises them to sum 1).
    Differentiable w.r.t. latents and weight. An index out of range raises InputError.
    """
    latents, weight = _autocast_promote(latents, weight)
    native = _use_native("simplex_mix", latents.device, latents.dtype) if isinstance(latents, torch.Tensor) else False
    # The native CPU kernel checks the index range itself while it reads the indices.
    reference.check_simplex_mix_inputs(latents, index, weight, check_range=not (native and latents.device.type == "cpu"))
    if native:
        return _native.op("simplex_mix")(latents, index, weight)
    return reference.simplex_mix(latents, index, weight)


def annulus_sample(
    n: int,
    d: int,
    r_inner: float,
    r_outer: float,
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(n, d) points uniform in the volume of the shell r_inner <= ||z|| <= r_outer (AMA Atypical Selection).

    Native and reference draw differently (same seed -> same samples on the same path and
    device; the distribution is the same). See ``reference.annulus_sample`` for the radius formula.
    """
    n, d, r_inner, r_outer, dtype = reference.check_annulus_args(n, d, r_inner, r_outer, dtype)
    device = reference.resolve_device(device, generator)
    if generator is not None and generator.device.type != device.type:
        raise InputError(f"annulus_sample: generator is on {generator.device} but device is {device}")
    if _use_native("annulus_sample", device, dtype):
        return _native.op("annulus_sample")(n, d, r_inner, r_outer, generator=generator, dtype=dtype, device=device)
    return reference.annulus_sample(n, d, r_inner, r_outer, generator=generator, device=device, dtype=dtype)


def outer_adam_step_(
    param: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    coef_m,
    coef_v,
    *,
    step_size: float,
    bias_correction2_sqrt: float,
    eps: float,
    input_grad: bool = False,
) -> torch.Tensor | None:
    """In-place Adam step on ``param`` (B, K, N) from the factors of its outer-product gradients;
    with ``input_grad`` also returns ``param_before @ right[-1]`` (B, K) (see
    ``reference.outer_adam_step_``). A helper, not one of the three spec'd ops: native on the CPU
    (one pass over ``param``, no stored moments), the reference elsewhere; it follows
    ANOMALYKIT_KERNELS like them."""
    reference.check_outer_adam_args(param, left, right, coef_m, coef_v)
    mode = kernels_mode()
    if mode != "reference" and _native.has_kernel("outer_adam_step_", param.device.type) and param.is_contiguous():
        out = torch.ops.anomalykit.outer_adam_step_(
            param, left, right, [float(c) for c in coef_m], [float(c) for c in coef_v], float(step_size),
            float(bias_correction2_sqrt), float(eps), bool(input_grad),
        )
        return out if input_grad else None
    return reference.outer_adam_step_(param, left, right, coef_m, coef_v, step_size=step_size,
                                      bias_correction2_sqrt=bias_correction2_sqrt, eps=eps, input_grad=input_grad)
