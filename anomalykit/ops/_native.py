"""The native extension ``anomalykit._C`` and its torch.library glue.

Importing ``anomalykit._C`` runs the ``TORCH_LIBRARY(anomalykit, m)`` block of ``csrc/ops.cpp``
(op schemas) and the ``TORCH_LIBRARY_IMPL`` blocks of ``csrc/cpu/*.cpp`` / ``csrc/cuda/*.cu``
(kernels). This module adds what the C++ side does not: fake (meta) kernels so the ops trace
under torch.compile, and autograd formulas whose backward calls the native backward ops.
"""
from __future__ import annotations

import torch

NATIVE_OPS = ("pair_feature_l1", "simplex_mix", "annulus_sample")
#: Native helpers outside the three spec'd ops (CPU kernel only; listed by nothing user-facing).
HELPER_OPS = ("outer_adam_step_",)
_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}

try:
    from .. import _C  # noqa: F401  (loading it registers the anomalykit:: ops)
except (ImportError, OSError) as exc:  # not built, or built against another torch
    _C = None
    LOAD_ERROR: str | None = " ".join(f"{type(exc).__name__}: {exc}".split())
else:
    LOAD_ERROR = None


def loaded() -> bool:
    """Whether ``anomalykit._C`` imported and its ops are registered."""
    return _C is not None


def _registered_kernels() -> frozenset[tuple[str, str]]:
    """(op, device type) pairs with a native kernel, read from the dispatcher once at import."""
    if _C is None:
        return frozenset()
    return frozenset(
        (op, device_type)
        for op in NATIVE_OPS + HELPER_OPS
        for device_type, key in _DISPATCH_KEYS.items()
        if torch._C._dispatch_has_kernel_for_dispatch_key(f"anomalykit::{op}", key)
    )


KERNELS = _registered_kernels()


def has_kernel(op: str, device_type: str) -> bool:
    """Whether the native op ``op`` has a kernel for ``device_type`` ("cpu", "cuda", ...).

    A plain set lookup, so torch.compile traces through the front-end without a graph break.
    """
    return (op, device_type) in KERNELS


def cpu_isa() -> tuple[str, str, str] | None:
    """(used, requested, supported) CPU loop variants, each "default", "avx2" or "avx512"; None if not built.

    ``used`` is what the CPU kernels run: ``requested`` (ATen's CPU capability, which follows
    ``ATEN_CPU_CAPABILITY``) clamped to ``supported`` (what this CPU can execute; csrc/cpu/isa.h).
    Fixed at the first native call of the process.
    """
    if _C is None or not hasattr(_C, "cpu_isa"):  # not built, or built before cpu_isa existed
        return None
    used, requested, supported = _C.cpu_isa()
    return used, requested, supported


def op(name: str):
    """The native op ``name`` (``torch.ops.anomalykit.<name>``): the one place the front-end and the
    first-use gate (:mod:`anomalykit.ops.gate`) call native kernels through."""
    return getattr(torch.ops.anomalykit, name)


def library_path() -> str | None:
    """The file of the loaded extension, or None."""
    return getattr(_C, "__file__", None) if _C is not None else None


def backends() -> list[str]:
    """Dispatch keys with a kernel for every native op, e.g. ["CPU", "CUDA"]."""
    return [key for dev, key in _DISPATCH_KEYS.items() if all(has_kernel(op, dev) for op in NATIVE_OPS)]


