"""The first-use gate of the native kernels: on a gated device (CUDA by default) ``auto`` uses a
native kernel only after a parity check of that op, for that device and dtype, has passed.

The check (:func:`check`) runs the native op on small random inputs and compares it with the
pure-PyTorch reference computed in float64: the forward values and the gradients of a weighted sum
(``pair_feature_l1``, ``simplex_mix``), or the samples' radii, finiteness and per-seed determinism
(``annulus_sample``). A failed check means the reference op for that (op, device, dtype) for the
rest of the process, with one warning naming the op, the device and what differed. Verdicts are
kept for the process and cached on disk per device name, driver, torch version and extension build
(``$XDG_CACHE_HOME/anomalykit/kernel-gate.json``), so the check runs once per machine and build.

``ANOMALYKIT_KERNEL_GATE``: ``cuda`` (default: gate CUDA devices), ``all`` (gate every device,
the CPU too: how the tests exercise the gate without a GPU) or ``off``. ``anomalykit info`` shows
each verdict.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

from ..errors import ConfigError
from . import _native, reference

ENV_VAR = "ANOMALYKIT_KERNEL_GATE"
MODES = ("cuda", "all", "off")
#: Largest allowed deviation from the float64 reference, relative to the largest reference value.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 4e-2}

_verdicts: dict[tuple[str, str, str], str] = {}  # (op, device, dtype) -> "" (passed) or the reason it failed
_warned: set[tuple[str, str, str]] = set()


def mode() -> str:
    value = os.environ.get(ENV_VAR, "cuda").strip().lower() or "cuda"
    if value not in MODES:
        raise ConfigError(f"{ENV_VAR}={value!r} is not one of {', '.join(MODES)}")
    return value


def gated(device: torch.device) -> bool:
    m = mode()
    return m == "all" or (m == "cuda" and device.type == "cuda")


def allows(op: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``auto`` may use the native ``op`` on ``device`` for ``dtype`` (checking it first)."""
    if not gated(device):
        return True
    key = (op, str(device), str(dtype))
    if key not in _verdicts:
        if torch.compiler.is_compiling():  # no checks inside a graph being traced: the reference until verified
            return False
        cached = _disk_cache().get(_cache_key(key))
        _verdicts[key] = cached if cached is not None else check(op, device, dtype)
        if cached is None:
            _store(key, _verdicts[key])
    reason = _verdicts[key]
    if reason and key not in _warned:
        _warned.add(key)
        warnings.warn(f"anomalykit: the native {op} kernel failed its first-use check on {device} ({dtype}): {reason}; "
                      "using the reference op there (anomalykit info shows the verdicts)", RuntimeWarning, stacklevel=4)
    return not reason


def verdicts() -> dict[tuple[str, str, str], str]:
    """The verdicts of this process: (op, device, dtype) -> "" (passed) or why it failed."""
    return dict(_verdicts)


def reset() -> None:
    """Forget this process's verdicts and warnings (tests; a rebuilt extension)."""
    _verdicts.clear()
    _warned.clear()


# -- the checks -------------------------------------------------------------------------------------
def check(op: str, device: torch.device, dtype: torch.dtype) -> str:
    """Run the parity check of ``op``; "" if it passed, else one line on what differed."""
    try:
        return {"pair_feature_l1": _check_pair, "simplex_mix": _check_simplex, "annulus_sample": _check_annulus}[op](
            torch.device(device), dtype)
    except Exception as exc:  # noqa: BLE001 -- a kernel that raises fails its check
        return f"it raised {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _close(name: str, got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> str:
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    if got.shape != ref.shape:
        return f"{name} has shape {tuple(got.shape)}, expected {tuple(ref.shape)}"
    if not bool(torch.isfinite(got).all()):
        return f"{name} is not finite"
    scale = max(float(ref.abs().max()), 1e-12)
    deviation = float((got - ref).abs().max()) / scale
    return "" if deviation <= TOLERANCE.get(dtype, 1e-4) else f"{name} differs by {deviation:.1e} of its largest value"


