"""The docs cannot drift from the code: every setting is documented with its default, the
settings tables are what ``ops.settings_doc`` draws from ``core/settings.py``, and every
relative link of the README and docs/ leads to a file (and heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from core.settings import Settings, env_name, env_text
from ops import settings_doc
from tests.helpers import ROOT

CONFIGURATION = ROOT / "docs" / "configuration.md"
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "bench").glob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.M)


def documented_defaults() -> dict[str, str]:
    """Variable -> default cell, from the rows of configuration.md's tables."""
    rows: dict[str, str] = {}
    for line in CONFIGURATION.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`[A-Z_]+`", cells[0]):
            default = cells[1].removesuffix("(empty)").strip().strip("`")
            rows[cells[0].strip("`")] = "" if default == '""' else default
    return rows


@pytest.mark.parametrize("field", msgspec.structs.fields(Settings), ids=lambda f: f.name)
def test_every_setting_is_documented_with_its_default(field: msgspec.structs.FieldInfo) -> None:
    rows = documented_defaults()
    variable = env_name(field.name)
    assert variable in rows, f"{variable} is missing from docs/configuration.md"
    assert rows[variable] == env_text(field.default), (
        f"{variable}: docs/configuration.md says {rows[variable]!r}, core/settings.py"
        f" {env_text(field.default)!r}"
    )


def test_configuration_documents_no_setting_that_does_not_exist() -> None:
    known = {env_name(f.name) for f in msgspec.structs.fields(Settings)}
    assert set(documented_defaults()) - known == set()


def test_settings_tables_are_drawn_from_the_code() -> None:
    page = settings_doc.page_tables(CONFIGURATION.read_text())
    assert page == settings_doc.tables(), (
        "docs/configuration.md is out of date: run python -m ops.settings_doc --write"
    )


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in _HEADING.findall(_FENCE.sub("", page.read_text()))}


def relative_links(page: Path) -> list[str]:
    text = _CODE.sub("", _FENCE.sub("", page.read_text()))
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        name = target.relative_to(ROOT).as_posix() if target.is_relative_to(ROOT) else path
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {name}")
    assert not broken, "\n".join(broken)
