"""The mock exams: 90 points in the course's proportions, checks that pass, twins without
solutions, no problem repeated from a sheet or from the other exam; and their PDFs.

An exam (exercises/examN.md) opens with a table ``| problem | block | points |``; each
problem is a heading ``## Problem K: title (P points)`` with an ``{exercise}`` whose parts
say ``**[p points]**``, and a solution between ``{solution-start}`` and ``{solution-end}``
that ends with ``**Grading (P points).**`` and holds the check cells (tagged ``solution``)
that recompute its numbers. The PDFs are printed by tools/pdf.py (``make book`` runs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import jupytext
import pytest

from tools import pdf as pdf_tool
from tools import twins

ROOT = Path(__file__).resolve().parents[1]
EXAMS = sorted(p.relative_to(ROOT) for p in (ROOT / "exercises").glob("exam*.md"))
SHEETS = sorted(p.relative_to(ROOT) for p in (ROOT / "exercises").glob("sheet*.md"))

#: Points per block: variational inference and diffusion have two lecture weeks each, the
#: Introduction shares week 1 with flows (see the course page's timetable).
BLOCK_POINTS = {"Introduction": 6, "Normalizing flows": 12, "Variational inference": 24,
                "VAEs": 12, "GANs": 12, "Diffusion": 24}
TOTAL = 90

_HEADING = re.compile(r"^## Problem (\d+): (.+) \((\d+) points\)\s*$", re.M)
_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|\s*(\d+)\s*\|\s*$", re.M)
_PART = re.compile(r"\*\*\[(\d+) points?\]\*\*")
_GRADING = re.compile(r"\*\*Grading \((\d+) points?\)\.\*\*")


def test_there_are_two_exams():
    assert [p.name for p in EXAMS] == ["exam1.md", "exam2.md"]


def problems(exam: Path) -> list[dict]:
    """Each problem's number, title, points, statement, solution and part points."""
    text = (ROOT / exam).read_text()
    heads = list(_HEADING.finditer(text))
    out = []
    for h, nxt in zip(heads, [*heads[1:], None]):
        body = text[h.end(): nxt.start() if nxt else len(text)]
        start = body.index("```{solution-start}")
        statement, solution = body[:start], body[start:]
        out.append({"number": int(h.group(1)), "title": h.group(2), "points": int(h.group(3)),
                    "statement": statement, "solution": solution,
                    "parts": [int(p) for p in _PART.findall(statement)],
                    "grading": [int(p) for p in _GRADING.findall(solution)]})
    return out


def table(exam: Path) -> list[tuple[int, str, int]]:
    text = (ROOT / exam).read_text()
    return [(int(n), block, int(p)) for n, block, p in _ROW.findall(text)]


@pytest.mark.parametrize("exam", EXAMS, ids=str)
def test_points_add_up_in_the_course_proportions(exam):
    probs, rows = problems(exam), table(exam)
    assert 8 <= len(probs) <= 10, f"{len(probs)} problems: a 90-minute exam has 8-10"
    assert [p["number"] for p in probs] == list(range(1, len(probs) + 1))
    assert [(p["number"], p["points"]) for p in probs] == [(n, pts) for n, _, pts in rows], \
        "the table's points must be the headings' points"
    blocks = {}
    for _, block, pts in rows:
        assert block in BLOCK_POINTS, f"unknown block {block!r}"
        blocks[block] = blocks.get(block, 0) + pts
    assert blocks == BLOCK_POINTS
    assert sum(p["points"] for p in probs) == TOTAL


@pytest.mark.parametrize("exam", EXAMS, ids=str)
def test_every_problem_states_its_parts_points_and_has_a_grading_scheme(exam):
    for p in problems(exam):
        where = f"{exam} problem {p['number']}"
        assert p["parts"] and sum(p["parts"]) == p["points"], f"{where}: parts give {p['parts']}"
        assert p["grading"] == [p["points"]], f"{where}: needs one '**Grading ({p['points']} points).**'"
        assert "{solution-end}" in p["solution"] and ":class: dropdown" in p["solution"], where
        assert "[solution" in p["solution"], f"{where}: no check cell (tagged solution)"


@pytest.mark.parametrize("exam", EXAMS, ids=str)
def test_exam_mixes_the_kinds_of_items(exam):
    text = (ROOT / exam).read_text()
    statements = " ".join(p["statement"] for p in problems(exam))
    assert len(re.findall(r"```python", statements)) >= 2, "at least two find-the-bug items"
    assert statements.lower().count("true or false") + statements.lower().count("true/false") >= 1
    assert "remove-input" in text or "remove-cell" in text


