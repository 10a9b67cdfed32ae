"""Deprecated: this module moved to :mod:`anomalykit.lazy_rows` (``anomalykit.open_rows``) in 0.2.0;
it re-exports that module's names until 0.3.0 (:mod:`anomalykit.deprecation`)."""
from ..deprecation import warn as _warn
from ..lazy_rows import *  # noqa: F401,F403
from ..lazy_rows import (  # noqa: F401 -- the names this module held
    ImageFileRows,
    LazyRows,
    NpyRows,
    TensorRows,
    open_rows,
)
from .datasets import streams  # noqa: F401

_warn("data-lazy", "", stacklevel=2)
