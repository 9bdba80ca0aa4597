"""Every relative link in README.md, docs/ and experiments/ points at an existing file (and heading)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ghmdet.paths import PROJECT_ROOT

DOC_FILES = [
    PROJECT_ROOT / "README.md",
    *sorted((PROJECT_ROOT / "docs").glob("*.md")),
    *sorted((PROJECT_ROOT / "experiments").rglob("*.md")),
]
#: ``[text](target)`` and ``![alt](target)``; the target up to the first blank or closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (lower case, punctuation dropped, blanks as ``-``)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(path: Path) -> list[str]:
    """The relative links of one Markdown file whose file or heading does not exist."""
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(PROJECT_ROOT)) for p in DOC_FILES])
def test_relative_links_resolve(path: Path) -> None:
    assert not broken_links(path), f"{path.relative_to(PROJECT_ROOT)}: {broken_links(path)}"


def test_a_broken_link_and_a_missing_heading_are_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Some heading (`code`)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#some-heading-code) [gone](missing.md) [nohead](other.md#nope) [web](https://x.org)\n"
    )
    assert broken_links(page) == ["missing.md: no such file", "other.md#nope: no heading #nope in other.md"]
