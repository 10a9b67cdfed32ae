"""pair_feature_l1: R(x) = ||f(x, x) - f(x, G(E(x)))||_1 per row (AMA eq. 5)."""
import pytest
import torch

from anomalykit.errors import InputError
from anomalykit.ops import _native, reference

native_cpu = pytest.mark.skipif(
    not _native.has_kernel("pair_feature_l1", "cpu"), reason=f"native extension not built: {_native.LOAD_ERROR}"
)
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


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reference_reduced_precision_accumulates_in_float32(dtype):
    # 4096 ones: a float16 running sum would stall at 2048; float32 accumulation gives 4096 exactly.
    a = torch.ones(2, 4096, dtype=dtype)
    out = reference.pair_feature_l1(a, torch.zeros_like(a))
    assert out.dtype == dtype and out.tolist() == [4096.0, 4096.0]


@pytest.mark.parametrize(
    "a, b, match",
    [
        (torch.zeros(3), torch.zeros(3), "2-D"),
        (torch.zeros(2, 3), torch.zeros(3, 2), "same shape"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64), "same dtype"),
        (torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64), "floating dtype"),
        (torch.zeros(2, 3), [[0.0] * 3] * 2, "torch.Tensor"),
    ],
)
def test_reference_bad_inputs(a, b, match):
    with pytest.raises(InputError, match=match):
        reference.pair_feature_l1(a, b)
