"""Parameter schemas: what a method accepts, with defaults, types, ranges and help.

A plugin declares its parameters as a tuple of :class:`Param`. The schema is what the CLI
shows (``anomalykit show METHOD``), what ``--set key=value`` and ``config.toml`` are validated
against, and what ``load_method(name, **params)`` checks. Values coming from the command line
are strings and are coerced here; values from Python are type-checked.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .errors import ConfigError

_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a method.

    ``type`` defaults to the type of ``default``; give it explicitly when the default is None
    (then None is also accepted, meaning "automatic" -- say what that means in ``help``).
    ``choices`` restricts the value to a set; ``low``/``high`` bound numbers (inclusive).
    """

    name: str
    default: Any
    help: str
    type: type | None = None
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None

    def __post_init__(self):
        if self.type is None:
            if self.default is None:
                raise TypeError(f"Param {self.name!r}: default None needs an explicit type")
            object.__setattr__(self, "type", type(self.default))
        if self.type not in _TYPES:
            raise TypeError(f"Param {self.name!r}: type must be one of bool, int, float, str")

    @property
    def nullable(self) -> bool:
        return self.default is None

    def coerce(self, value: Any, *, owner: str = "") -> Any:
        """Return ``value`` converted to this parameter's type, or raise ConfigError."""
        where = f"{owner}: " if owner else ""
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and self.type is not str):
            if self.nullable:
                return None
            raise ConfigError(f"{where}parameter {self.name!r} cannot be None (default {self.default!r})")
        t = self.type
        try:
            if t is bool:
                if isinstance(value, bool):
                    out = value
                elif isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                    out = True
                elif isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                    out = False
                else:
                    raise ValueError
            elif t is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                out = int(value) if not isinstance(value, str) else int(value.strip())
            elif t is float:
                if isinstance(value, bool):
                    raise ValueError
                out = float(value)
                if not math.isfinite(out):
                    raise ValueError
            else:
                if not isinstance(value, str):
                    raise ValueError
                out = value
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}parameter {self.name!r} expects {t.__name__}, got {value!r}"
            ) from None
        if self.choices is not None and out not in self.choices:
            raise ConfigError(
                f"{where}parameter {self.name!r} must be one of {', '.join(map(str, self.choices))}; got {out!r}"
            )
        if self.low is not None and out < self.low:
            raise ConfigError(f"{where}parameter {self.name!r} must be >= {self.low}; got {out!r}")
        if self.high is not None and out > self.high:
            raise ConfigError(f"{where}parameter {self.name!r} must be <= {self.high}; got {out!r}")
        return out

    def describe(self) -> str:
        """One line for listings: ``name (type, default X, choices/range): help``."""
        bits = [self.type.__name__, f"default {self.default!r}"]
        if self.choices:
            bits.append("one of " + "|".join(map(str, self.choices)))
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else self.low
            hi = "inf" if self.high is None else self.high
            bits.append(f"range [{lo}, {hi}]")
        return f"{self.name} ({', '.join(bits)}): {self.help}"


def merge_schemas(*schemas: Iterable[Param]) -> dict[str, Param]:
    """Merge schemas in order; a later Param with the same name replaces an earlier one."""
    out: dict[str, Param] = {}
    for schema in schemas:
        for p in schema:
            out[p.name] = p
    return out


def validate_params(schema: Mapping[str, Param], given: Mapping[str, Any], *, owner: str = "") -> dict[str, Any]:
    """Fill defaults and coerce ``given`` against ``schema``; unknown keys raise ConfigError."""
    where = f"{owner}: " if owner else ""
    out = {name: p.default for name, p in schema.items()}
    for key, value in given.items():
        name = key.replace("-", "_")
        if name not in schema:
            close = difflib.get_close_matches(name, list(schema), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where}unknown parameter {key!r}{hint}; `anomalykit show {owner or 'METHOD'}` lists the parameters"
            )
        out[name] = schema[name].coerce(value, owner=owner)
    return out


def cli_params(options: dict[str, object], items: Iterable[str]) -> dict[str, object]:
    """A command's parameter options (``--epochs`` ...; None when not given) together with its
    ``--set key=value`` items; a parameter given both ways is a ConfigError, not a guess."""
    sets = parse_assignments(items)
    for key, value in options.items():
        if value is not None and key in sets:
            raise ConfigError(f"--{key.replace('_', '-')} {value} and --set {key}={sets[key]} both set {key}; give it once")
    return {**options, **sets}


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """Parse CLI ``key=value`` strings into a dict (values stay strings; the schema coerces)."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key] = value.strip()
    return out
