"""The plugin contract: every hook a plugin may implement.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, made available
through an entry point in the group ``anomalykit.methods``::

    # pyproject.toml of a plugin distribution
    [project.entry-points."anomalykit.methods"]
    knn = "anomalykit_knn"          # a module with @hookimpl functions

The core calls each hook with keyword arguments, one plugin at a time, so that a plugin that
raises is reported (name, distribution, reason) and skipped without affecting the others.
Built-in methods (ama, mae-simplex, adgan, csi-aae) use exactly this contract.
"""
from __future__ import annotations

from typing import Callable

import pluggy

PROJECT = "anomalykit"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorator for plugin functions that implement a hook below.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def anomalykit_register_methods(register: Callable[[type], None]) -> None:
    """Register detector classes (required for a method plugin).

    Called once when the registry loads plugins. Call ``register(cls)`` for each method, where
    ``cls`` is a subclass of :class:`anomalykit.Detector` that sets the class attributes

    - ``name``: the method name users type (``anomalykit run NAME``); lowercase, ``[a-z0-9-_]``;
    - ``summary``: one line for ``anomalykit list``;
    - ``params``: a tuple of :class:`anomalykit.Param` (its parameter schema with defaults);

    and implements ``_build``, ``_fit`` and ``_score`` (see :class:`anomalykit.Detector`).
    A class that breaks this contract is reported and skipped.
    """


@hookspec
def anomalykit_register_datasets(register: Callable[..., None]) -> None:
    """Register extra datasets (optional).

    Call ``register(name, loader, summary)``; ``loader(seed: int) -> anomalykit.data.Dataset``
    must raise :class:`anomalykit.DatasetError` with a how-to-get-it message when the data is
    missing. Registered names become valid for ``--data`` and ``--ood-data``.
    """
