"""The tools' plain-text output: one aligned ``name  value`` line per row."""

from __future__ import annotations


def table(rows: list[tuple[str, object]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