def _shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z]+", re.sub(r"\$[^$]*\$", " ", text.lower()))
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _statements(page: Path) -> dict[str, str]:
    """The text of each exercise of a page (sheet or exam), by its label."""
    text = (ROOT / page).read_text()
    found = re.findall(r"```\{exercise\}\n:label: ([\w-]+)\n(.*?)\n```", text, flags=re.S)
    return dict(found)


def test_no_exam_problem_repeats_a_sheet_or_the_other_exam():
    """Measured as shared 5-word phrases outside math: a reworded repeat still shares many."""
    exams = {f"{e}:{k}": s for e in EXAMS for k, s in _statements(e).items()}
    assert len(exams) >= 16
    others = {f"{s}:{k}": v for s in SHEETS for k, v in _statements(s).items()}
    assert len(others) >= 30
    for name, text in exams.items():
        mine = _shingles(text)
        pool = {**others, **{k: v for k, v in exams.items() if k.split(":")[0] != name.split(":")[0]}}
        for other, other_text in pool.items():
            shared = mine & _shingles(other_text)
            assert len(shared) <= 0.15 * len(mine), (name, other, sorted(shared)[:5])


@pytest.mark.parametrize("exam", EXAMS, ids=str)
def test_student_twin_has_the_problems_and_no_solution(exam):
    nb = json.loads((ROOT / twins.twin_path(exam)).read_text())
    text = json.dumps(nb)
    assert "solution-start" not in text and "Grading (" not in text
    assert not any("solution" in c["metadata"].get("tags", []) for c in nb["cells"])
    markdown = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    for p in problems(exam):
        assert f"Problem {p['number']}: {p['title']}" in markdown
    for label, statement in _statements(exam).items():
        first = next(line for line in statement.splitlines() if line and not line.startswith(":"))
        assert first in markdown, f"{label}'s statement is missing from the twin"


@pytest.mark.parametrize("exam", EXAMS, ids=str)
def test_checks_pass_with_the_solutions_and_print_nothing(exam):
    """The build runs them too (a failing assert fails it); here each cell is run on its own."""
    from nbclient import NotebookClient

    nb = jupytext.read(ROOT / exam)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str((ROOT / exam).parent)}}).execute()
    checks = [c for c in nb.cells if c.cell_type == "code" and "solution" in c.metadata.get("tags", [])]
    assert len(checks) >= len(problems(exam)), "every problem needs its check cell"
    for c in checks:
        assert c.source.count("assert") >= 1, f"a check cell asserts nothing:\n{c.source[:200]}"
        streams = [o for o in c.outputs if o.output_type == "stream"]
        assert not streams, f"a check cell printed {streams[0].text[:200]!r}"


# --- the PDFs ------------------------------------------------------------------------

PDF_DIR = ROOT / "_build" / "pdf"


def _pdf_text(name: str) -> str:
    path = PDF_DIR / f"{name}.pdf"
    if not path.exists():
        pytest.fail(f"{path} is missing: `make book` prints it (or `make pdf` after a build)")
    if not shutil.which("pdftotext"):
        pytest.fail("pdftotext is missing: `make browser` installs poppler-utils")
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True,
                          text=True, check=True).stdout


def _pdf_pages(name: str) -> tuple[int, tuple[float, float]]:
    info = subprocess.run(["pdfinfo", str(PDF_DIR / f"{name}.pdf")], capture_output=True,
                          text=True, check=True).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    w, h = map(float, re.search(r"^Page size:\s+([\d.]+) x ([\d.]+) pts", info, re.M).groups())
    return pages, (w, h)


def _letters(text: str) -> str:
    """Only the letters, so that line breaks and spacing do not matter (NFKC undoes ligatures).

    Lines of at most three characters go first: pdftotext puts a formula's raised or lowered
    glyphs on lines of their own, between the lines of the sentence around it.
    """
    text = "\n".join(line for line in text.splitlines() if len(line.strip()) > 3)
    return re.sub(r"[^a-z]", "", unicodedata.normalize("NFKC", text).lower())


