"""Project tasks: templates come from the reference solutions, and grading is honest.

The untouched template must score 0 points and the reference solution 10, under the same tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dgm.grade import grade, make_template
from tools import export

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = sorted(p.parents[1] for p in ROOT.glob("exercises/projects/*/reference/solution.py"))


def test_there_is_a_project():
    assert any(p.name == "flows" for p in PROJECTS)


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_template_is_generated_from_the_solution(project):
    expected = export.project_templates()[project / "template.py"]
    assert (project / "template.py").read_text() == expected, "run `make notebooks` and commit the template"


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_template_scores_zero_and_solution_ten(project):
    template = grade(project)
    solution = grade(project, project / "reference" / "solution.py")
    assert sum(r.points for r in template) == 10 == sum(r.points for r in solution)
    assert [r.name for r in template] == [r.name for r in solution]
    assert not any(r.passed for r in template), [r.name for r in template if r.passed]
    assert all(r.passed for r in solution), [(r.name, r.message) for r in solution if not r.passed]


def test_make_template_replaces_todo_blocks():
    solution = "def f(x):\n    # TODO (2 points): double it.\n    y = 2 * x\n    return y\n    # END TODO\n"
    template = make_template(solution)
    assert template == 'def f(x):\n    # TODO (2 points): double it.\n    raise NotImplementedError("double it.")\n'
    with pytest.raises(ValueError):
        make_template("    # TODO (1 point): x\n    pass\n")
    with pytest.raises(ValueError):
        make_template("    # END TODO\n")
