"""The package's shape (docs/ARCHITECTURE.md), checked on the source: module size, layers, no import circle, and
library modules that never print. Reads the files with ``ast``; imports nothing of posecli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "posecli"
MAX_LINES = 600

# Layers, lowest first: a module may import modules of its own layer or below, never above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("posecli", "posecli.errors", "posecli.files", "posecli.atomic")),
    (
        "data and maths",
        ("posecli.datasets", "posecli.codec", "posecli.transforms", "posecli.metrics", "posecli.vis", "posecli.plots"),
    ),
    ("settings", ("posecli.settings", "posecli.options", "posecli.mmpose_config")),
    ("models", ("posecli.models", "posecli.onnx_export")),
    ("checkpoints", ("posecli.checkpoints",)),
    ("engine", ("posecli.engine", "posecli.sources", "posecli.preset_resolution")),
    ("terminal and command flows", ("posecli.report", "posecli.commands")),
    ("command line", ("posecli.cli", "posecli.cli_flags", "posecli.__main__")),
]
# Modules that may print (Rich, Typer, print): everything else is a library module.
PRINTING = ("posecli.cli", "posecli.cli_flags", "posecli.__main__", "posecli.report", "posecli.commands")


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or (p != "posecli" and module.startswith(p + ".")) for p in prefixes)


def _layer(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if _within(module, prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_architecture.py")


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports for type hints only never run)."""
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def _imports(module: str) -> dict[str, set[str]]:
    """posecli modules and third-party top-level packages that ``module`` imports at run time (lazy ones too)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    own: set[str] = set()
    other: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{module}: use absolute imports (from posecli.x import y)"
            base = node.module or ""
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            if name == "posecli" or name.startswith("posecli."):
                while name not in MODULES:  # posecli.x.attribute -> posecli.x
                    name = name.rsplit(".", 1)[0]
                own.add(name)
            else:
                other.add(name.split(".")[0])
    own.discard(module)
    return {"posecli": own, "other": other}


GRAPH = {m: _imports(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_longer_than_the_limit(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES}): split it by job"


def test_there_is_no_import_circle() -> None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH[module]["posecli"]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = [
        f"{m} ({LAYERS[_layer(m)][0]}) imports {d} ({LAYERS[_layer(d)][0]})"
        for m, deps in GRAPH.items()
        for d in sorted(deps["posecli"])
        if _layer(d) > _layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_datasets_never_import_settings_engine_or_commands() -> None:
    banned = ("posecli.settings", "posecli.options", "posecli.engine", "posecli.commands", "posecli.cli")
    found = [
        f"{m} imports {d}"
        for m, deps in GRAPH.items()
        if _within(m, ("posecli.datasets",))
        for d in sorted(deps["posecli"])
        if _within(d, banned)
    ]
    assert not found, "\n".join(found)


def test_library_modules_do_not_print() -> None:
    problems = []
    for module, path in MODULES.items():
        if _within(module, PRINTING):
            continue
        for package in sorted(GRAPH[module]["other"] & {"rich", "typer"}):
            problems.append(f"{module} imports {package}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                problems.append(f"{module}:{node.lineno} calls print()")
    assert not problems, "\n".join(problems)


def test_the_checks_see_the_real_graph() -> None:
    # guards against a parser that finds nothing: known edges of the package must be there
    assert "posecli.datasets.meta" in GRAPH["posecli.datasets.coco"]["posecli"]
    assert "posecli.commands.convert" in GRAPH["posecli.cli"]["posecli"]  # a lazy import inside a function
    assert "posecli.engine.train" not in GRAPH["posecli.engine.events"]["posecli"]  # TYPE_CHECKING only
    assert {"rich", "typer"} <= GRAPH["posecli.report"]["other"]
