"""The repository's docs stand on their own: every relative link in README.md and docs/ leads
to a file of the repository (and a heading of it, when it names one)."""

from __future__ import annotations

import re
from pathlib import Path

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#+\s+(.*)$", re.M)


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_relative_link_leads_somewhere(project_root: Path) -> None:
    pages = [project_root / "README.md", *sorted((project_root / "docs").glob("*.md"))]
    broken, checked = [], 0
    for page in pages:
        text = page.read_text()
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: outside the repository on purpose
            checked += 1
            path, _, fragment = target.partition("#")
            found = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(project_root)}: {target}"
            if not found.is_relative_to(project_root) or not found.exists():
                broken.append(where)
            elif fragment and found.suffix == ".md":
                anchors = {anchor(h) for h in HEADING.findall(found.read_text())}
                if fragment not in anchors:
                    broken.append(where + " (no such heading)")
    assert checked > 10
    assert broken == []


def test_no_page_sends_readers_out_of_the_repository(project_root: Path) -> None:
    pages = [project_root / "README.md", *sorted((project_root / "docs").glob("*.md"))]
    assert [str(p.relative_to(project_root)) for p in pages if "../shared" in p.read_text()] == []
