"""The Colab twins in notebooks/ are generated from the sources and must not drift."""

from __future__ import annotations

import json

from tools import twins


def test_every_twin_is_up_to_date():
    stale = []
    for source in twins.sources():
        path = twins.ROOT / twins.twin_path(source)
        if not path.exists() or path.read_text() != twins.render(source):
            stale.append(str(twins.twin_path(source)))
    assert not stale, f"out of date: {stale}; run `make notebooks` and commit the result"


def test_no_twin_without_a_source():
    expected = {twins.twin_path(s) for s in twins.sources()}
    present = {p.relative_to(twins.ROOT) for p in twins.TWINS.rglob("*.ipynb")}
    assert present <= expected, f"twins without a source: {sorted(map(str, present - expected))}"


def test_chapters_have_twins():
    assert twins.twin_path("book/00_intro.md") in {twins.twin_path(s) for s in twins.sources()}


def test_first_cell_installs_only_in_colab():
    url, branch = twins.repository()
    for source in twins.sources():
        nb = json.loads((twins.ROOT / twins.twin_path(source)).read_text())
        first = "".join(nb["cells"][0]["source"])
        assert nb["cells"][0]["cell_type"] == "code"
        assert 'if "google.colab" in sys.modules:' in first
        assert f"git+{url}@{branch}" in first
        # the install runs only inside the Colab branch: every pip line is indented under the if
        assert all(line.startswith("    ") for line in first.splitlines() if "pip" in line)


def test_install_cell_is_harmless_outside_colab():
    cell = twins.colab_cell()
    exec(compile(cell.source, "<colab-cell>", "exec"), {})  # no google.colab here: must do nothing


def test_twins_have_no_outputs_and_a_python_kernel():
    for source in twins.sources():
        nb = json.loads((twins.ROOT / twins.twin_path(source)).read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
