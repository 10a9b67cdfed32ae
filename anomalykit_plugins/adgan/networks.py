"""ADGAN's two networks (a WGAN), adapted to the input shape.

- Generator g_θ: (N, d') latents z ~ N(0, I) -> (N, C, H, W) images in [-1, 1] (tanh), or (N, F)
  rows (linear output, for standardised tabular data). DCGAN-style: for images the layers of
  :class:`anomalykit.nn.ConvDecoder` (a transposed conv from the 1x1 latent to the smallest side,
  then stride-2 4x4 transposed convs, BatchNorm + ReLU between); for rows an MLP with BatchNorm + ReLU.
- Critic d_ω: (N, C, H, W) or (N, F) -> (N,) Wasserstein critic values (no BatchNorm, so the
  gradient penalty is well defined): :class:`anomalykit.nn.ConvCritic` / :class:`MLPCritic`.
- Encoder E (only with ``start="encoder"``): (N, C, H, W) or (N, F) -> (N, d'), an approximate
  inverse of g_θ (the paper's section 5: "initializing from an approximate inversion of the
  generator"): :class:`anomalykit.nn.ConvEncoder` / an MLP.

Only the generator is used at test time. Its layers live in one ``nn.Sequential`` so that
:meth:`Generator.forward_copies` can run the *same* network with C different parameter copies
at once (the batched latent search of Algorithm 1 gives every search its own θ).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anomalykit.sdk import ConvCritic, ConvDecoder, ConvEncoder, MLPCritic, flat_dim, is_image, mlp


class Generator(nn.Module):
    """g_θ: (N, latent_dim) -> (N, *shape). ``net`` is a Sequential of the layer types that
    :meth:`forward_copies` understands (Linear, ConvTranspose2d, Conv2d, BatchNorm1d/2d, ReLU,
    LeakyReLU, Tanh)."""

    def __init__(self, latent_dim: int, shape: Sequence[int], *, width: int = 16, hidden: int = 256):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.out_shape = tuple(int(s) for s in shape)
        self.image = is_image(shape)
        if self.image:
            self.net = ConvDecoder(latent_dim, shape, width=width).net
        else:
            self.net = mlp([latent_dim, hidden, hidden, flat_dim(shape)], act="relu", batchnorm=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, d') -> (N, *shape)."""
        h = z.reshape(z.shape[0], self.latent_dim, 1, 1) if self.image else z
        return self.net(h).reshape(z.shape[0], *self.out_shape)

    def forward_copies(self, params: Sequence[torch.Tensor], z: torch.Tensor, *, outer: dict | None = None) -> torch.Tensor:
        """The generator with C parameter copies at once: (C, m, d') -> (C, m, *shape).

        ``params[i]`` is the i-th tensor of ``self.parameters()`` with a leading copy dimension
        C (size 1 broadcasts nothing: pass ``p.unsqueeze(0)`` to share one θ); copy c maps its
        own m latents ``z[c]``. Same maths as ``forward`` with eval-mode BatchNorm (running
        statistics, which are shared buffers, not part of θ), written with batched matmuls
        (``bmm``) and ``fold``/``unfold`` so that autograd gives every copy its own gradient in
        one backward pass. ``forward`` differs only in floating-point summation order.

        ``outer`` (one latent per copy, m = 1): the weight gradient of every matmul layer (linear
        layers, the transposed conv from the 1x1 latent) is then an outer product per copy; those
        weights are used as constants (autograd gives them no gradient) and the backward stores
        the factors instead, ``outer[i] = (left, right)`` for ``params[i]`` viewed as (C, K, N):
        its gradient is ``left[c] ⊗ right[c]`` (see ``anomalykit.sdk.outer_adam_step_``); autograd
        returns None for those weights (request them with ``allow_unused=True``).
        """
        C, m = z.shape[0], z.shape[1]
        if outer is not None and m != 1:
            raise ValueError("forward_copies(outer=...) needs one latent per copy (m = 1)")
        it = iter(enumerate(params))
        h = z.reshape(C, m, self.latent_dim, 1, 1) if self.image else z
        for layer in self.net:
            if isinstance(layer, nn.ConvTranspose2d):
                i, w = next(it)
                h = _conv_transpose_copies(layer, h, w, next(it)[1] if layer.bias is not None else None, _recorder(outer, i, False))
            elif isinstance(layer, nn.Conv2d):
                w = next(it)[1]
                h = _conv_copies(layer, h, w, next(it)[1] if layer.bias is not None else None)
            elif isinstance(layer, nn.Linear):
                i, w = next(it)
                h = _matmul_copies(h, w.transpose(1, 2), _recorder(outer, i, True))
                if layer.bias is not None:
                    h = h + next(it)[1][:, None, :]
            elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
                h = _batchnorm_eval_copies(layer, h, next(it)[1], next(it)[1])
            elif isinstance(layer, nn.ReLU):
                h = torch.relu(h)
            elif isinstance(layer, nn.LeakyReLU):
                h = F.leaky_relu(h, layer.negative_slope)
            elif isinstance(layer, nn.Tanh):
                h = torch.tanh(h)
            else:
                raise TypeError(f"forward_copies does not support {type(layer).__name__}")
        return h.reshape(C, m, *self.out_shape)


