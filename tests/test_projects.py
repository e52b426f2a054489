"""Project tasks: templates come from the reference solutions, and grading is honest.

The untouched template must score 0 points and the reference solution 10, under the same tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dgm.grade import make_template, parts_of, plan
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
def test_parts_add_up_to_ten_points_and_every_part_is_tested(project):
    """The TODO blocks are worth 10 points; plan() checks that the tests of each part add up to
    its block's points. (tests/test_grading_mutants.py grades the template, 0 points, the
    reference, 10, and the one-bug submissions.)"""
    parts = parts_of((project / "reference" / "solution.py").read_text())
    assert sum(parts.values()) == 10, parts
    tests = plan(project)
    assert {t.part for t in tests} == set(parts)
    assert all(t.name.startswith("test_") and not t.hidden for t in tests)


def test_make_template_replaces_todo_blocks():
    solution = "def f(x):\n    # TODO (2 points): double it.\n    y = 2 * x\n    return y\n    # END TODO\n"
    template = make_template(solution)
    assert template == 'def f(x):\n    # TODO (2 points): double it.\n    raise NotImplementedError("double it.")\n'
    with pytest.raises(ValueError):
        make_template("    # TODO (1 point): x\n    pass\n")
    with pytest.raises(ValueError):
        make_template("    # END TODO\n")


def test_make_template_can_replace_one_block():
    solution = ("def f():\n    # TODO (1 point): a\n    return 1\n    # END TODO\n"
                "def g():\n    # TODO (2 points): b\n    return 2\n    # END TODO\n")
    only_g = make_template(solution, only=1)
    assert "return 1" in only_g and "return 2" not in only_g and 'raise NotImplementedError("b")' in only_g
    assert parts_of(solution) == {"f": 1.0, "g": 2.0}
    with pytest.raises(ValueError):
        make_template(solution, only=2)


def _toy_project(root: Path, name: str, points: tuple[int, int]) -> None:
    """A project with two parts, f and g, in the grader's format."""
    folder = root / name
    (folder / "reference").mkdir(parents=True)
    solution = ("def f():\n    # TODO ({0} points): one\n    return 1\n    # END TODO\n\n"
                "def g():\n    # TODO ({1} points): two\n    return 2\n    # END TODO\n").format(*points)
    (folder / "reference" / "solution.py").write_text(solution)
    (folder / "template.py").write_text(make_template(solution))
    (folder / "grading_tests.py").write_text(
        "from dgm.grade import grades\n\n"
        "def call(sub, name):\n    return getattr(sub, name)()\n\n"
        f"@grades('f', points={points[0]})\ndef test_f(run):\n    assert run(call, name='f') == 1, 'f() must be 1'\n\n"
        f"@grades('g', points={points[1]})\ndef test_g(run):\n    assert run(call, name='g') == 2, 'g() must be 2'\n")


def test_grade_all_reports_every_project_and_the_bonus(tmp_path, monkeypatch, capsys):
    import dgm.grade as grade_module

    projects = tmp_path / "projects"
    _toy_project(projects, "alpha", (4, 6))
    _toy_project(projects, "beta", (3, 7))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "alpha.py").write_text("def f():\n    return 1\n\ndef g():\n    return 2\n")  # full marks
    (mine / "beta.py").write_text("def f():\n    return 1\n\ndef g():\n    return 0\n")   # 3 of 10
    results = grade_module.grade_all(mine, projects_dir=projects, jobs=1)
    assert {k: sum(r.points for r in v if r.passed) for k, v in results.items()} == {"alpha": 10, "beta": 3}
    assert results["beta"][1].message == "g() must be 2"
    assert sum(r.points for r in grade_module.grade_all(None, projects_dir=projects, jobs=1)["alpha"] if r.passed) == 0
    monkeypatch.setattr(grade_module, "PROJECTS_DIR", projects)
    assert grade_module.main(["--all", str(mine), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "== project alpha" in out and "== project beta" in out
    assert "all projects: 13 / 30 points -> bonus 0.1" in out  # 13 of 30 is at least 25 %
    with pytest.raises(SystemExit):
        grade_module.main(["--all", str(mine / "missing")])
    with pytest.raises(SystemExit):
        grade_module.main([])
    with pytest.raises(SystemExit):  # a roster needs --out
        grade_module.main(["--roster", str(mine)])


def test_tests_must_add_up_to_the_parts_points(tmp_path):
    _toy_project(tmp_path, "gamma", (4, 6))
    tests = tmp_path / "gamma" / "grading_tests.py"
    tests.write_text(tests.read_text().replace("points=6", "points=5"))
    with pytest.raises(ValueError, match="g: tests 5, TODO 6"):
        plan(tmp_path / "gamma")
    tests.write_text(tests.read_text().replace("@grades('g'", "@grades('h'"))
    with pytest.raises(ValueError, match="no part of the reference"):
        plan(tmp_path / "gamma")