def _inputs(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def _check_pair(device, dtype) -> str:
    a = _inputs((5, 37), dtype, device, 0).requires_grad_()
    b = _inputs((5, 37), dtype, device, 1).requires_grad_()
    w = _inputs((5,), torch.float64, "cpu", 2)
    out = _native.op("pair_feature_l1")(a, b)
    ga, gb = torch.autograd.grad((out.double().cpu() * w).sum(), (a, b))
    a64, b64 = a.detach().double().cpu().requires_grad_(), b.detach().double().cpu().requires_grad_()
    ref = reference.pair_feature_l1(a64, b64)
    ra, rb = torch.autograd.grad((ref * w).sum(), (a64, b64))
    return _close("the forward", out, ref, dtype) or _close("the gradient of a", ga, ra, dtype) or \
        _close("the gradient of b", gb, rb, dtype)


def _check_simplex(device, dtype) -> str:
    latents = _inputs((6, 9), dtype, device, 3).requires_grad_()
    g = torch.Generator().manual_seed(4)
    index = torch.randint(0, 6, (4, 3), generator=g).to(device)
    weight = torch.softmax(torch.randn(4, 3, generator=g, dtype=torch.float64), 1).to(device, dtype).requires_grad_()
    w = _inputs((4, 9), torch.float64, "cpu", 5)
    out = _native.op("simplex_mix")(latents, index, weight)
    gl, gw = torch.autograd.grad((out.double().cpu() * w).sum(), (latents, weight))
    l64 = latents.detach().double().cpu().requires_grad_()
    w64 = weight.detach().double().cpu().requires_grad_()
    ref = reference.simplex_mix(l64, index.cpu(), w64)
    rl, rw = torch.autograd.grad((ref * w).sum(), (l64, w64))
    return _close("the forward", out, ref, dtype) or _close("the gradient of the latents", gl, rl, dtype) or \
        _close("the gradient of the weights", gw, rw, dtype)


def _check_annulus(device, dtype) -> str:
    def draw(seed):
        g = torch.Generator(device=device).manual_seed(seed)
        return _native.op("annulus_sample")(512, 8, 2.0, 3.0, generator=g, dtype=dtype, device=device)

    z = draw(0)
    if z.shape != (512, 8) or z.dtype != dtype:
        return f"the samples have shape {tuple(z.shape)} and dtype {z.dtype}, expected (512, 8) and {dtype}"
    radius = z.double().norm(dim=1).cpu()
    slack = 4 * torch.finfo(dtype).eps * 3.0
    if not bool(torch.isfinite(radius).all()) or float(radius.min()) < 2.0 - slack or float(radius.max()) > 3.0 + slack:
        return f"radii fall outside [2, 3] (from {float(radius.min()):.4f} to {float(radius.max()):.4f})"
    # volume-uniform in the shell (density ~ r^7 on [2, 3]): the mean radius is
    # 8/9 (3^9 - 2^9) / (3^8 - 2^8) = 2.703 (standard deviation 0.24); 512 draws put the sample
    # mean within 0.05 of it (4 standard errors) unless the distribution is wrong
    expected = 8 / 9 * (3**9 - 2**9) / (3**8 - 2**8)
    if abs(float(radius.mean()) - expected) > 0.05:
        return f"the mean radius {float(radius.mean()):.3f} is not the shell's {expected:.3f}"
    if not torch.equal(z, draw(0)) or torch.equal(z, draw(1)):
        return "the samples do not follow the generator's seed"
    return ""


# -- the cache on disk ----------------------------------------------------------------------------
def _cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anomalykit" / "kernel-gate.json"


def _build_id() -> str:
    path = _native.library_path()
    if not path or not os.path.exists(path):
        return "no-build"
    st = os.stat(path)
    return hashlib.sha256(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _device_id(device: str) -> str:
    d = torch.device(device)
    if d.type == "cuda" and torch.cuda.is_available():
        index = d.index if d.index is not None else torch.cuda.current_device()
        return f"{torch.cuda.get_device_name(index)}|sm{''.join(map(str, torch.cuda.get_device_capability(index)))}|cuda{torch.version.cuda}"
    return d.type


def _cache_key(key: tuple[str, str, str]) -> str:
    op, device, dtype = key
    return "|".join((op, _device_id(device), dtype, f"torch{torch.__version__}", _build_id()))


def _disk_cache() -> dict:
    if mode() == "all":  # the CPU tests inject wrong kernels: no cache across processes there
        return {}
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _store(key, reason: str) -> None:
    if mode() == "all":
        return
    path = _cache_path()
    try:
        data = _disk_cache()
        data[_cache_key(key)] = reason
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError:  # a read-only home: the verdict still holds for this process
        pass
