"""The README and docs/: every link leads somewhere, the licence is the one pyproject names."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation gone, spaces -> '-'."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-")
            for heading in headings}


def test_every_relative_link_of_the_docs_resolves() -> None:
    """Links from the README and docs/*.md name files (and headings) that exist."""
    broken = []
    for page in PAGES:
        for target, anchor in _LINK.findall(page.read_text()):
            if "://" in target:
                continue
            linked = (page.parent / target).resolve()
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md" and anchor[1:] not in _anchors(linked):
                broken.append(f"{page.name}: {target}{anchor}")
    assert not broken


def test_the_readme_links_every_docs_page() -> None:
    """Each page of docs/ is reachable from the README."""
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, page.name


def test_the_license_file_is_the_mit_licence_pyproject_names() -> None:
    """pyproject says MIT; LICENSE holds the MIT licence text."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] in ({"text": "MIT"}, "MIT")  # PEP 621 table or PEP 639 SPDX
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text
