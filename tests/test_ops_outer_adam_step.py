"""outer_adam_step_: an Adam step from the factors of outer-product gradients (native CPU vs the
reference vs torch.optim.Adam on the materialised gradients)."""
import math

import pytest
import torch

from anomalykit import ops
from anomalykit.errors import InputError
from anomalykit.ops import reference

native_cpu = pytest.mark.native("outer_adam_step_")


@pytest.fixture(params=["reference", pytest.param("native", marks=native_cpu)])
def kernels(request, monkeypatch):
    monkeypatch.setenv("ANOMALYKIT_KERNELS", request.param)
    return request.param


def adam_coefficients(t, betas):
    b1, b2 = betas
    return [(1 - b1) * b1 ** (t - 1 - s) for s in range(t)], [(1 - b2) * b2 ** (t - 1 - s) for s in range(t)]


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-4)])
@pytest.mark.parametrize("shape", [(3, 5, 77), (1, 1, 1), (2, 33, 64)])
def test_equals_torch_adam_on_the_outer_product_gradients(kernels, dtype, rtol, shape):
    B, K, N = shape
    T, lr, betas, eps = 5, 0.05, (0.5, 0.999), 1e-8
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(B, K, N, generator=g, dtype=dtype)
    left = torch.randn(T, B, K, generator=g, dtype=dtype)
    right = torch.randn(T, B, N, generator=g, dtype=dtype) * 1e-3
    ours = p0.clone()
    theirs = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([theirs], lr=lr, betas=betas, eps=eps)
    for t in range(1, T + 1):
        with torch.no_grad():
            before = ours.clone()
        expected_in = torch.einsum("bkn,bn->bk", before, right[t - 1])
        cm, cv = adam_coefficients(t, betas)
        grad_in = ops.outer_adam_step_(ours, left[:t], right[:t], cm, cv, step_size=lr / (1 - betas[0] ** t),
                                       bias_correction2_sqrt=math.sqrt(1 - betas[1] ** t), eps=eps, input_grad=True)
        torch.testing.assert_close(grad_in, expected_in, rtol=rtol, atol=rtol * 1e-3)
        theirs.grad = left[t - 1].unsqueeze(2) * right[t - 1].unsqueeze(1)
        opt.step()
        moved = (theirs.detach() - p0).abs().max()
        assert (ours - theirs.detach()).abs().max() <= rtol * 10 * moved + 1e-30


def test_without_input_grad_returns_none_and_empty_steps_change_nothing(kernels):
    p = torch.randn(2, 3, 4)
    q = p.clone()
    assert ops.outer_adam_step_(q, torch.empty(0, 2, 3), torch.empty(0, 2, 4), [], [], step_size=1.0,
                                bias_correction2_sqrt=1.0, eps=1e-8) is None
    torch.testing.assert_close(q, p, rtol=0, atol=0)


@native_cpu
def test_subnormal_second_moments_give_the_same_step():
    """The native kernel flushes v below the smallest normal number (√v is then invisible next to
    eps); the reference does not: same parameters, bit for bit in float32."""
    p = torch.randn(2, 3, 40)
    left = torch.full((1, 2, 3), 1e-20)
    right = torch.randn(1, 2, 40) * 1e-20  # gradient 1e-40: v subnormal
    args = dict(step_size=0.1, bias_correction2_sqrt=math.sqrt(0.001), eps=1e-8)
    a, b = p.clone(), p.clone()
    torch.ops.anomalykit.outer_adam_step_(a, left, right, [0.5], [0.001], args["step_size"], args["bias_correction2_sqrt"], args["eps"])
    reference.outer_adam_step_(b, left, right, [0.5], [0.001], **args)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("bad, match", [
    (dict(left=torch.randn(2, 3, 3)), "left must be"),
    (dict(right=torch.randn(2, 2, 5)), r"right \(T, 2, 4\)"),
    (dict(coef_m=[1.0]), "one value per step"),
    (dict(param=torch.randn(2, 3)), "3-D float tensor"),
    (dict(left=torch.randn(2, 2, 3, dtype=torch.float64)), "share dtype"),
])
def test_bad_arguments(kernels, bad, match):
    args = dict(param=torch.randn(2, 3, 4), left=torch.randn(2, 2, 3), right=torch.randn(2, 2, 4), coef_m=[1.0, 1.0], coef_v=[1.0, 1.0])
    args.update(bad)
    with pytest.raises(InputError, match=match):
        ops.outer_adam_step_(args["param"], args["left"], args["right"], args["coef_m"], args["coef_v"], step_size=1.0,
                             bias_correction2_sqrt=1.0, eps=1e-8)


@native_cpu
def test_native_opcheck():
    p = torch.randn(2, 3, 5)
    left, right = torch.randn(2, 2, 3), torch.randn(2, 2, 5)
    for input_grad in (False, True):
        torch.library.opcheck(torch.ops.anomalykit.outer_adam_step_.default,
                              (p.clone(), left, right, [0.25, 0.5], [0.001, 0.001], 0.1, 0.05, 1e-8, input_grad))
