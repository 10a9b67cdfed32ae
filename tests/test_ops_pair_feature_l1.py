"""pair_feature_l1: R(x) = ||f(x, x) - f(x, G(E(x)))||_1 per row (AMA eq. 5)."""
import pytest
import torch

from anomalykit.errors import InputError
from anomalykit.ops import reference

native_cpu = pytest.mark.native("pair_feature_l1")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ------------------------------------------------------------------------------ reference
def test_reference_hand_computed():
    a = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.5, 0.5]])
    b = torch.tensor([[0.0, 2.0, 3.0], [-0.5, 1.5, 0.0]])
    assert reference.pair_feature_l1(a, b).tolist() == [5.0, 2.5]


def test_reference_gradient_is_sign_with_zero_at_ties():
    a = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    b = torch.tensor([[0.0, 2.0, 4.0]], requires_grad=True)
    reference.pair_feature_l1(a, b).backward(torch.tensor([2.0]))
    assert a.grad.tolist() == [[2.0, 0.0, -2.0]]
    assert b.grad.tolist() == [[-2.0, 0.0, 2.0]]


@pytest.mark.parametrize("impl", ["reference", pytest.param("native", marks=native_cpu)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_rows_are_summed_in_float32(dtype, impl):
    """Half-precision inputs, the row sum correctly rounded from a float64 sum (within one unit in
    the last place): 4096 ones (a running float16/bfloat16 sum stalls at 2048/256) and wide random
    rows. On CPU torch.sum already accumulates half types in float32, so for the reference this
    guards the contract; the native kernel's own accumulator type is what it checks."""
    op = reference.pair_feature_l1 if impl == "reference" else native
    a = torch.ones(2, 4096, dtype=dtype)
    out = op(a, torch.zeros_like(a))
    assert out.dtype == dtype and out.tolist() == [4096.0, 4096.0]
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 8192, generator=g).to(dtype)
    b = torch.randn(64, 8192, generator=g).to(dtype)
    exact = (a.double() - b.double()).abs().sum(1)
    got = op(a, b).double()
    ulp = torch.finfo(dtype).eps * exact.abs()  # one unit in the last place at the result's size
    assert bool(((got - exact).abs() <= ulp).all()), float(((got - exact).abs() / ulp).max())


BAD_INPUTS = [  # (a, b, message) for the Python checks; the C++ checks see only the tensor cases
    (torch.zeros(3), torch.zeros(3), "2-D"),
    (torch.zeros(2, 3), torch.zeros(3, 2), "same shape"),
    (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64), "same dtype"),
    (torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64), "floating dtype"),
    (torch.zeros(2, 3), [[0.0] * 3] * 2, "torch.Tensor"),
]


@pytest.mark.parametrize("a, b, match", BAD_INPUTS)
def test_reference_bad_inputs(a, b, match):
    with pytest.raises(InputError, match=match):
        reference.pair_feature_l1(a, b)


# ------------------------------------------------------------------------------ native vs reference
TOLERANCE = {  # (rtol, atol): summation order differs; reduced dtypes differ by output rounding
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1e-2, 1e-2),
    torch.float16: (2e-3, 1e-3),
}


def native(a, b):
    return torch.ops.anomalykit.pair_feature_l1(a, b)


def assert_matches_reference(a, b):
    out = native(a, b)
    expected = reference.pair_feature_l1(a, b)
    assert out.dtype == a.dtype and out.shape == (a.shape[0],)
    rtol, atol = TOLERANCE[a.dtype]
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol)


@native_cpu
@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (5, 1), (7, 1000), (33, 64), (3, 0), (0, 5)])
def test_native_matches_reference(dtype, shape):
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(shape, generator=g).to(dtype) for _ in range(2))
    assert_matches_reference(a, b)


@native_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_non_contiguous_inputs(dtype):
    base = torch.randn(9, 130, dtype=torch.float32).to(dtype)
    other = torch.randn(130, 9, dtype=torch.float32).to(dtype)
    assert_matches_reference(base[:, 3:70], base[:, 60:127])  # row-strided slices, read in place
    assert_matches_reference(base[:, ::2], base[:, 1::2])  # column stride 2
    assert_matches_reference(other.t(), base)  # transposed


@native_cpu
def test_native_large_values_and_ties():
    a = torch.tensor([[1e30, -1e30, 3.0], [65000.0, 0.0, 0.0]], dtype=torch.float32)
    b = torch.tensor([[-1e30, 1e30, 3.0], [-65000.0, 0.0, 0.0]], dtype=torch.float32)
    assert native(a, b).tolist() == [torch.tensor(4e30).item(), 130000.0]  # 4e30 rounded to float32
    assert torch.isinf(native(a.half(), b.half())[1]), "float16 output overflows like the reference does"
    assert torch.isinf(reference.pair_feature_l1(a.half(), b.half())[1])


