"""The glue rule: a result quoted in prose comes from a cell, never from the keyboard.

Scans the prose of every chapter, exercise sheet, mock exam and project page (markdown cells
and figure captions) for decimal numbers outside math, code, glue roles, citations and links. A decimal
number there is almost always a typed-in result; the few that are definitions (a threshold a
task sets, a hyper-parameter, the course's rule) are listed in ALLOWED with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*ROOT.glob("book/*.md"), *ROOT.glob("exercises/sheet*.md"), *ROOT.glob("exercises/exam*.md"), *ROOT.glob("exercises/projects/*/README.md"),
                ROOT / "exercises" / "README.md"])

#: (page, number): why it may stand in prose.
ALLOWED = {
    ("book/00_intro.md", "0.15"): "the closeness threshold the experiment chooses (the same literal in its code)",
    ("book/02_vi.md", "0.05"): "the threshold that counts a correlation as non-negligible (its code's literal)",
    ("book/05_diffusion.md", "0.02"): "the noise level sigma_1 chosen for the experiment",
    ("book/course.md", "7.5"): "the course's bonus rule (dgm.grading defines it)",
    ("book/course.md", "22.5"): "the course's bonus rule",
    ("book/course.md", "0.1"): "the course's bonus rule",
    ("book/course.md", "0.2"): "the course's bonus rule",
    ("book/course.md", "0.3"): "the course's bonus rule",
    ("book/course.md", "4.0"): "the pass mark of the German grade scale",
    ("book/course.md", "1.0"): "the best grade of the German scale",
    ("book/course.md", "1.3"): "an exam grade used as an example input",
    ("exercises/projects/flows/README.md", "0.15"): "the task's target (a definition of the grading)",
    ("book/scaling_up.md", "84.78"): "a published result, quoted with its citation (the literature's reference numbers)",
    ("book/scaling_up.md", "82.90"): "a published result, quoted with its citation (the literature's reference numbers)",
    ("book/scaling_up.md", "79.20"): "a published result, quoted with its citation (the literature's reference numbers)",
    ("book/scaling_up.md", "78.01"): "a published result, quoted with its citation (the literature's reference numbers)",
    ("book/scaling_up.md", "1.06"): "a published result, quoted with its citation (the literature's reference numbers)",
    ("book/scaling_up.md", "1.05"): "a published result, quoted with its citation (the literature's reference numbers)",
    ("book/scaling_up.md", "0.99"): "a published result, quoted with its citation (the literature's reference numbers)",
    ("book/scaling_up.md", "0.97"): "a published result, quoted with its citation (the literature's reference numbers)",
    ("book/scaling_up.md", "3.75"): "a published result, quoted with its citation (the literature's reference numbers)",
    ("book/scaling_up.md", "3.70"): "a published result, quoted with its citation (the literature's reference numbers)",
    ("book/scaling_up.md", "2.65"): "a published result, quoted with its citation (the literature's reference numbers)",
    ("book/scaling_up.md", "2.99"): "a published result, quoted with its citation (the literature's reference numbers)",
}

_NUMBER = re.compile(r"(?<![\w.\-])\d+\.\d+(?!\w)(?!\.\d)")  # a sentence's full stop may follow
_STRIP = [
    re.compile(r"\$\$.*?\$\$", re.S),                           # display math
    re.compile(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}", re.S),      # LaTeX environments
    re.compile(r"\$[^$\n]+\$"),                                 # inline math
    re.compile(r"\{[\w:-]+\}`[^`]*`"),                          # roles: glue, cite, eq, doc, ref, ...
    re.compile(r"`[^`\n]*`"),                                   # inline code
    re.compile(r"\]\([^)]*\)"),                                 # link targets
    re.compile(r"<!--.*?-->", re.S),                            # comments
]


def prose(page: Path) -> list[str]:
    """The page's prose: markdown cells without code blocks, and figure captions."""
    if page.name == "README.md":
        texts = [page.read_text()]
    else:
        nb = jupytext.read(page)
        texts = [c.source for c in nb.cells if c.cell_type == "markdown"]
        texts += [c.metadata.get("mystnb", {}).get("figure", {}).get("caption", "") for c in nb.cells
                  if c.cell_type == "code"]
    out = []
    for text in texts:
        text = "\n".join(line for line in _without_code_blocks(text.splitlines())
                         if not re.match(r"\s*:[\w-]+:", line))  # directive options
        for pattern in _STRIP:
            text = pattern.sub(" ", text)
        out.append(text)
    return out


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(\{[\w:-]+\})?\s*(\S*)")
_CODE_DIRECTIVES = {"{code-block}", "{code-cell}", "{code}", "{literalinclude}"}


def _without_code_blocks(lines: list[str]) -> list[str]:
    """Drop fenced code blocks; keep the prose inside directives such as ```{exercise}."""
    kept, stack = [], []  # stack of (fence, is_code)
    for line in lines:
        m = _FENCE.match(line)
        if m:
            fence, directive, rest = m.groups()
            if stack and not directive and not rest and fence == stack[-1][0]:
                stack.pop()  # a bare fence closes the innermost block it matches
                continue
            if not (stack and stack[-1][1]):
                stack.append((fence, directive in _CODE_DIRECTIVES or (directive is None)))
                continue
        if not any(is_code for _, is_code in stack):
            kept.append(line)
    return kept


def typed_numbers(page: Path) -> list[str]:
    rel = str(page.relative_to(ROOT))
    found = []
    for text in prose(page):
        for line in text.splitlines():
            for m in _NUMBER.finditer(line):
                if (rel, m.group()) not in ALLOWED:
                    found.append(f"{m.group()} in: {line.strip()[:100]}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_typed_numbers_in_prose(page):
    found = typed_numbers(page)
    assert not found, "glue these numbers from a cell (or list a definition in ALLOWED):\n" + "\n".join(found)


def test_the_scanner_finds_a_typed_number_and_skips_math_code_and_glue(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("The fit reaches 0.18 nats. $x = 0.5$ and `lr=2e-3, 0.9` and {glue:text}`a:.2f`.\n"
                    "```python\ny = 3.14\n```\n$$\n z = 2.5\n$$\n")
    assert [t.split(" in:")[0] for text in prose(page) for t in _numbers(text)] == ["0.18"]


def _numbers(text: str) -> list[str]:
    return [f"{m.group()} in: {line}" for line in text.splitlines() for m in _NUMBER.finditer(line)]


def test_allowed_entries_are_still_used():
    """Each allowance names a number that is really there, so that the list cannot grow stale."""
    used = set()
    for page in PAGES:
        rel = str(page.relative_to(ROOT))
        for text in prose(page):
            used |= {(rel, m.group()) for m in _NUMBER.finditer(text)}
    assert set(ALLOWED) <= used, sorted(set(ALLOWED) - used)