@pytest.mark.parametrize("name", list(pdf_tool.PDFS), ids=str)
def test_pdf_is_a4_with_rendered_math_and_no_site_chrome(name):
    text = _pdf_text(name)
    pages, (w, h) = _pdf_pages(name)
    assert abs(w - 595.3) < 2 and abs(h - 841.9) < 2, f"{name}: {w} x {h} pt is not A4"
    for raw in ["$", "\\frac", "\\mathbb", "\\mathrm", "\\begin", "{glue", "??"]:
        assert raw not in text, f"{name}: raw {raw!r} in the PDF (math or glue not rendered)"
    for chrome in ["Skip to main content", "Search", "Contents", "Show code cell"]:
        assert chrome not in text, f"{name}: the site's {chrome!r} is printed"
    if name == "formula_sheet":
        assert pages <= 2, f"the formula sheet takes {pages} pages: it must fit one A4 sheet"
    else:
        assert 2 <= pages <= 40, f"{name}: {pages} pages"


@pytest.mark.parametrize("exam", [e.stem for e in EXAMS], ids=str)
def test_exam_pdf_has_every_problem_and_no_solution(exam):
    paper, solutions = _pdf_text(exam), _pdf_text(f"{exam}_solutions")
    probs = problems(Path("exercises") / f"{exam}.md")
    for p in probs:
        assert f"Problem {p['number']}" in paper and f"Problem {p['number']}" in solutions
    assert "Grading (" not in paper and solutions.count("Grading (") == len(probs)
    # The words of each solution's scheme: none on paper, all in the solutions' PDF.
    paper_letters, solution_letters = _letters(paper), _letters(solutions)
    for p in probs:
        scheme = p["solution"].split("**Grading")[1].split("```")[0]
        words = _longest_prose(scheme)
        assert len(words) >= 25, f"{exam} problem {p['number']}: {scheme[:80]!r}"
        assert words not in paper_letters, f"{exam} problem {p['number']}: its scheme is printed"
        assert words in solution_letters, f"{exam} problem {p['number']}: scheme not in the solutions"
    assert _pdf_pages(f"{exam}_solutions")[0] > _pdf_pages(exam)[0]


def _longest_prose(markdown: str) -> str:
    """The letters of the longest stretch of a text without math, roles or emphasis marks."""
    pieces = re.split(r"\$[^$]*\$|\{[\w:-]+\}`[^`]*`|\*\*|\n\n|\(\w\)", markdown)
    return max((_letters(piece) for piece in pieces), key=len)


def test_pdfs_are_linked_from_the_site():
    site = ROOT / "_build" / "html"
    for page, names in [("book/course.html", list(pdf_tool.PDFS)),
                        ("exercises/exam1.html", ["exam1", "exam1_solutions", "formula_sheet"]),
                        ("exercises/exam2.html", ["exam2", "exam2_solutions", "formula_sheet"]),
                        ("book/formula_sheet.html", ["formula_sheet"])]:
        html = (site / page).read_text()
        for name in names:
            assert f'href="../pdf/{name}.pdf"' in html, f"{page} does not link {name}.pdf"
            assert (site / "pdf" / f"{name}.pdf").exists()


@pytest.mark.parametrize("page, mode", [("book/formula_sheet.html", "sheet"),
                                        ("exercises/exam1.html", "solutions"),
                                        ("exercises/exam2.html", "solutions")], ids=str)
def test_no_formula_is_cut_on_paper(browser, site_url, page, mode):
    """On paper a formula wider than its column is cut at the edge (_static/dgm.css).

    Measured in the print layout of an A4 page: a formula is cut when its typeset math is
    wider than its container. As a control, the same measure must find cut formulas once the
    text column is squeezed to a third of its width.
    """
    context = browser.new_context(viewport={"width": 703, "height": 1000})  # A4 less margins
    tab = context.new_page()
    tab.goto(f"{site_url}/{page}")
    tab.wait_for_function("[...document.querySelectorAll('.math')]"
                          ".every(e => e.querySelector('mjx-container'))", timeout=20_000)
    tab.evaluate(f"document.documentElement.classList.add('dgm-print-{mode}')")
    tab.emulate_media(media="print")
    measure = """() => [...document.querySelectorAll('mjx-container')]
        .filter(m => m.offsetParent !== null && m.firstElementChild
                && m.firstElementChild.getBoundingClientRect().width
                   > m.getBoundingClientRect().width + 1)
        .map(m => (m.querySelector('mjx-assistive-mml') || m).textContent.slice(0, 60))"""
    cut = tab.evaluate(measure)
    tab.evaluate("document.querySelector('article.bd-article')"
                 ".style.setProperty('width', '230px', 'important')")
    squeezed = tab.evaluate(measure)
    context.close()
    assert not cut, f"{page}: formulas cut on paper (shorten or break them): {cut}"
    assert squeezed, "the measure finds no cut formula even in a squeezed column"
