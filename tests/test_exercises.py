"""dgm.exercises.report, and the exercise sheets: solutions pass their checks, student stubs do not."""

from __future__ import annotations

import json
import re

import pytest

from dgm.exercises import FAILED, NOT_YET, PASSED, report
from tools import twins


def test_report_says_what_happened(capsys):
    def ok():
        pass

    def stub():
        raise NotImplementedError("use the determinant lemma")

    def wrong():
        assert 1 == 2, "log-det off by 0.3"

    def crash():
        raise ZeroDivisionError("division by zero")

    assert report("a", ok) == PASSED
    assert report("b", stub) == NOT_YET
    assert report("c", wrong) == FAILED
    assert report("d", crash) == FAILED
    out = capsys.readouterr().out.splitlines()
    assert out == ["PASSED: a", "NOT YET: b: use the determinant lemma", "FAILED: c: log-det off by 0.3",
                   "FAILED: d: ZeroDivisionError: division by zero"]


# The mock exams (exercises/exam*.md) are pen and paper, without coding tasks: tests/test_exams.py.
SHEETS = [s for s in twins.sources() if s.parts[0] == "exercises" and s.name.startswith("sheet")]


def _stream_text(nb) -> str:
    return "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))


@pytest.mark.parametrize("sheet", SHEETS, ids=str)
def test_student_version_has_no_solutions(sheet):
    nb = json.loads((twins.ROOT / twins.twin_path(sheet)).read_text())
    text = json.dumps(nb)
    assert "solution-start" not in text and "solution-end" not in text
    assert not any("solution" in c["metadata"].get("tags", []) for c in nb["cells"])
    assert any("stub" in c["metadata"].get("tags", []) for c in nb["cells"]), "a sheet needs coding stubs"


@pytest.mark.parametrize("sheet", SHEETS, ids=str)
def test_solutions_pass_and_stubs_do_not(sheet):
    """Execute the student notebook (stubs) and the full sheet (solutions); compare the check reports."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    path = twins.ROOT / sheet
    full = jupytext.read(path)
    full.cells = [c for c in full.cells if "stub" not in c.metadata.get("tags", [])]  # as on the site
    student = nbformat.reads(twins.render(sheet), as_version=4)
    outputs = {}
    for name, nb in [("full", full), ("student", student)]:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        outputs[name] = _stream_text(nb)
    checks = re.findall(r"^(PASSED|NOT YET|FAILED): ", outputs["full"], flags=re.M)
    assert checks and set(checks) == {PASSED}, outputs["full"]
    student_checks = re.findall(r"^(PASSED|NOT YET|FAILED): ", outputs["student"], flags=re.M)
    assert len(student_checks) == len(checks) and PASSED not in student_checks, outputs["student"]