@native_cpu
def test_native_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 9, generator=g, dtype=torch.float64)
    b = a + torch.where(torch.rand(4, 9, generator=g) > 0.5, 0.5, -0.5).double()  # |a - b| >> eps: no kinks
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(native, (a, b))
    assert torch.autograd.gradgradcheck(native, (a, b))


@native_cpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_gradients_match_reference(dtype):
    a = torch.randn(6, 50).to(dtype)
    b = a.clone()
    b[:, ::3] += 1.0  # the other columns tie: subgradient 0 on both paths
    grad_out = torch.randn(6).to(dtype)
    grads = []
    for fn in (native, reference.pair_feature_l1):
        x, y = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        fn(x, y).backward(grad_out)
        grads.append((x.grad, y.grad))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    assert (grads[0][0][:, 1::3] == 0).all()


@native_cpu
@pytest.mark.parametrize("requires_grad", [False, True])
def test_native_opcheck(requires_grad):
    a = torch.randn(5, 19, requires_grad=requires_grad)
    b = torch.randn(5, 19, requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.anomalykit.pair_feature_l1.default, (a, b))
    torch.library.opcheck(torch.ops.anomalykit.pair_feature_l1_backward.default, (torch.randn(5), a.detach(), b.detach()))


@native_cpu
def test_native_under_torch_compile_fullgraph(monkeypatch):
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "native")
    from anomalykit import ops

    a = torch.randn(8, 33, requires_grad=True)
    b = torch.randn(8, 33)
    compiled = torch.compile(lambda x, y: ops.pair_feature_l1(x, y).sum(), fullgraph=True, backend="aot_eager")
    loss = compiled(a, b)
    loss.backward()
    torch.testing.assert_close(loss, reference.pair_feature_l1(a, b).sum())
    torch.testing.assert_close(a.grad, torch.sign(a - b).detach())


@native_cpu
@pytest.mark.parametrize("a, b, match", [case for case in BAD_INPUTS if isinstance(case[1], torch.Tensor)])
def test_native_op_rejects_bad_inputs(a, b, match):
    with pytest.raises(RuntimeError, match=match):
        native(a, b)


# ------------------------------------------------------------------------------ CUDA
@needs_cuda
@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 1000), (64, 4099), (4, 8192), (0, 3)])
def test_cuda_matches_reference(dtype, shape):
    a, b = (torch.randn(shape, device="cuda").to(dtype) for _ in range(2))
    assert_matches_reference(a, b)
    assert_matches_reference(a[:, 1:], b[:, :-1] if shape[1] else b)  # misaligned rows: scalar path


@needs_cuda
def test_cuda_gradcheck_and_opcheck():
    a = torch.randn(4, 9, device="cuda", dtype=torch.float64)
    b = (a + 0.5).requires_grad_(True)
    a.requires_grad_(True)
    assert torch.autograd.gradcheck(native, (a, b))
    torch.library.opcheck(torch.ops.anomalykit.pair_feature_l1.default, (a, b))
    torch.library.opcheck(torch.ops.anomalykit.pair_feature_l1_backward.default, (torch.randn(4, device="cuda", dtype=torch.float64), a.detach(), b.detach()))


@needs_cuda
def test_cuda_non_contiguous_inputs_gradgradcheck_and_compile(monkeypatch):
    """The cases the CPU tests cover and CUDA had not: strided rows, a transposed view, double
    backward (the backward op is differentiable too) and torch.compile over the custom op."""
    base = torch.randn(6, 40, device="cuda")
    a, b = base[:, ::2], torch.randn(20, 6, device="cuda").t()  # (6, 20) each, neither contiguous
    assert not a.is_contiguous() and not b.is_contiguous()
    assert_matches_reference(a, b)
    a64 = torch.randn(3, 7, device="cuda", dtype=torch.float64, requires_grad=True)
    b64 = (a64.detach() + 0.3).requires_grad_(True)
    assert torch.autograd.gradgradcheck(native, (a64, b64))
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "native")
    from anomalykit import ops

    x = torch.randn(8, 33, device="cuda", requires_grad=True)
    y = torch.randn(8, 33, device="cuda")
    compiled = torch.compile(lambda p, q: ops.pair_feature_l1(p, q).sum(), fullgraph=True)
    loss = compiled(x, y)
    loss.backward()
    torch.testing.assert_close(loss, reference.pair_feature_l1(x, y).sum())
    torch.testing.assert_close(x.grad, torch.sign(x - y).detach())


@needs_cuda
@pytest.mark.parametrize("op", ["pair_feature_l1", "simplex_mix", "annulus_sample"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_kernels_pass_their_first_use_check(op, dtype):
    from anomalykit.ops import gate

    assert gate.check(op, torch.device("cuda"), dtype) == ""
