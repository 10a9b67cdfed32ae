"""Architecture rules that keep the code easy to change (docs/architecture.md)."""
import ast
from pathlib import Path

import anomalykit

CORE = Path(anomalykit.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Core modules that ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # a name inside a module -> that module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
                parent = t.rpartition(".")[0]
                while parent and parent != name and not name.startswith(parent + "."):  # a.b.c runs a/b/__init__ first
                    out.add(parent)                                # (unless we are inside a.b already)
                    parent = parent.rpartition(".")[0]
    return out


def test_no_import_cycles_between_core_modules():
    files = [p for p in CORE.rglob("*.py")]
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _imports(p, modules) - {"anomalykit"} for p in files}  # the facade re-exports only
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "active"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "active":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_plugins_use_only_the_public_plugin_sdk():
    """Built-in plugins import from ``anomalykit`` (top level) and ``anomalykit.sdk`` only, and no
    private name: exactly what a third-party plugin can rely on."""
    import anomalykit_plugins
    import anomalykit.sdk as sdk

    root = Path(anomalykit_plugins.__file__).parent
    public = set(anomalykit.__all__) | set(sdk.__all__)
    problems = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("anomalykit"):
                if node.module not in ("anomalykit", "anomalykit.sdk"):
                    problems.append(f"{path.name}: from {node.module} import ...")
                problems += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name not in public]
            elif isinstance(node, ast.Import):
                problems += [f"{path.name}: import {a.name}" for a in node.names
                             if a.name.startswith("anomalykit") and not a.name.startswith("anomalykit_plugins")]
    assert not problems, problems
    assert root.name == "anomalykit_plugins", "the plugins folder is named as it is imported"
