"""The packages import each other only downwards: core at the bottom, the operator tools on
core alone, the gateway and the flusher never each other, so the worker's code (and its
imports) never loads into the gateway, and the tools run without either.

Inside the gateway, its rooms do the same: the HTTP machinery, Redis I/O and the counters
know nothing else of the gateway; the wire contract (``api``) stands on HTTP alone; the
purchase path and the reads on those; what the gateway says about itself (``status``) reads
them all; the console sits on top, the only room that imports the operator tools (its
trace is `make trace`'s function). ``app``, ``services`` and ``__main__`` assemble it all.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "ops": {"core"},
    "flusher": {"core"},
    "gateway": {"core"},
    "gateway.console": {"core", "ops"},
    "devstack": {"core"},
}

ROOMS: dict[str, set[str]] = {
    "http": set(),
    "redis_io": set(),
    "telemetry": set(),
    "refusals": set(),
    "api": {"http", "refusals"},
    "ingest": {"http", "api", "redis_io", "telemetry", "refusals"},
    "reads": {"http", "api", "redis_io", "telemetry", "refusals"},
    "status": {"http", "api", "redis_io", "telemetry", "refusals", "ingest", "reads"},
    "console": {"http", "api", "redis_io", "telemetry", "refusals", "ingest", "reads", "status"},
}
ASSEMBLY = {"__init__", "__main__", "app", "services"}
"""Modules at the gateway's top that build the whole: they may import every room."""


def imports_of(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def layer_of(path: Path) -> str:
    """The ALLOWED key a module answers to: its package, or the console within the gateway."""
    parts = path.relative_to(ROOT).parts
    return "gateway.console" if parts[:2] == ("gateway", "console") else parts[0]


def room_of(path: Path) -> str:
    parts = path.relative_to(ROOT / "gateway").parts
    return parts[0] if len(parts) > 1 else path.stem


def test_packages_import_only_the_layers_below_them() -> None:
    packages = {"core", "ops", "flusher", "gateway", "devstack"}
    wrong: dict[str, list[str]] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            tops = {name.partition(".")[0] for name in imports_of(path)} & packages - {package}
            if tops - ALLOWED[layer_of(path)]:
                wrong[str(path.relative_to(ROOT))] = sorted(tops - ALLOWED[layer_of(path)])
    assert wrong == {}, f"imports across the layering: {wrong}"


def test_the_gateway_rooms_import_only_the_rooms_below_them() -> None:
    wrong: dict[str, list[str]] = {}
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        room = room_of(path)
        if room in ASSEMBLY:
            continue
        used = {
            name.split(".")[1]
            for name in imports_of(path)
            if name.startswith("gateway.") and name.split(".")[1] != room
        }
        if used - ROOMS[room]:
            wrong[str(path.relative_to(ROOT))] = sorted(used - ROOMS[room])
    assert wrong == {}, f"imports across the gateway's rooms: {wrong}"


def test_every_gateway_module_is_in_a_room_or_assembles_them() -> None:
    """A new module at the gateway's top is a new room or a misplaced file: decide which."""
    top = {path.stem for path in (ROOT / "gateway").glob("*.py")}
    rooms = {path.name for path in (ROOT / "gateway").iterdir() if (path / "__init__.py").exists()}
    assert top - ASSEMBLY == {"refusals"}
    assert rooms == set(ROOMS) - {"refusals"}
