"""The README is a front door: short, and every page of docs/ it points to exists (no TensorFlow needed)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")
ANCHORED = re.compile(r"\]\(([^)#\s]*)#([^)\s]+)\)")


def _links(page: Path) -> list[str]:
    """Relative Markdown links of a page (web addresses left out), without their #anchors."""
    return [t for t in LINK.findall(page.read_text()) if "://" not in t and not t.startswith("mailto:")]


def test_readme_is_at_most_250_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail into docs/"


def test_every_docs_page_linked_from_the_readme_exists_and_every_docs_page_is_linked():
    linked = {(ROOT / target).resolve() for target in _links(README)}
    missing = sorted(str(p.relative_to(ROOT)) for p in linked if not p.exists())
    assert not missing, f"README.md links to missing files: {missing}"
    pages = {p.resolve() for p in DOCS.glob("*.md")}
    assert pages, "docs/ has no pages"
    unlinked = sorted(p.name for p in pages - linked)
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_links_between_docs_pages_resolve():
    for page in DOCS.glob("*.md"):
        for target in _links(page):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_the_generated_tables_keep_their_markers_in_docs_results():
    """training/reproduce.py and training/ablate.py rewrite the text between these markers."""
    text = (DOCS / "results.md").read_text()
    for name in ("results", "ablation"):
        start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
        assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)
    readme = README.read_text()
    assert "<!-- results:start -->" not in readme and "<!-- ablation:start -->" not in readme


def _anchors(page: Path) -> set[str]:
    """The #anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_anchored_links_point_at_headings_that_exist():
    for page in [README, *DOCS.glob("*.md")]:
        for target, anchor in ANCHORED.findall(page.read_text()):
            linked = (page.parent / target) if target else page
            assert anchor in _anchors(linked), f"{page.name}: no heading for {target}#{anchor}"


def test_the_readme_results_are_the_shipped_models():
    """The README's results table quotes models/default's own test figures (metadata metrics and race_groups), so
    that the front door, the Home page's card and docs/results.md say the same."""
    import json

    metadata = json.loads((ROOT / "models" / "default" / "metadata.json").read_text())
    metrics = metadata["metrics"]
    rows = {
        line.split("|")[1].strip(): line.split("|")[2]
        for line in README.read_text().splitlines()
        if line.startswith("| ") and "UTKFace" in line or line.startswith("| emotion, FER2013")
    }
    emotion = metrics["fer2013-test"]["emotion"]
    assert f"**{emotion['accuracy']:.2%}** (macro-F1 {emotion['macro_f1']:.3f})" in rows["emotion, FER2013"]
    for task in ("gender", "age"):
        (row,) = [cells for name, cells in rows.items() if name.startswith(task)]
        assert f"**{metrics['utkface-test'][task]['accuracy']:.2%}**" in row
    race = metadata["race_groups"]["utkface-test"]
    (row,) = [cells for name, cells in rows.items() if name.startswith("race (three groups)")]
    assert f"**{metrics['utkface-test']['race']['three_groups_accuracy']:.2%}**" in row
    (row,) = [cells for name, cells in rows.items() if name.startswith("race, Indian and Others")]
    assert f"**{race['outside_other']:.0%}**" in row
