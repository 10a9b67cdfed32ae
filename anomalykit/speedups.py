"""One switch for the implementation-level speed-ups that leave every method's math unchanged.

The speed-ups (docs/performance.md has what each one buys and how it was measured):

- a convolution whose kernel covers its whole input (the "valid" conv at the end of
  :class:`~anomalykit.nn.ConvCritic` and :class:`~anomalykit.nn.ConvEncoder`, the first transposed
  conv of :class:`~anomalykit.nn.ConvDecoder`) runs as the matrix product it is;
- spectral norm divides the weight by σ in one autograd node with a fused backward (same
  power iteration, same σ, same gradient);
- 2-D convolution weights are stored channels-last (set when a network is built), which the CPU
  convolution library runs faster;
- method-specific ones read the same switch (e.g. ADGAN's latent search reuses its buffers).

Each gives the same losses, gradients and scores as the plain eager path up to floating-point
summation order (tests compare both in float64). The switch is read at every call:

- environment variable ``ANOMALYKIT_SPEEDUPS``: ``on`` (default) or ``off`` (the plain eager
  path, for comparison and debugging);
- in Python, :func:`speedups` as a context manager (``with speedups(False): ...``), which takes
  precedence over the variable; benchmarks use it to time both paths in one process.

Networks built while the switch is off keep contiguous (NCHW) convolution weights, so a network
keeps the layout it was built with; both layouts compute the same function.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from .errors import ConfigError

ENV_VAR = "ANOMALYKIT_SPEEDUPS"
_ON = ("on", "1", "true", "yes")
_OFF = ("off", "0", "false", "no")
_override: bool | None = None


def enabled() -> bool:
    """Whether the speed-ups are on: the innermost :func:`speedups` block, else ``ANOMALYKIT_SPEEDUPS``."""
    if _override is not None:
        return _override
    value = os.environ.get(ENV_VAR, "on").strip().lower() or "on"
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ConfigError(f"{ENV_VAR}={value!r} is not one of on, off")


@contextlib.contextmanager
def speedups(on: bool = True) -> Iterator[None]:
    """Turn the speed-ups on or off inside the block (overrides ``ANOMALYKIT_SPEEDUPS``)."""
    global _override
    before = _override
    _override = bool(on)
    try:
        yield
    finally:
        _override = before


def status() -> str:
    """One line for ``anomalykit info``-style reports."""
    try:
        state = "on" if enabled() else "off"
    except ConfigError as exc:
        return str(exc)
    source = "speedups() block" if _override is not None else f"{ENV_VAR}={os.environ.get(ENV_VAR, 'on (default)')}"
    return f"speed-ups: {state} ({source})"
