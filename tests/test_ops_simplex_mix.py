"""simplex_mix and sample_simplex: simplex interpolation in latent space (AMA sec. 3.2)."""
import numpy as np
import pytest
import scipy.stats
import torch

from anomalykit.errors import InputError
from anomalykit.ops import _native, reference

native_cpu = pytest.mark.skipif(
    not _native.has_kernel("simplex_mix", "cpu"), reason=f"native extension not built: {_native.LOAD_ERROR}"
)
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