def _register_python_parts() -> None:
    ops = torch.ops.anomalykit

    # ---------------------------------------------------------------- fake kernels (shapes only)
    @torch.library.register_fake("anomalykit::pair_feature_l1")
    def _pair_feature_l1_fake(a, b):
        torch._check(a.dim() == 2 and a.shape == b.shape, lambda: "pair_feature_l1: a and b must be (B, F) of one shape")
        return a.new_empty(a.shape[0])

    @torch.library.register_fake("anomalykit::pair_feature_l1_backward")
    def _pair_feature_l1_backward_fake(grad, a, b):
        return torch.empty_like(a, memory_format=torch.contiguous_format), torch.empty_like(b, memory_format=torch.contiguous_format)

    @torch.library.register_fake("anomalykit::simplex_mix")
    def _simplex_mix_fake(latents, index, weight):
        torch._check(index.shape == weight.shape, lambda: "simplex_mix: index and weight must have one shape")
        return latents.new_empty(index.shape[0], latents.shape[1])

    @torch.library.register_fake("anomalykit::simplex_mix_backward")
    def _simplex_mix_backward_fake(grad, latents, index, weight, latents_grad, weight_grad):
        grad_latents = latents.new_empty(latents.shape if latents_grad else (0,))
        grad_weight = weight.new_empty(weight.shape if weight_grad else (0,))
        return grad_latents, grad_weight

    @torch.library.register_fake("anomalykit::annulus_sample")
    def _annulus_sample_fake(n, d, r_inner, r_outer, generator=None, dtype=None, device=None):
        return torch.empty(n, d, dtype=dtype, device=device)

    if torch._C._dispatch_has_kernel_for_dispatch_key("anomalykit::outer_adam_step_", "CPU"):  # absent from older builds

        @torch.library.register_fake("anomalykit::outer_adam_step_")
        def _outer_adam_step_fake(param, left, right, coef_m, coef_v, step_size, bias_correction2_sqrt, eps, input_grad=False):
            return param.new_empty(param.shape[:2] if input_grad else (0,))

    # ---------------------------------------------------------------- autograd
    def _pair_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _pair_backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a, grad_b = ops.pair_feature_l1_backward.default(grad, a, b)
        return grad_a, grad_b

    def _pair_grad_setup(ctx, inputs, output):
        _, a, b = inputs
        ctx.save_for_backward(a, b)

    def _pair_grad_backward(ctx, grad_grad_a, grad_grad_b):
        # grad_a = grad * s, grad_b = -grad * s with s = sign(a - b) locally constant in a and b.
        a, b = ctx.saved_tensors
        sign = (a - b).sign()
        return ((grad_grad_a - grad_grad_b) * sign).sum(dim=1), None, None

    torch.library.register_autograd("anomalykit::pair_feature_l1", _pair_backward, setup_context=_pair_setup)
    torch.library.register_autograd(
        "anomalykit::pair_feature_l1_backward", _pair_grad_backward, setup_context=_pair_grad_setup
    )

    def _mix_setup(ctx, inputs, output):
        latents, index, weight = inputs
        ctx.save_for_backward(latents, index, weight)

    def _mix_backward(ctx, grad):
        latents, index, weight = ctx.saved_tensors
        need_latents, _, need_weight = ctx.needs_input_grad
        grad_latents, grad_weight = ops.simplex_mix_backward.default(grad, latents, index, weight, need_latents, need_weight)
        return (grad_latents if need_latents else None), None, (grad_weight if need_weight else None)

    def _mix_grad_setup(ctx, inputs, output):
        grad, latents, index, weight, latents_grad, weight_grad = inputs
        ctx.save_for_backward(grad, latents, index, weight)
        ctx.computed = (latents_grad, weight_grad)

    def _mix_grad_backward(ctx, grad_grad_latents, grad_grad_weight):
        # grad_latents = scatter_add(index, weight * grad) and grad_weight = <grad, latents[index]> are
        # bilinear, so their derivatives are simplex_mix / simplex_mix_backward again.
        grad, latents, index, weight = ctx.saved_tensors
        computed_latents, computed_weight = ctx.computed
        need_grad, need_latents, _, need_weight = ctx.needs_input_grad[:4]
        d_grad = d_latents = d_weight = None
        if need_grad:
            d_grad = torch.zeros_like(grad)
            if computed_latents:
                d_grad = d_grad + ops.simplex_mix(grad_grad_latents, index, weight)
            if computed_weight:
                d_grad = d_grad + ops.simplex_mix(latents, index, grad_grad_weight)
        if need_latents and computed_weight:
            d_latents = ops.simplex_mix_backward(grad, latents, index, grad_grad_weight, True, False)[0]
        if need_weight and computed_latents:
            d_weight = ops.simplex_mix_backward(grad, grad_grad_latents, index, weight, False, True)[1]
        return d_grad, d_latents, None, d_weight, None, None

    torch.library.register_autograd("anomalykit::simplex_mix", _mix_backward, setup_context=_mix_setup)
    torch.library.register_autograd(
        "anomalykit::simplex_mix_backward", _mix_grad_backward, setup_context=_mix_grad_setup
    )


if loaded():
    _register_python_parts()