def _recorder(outer: dict | None, index: int, transposed: bool):
    """Where a matmul layer stores its weight-gradient factors (None: ordinary autograd).
    ``transposed``: the layer multiplies by the weight's transpose (linear layers), so the
    weight's gradient is upstream ⊗ input rather than input ⊗ upstream."""
    if outer is None:
        return None

    def record(h: torch.Tensor, grad: torch.Tensor) -> None:  # (C, k) input rows, (C, n) upstream gradient
        outer[index] = (grad, h) if transposed else (h, grad)

    return record


def _matmul_copies(h: torch.Tensor, w: torch.Tensor, record=None) -> torch.Tensor:
    """``torch.bmm(h, w)``: (C, m, k) rows times per-copy (C, k, n) weights; with ``record`` (m = 1)
    the weight's gradient is not formed, its factors go to ``record`` (see ``forward_copies``)."""
    if record is None:
        return torch.bmm(h, w)
    return _OuterMatmul.apply(h, w, record)


class _OuterMatmul(torch.autograd.Function):
    """bmm(h, w) with one row per copy (h: (C, 1, k)) whose weight gradient, hᵀ g, is an outer
    product: backward passes the gradient on to h and hands (h, g) to ``record`` instead of
    materialising it (the caller steps the weight from the factors). The weight's gradient comes
    back as None (ask autograd for it with ``allow_unused=True``: that request is what makes the
    backward run when h needs no gradient)."""

    @staticmethod
    def forward(ctx, h, w, record):
        ctx.save_for_backward(h, w)
        ctx.record = record
        return torch.bmm(h, w)

    @staticmethod
    def backward(ctx, grad):
        h, w = ctx.saved_tensors
        ctx.record(h[:, 0, :], grad[:, 0, :])
        grad_h = torch.bmm(grad, w.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        return grad_h, None, None


def _conv_transpose_copies(layer: nn.ConvTranspose2d, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, record=None) -> torch.Tensor:
    """(C, m, Cin, H, W) with per-copy weight (C, Cin, Cout, kh, kw) -> (C, m, Cout, Ho, Wo)."""
    if layer.groups != 1 or layer.dilation != (1, 1):
        raise TypeError("forward_copies supports ConvTranspose2d with groups=1, dilation=1 only")
    C, m, cin, H, W = h.shape
    _, _, cout, kh, kw = w.shape
    if H == 1 and W == 1 and layer.stride == (1, 1) and layer.padding == (0, 0):
        # from a 1x1 input the transposed conv is a matmul onto the kh x kw output
        out = _matmul_copies(h.reshape(C, m, cin), w.reshape(C, cin, cout * kh * kw), record).reshape(C, m, cout, kh, kw)
    else:
        (sh, sw), (ph, pw), (oph, opw) = layer.stride, layer.padding, layer.output_padding
        ho, wo = (H - 1) * sh - 2 * ph + kh + oph, (W - 1) * sw - 2 * pw + kw + opw
        x = h.transpose(1, 2).reshape(C, cin, m * H * W)
        cols = torch.bmm(w.reshape(C, cin, cout * kh * kw).transpose(1, 2), x)  # (C, Cout*kh*kw, m*H*W)
        cols = cols.reshape(C, cout * kh * kw, m, H * W).transpose(1, 2).reshape(C * m, cout * kh * kw, H * W)
        out = F.fold(cols, (ho, wo), (kh, kw), padding=(ph, pw), stride=(sh, sw)).reshape(C, m, cout, ho, wo)
    if b is not None:
        out = out + b[:, None, :, None, None]
    return out


def _conv_copies(layer: nn.Conv2d, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """(C, m, Cin, H, W) with per-copy weight (C, Cout, Cin, kh, kw) -> (C, m, Cout, Ho, Wo)."""
    if layer.groups != 1 or layer.dilation != (1, 1) or isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        raise TypeError("forward_copies supports Conv2d with groups=1, dilation=1, numeric zero padding only")
    C, m, cin, H, W = h.shape
    cout, _, kh, kw = w.shape[1:]
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    ho, wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    cols = F.unfold(h.reshape(C * m, cin, H, W), (kh, kw), padding=(ph, pw), stride=(sh, sw))  # (C*m, Cin*kh*kw, L)
    cols = cols.reshape(C, m, cin * kh * kw, ho * wo).transpose(1, 2).reshape(C, cin * kh * kw, m * ho * wo)
    out = torch.bmm(w.reshape(C, cout, cin * kh * kw), cols).reshape(C, cout, m, ho, wo).transpose(1, 2)
    if b is not None:
        out = out + b[:, None, :, None, None]
    return out


def _batchnorm_eval_copies(layer: nn.modules.batchnorm._BatchNorm, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eval-mode BatchNorm with per-copy affine (C, ch): y = x·α + β, α = w/√(var+eps), β = b − mean·α
    (the order PyTorch's CPU inference kernel uses)."""
    alpha = w * (layer.running_var + layer.eps).sqrt().reciprocal()
    beta = b - layer.running_mean * alpha
    shape = (h.shape[0], 1, h.shape[2]) + (1,) * (h.dim() - 3)
    return h * alpha.reshape(shape) + beta.reshape(shape)


def build_networks(shape: Sequence[int], *, latent_dim: int, g_width: int, d_width: int, hidden: int = 256,
                   encoder: bool = False, e_width: int = 32) -> dict[str, nn.Module]:
    """The WGAN for samples of ``shape``: {"generator": g_θ, "critic": d_ω}, plus {"encoder": E}
    when ``encoder``."""
    generator = Generator(latent_dim, shape, width=g_width, hidden=hidden)
    if is_image(shape):
        critic = ConvCritic(shape, feature_dim=128, width=d_width)
    else:
        critic = MLPCritic(flat_dim(shape), (hidden, hidden), feature_dim=64)
    nets = {"generator": generator, "critic": critic}
    if encoder:
        nets["encoder"] = Encoder(shape, latent_dim, width=e_width, hidden=hidden)
    return nets


class Encoder(nn.Module):
    """E: (N, *shape) -> (N, d'): strided convs with BatchNorm + LeakyReLU then a valid conv to the
    latent (images, :class:`anomalykit.nn.ConvEncoder`), or an MLP (rows)."""

    def __init__(self, shape: Sequence[int], latent_dim: int, *, width: int = 32, hidden: int = 256):
        super().__init__()
        self.image = is_image(shape)
        self.net = ConvEncoder(shape, latent_dim, width=width) if self.image else mlp([flat_dim(shape), hidden, hidden, latent_dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x if self.image else x.flatten(1))
