"""Discover methods and datasets from plugins (entry-point group ``anomalykit.methods``).

Unlike ``pluggy.PluginManager.load_setuptools_entrypoints``, which lets one broken plugin crash
start-up, each entry point is loaded, registered and called on its own, and within a plugin each
hook and each registered class on its own: a failure is recorded as :class:`PluginFailure`
(plugin, distribution, what was skipped, one-line reason), warned about once, and everything
else carries on (a plugin whose method class breaks the contract keeps its datasets, and the
other way round). Deprecated members a method class uses (:mod:`anomalykit.deprecation`) are
recorded with the method (``anomalykit list`` shows them).
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Callable

import pluggy

from . import deprecation, hookspecs
from .contract import NAME_RE
from .errors import ConfigError, first_line

ENTRY_POINT_GROUP = "anomalykit.methods"
_NAME_RE = NAME_RE  # dataset names follow the method-name rule


@dataclass(frozen=True)
class PluginFailure:
    """Something a plugin offered that was skipped: the whole plugin (``skipped`` = "plugin"),
    one hook (``"hook NAME"``) or one registered class (``"method class NAME"``), and why."""

    plugin: str
    distribution: str
    reason: str
    skipped: str = "plugin"

    def line(self) -> str:
        what = "skipped" if self.skipped == "plugin" else f"{self.skipped} skipped"
        return f"plugin {self.plugin!r} (distribution {self.distribution}) {what}: {self.reason}"


@dataclass(frozen=True)
class MethodInfo:
    name: str
    summary: str
    cls: type
    plugin: str
    distribution: str
    version: str
    #: one line per deprecated member the class uses (anomalykit.deprecation), empty if none
    deprecations: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    summary: str
    loader: Callable
    plugin: str


@dataclass
class Registry:
    """Methods and datasets known to this process, and the plugins that failed."""

    pm: pluggy.PluginManager
    methods: dict[str, MethodInfo] = field(default_factory=dict)
    datasets: dict[str, DatasetInfo] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    _dists: dict[str, tuple[str, str]] = field(default_factory=dict)

    # -- loading -------------------------------------------------------------------------
    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "unknown"
            dist_version = dist.version if dist is not None else "?"
            if self.pm.has_plugin(ep.name):
                continue
            try:
                obj = ep.load()
            except BaseException as exc:  # noqa: BLE001 -- any import error, SystemExit included
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._fail(ep.name, dist_name, f"import failed: {type(exc).__name__}: {first_line(exc)}")
                continue
            self.add_plugin(obj, name=ep.name, distribution=dist_name, version=dist_version)

    def add_plugin(self, obj, *, name: str, distribution: str = "local", version: str = "?") -> bool:
        """Register one plugin object and collect what it registers. Returns False if anything it
        offered was skipped (a failing hook or class skips only itself)."""
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:  # pluggy validates hook names and signatures
            self._fail(name, distribution, f"does not follow the hook contract: {first_line(exc)}")
            return False
        self._dists[name] = (distribution, version)
        return self._collect(name)

    def remove_plugin(self, name: str) -> None:
        """Unregister a plugin and forget what it registered (used by tests and notebooks)."""
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self.methods = {k: v for k, v in self.methods.items() if v.plugin != name}
        self.datasets = {k: v for k, v in self.datasets.items() if v.plugin != name}

    def _collect(self, plugin_name: str) -> bool:
        """Call the plugin's hooks, each on its own; keep what succeeded. False if anything failed."""
        distribution, version = self._dists.get(plugin_name, ("local", "?"))
        plugin = self.pm.get_plugin(plugin_name)
        failures = len(self.failures)
        collected = 0

        def register_method(cls) -> None:
            label = f"method class {getattr(cls, '__name__', repr(cls))}"
            problem = _method_contract_problem(cls)
            if not problem and (cls.name in self.methods or cls.name in new_methods):
                other = (self.methods.get(cls.name) or new_methods[cls.name]).plugin
                problem = f"method name {cls.name!r} is already registered by plugin {other!r}"
            if problem:  # this class only: the hook's other classes still register
                self._fail(plugin_name, distribution, problem, skipped=label)
                return
            notes = tuple(deprecation.DEPRECATIONS[key].message(cls.__name__, detail)
                          for key, detail in getattr(cls, "_deprecated_members", ()))
            new_methods[cls.name] = MethodInfo(cls.name, cls.summary, cls, plugin_name, distribution, version, notes)

        def register_dataset(name: str, loader: Callable, summary: str = "") -> None:
            problem = None
            if not isinstance(name, str) or not _NAME_RE.match(name):
                problem = f"dataset name {name!r} must match {_NAME_RE.pattern}"
            elif not callable(loader):
                problem = f"dataset {name!r}: loader is not callable"
            if problem:  # this dataset only: the hook's other datasets still register
                self._fail(plugin_name, distribution, problem, skipped=f"dataset {name!r}")
                return
            new_datasets[name] = DatasetInfo(name, str(summary), loader, plugin_name)

        calls = [
            ("anomalykit_register_methods", register_method),
            ("anomalykit_register_datasets", register_dataset),
        ]
        for hook_name, register in calls:
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                new_methods: dict[str, MethodInfo] = {}
                new_datasets: dict[str, DatasetInfo] = {}
                try:
                    impl.function(register=register)
                except Exception as exc:  # noqa: BLE001 -- this hook only: the plugin's other hooks still count
                    self._fail(plugin_name, distribution, f"raised {type(exc).__name__}: {first_line(exc)}",
                               skipped=f"hook {hook_name}")
                    continue
                self.methods.update(new_methods)
                self.datasets.update(new_datasets)
                collected += len(new_methods) + len(new_datasets)
        if collected == 0 and len(self.failures) > failures:
            self.pm.unregister(name=plugin_name)  # nothing of it is usable
        return len(self.failures) == failures

    def _fail(self, plugin: str, distribution: str, reason: str, *, skipped: str = "plugin") -> None:
        failure = PluginFailure(plugin, distribution, reason, skipped)
        self.failures.append(failure)
        print(f"anomalykit: warning: {failure.line()}", file=sys.stderr)

    # -- lookup --------------------------------------------------------------------------
    def method(self, name: str) -> MethodInfo:
        try:
            return self.methods[name]
        except KeyError:
            known = ", ".join(sorted(self.methods)) or "none installed"
            failed = [f.plugin for f in self.failures if f.plugin == name]
            if failed:
                raise ConfigError(f"method {name!r} failed to load (see the warning above); known methods: {known}") from None
            raise ConfigError(f"unknown method {name!r}; known methods: {known} (`anomalykit list`)") from None


def _method_contract_problem(cls) -> str | None:
    """The registration check: :func:`anomalykit.contract.check_method_class` (the contract's one home)."""
    from .contract import check_method_class

    return check_method_class(cls)


_lock = threading.Lock()
_registry: Registry | None = None


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def get_registry(*, reload: bool = False) -> Registry:
    """The process-wide registry, loading entry points on first use."""
    global _registry
    with _lock:
        if _registry is None or reload:
            reg = Registry(new_plugin_manager())
            reg.load_entry_points()
            _registry = reg
        return _registry
