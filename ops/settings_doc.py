"""The settings tables of docs/configuration.md, drawn from ``core.settings.Settings``.

One row per field: its variable, its default as the environment spells it, the bounds its
type and ``Meta`` constraints allow, and the docstring under it. The fields are grouped by
the comments of the class body (``# gateway``, ``# flusher``, ...).

    python -m ops.settings_doc            # print the tables
    python -m ops.settings_doc --write    # put them in docs/configuration.md

tests/unit/test_docs.py fails when the page and this output differ.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import sys
from itertools import pairwise
from pathlib import Path
from typing import Final, Literal, get_args, get_origin

import msgspec
import msgspec.inspect as mi

from core.settings import Settings, env_name, env_text

PAGE: Final = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BEGIN: Final = "<!-- settings: begin (python -m ops.settings_doc --write) -->"
END: Final = "<!-- settings: end -->"

_SECTION = re.compile(r"^    # (.+)$")
_FIELD = re.compile(r"^    (\w+): ")
_DOUBLE_CODE = re.compile(r"``([^`]+)``")
_FIELDS: Final = frozenset(f.name for f in msgspec.structs.fields(Settings))


class Row(msgspec.Struct, frozen=True):
    section: str
    variable: str
    default: str
    bounds: str
    meaning: str


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def bounds_text(field_type: object) -> str:
    if get_origin(field_type) is Literal:
        return ", ".join(f"`{value}`" for value in get_args(field_type))
    info = mi.type_info(field_type)
    if isinstance(info, mi.BoolType):
        return "`true`, `false`"
    if isinstance(info, mi.IntType | mi.FloatType):
        kind = "integer" if isinstance(info, mi.IntType) else "number"
        if info.ge is not None and info.le is not None:
            return f"{kind}, {_number(info.ge)} … {_number(info.le)}"
        low = (
            f"≥ {_number(info.ge)}"
            if info.ge is not None
            else (f"> {_number(info.gt)}" if info.gt is not None else "")
        )
        high = f"≤ {_number(info.le)}" if info.le is not None else ""
        return " ".join(part for part in (kind, low, high) if part)
    return "text"


def _code(found: re.Match[str]) -> str:
    """A ``field`` of Settings becomes its variable; any other ``name`` plain code."""
    name = found.group(1)
    return f"`{env_name(name)}`" if name in _FIELDS else f"`{name}`"


def docstrings() -> tuple[dict[str, str], dict[str, str]]:
    """Each field's docstring, and its section (the last ``# comment`` above it)."""
    source = inspect.getsource(Settings)
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, after in pairwise(body.body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            text = " ".join(after.value.value.split())
            docs[node.target.id] = _DOUBLE_CODE.sub(_code, text)
    sections: dict[str, str] = {}
    section = ""
    for line in source.splitlines():
        if found := _SECTION.match(line):
            section = found.group(1)
        elif (field := _FIELD.match(line)) and not line.lstrip().startswith('"""'):
            sections[field.group(1)] = section
    return docs, sections


def rows() -> list[Row]:
    docs, sections = docstrings()
    return [
        Row(
            sections.get(f.name, ""),
            env_name(f.name),
            env_text(f.default),
            bounds_text(f.type),
            docs.get(f.name, ""),
        )
        for f in msgspec.structs.fields(Settings)
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def tables() -> str:
    """The Markdown between the page's markers: a heading and a table per section."""
    out: list[str] = []
    section = None
    for row in rows():
        if row.section != section:
            section = row.section
            out += ["", f"### {section[:1].upper()}{section[1:]}", ""]
            out += ["| variable | default | allowed | meaning |", "|---|---|---|---|"]
        default = f"`{row.default}`" if row.default else '`""` (empty)'
        out.append(f"| `{row.variable}` | {default} | {_cell(row.bounds)} | {_cell(row.meaning)} |")
    return "\n".join(out[1:])


def _between_markers(page: str) -> tuple[int, int]:
    return page.index(BEGIN) + len(BEGIN), page.index(END)


def page_tables(page: str) -> str:
    """What the page holds between its markers."""
    start, end = _between_markers(page)
    return page[start:end].strip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--write", action="store_true", help=f"update {PAGE.name}")
    opts = parser.parse_args(argv)
    generated = tables()
    if not opts.write:
        print(generated)
        return 0
    page = PAGE.read_text()
    start, end = _between_markers(page)
    PAGE.write_text(page[:start] + "\n" + generated + "\n" + page[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
