"""Every relative link of the Markdown files outside docs/ leads to a file, and to a heading in it.

Links inside docs/ are checked by ``mkdocs build --strict`` (``make docs``).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("README.md", "SECURITY.md", "deploy/README.md")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.M)


def slug(heading: str) -> str:
    """The anchor GitHub and mkdocs give a heading: lower case, punctuation dropped, spaces as '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    return {slug(h) for h in HEADING.findall(FENCE.sub("", markdown))}


def broken_links(page: Path, text: str) -> list[str]:
    """The relative links of ``text`` (the page at ``page``) whose file or heading does not exist."""
    broken: list[str] = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not ours to check
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    return broken


def test_links_outside_docs_resolve() -> None:
    found = {name: broken_links(ROOT / name, (ROOT / name).read_text()) for name in PAGES}
    assert found == {name: [] for name in PAGES}


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    linked = {target.partition("#")[0] for target in LINK.findall(readme)}
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set()


def test_check_catches_a_missing_file_and_a_missing_heading() -> None:
    readme = ROOT / "README.md"
    text = "[a](docs/nosuch.md) [b](docs/configuration.md#nosuch) [c](docs/configuration.md#broker)"
    assert broken_links(readme, text) == [
        "docs/nosuch.md: no such file",
        "docs/configuration.md#nosuch: no heading #nosuch in docs/configuration.md",
    ]
