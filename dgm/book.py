"""How a chapter knows where it runs, and how it hands numbers to its prose.

A chapter executes in three places: the site build (Jupyter Book runs every chapter in a
kernel), Jupyter/Colab, and the tests. Only the first must produce kernel-free output
(sliders as precomputed frames, no progress bars). The build says so explicitly: the
book's Sphinx extension ``_ext/dgm_site.py`` sets the environment variable
``DGM_STATIC_SITE=1`` in the build process before any chapter executes, and the kernels
the build starts inherit it. Nothing is guessed from the kernel or the front end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["STATIC_SITE_ENV", "building_site", "glue", "benchmark_results"]

#: Environment variable set (to "1") while Jupyter Book builds the static site.
STATIC_SITE_ENV = "DGM_STATIC_SITE"


def building_site() -> bool:
    """True while the static site is being built (``DGM_STATIC_SITE=1``), else False."""
    return os.environ.get(STATIC_SITE_ENV, "") == "1"


def glue(name: str, value, display: bool = False):
    """Make ``value`` available to the prose as ``{glue:}`name```` (myst-nb's glue).

    Outside the site build (Colab without myst-nb) the value is shown when ``display`` is
    True and otherwise ignored, so a chapter runs the same everywhere. NumPy scalars become
    Python numbers, so that format specs such as ``:.2f`` apply to them in the prose.
    """
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # NumPy or 0-d torch scalar
        value = value.item()
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - exercised only where myst-nb is missing
        if display:
            from IPython.display import display as _display

            _display(value)
        return
    _glue(name, value, display=display)


def benchmark_results(name: str):
    """What ``benchmarks/<name>.py`` wrote to ``benchmarks/results/<name>.json``, or None.

    The results live in the repository (a clone), not in the installed package: in Colab, or
    before the benchmark was run, this prints how to produce them and returns None.
    """
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / f"{name}.json"
    if not path.exists():
        print(f"No benchmark results at {path}: in a clone of the book's repository, run "
              f"`.venv/bin/python benchmarks/{name}.py` to produce them.")
        return None
    return json.loads(path.read_text())
