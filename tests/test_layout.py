"""The house the README draws: the data side never imports the methods side, the evaluation and experiment code
never import the command-line modules, no function runs past 80 lines, and the SMEC system stays a thin wiring."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 80


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module an ``import`` or ``from ... import`` names, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_data_side_never_imports_the_methods_side():
    offending = [
        f"{path.relative_to(REPO)}: {name}"
        for path in modules("datamodules")
        for name in sorted(imported_modules(ast.parse(path.read_text(encoding="utf-8"))))
        if name == "smec" or name.startswith("smec.")
    ]
    assert offending == []


@pytest.mark.parametrize("package", ["smec/experiment", "smec/evaluation"])
def test_the_library_never_imports_the_command_line_modules(package):
    """`smec/commands` parse arguments and call the library; the library must not reach back up into them."""
    offending = [
        f"{path.relative_to(REPO)}: {name}"
        for path in modules(package)
        for name in sorted(imported_modules(ast.parse(path.read_text(encoding="utf-8"))))
        if name in ("smec.commands", "smec.cli") or name.startswith("smec.commands.")
    ]
    assert offending == []


def test_the_smec_system_is_a_thin_wiring():
    """The maths lives in components (smec/nn, smec/losses); the system wires them (issue 12: under 300 lines)."""
    lines = len((REPO / "smec" / "systems" / "smec.py").read_text(encoding="utf-8").splitlines())
    assert lines < 300, f"smec/systems/smec.py has {lines} lines"


@pytest.mark.parametrize("package", ["datamodules", "smec"])
def test_no_function_is_longer_than_the_house_limit(package):
    too_long = []
    for path in modules(package):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - first + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert too_long == []


def test_the_checks_see_lazy_imports():
    tree = ast.parse("def f():\n    from smec.errors import ConfigError\n    import smec.cli\n")
    assert imported_modules(tree) == {"smec.errors", "smec.cli"}
