"""The layers only point down: the shell over flows over stages over connectors over the
foundations over the models. A module that imports a higher layer, or two stages that import
each other, fail here with the file and line that does it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Highest first; a module may import its own layer or any below it.
LAYERS = ("abm", "flows", "stages", "connectors", "core", "models")


def _modules() -> Iterator[Path]:
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            if "versions" not in path.parts:
                yield path


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted module) for every import in the file, nested ones included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module in LAYERS:  # from stages import delivery
                for alias in node.names:
                    yield node.lineno, f"{node.module}.{alias.name}"
            else:
                yield node.lineno, node.module


def _where(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def upward_imports() -> list[str]:
    found = []
    for path in _modules():
        own = LAYERS.index(path.relative_to(ROOT).parts[0])
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in LAYERS and LAYERS.index(top) < own:
                found.append(f"{_where(path)}:{line} imports {module} (layer {top})")
    return found


def stage_graph() -> dict[str, dict[str, str]]:
    """stage -> {stage it imports: where}."""
    graph: dict[str, dict[str, str]] = {}
    for path in sorted((ROOT / "stages").rglob("*.py")):
        parts = path.relative_to(ROOT / "stages").parts
        if len(parts) < 2:
            continue
        graph.setdefault(parts[0], {})
        for line, module in _imports(path):
            names = module.split(".")
            if names[0] == "stages" and len(names) > 1 and names[1] != parts[0]:
                graph[parts[0]].setdefault(names[1], f"{_where(path)}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            found.append([*trail[trail.index(node) :], node])
            return
        if node in done:
            return
        for target in graph.get(node, {}):
            visit(target, [*trail, node])
        done.add(node)

    for node in graph:
        visit(node, [])
    return found


def test_no_layer_imports_a_higher_one() -> None:
    assert upward_imports() == []


def test_stages_do_not_import_each_other_in_a_loop() -> None:
    graph = stage_graph()
    assert {"importing", "targeting", "committee", "content", "delivery", "engagement"} <= set(
        graph
    )
    loops = [" -> ".join(loop) + " (" + graph[loop[-2]][loop[-1]] + ")" for loop in cycles(graph)]
    assert loops == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b": "x"}, "b": {"a": "y"}}, [["a", "b", "a"]]),
        ({"a": {"b": "x"}, "b": {"c": "y"}, "c": {}}, []),
    ],
)
def test_the_loop_finder_finds_loops(graph: dict, expected: list) -> None:
    assert cycles(graph) == expected


def test_the_layer_check_sees_an_upward_import(tmp_path: Path, monkeypatch) -> None:
    """The check is only worth having if it fails: plant an upward import and see it found."""
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "models" / "bad.py").write_text("def f():\n    from abm.cli import main\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert upward_imports() == ["models/bad.py:2 imports abm.cli (layer abm)"]
