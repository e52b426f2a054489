"""Print the exam-preparation pages of the built site to PDF, for paper practice.

    python -m tools.pdf      # after `jupyter-book build .` (make book runs both): _build/pdf/*.pdf

The PDFs are printed from the built HTML by Debian's chromium in headless mode
(``--print-to-pdf``; no browser download, no LaTeX), so they show exactly what the site
shows: MathJax's rendered math, the glued numbers, the figures. Each page is printed from a
copy of its HTML with one class on ``<html>`` that the print rules of ``_static/dgm.css``
read: ``dgm-print-exam`` drops the solutions (the paper exam), ``dgm-print-solutions`` opens
every solution dropdown. The print rules that hold for every page (A4, no navigation, no
buttons) apply as well when a reader prints a page from the browser.

The PDFs are written to ``_build/pdf/`` and copied into the site (``_build/html/pdf/``), from
where the course page and the exam pages link them.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
OUT = ROOT / "_build" / "pdf"
SITE_COPY = HTML / "pdf"
CHROMIUM = Path("/usr/bin/chromium")

#: PDF name -> (built page, print mode). The mode becomes the class dgm-print-<mode>.
PDFS = {
    "formula_sheet": ("book/formula_sheet.html", "sheet"),
    "exam1": ("exercises/exam1.html", "exam"),
    "exam1_solutions": ("exercises/exam1.html", "solutions"),
    "exam2": ("exercises/exam2.html", "exam"),
    "exam2_solutions": ("exercises/exam2.html", "solutions"),
}

#: Chromium quiet and offline: no sandbox (containers), GPU, first-run, sync or component
#: work. The browser tests launch it with the same flags (tests/conftest.py).
QUIET_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
FLAGS = ["--headless", *QUIET_FLAGS, "--no-pdf-header-footer",
         "--run-all-compositor-stages-before-draw"]
#: Virtual milliseconds chromium lets the page's scripts run before it prints; the clock
#: stands still while files load, so MathJax has typeset the page long before this.
VIRTUAL_TIME_MS = 8_000


def print_copy(page: Path, mode: str) -> Path:
    """A copy of ``page`` beside it (so relative links resolve) with the print mode's class."""
    html = page.read_text(encoding="utf-8")
    html, n = re.subn(r"<html(\s|>)", rf'<html class="dgm-print-{mode}"\1', html, count=1)
    if n != 1:
        raise ValueError(f"{page}: no <html> tag to mark for printing")
    copy = page.with_name(f".{page.stem}.print-{mode}.html")
    copy.write_text(html, encoding="utf-8")
    return copy


def print_pdf(page: Path, mode: str, pdf: Path, chromium: Path = CHROMIUM) -> None:
    """Print one built page to ``pdf`` with the given print mode."""
    if not page.exists():
        raise FileNotFoundError(f"{page} is not built: run `make book` first")
    if not chromium.exists():
        raise FileNotFoundError(f"{chromium} is missing: `make browser` installs Debian's chromium")
    copy = print_copy(page, mode)
    pdf.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory() as profile:
            cmd = [str(chromium), *FLAGS, f"--user-data-dir={profile}",
                   f"--virtual-time-budget={VIRTUAL_TIME_MS}", f"--print-to-pdf={pdf}",
                   copy.as_uri()]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        copy.unlink()
    if done.returncode != 0 or not pdf.exists():
        raise RuntimeError(f"chromium could not print {page.name}:\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    SITE_COPY.mkdir(parents=True, exist_ok=True)
    for name, (page, mode) in PDFS.items():
        pdf = OUT / f"{name}.pdf"
        print_pdf(HTML / page, mode, pdf)
        shutil.copy2(pdf, SITE_COPY / pdf.name)
        print(f"wrote {pdf.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
