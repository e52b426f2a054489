"""Sphinx extension of dgm-book (loaded from _config.yml: sphinx.local_extensions).

1. Tells the chapters they are being built into the static site: sets ``DGM_STATIC_SITE=1``
   in the build process before any chapter executes; the kernels the build starts inherit
   it (see ``dgm.book.building_site``), so sliders render as precomputed frames and
   progress bars stay quiet.
2. Points the "Colab" launch button at the page's twin notebook in ``notebooks/``. The
   theme links the page's own source (``book/x.md``), which Colab cannot open.
3. Removes a duplicated inline script. Sphinx 7.4 adds an inline script registered after the
   builder started (sphinx-thebe's ``const THEBE_JS_URL = ...``) twice: once as given
   (file name ``None``) and once again from its registry (file name ``""``); the two do not
   compare equal, so both land on every page, and the second ``const`` declaration throws
   "Identifier 'THEBE_JS_URL' has already been declared". We keep the first of each inline body.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dgm.book import STATIC_SITE_ENV  # noqa: E402
from tools.twins import twin_path  # noqa: E402

COLAB = "https://colab.research.google.com"


def mark_static_site(app, config):
    os.environ[STATIC_SITE_ENV] = "1"


def _github(url: str) -> tuple[str, str] | None:
    if "github.com/" not in url:
        return None
    org, repo = url.split("github.com/")[-1].strip("/").split("/")[:2]
    return org, repo


def colab_to_twin(app, pagename, templatename, context, doctree):
    options = app.config.html_theme_options
    colab = options.get("launch_buttons", {}).get("colab_url", "").rstrip("/")
    parts = _github(options.get("repository_url", ""))
    if not colab or parts is None:
        return
    branch = options.get("repository_branch", "main") or "main"
    source = Path(app.env.doc2path(pagename)).relative_to(Path(app.srcdir).resolve())
    url = f"{colab}/github/{parts[0]}/{parts[1]}/blob/{branch}/{twin_path(source).as_posix()}"
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []) if group.get("label") == "launch-buttons" else []:
            if button.get("text") == "Colab":
                button["url"] = url
                button["tooltip"] = "Open this chapter's notebook in Colab"


def unique_inline_scripts(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        body = None if getattr(script, "filename", None) else getattr(script, "attributes", {}).get("body")
        if body is not None:
            if body in seen:
                continue
            seen.add(body)
        kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("config-inited", mark_static_site)
    app.connect("html-page-context", colab_to_twin, priority=600)  # after the theme's (501)
    app.connect("html-page-context", unique_inline_scripts, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
