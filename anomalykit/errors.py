"""The exceptions anomalykit raises on purpose.

Every error a user can cause (bad data, bad parameter, missing dataset, foreign checkpoint,
broken plugin, diverged training) is one of these, with a one-line message that says what was
wrong and how to fix it. The CLI prints ``error: <message>`` and exits with status 2 for them;
anything else is a bug in anomalykit and keeps its traceback.
"""


class AnomalyKitError(Exception):
    """Base class of all documented anomalykit errors."""


class InputError(AnomalyKitError, ValueError):
    """Data given to a detector or op is malformed (shape, dtype, NaN/inf, empty, ...)."""


class ConfigError(AnomalyKitError, ValueError):
    """Unknown method, dataset, protocol or parameter, or a parameter value of the wrong type/range."""


class DatasetError(AnomalyKitError):
    """A dataset is missing or unreadable; the message says how to get it."""


class CheckpointError(AnomalyKitError):
    """A checkpoint is truncated, foreign, from another method or version, or unsafe to load."""


class PluginError(AnomalyKitError):
    """A plugin failed to load, or broke the plugin contract (the message names plugin and contract)."""


class DivergenceError(AnomalyKitError):
    """Training produced a non-finite loss or parameter; names method, epoch, step and loss term."""


class NotFittedError(AnomalyKitError, RuntimeError):
    """``score_samples``/``predict``/``save`` was called before ``fit``."""


class ExportError(AnomalyKitError):
    """A detector cannot be exported (the method says so, its score cannot be traced, or the
    exported graph failed its parity check), or an exported scorer file is unreadable."""


def first_line(exc: BaseException, *, default: str | None = None, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (for one-line errors); ``default`` (or
    the exception's type name) when it has none."""
    for line in str(exc).strip().splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__ if default is None else default
