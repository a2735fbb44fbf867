"""The packages import each other only downwards: core at the bottom, the operator tools on
core alone, the gateway and the flusher never each other, so the worker's code (and its
imports) never loads into the gateway, and the tools run without either."""

from __future__ import annotations

import ast

from tests.helpers import ROOT

ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "ops": {"core"},
    "flusher": {"core"},
    "gateway": {"core", "ops"},  # the console's trace is `make trace`'s function
    "devstack": {"core"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """Every project package a module of ``package`` imports, anywhere in the module."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.append(node.module)
        tops = {name.partition(".")[0] for name in names} & set(ALLOWED) - {package}
        if tops:
            found[str(path.relative_to(ROOT))] = tops
    return found


def test_packages_import_only_the_layers_below_them() -> None:
    wrong = {
        module: sorted(tops - ALLOWED[package])
        for package in ALLOWED
        for module, tops in imported_packages(package).items()
        if tops - ALLOWED[package]
    }
    assert wrong == {}, f"imports across the layering: {wrong}"
