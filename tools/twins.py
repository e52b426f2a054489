"""Generate the Colab/Jupyter twins in notebooks/ from the MyST-Markdown sources.

    python -m tools.twins          # write every twin (what `make notebooks` runs)
    python -m tools.twins --check  # exit 1 and name the twins that are out of date

A twin is the page converted by jupytext, with one cell put in front that installs the
``dgm`` package when (and only when) the notebook runs in Colab. The twin of an exercise
sheet (a page under exercises/) is the *student* version: the solutions, written in the
sheet between ``{solution-start}`` and ``{solution-end}`` and in code cells tagged
``solution``, are removed; the code stubs (tagged ``stub``, hidden on the site) stay. The repository it installs
from is the one setting ``repository.url`` in ``_config.yml``. Twins are never edited by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

from tools.generated import sync

ROOT = Path(__file__).resolve().parents[1]
TWINS = ROOT / "notebooks"


def repository(root: Path = ROOT) -> tuple[str, str]:
    """(url, branch) of the book's repository, from _config.yml."""
    repo = yaml.safe_load((root / "_config.yml").read_text())["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def twin_path(source: str | Path) -> Path:
    """Where the twin of a page lives, relative to the repository root: book/x.md -> notebooks/book/x.ipynb."""
    return Path("notebooks") / Path(source).with_suffix(".ipynb")


def is_notebook(path: Path) -> bool:
    """A MyST page is a notebook when its front matter names a kernel."""
    text = path.read_text()
    return text.startswith("---") and "kernelspec:" in text.split("---", 2)[1]


def sources(root: Path = ROOT) -> list[Path]:
    """Every notebook page of the book (relative paths), in a stable order."""
    found = [p for d in ("book", "exercises") for p in sorted((root / d).rglob("*.md")) if is_notebook(p)]
    return [p.relative_to(root) for p in found]


def colab_cell(root: Path = ROOT) -> nbformat.NotebookNode:
    url, branch = repository(root)
    code = (
        "# Running in Colab? Install the book's package `dgm` first (this cell does nothing elsewhere).\n"
        "import subprocess, sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", \"dgm-book @ git+{url}@{branch}\"], check=True)\n"
        "    from google.colab import output\n"
        "    output.enable_custom_widget_manager()  # live ipywidgets sliders"
    )
    cell = nbformat.v4.new_code_cell(code)
    cell.metadata["tags"] = ["colab-install"]
    cell.pop("id", None)
    return cell


def _fence_name(line: str) -> str | None:
    m = re.match(r"^(`{3,}|:{3,})\{([\w-]+)\}", line.strip())
    return m.group(2) if m else None


def strip_solutions(cells: list) -> list:
    """Drop everything from each ``{solution-start}`` to its ``{solution-end}``, and solution cells."""
    kept, inside = [], False
    for cell in cells:
        if cell.cell_type == "code":
            if not inside and "solution" not in cell.metadata.get("tags", []):
                kept.append(cell)
            continue
        lines, out, skip_fence = cell.source.splitlines(), [], False
        for line in lines:
            name = _fence_name(line)
            if name == "solution-start":
                inside, skip_fence = True, True
            elif name == "solution-end":
                inside, skip_fence = False, True
            elif skip_fence:
                skip_fence = not line.strip().startswith("```")  # the directive's closing fence
            elif not inside:
                out.append(line)
        text = "\n".join(out).strip()
        if text:
            cell.source = text
            kept.append(cell)
    if inside:
        raise ValueError("a {solution-start} has no matching {solution-end}")
    return kept


def render(source: Path, root: Path = ROOT) -> str:
    """The twin of ``source`` as notebook JSON text (deterministic: no cell ids, no outputs)."""
    nb = jupytext.read(root / source)
    if Path(source).parts[0] == "exercises":
        nb.cells = strip_solutions(nb.cells)
    nb.cells.insert(0, colab_cell(root))
    for cell in nb.cells:
        cell.pop("id", None)
    nb.metadata.pop("jupytext", None)
    nb.metadata["colab"] = {"provenance": []}
    nb.nbformat, nb.nbformat_minor = 4, 4
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale twins instead of writing them")
    args = parser.parse_args(argv)
    expected = {twin_path(s): render(s) for s in sources()}
    present = {p.relative_to(ROOT) for p in TWINS.rglob("*.ipynb")}
    status = sync(expected, ROOT, args.check, orphans=sorted(present - set(expected)))
    if not args.check:
        print(f"{len(expected)} notebooks in {TWINS.relative_to(ROOT)}/ are up to date")
    return status


if __name__ == "__main__":
    sys.exit(main())
