"""The repository's docs stand on their own: every relative link in README.md and docs/ leads
to a file of the repository (and a heading of it, when it names one)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tenantry.presentation.errors import problem_type

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


def test_the_clients_guide_explains_every_problem_type(project_root: Path) -> None:
    """Each status the contract documents as a problem, and those the request layer answers
    on its own (405, 431, 500), is in docs/clients.md's table by its type URN."""
    contract = json.loads((project_root / "docs" / "openapi.json").read_text())
    documented = {
        int(status)
        for item in contract["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
        for status in operation.get("responses", {})
        if status[0] in "45"
    }
    guide = (project_root / "docs" / "clients.md").read_text()
    rows = dict(re.findall(r"^\| `(urn:tenantry:problem:[a-z-]+)` \| (\d{3}) \|", guide, re.M))
    for status in documented | {405, 431, 500}:
        assert rows.get(problem_type(status)) == str(status), status
