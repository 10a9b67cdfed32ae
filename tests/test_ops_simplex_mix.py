"""simplex_mix and sample_simplex: simplex interpolation in latent space (AMA sec. 3.2)."""
import numpy as np
import pytest
import scipy.stats
import torch

from anomalykit.errors import InputError
from anomalykit.ops import reference

native_cpu = pytest.mark.native("simplex_mix")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ------------------------------------------------------------------------------ reference
def test_reference_hand_computed():
    latents = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    index = torch.tensor([[0, 1, 2], [2, 2, 0]])
    weight = torch.tensor([[0.5, 0.25, 0.25], [1.0, -1.0, 3.0]])
    out = reference.simplex_mix(latents, index, weight)
    assert out.tolist() == [[1.0, 0.75], [3.0, 0.0]]


def test_reference_gradients_by_hand():
    latents = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    index = torch.tensor([[0, 1], [1, 1]])
    weight = torch.tensor([[0.5, 2.0], [1.0, 1.0]], requires_grad=True)
    grad_out = torch.tensor([[1.0, -1.0], [2.0, 0.0]])
    reference.simplex_mix(latents, index, weight).backward(grad_out)
    # latents[1] receives 2.0 * g0 + 1.0 * g1 + 1.0 * g1 (the repeated index accumulates)
    assert latents.grad.tolist() == [[0.5, -0.5], [6.0, -2.0]]
    # weight[b, i] = <g_b, latents[index[b, i]]>
    assert weight.grad.tolist() == [[-1.0, -1.0], [6.0, 6.0]]


@pytest.mark.parametrize(
    "latents, index, weight, match",
    [
        (torch.zeros(4), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), "2-D"),
        (torch.zeros(4, 2), torch.zeros(2, 3, dtype=torch.int32), torch.zeros(2, 3), "int64"),
        (torch.zeros(4, 2), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 2), "shape of index"),
        (torch.zeros(4, 2), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.float64), "dtype of latents"),
        (torch.zeros(4, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), "floating"),
        (torch.zeros(4, 2), torch.tensor([[0, 1, 4]]), torch.zeros(1, 3), "index value 4 is out of range for 4"),
        (torch.zeros(4, 2), torch.tensor([[0, -1, 2]]), torch.zeros(1, 3), "index value -1 is out of range"),
    ],
)
def test_reference_bad_inputs(latents, index, weight, match):
    with pytest.raises(InputError, match=match):
        reference.simplex_mix(latents, index, weight)


# ------------------------------------------------------------------------------ sample_simplex
@pytest.mark.parametrize("scheme", ["normalized", "residual"])
def test_sample_simplex_properties(scheme):
    index, weight = reference.sample_simplex(2000, 3, n_latents=5, generator=torch.Generator().manual_seed(0), scheme=scheme)
    assert index.shape == weight.shape == (2000, 3)
    assert index.dtype == torch.int64 and weight.dtype == torch.float32
    assert index.min() >= 0 and index.max() < 5
    assert all(len(set(row)) == 3 for row in index.tolist()), "vertices of one simplex must be distinct"
    torch.testing.assert_close(weight.sum(dim=1), torch.ones(2000))
    assert (weight >= 0).all()
    if scheme == "residual":  # alpha_1, alpha_2 ~ U(0, 0.5) used as is, alpha_3 = 1 - alpha_1 - alpha_2
        assert (weight[:, :2] < 0.5).all() and (weight[:, 2] > 0).all()


def test_sample_simplex_indices_uniform():
    index, _ = reference.sample_simplex(30000, 3, n_latents=6, generator=torch.Generator().manual_seed(1))
    counts = np.bincount(index.flatten().numpy(), minlength=6)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    first = np.bincount(index[:, 0].numpy(), minlength=6)
    assert scipy.stats.chisquare(first).pvalue > 1e-3


def test_sample_simplex_normalized_weights_match_independent_simulation():
    # The paper: alpha_i ~ U[0, 0.5] i.i.d., weight = alpha / sum(alpha). Compare weight_0 with numpy draws.
    _, weight = reference.sample_simplex(20000, 3, generator=torch.Generator().manual_seed(2))
    alpha = np.random.default_rng(0).uniform(0.0, 0.5, size=(20000, 3))
    expected = alpha[:, 0] / alpha.sum(axis=1)
    assert scipy.stats.ks_2samp(weight[:, 0].numpy(), expected).pvalue > 1e-3


