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


def _toy_project(root: Path, name: str, points: tuple[int, int]) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "template.py").write_text("def f():\n    raise NotImplementedError\n\ndef g():\n    raise NotImplementedError\n")
    (root / name / "grading_tests.py").write_text(
        "import pytest\nfrom pathlib import Path\nfrom dgm.grade import load_submission\n"
        "sub = load_submission(Path(__file__).resolve().parent)\n"
        f"@pytest.mark.points({points[0]})\ndef test_f():\n    assert sub.f() == 1\n"
        f"@pytest.mark.points({points[1]})\ndef test_g():\n    assert sub.g() == 2\n")


def test_grade_all_reports_every_project_and_the_bonus(tmp_path, monkeypatch, capsys):
    import dgm.grade as grade_module

    projects = tmp_path / "projects"
    _toy_project(projects, "alpha", (4, 6))
    _toy_project(projects, "beta", (3, 7))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "alpha.py").write_text("def f():\n    return 1\n\ndef g():\n    return 2\n")  # full marks
    (mine / "beta.py").write_text("def f():\n    return 1\n\ndef g():\n    return 0\n")   # 3 of 10
    results = grade_module.grade_all(mine, projects_dir=projects)
    assert {k: sum(r.points for r in v if r.passed) for k, v in results.items()} == {"alpha": 10, "beta": 3}
    assert sum(r.points for r in grade_module.grade_all(None, projects_dir=projects)["alpha"] if r.passed) == 0
    monkeypatch.setattr(grade_module, "PROJECTS_DIR", projects)
    assert grade_module.main(["--all", str(mine)]) == 0
    out = capsys.readouterr().out
    assert "== project alpha" in out and "== project beta" in out
    assert "all projects: 13 / 30 points -> bonus 0.1" in out  # 13 of 30 is at least 25 %
    with pytest.raises(SystemExit):
        grade_module.main(["--all", str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        grade_module.main([])
