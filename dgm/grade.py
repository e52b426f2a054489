"""The local grader of the project tasks, and the one source of their templates.

    python -m dgm.grade exercises/projects/flows                       # grade template.py there
    python -m dgm.grade exercises/projects/flows --submission my.py    # grade your file
    python -m dgm.grade exercises/projects/flows --others 7 9.5        # and the bonus with your other projects
    python -m dgm.grade --all my_projects/                             # all three projects and the bonus

A project folder holds ``grading_tests.py`` (pytest tests with a ``points(n)`` mark each, 10
points in all), the reference solution ``reference/solution.py``, and ``template.py``, which is
*generated* from the solution: every block between ``# TODO (...)`` and ``# END TODO`` becomes
``raise NotImplementedError``. The grader runs the tests on a submission and adds up the points.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .grading import PROJECT_POINTS, bonus

__all__ = ["TestResult", "grade", "grade_all", "load_submission", "make_template", "main", "PROJECTS_DIR"]

#: Where the project folders live (exercises/projects/<topic>/ in the repository).
PROJECTS_DIR = Path(__file__).resolve().parents[1] / "exercises" / "projects"

_TODO = re.compile(r"^(?P<indent>[ \t]*)# TODO \((?P<points>[\d.]+) points?\): (?P<text>.*)$")
_END = re.compile(r"^[ \t]*# END TODO\s*$")


def load_submission(project: str | Path):
    """The submission module that a project's grading tests check: the file named by the
    environment variable DGM_SUBMISSION (set by :func:`grade`), by default the project's template.py."""
    import importlib.util

    path = Path(os.environ.get("DGM_SUBMISSION", Path(project) / "template.py"))
    spec = importlib.util.spec_from_file_location(f"submission_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_template(solution: str) -> str:
    """The template of a reference solution: each TODO block's code replaced by NotImplementedError."""
    out, inside = [], None
    for line in solution.splitlines():
        start = _TODO.match(line)
        if start:
            if inside:
                raise ValueError(f"nested TODO: {line.strip()}")
            inside = start
            out.append(line)
        elif _END.match(line):
            if not inside:
                raise ValueError("an END TODO without its TODO")
            text = inside["text"].replace('"', "'")
            out.append(f'{inside["indent"]}raise NotImplementedError("{text}")')
            inside = None
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"TODO without END TODO: {inside['text']}")
    return "\n".join(out) + "\n"


@dataclass
class TestResult:
    name: str
    points: float
    passed: bool
    message: str = ""


class _Collector:
    def __init__(self):
        self.results: list[TestResult] = []
        self._points: dict[str, float] = {}

    def pytest_configure(self, config):
        config.addinivalue_line("markers", "points(n): points a grading test is worth")

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.failed):
            pts = self._points.get(report.nodeid, 0.0)
            message = "" if report.passed else str(report.longrepr.reprcrash.message if hasattr(report.longrepr, "reprcrash") else report.longrepr).splitlines()[0]
            self.results.append(TestResult(report.nodeid.split("::")[-1], pts, report.passed, message))

    def pytest_collection_modifyitems(self, items):
        self._points = {item.nodeid: float(item.get_closest_marker("points").args[0]) for item in items
                        if item.get_closest_marker("points")}


def grade(project: str | Path, submission: str | Path | None = None) -> list[TestResult]:
    """Run a project's grading tests on ``submission`` (default: its template.py); one result per test."""
    import pytest

    project = Path(project).resolve()
    tests = project / "grading_tests.py"
    if not tests.exists():
        raise FileNotFoundError(f"{project} has no grading_tests.py: is it a project folder?")
    submission = Path(submission).resolve() if submission else project / "template.py"
    if not submission.exists():
        raise FileNotFoundError(f"no submission at {submission}")
    collector = _Collector()
    old = os.environ.get("DGM_SUBMISSION")
    os.environ["DGM_SUBMISSION"] = str(submission)
    # Every project's tests are a module named grading_tests: forget the one imported by an earlier
    # grade() in this process, or pytest would reuse it for this project.
    sys.modules.pop("grading_tests", None)
    try:
        pytest.main([str(tests), "-q", "-p", "no:cacheprovider", "--import-mode=importlib", "-o", "addopts=",
                     "--rootdir", str(project), "--no-header", "--tb=no", "-s"], plugins=[collector])
    finally:
        sys.modules.pop("grading_tests", None)
        if old is None:
            os.environ.pop("DGM_SUBMISSION", None)
        else:
            os.environ["DGM_SUBMISSION"] = old
    return collector.results


def grade_all(folder: str | Path | None = None, projects_dir: str | Path | None = None) -> dict[str, list[TestResult]]:
    """Grade every project: the submission of project <topic> is <folder>/<topic>.py, or its template
    where that file is missing (or folder is None). Returns the results per topic, in name order."""
    projects_dir = Path(PROJECTS_DIR if projects_dir is None else projects_dir)
    projects = sorted(p for p in projects_dir.iterdir() if (p / "grading_tests.py").exists())
    if not projects:
        raise FileNotFoundError(f"no project folders with grading_tests.py in {projects_dir}")
    out = {}
    for project in projects:
        mine = Path(folder) / f"{project.name}.py" if folder is not None else None
        out[project.name] = grade(project, mine if mine is not None and mine.exists() else None)
    return out


def _table(results: list[TestResult]) -> float:
    total = sum(r.points for r in results if r.passed)
    print(f"\n{'test':<50} {'points':>8}")
    for r in results:
        print(f"{r.name:<50} {r.points if r.passed else 0:>4g} / {r.points:<3g}" + ("" if r.passed else f"  {r.message}"))
    print(f"{'total':<50} {total:>4g} / {sum(r.points for r in results):g}")
    return total


def _bonus_line(all_points: float) -> str:
    return (f"all projects: {all_points:g} / {PROJECT_POINTS:g} points -> bonus {bonus(min(all_points, PROJECT_POINTS)):.1f} "
            "(applied to a passed exam)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Grade project tasks locally.")
    parser.add_argument("project", nargs="?", help="the project folder, e.g. exercises/projects/flows")
    parser.add_argument("--submission", help="your solution file (default: the project's template.py)")
    parser.add_argument("--others", nargs="*", type=float, default=[],
                        help="your points in the other project tasks, to compute the bonus")
    parser.add_argument("--all", metavar="FOLDER", nargs="?", const="", default=None,
                        help="grade all projects: FOLDER/<topic>.py for each topic (flows.py, vae.py, diffusion.py), "
                             "the template where a file is missing")
    args = parser.parse_args(argv)
    if args.all is not None:
        if args.project or args.submission or args.others:
            parser.error("--all grades every project: give no project, --submission or --others with it")
        folder = Path(args.all) if args.all else None
        if folder is not None and not folder.is_dir():
            parser.error(f"{folder} is not a folder (it should hold flows.py, vae.py, diffusion.py)")
        totals = {}
        for topic, results in grade_all(folder).items():
            print(f"\n== project {topic}" + ("" if folder and (folder / f"{topic}.py").exists() else " (template: no submission)"))
            totals[topic] = _table(results)
        print("\n" + ", ".join(f"{topic} {points:g}" for topic, points in totals.items()))
        print(_bonus_line(sum(totals.values())))
        return 0
    if args.project is None:
        parser.error("name a project folder, or use --all")
    total = _table(grade(args.project, args.submission))
    print(_bonus_line(total + sum(args.others)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