def test_sample_simplex_reproducible_with_generator():
    first = reference.sample_simplex(64, 3, generator=torch.Generator().manual_seed(7))
    again = reference.sample_simplex(64, 3, generator=torch.Generator().manual_seed(7))
    other = reference.sample_simplex(64, 3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch=-1), "batch must be >= 0"),
        (dict(batch=4, k=0), "k must be >= 1"),
        (dict(batch=4, k=5), "distinct"),
        (dict(batch=4, k=4, scheme="residual"), "k <= 3"),
        (dict(batch=4, scheme="dirichlet"), "scheme"),
        (dict(batch=2.5), "integer"),
    ],
)
def test_sample_simplex_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match):
        reference.sample_simplex(**kwargs)


# ------------------------------------------------------------------------------ native vs reference
TOLERANCE = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-5), torch.bfloat16: (1e-2, 1e-2), torch.float16: (2e-3, 1e-3)}


def native(latents, index, weight):
    return torch.ops.anomalykit.simplex_mix(latents, index, weight)


def random_inputs(n_latents, rows, k, d, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(n_latents, d, generator=g).to(device, dtype)
    index = torch.randint(0, n_latents, (rows, k), generator=g).to(device)
    weight = torch.rand(rows, k, generator=g).to(device, dtype)
    return latents, index, weight


def forward_and_grads(fn, latents, index, weight, grad_out):
    latents = latents.detach().clone().requires_grad_(True)
    weight = weight.detach().clone().requires_grad_(True)
    out = fn(latents, index, weight)
    out.backward(grad_out)
    return out, latents.grad, weight.grad


@native_cpu
@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("n_latents, rows, k, d", [(1, 1, 1, 1), (5, 3, 3, 7), (8, 20, 3, 64), (6, 4, 5, 1000), (300, 256, 3, 33), (4, 0, 3, 8)])
def test_native_forward_and_backward_match_reference(dtype, n_latents, rows, k, d):
    latents, index, weight = random_inputs(n_latents, rows, k, d, dtype)
    grad_out = torch.randn(rows, d).to(dtype)
    got = forward_and_grads(native, latents, index, weight, grad_out)
    expected = forward_and_grads(reference.simplex_mix, latents, index, weight, grad_out)
    rtol, atol = TOLERANCE[dtype]
    for name, x, y in zip(("output", "grad latents", "grad weight"), got, expected):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


@native_cpu
def test_native_repeated_indices_accumulate():
    latents = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    index = torch.tensor([[1, 1, 1], [0, 1, 0]])
    weight = torch.tensor([[0.25, 0.25, 0.5], [1.0, 2.0, 3.0]])
    out = native(latents, index, weight)
    assert out.tolist() == [[3.0, 4.0], [10.0, 16.0]]
    out.backward(torch.ones(2, 2))
    assert latents.grad.tolist() == [[4.0, 4.0], [3.0, 3.0]]


@native_cpu
def test_native_non_contiguous_inputs():
    latents, index, weight = random_inputs(12, 9, 3, 40)
    wide = torch.randn(12, 90)
    cases = [
        (wide[:, 5:45], index, weight),  # row-strided latents
        (wide[:, ::2][:, :40], index, weight),  # column stride 2
        (latents, index.t().contiguous().t(), weight.t().contiguous().t()),  # transposed index / weight
    ]
    for args in cases:
        torch.testing.assert_close(native(*args), reference.simplex_mix(*args))


@native_cpu
def test_native_gradcheck_float64_both_inputs():
    latents, index, weight = random_inputs(5, 4, 3, 6, torch.float64)
    latents.requires_grad_(True)
    weight.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda l, w: native(l, index, w), (latents, weight))
    assert torch.autograd.gradgradcheck(lambda l, w: native(l, index, w), (latents, weight))


@native_cpu
def test_native_backward_only_computes_requested_gradients():
    latents, index, weight = random_inputs(5, 4, 3, 6)
    grad_latents, grad_weight = torch.ops.anomalykit.simplex_mix_backward(torch.ones(4, 6), latents, index, weight, True, False)
    assert grad_latents.shape == (5, 6) and grad_weight.numel() == 0
    latents.requires_grad_(True)
    native(latents, index, weight).sum().backward()  # weight without requires_grad
    assert latents.grad.shape == (5, 6) and weight.grad is None


