"""Page conventions that a reader sees: code cells fit the text column, every figure is captioned.

The site's text column shows about 88 characters of code at 1280 px; a longer line is cut
off or scrolls. Sliders (`dgm.slider`) are figures like any other, so they get a numbered
caption and a name through the cell's ``mystnb: figure:`` metadata.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 88
PAGES = sorted([*ROOT.glob("book/*.md"), *ROOT.glob("exercises/sheet*.md"), *ROOT.glob("exercises/exam*.md")])
PAGES = [p for p in PAGES if p.read_text().startswith("---\njupytext:")]


def code_cells(page: Path):
    return [c for c in jupytext.read(page).cells if c.cell_type == "code"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_code_cells_fit_the_text_column(page):
    long = [f"{line[:50]}... ({len(line)} characters)"
            for cell in code_cells(page) for line in cell.source.splitlines()
            if len(line) > WIDTH]
    assert not long, f"{page.name}: code lines over {WIDTH} characters:\n" + "\n".join(long)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_slider_is_a_captioned_named_figure(page):
    for cell in code_cells(page):
        if "slider(" not in cell.source or "def slider" in cell.source:
            continue
        figure = cell.metadata.get("mystnb", {}).get("figure", {})
        first = cell.source.strip().splitlines()[0]
        assert figure.get("caption") and figure.get("name", "").startswith("fig-"), (
            f"{page.name}: the slider cell starting {first!r} needs mystnb figure metadata "
            "with a caption and a name fig-...")