@native_cpu
@pytest.mark.parametrize("requires_grad", [False, True])
def test_native_opcheck(requires_grad):
    latents, index, weight = random_inputs(7, 5, 3, 9)
    latents.requires_grad_(requires_grad)
    weight.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.anomalykit.simplex_mix.default, (latents, index, weight))
    for flags in [(True, True), (True, False), (False, True)]:
        args = (torch.randn(5, 9), latents.detach(), index, weight.detach(), *flags)
        torch.library.opcheck(torch.ops.anomalykit.simplex_mix_backward.default, args)


@native_cpu
def test_native_under_torch_compile_fullgraph(monkeypatch):
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "native")
    from anomalykit import ops

    latents, index, weight = random_inputs(10, 6, 3, 16)
    latents.requires_grad_(True)
    compiled = torch.compile(lambda l, i, w: ops.simplex_mix(l, i, w).square().sum(), fullgraph=True, backend="aot_eager")
    compiled(latents, index, weight).backward()
    expected = latents.detach().clone().requires_grad_(True)
    reference.simplex_mix(expected, index, weight).square().sum().backward()
    torch.testing.assert_close(latents.grad, expected.grad)


@native_cpu
@pytest.mark.parametrize("bad_index, match", [(7, "index value 7 is out of range for 7"), (-1, "index value -1 is out of range")])
def test_native_index_out_of_range(bad_index, match):
    latents, index, weight = random_inputs(7, 5, 3, 4)
    index[3, 1] = bad_index
    with pytest.raises(RuntimeError, match=match):
        native(latents, index, weight)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.anomalykit.simplex_mix_backward(torch.ones(5, 4), latents, index, weight, True, True)


@native_cpu
def test_native_op_rejects_bad_inputs():
    latents, index, weight = random_inputs(7, 5, 3, 4)
    with pytest.raises(RuntimeError, match="int64"):
        native(latents, index.int(), weight)
    with pytest.raises(RuntimeError, match="shape of index"):
        native(latents, index, weight[:, :2])
    with pytest.raises(RuntimeError, match="dtype of latents"):
        native(latents, index, weight.double())
    with pytest.raises(RuntimeError, match="floating"):
        native(latents.long(), index, weight.long())


# ------------------------------------------------------------------------------ CUDA
@needs_cuda
@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("n_latents, rows, k, d", [(1, 1, 1, 1), (8, 20, 3, 64), (300, 256, 3, 513), (4096, 4096, 3, 512)])
def test_cuda_matches_reference(dtype, n_latents, rows, k, d):
    latents, index, weight = random_inputs(n_latents, rows, k, d, dtype, device="cuda")
    grad_out = torch.randn(rows, d, device="cuda").to(dtype)
    got = forward_and_grads(native, latents, index, weight, grad_out)
    expected = forward_and_grads(reference.simplex_mix, latents, index, weight, grad_out)
    rtol, atol = TOLERANCE[dtype]
    for x, y in zip(got, expected):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


@needs_cuda
def test_cuda_gradcheck_and_opcheck():
    latents, index, weight = random_inputs(5, 4, 3, 6, torch.float64, device="cuda")
    latents.requires_grad_(True)
    weight.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda l, w: native(l, index, w), (latents, weight))
    torch.library.opcheck(torch.ops.anomalykit.simplex_mix.default, (latents, index, weight))
    args = (torch.randn(4, 6, device="cuda", dtype=torch.float64), latents.detach(), index, weight.detach(), True, True)
    torch.library.opcheck(torch.ops.anomalykit.simplex_mix_backward.default, args)


@needs_cuda
def test_cuda_non_contiguous_latents_and_compile(monkeypatch):
    from anomalykit import ops

    latents = torch.randn(10, 16, device="cuda")[:, ::2]  # (10, 8), strided rows
    index = torch.randint(0, 10, (5, 3), device="cuda")
    weight = torch.softmax(torch.randn(5, 3, device="cuda"), 1)
    torch.testing.assert_close(torch.ops.anomalykit.simplex_mix(latents, index, weight),
                               reference.simplex_mix(latents, index, weight), rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("ANOMALYKIT_KERNELS", "native")
    lat = torch.randn(10, 8, device="cuda", requires_grad=True)
    compiled = torch.compile(lambda l_, i, w: ops.simplex_mix(l_, i, w).square().sum(), fullgraph=True)
    loss = compiled(lat, index, weight)
    loss.backward()
    ref_lat = lat.detach().clone().requires_grad_(True)
    reference.simplex_mix(ref_lat, index, weight).square().sum().backward()
    torch.testing.assert_close(lat.grad, ref_lat.grad, rtol=1e-5, atol=1e-5)
