"""The graders are honest: one-bug submissions get their exact scores, each part scores on its
own, hostile submissions decide nothing, and a roster becomes the expected gradebook.

All gradings go through `dgm.grade.grade_roster` (two jobs, one process per test) with a shared
result cache. The cache is sound by construction: a test runs the submission's *view* for its
part (the student's file with every other part from the reference), its inputs and seeds are
fixed by its own code, and an outcome is reused only when that view, the test and the
reference are identical. A one-bug mutant's view for the parts it leaves alone is the
reference's own (`test_views_of_untouched_parts_are_the_references`), so those tests are read
back from the reference's grading; the tests of the part it changes are run. The first
roster, of the reference solutions, runs everything, and the templates and the hostile
submissions are run in full, as their module-level code differs.
"""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import pytest

from dgm.grade import TOPICS, compose, grade, grade_roster, make_template, parts_of

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = ROOT / "exercises" / "projects"


def solution(topic: str) -> str:
    return (PROJECTS / topic / "reference" / "solution.py").read_text()


def mutated(source: str, edits) -> str:
    for old, new in edits:
        assert source.count(old) == 1, f"the edit's old text occurs {source.count(old)} times: {old!r}"
        source = source.replace(old, new)
    return source


def _mutants(topic: str):
    try:
        return importlib.import_module(f"mutants_{topic}").MUTANTS
    except ModuleNotFoundError:
        return []


def _cases() -> dict[str, tuple[str, str, float]]:
    """student name -> (topic, source, expected score): every mutant, and every 'reference with
    one TODO block replaced by NotImplementedError', and the template."""
    cases = {}
    for topic in TOPICS:
        src = solution(topic)
        parts = parts_of(src)
        cases[f"{topic}-template"] = (topic, make_template(src), 0.0)
        for k, (part, points) in enumerate(parts.items()):
            cases[f"{topic}-without-{part}"] = (topic, make_template(src, only=k), 10 - points)
        for k, (name, score, edits) in enumerate(_mutants(topic)):
            cases[f"{topic}-m{k:02d}"] = (topic, mutated(src, edits), float(score))
    return cases


CASES = _cases()


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("grade-cache")


@pytest.fixture(scope="session")
def references(tmp_path_factory, cache):
    """The reference solutions graded first, with nothing cached: every computation runs."""
    folder = tmp_path_factory.mktemp("references")
    roster = folder / "roster"
    (roster / "reference").mkdir(parents=True)
    for topic in TOPICS:
        (roster / "reference" / f"{topic}.py").write_text(solution(topic))
    rows = grade_roster(roster, folder / "book.csv", jobs=2, cache=cache, progress=False)
    return rows[0], roster


@pytest.fixture(scope="session")
def graded(tmp_path_factory, cache, references) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("mutants")
    roster = folder / "roster"
    for student, (topic, source, _) in CASES.items():
        (roster / student).mkdir(parents=True)
        (roster / student / f"{topic}.py").write_text(source)
    rows = grade_roster(roster, roster / "gradebook.csv", jobs=2, cache=cache, progress=False)  # feedback inside
    feedback = roster / "gradebook_feedback"
    return {row["student"]: row | {"feedback": (feedback / f"{row['student']}.txt").read_text()} for row in rows}


def test_references_score_ten_in_every_project(references):
    row, _ = references
    assert [row[t] for t in TOPICS] == [10, 10, 10], row
    assert row["total"] == 30 and row["bonus"] == 0.3


def test_each_project_has_at_least_ten_mutants():
    for topic in TOPICS:
        wrong = [m for m in _mutants(topic) if m[1] < 10]
        assert len(wrong) >= 10, f"project {topic} has {len(wrong)} wrong mutants"


@pytest.mark.parametrize("student", list(CASES), ids=lambda s: s)
def test_mutant_gets_its_exact_score(graded, student):
    topic, _, expected = CASES[student]
    row = graded[student]
    name = dict((f"{topic}-m{k:02d}", m[0]) for k, m in enumerate(_mutants(topic))).get(student, student)
    assert row[topic] == expected, f"{name}: scored {row[topic]:g}, expected {expected:g}\n{row['feedback']}"
    for other in TOPICS:  # the other projects' files are missing: 0, without running anything
        if other != topic:
            assert row[other] == 0


@pytest.mark.parametrize("topic", TOPICS)
def test_views_of_untouched_parts_are_the_references(topic):
    """Structural isolation: whatever a mutant changes in part P, the code that runs for the tests
    of any other part Q is exactly the reference's."""
    src = solution(topic)
    parts = parts_of(src)
    for name, _, edits in _mutants(topic):
        source = mutated(src, edits)
        changed = [q for q in parts if _dump(compose(src, source, q)) != _dump(compose(src, src, q))]
        assert len(changed) <= 1, f"{name}: the views of {changed} all changed"


def _dump(view) -> str:
    import ast

    return ast.dump(ast.Module(body=[n for n, _ in view], type_ignores=[]))


def test_compose_keeps_the_students_part_and_helpers():
    ref = "import torch\nK = 2\n\ndef f(x):\n    return x\n\nclass C:\n    def m(self):\n        return 1\n    def n(self):\n        return 2\n"
    mine = ("import math\nK = 5\n\ndef helper():\n    return 7\n\ndef f(x):\n    return -x\n\n"
            "class C:\n    def m(self):\n        return helper()\n    def n(self):\n        return -2\n    def extra(self):\n        return 3\n")

    def run(part):
        return execute_view(ref, mine, part)

    ns = run("C.m")
    c = ns["C"]()
    assert (c.m(), c.n(), c.extra(), ns["f"](1), ns["K"]) == (7, 2, 3, 1, 2)  # given K from the reference
    ns = run("f")
    assert (ns["f"](1), ns["C"]().m(), ns["C"]().n()) == (-1, 1, 2) and not hasattr(ns["C"], "extra")
    # a part the student left out is not filled in from the reference
    assert "f" not in execute_view(ref, "import torch\n", "f")
    assert not hasattr(execute_view(ref, "class C:\n    pass\n", "C.m")["C"], "m")


def execute_view(ref, mine, part):
    """The namespace of the view of ``part``, executed here (trusted toy code)."""
    import ast

    ns = {}
    for node, _ in compose(ref, mine, part):
        exec(compile(ast.Module(body=[node], type_ignores=[]), "<view>", "exec"), ns)
    return ns


# ---------------------------------------------------------------------------------------------
# Hostile submissions: each is graded for real (its own code differs), in project 1.

FLOWS = PROJECTS / "flows"
PASS_ALL = {"test_coupling_forward": 2, "test_coupling_inverse": 2, "test_flow_log_prob": 2, "test_flow_sample": 1,
            "test_training_reaches_the_target_on_moons": 3}


def _hostile(tmp_path, name, source, **options):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return {r.name: r for r in grade(FLOWS, path, jobs=2, **options)}


def test_exit_at_import_scores_zero_and_says_why(tmp_path, capsys):
    from dgm.grade import main

    fake = "test_coupling_forward  2 / 2\ntotal  10 / 10"
    path = tmp_path / "exit0.py"
    path.write_text(f"import sys\nprint({fake!r})\nsys.exit(0)\n" + solution("flows"))
    assert main([str(FLOWS), "--submission", str(path), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "total 10 / 10" not in " ".join(out.split()) and "total 0 / 10" in " ".join(out.split()), out
    lines = [line for line in out.splitlines() if line.startswith("test_")]
    assert len(lines) == 5 and all("the submission called sys.exit(0)" in line and "importing" in line
                                   for line in lines), out


def test_os_exit_in_one_part_costs_only_that_part(tmp_path):
    src = mutated(solution("flows"), [("    g = torch.Generator().manual_seed(seed)\n",
                                       "    import os\n    os._exit(0)\n")])
    results = _hostile(tmp_path, "os_exit", src)
    assert {n: r.passed for n, r in results.items()} == {n: n != "test_training_reaches_the_target_on_moons" for n in PASS_ALL}
    assert "exit code 0" in results["test_training_reaches_the_target_on_moons"].message


def test_a_hang_is_stopped_by_the_time_limit(tmp_path):
    src = mutated(solution("flows"), [("        z = torch.randn(n, 2, dtype=next(self.parameters()).dtype)\n",
                                       "        while True:\n            pass\n")])
    # The limit must stop the hang and leave every honest test alone, training included, on a
    # slow, busy machine: 20 s was too little for the moons training on a 2-core CI run.
    results = _hostile(tmp_path, "hang", src, timeout=60)
    assert [n for n, r in results.items() if not r.passed] == ["test_flow_sample"]
    assert "stopped after 60 s" in results["test_flow_sample"].message


def test_a_project_time_limit_stops_the_remaining_tests(tmp_path):
    # each test's process sleeps 4 s: the first test fits in the project's 12 s (even on a busy
    # machine), the five together cannot
    src = solution("flows").replace("import math\n", "import math\nimport time\ntime.sleep(4)\n", 1)
    path = tmp_path / "slow.py"
    path.write_text(src)
    results = grade(FLOWS, path, jobs=1, project_timeout=12)
    assert results[0].passed and not all(r.passed for r in results)
    assert any("time limit" in r.message for r in results if not r.passed), [r.message for r in results]


def test_raise_at_import_scores_zero(tmp_path):
    results = _hostile(tmp_path, "raises", "raise ValueError('broken on purpose')\n" + solution("flows"))
    assert not any(r.passed for r in results.values())
    assert all("ValueError: broken on purpose (line 1 of the submission), while importing the submission" == r.message
               for r in results.values()), [r.message for r in results.values()]


def test_patching_torch_and_pytest_decides_nothing(tmp_path):
    patch = ("import torch, pytest\n"
             "torch.allclose = lambda *a, **k: True\n"
             "torch.testing.assert_close = lambda *a, **k: None\n"
             "torch.Tensor.__sub__ = lambda a, b: torch.zeros_like(a)\n"
             "pytest.main = lambda *a, **k: 0\n")
    results = _hostile(tmp_path, "patches", patch + make_template(solution("flows")))
    assert not any(r.passed for r in results.values()), [(n, r.message) for n, r in results.items()]


def test_a_forged_result_file_fails_the_checks(tmp_path):
    forge = ("import os, sys, torch\n"
             "fake = [(torch.zeros(300, 2, dtype=torch.float64), torch.zeros(300, dtype=torch.float64))] * 2\n"
             "torch.save(fake, os.path.join(sys.argv[1], 'result.pt'))\n"
             "os._exit(0)\n")
    results = _hostile(tmp_path, "forged", forge + solution("flows"))
    assert not any(r.passed for r in results.values()), [(n, r.message) for n, r in results.items()]


# ---------------------------------------------------------------------------------------------
# A class


def test_roster_gives_the_expected_gradebook(tmp_path, cache, references):
    flows_bug = mutated(solution("flows"), [("for layer in reversed(self.layers):", "for layer in self.layers:")])
    vae_bug = make_template(solution("vae"), only=list(parts_of(solution("vae"))).index("train"))
    students = {
        "ada": {t: solution(t) for t in TOPICS},                          # 30 points
        "ben": {t: make_template(solution(t)) for t in TOPICS},           # the untouched templates
        "cleo": {"flows": flows_bug, "vae": vae_bug, "diffusion": solution("diffusion")},  # 9 + 7 + 10
        "dan": {"flows": solution("flows")},                              # only one project handed in
        "eve": {t: "import sys\nsys.exit(0)\n" + solution(t) for t in TOPICS},  # hostile: exits at import
    }
    roster = tmp_path / "roster"
    for student, files in students.items():
        (roster / student).mkdir(parents=True)
        for topic, source in files.items():
            (roster / student / f"{topic}.py").write_text(source)
    out = tmp_path / "gradebook.csv"
    grade_roster(roster, out, jobs=2, cache=cache, progress=False)
    want = [["student", "flows", "vae", "diffusion", "total", "bonus"],
            ["ada", "10", "10", "10", "30", "0.3"], ["ben", "0", "0", "0", "0", "0"],
            ["cleo", "9", "7", "10", "26", "0.3"], ["dan", "10", "0", "0", "10", "0.1"],
            ["eve", "0", "0", "0", "0", "0"]]
    assert list(csv.reader(out.open())) == want
    feedback = tmp_path / "gradebook_feedback"
    assert "no vae.py handed in" in (feedback / "dan.txt").read_text()
    assert "sys.exit(0)" in (feedback / "eve.txt").read_text()
    assert "test_flow_sample" in (feedback / "cleo.txt").read_text()
    # resumable: graded students are skipped (their records stay as they are), --force grades again
    stamps = {p.name: p.stat().st_mtime_ns for p in feedback.glob("*.json")}
    (roster / "fay").mkdir()
    grade_roster(roster, out, jobs=2, cache=cache, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in feedback.glob("*.json") if p.name != "fay.json"} == stamps
    rows = list(csv.reader(out.open()))
    assert rows[:-1] == want and rows[-1] == ["fay", "0", "0", "0", "0", "0"]
    grade_roster(roster, out, jobs=2, cache=cache, progress=False, force=True)
    assert list(csv.reader(out.open()))[:-1] == want  # the same scores on a rerun
    assert json.loads((feedback / "ada.json").read_text())["student"] == "ada"


def test_hidden_tests_are_reported_apart(tmp_path, capsys):
    hidden = tmp_path / "hidden" / "flows"
    hidden.mkdir(parents=True)
    (hidden / "grading_tests.py").write_text(
        "import torch\nfrom dgm.grade import grades, reference\nref = reference('flows')\n\n"
        "def inverse_of_forward(sub, x):\n"
        "    torch.manual_seed(0)\n"
        "    layer = sub.Coupling(torch.tensor([1.0, 0.0]), hidden=8)\n"
        "    return layer.inverse(layer(x)[0])[0]\n\n"
        "@grades('Coupling.inverse', points=1)\n"
        "def test_round_trip(run):\n"
        "    x = torch.randn(10, 2)\n"
        "    assert torch.allclose(run(inverse_of_forward, x=x), x, atol=1e-5), 'inverse(forward(x)) is not x'\n")
    from dgm.grade import main

    path = tmp_path / "mine.py"
    path.write_text(mutated(solution("flows"), [("return (z - t) * torch.exp(-s), -s.sum(1)",
                                                  "return z * torch.exp(-s) - t, -s.sum(1)")]))
    assert main([str(FLOWS), "--submission", str(path), "--hidden", str(tmp_path / "hidden"),
                 "--cache", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "instructor's tests" in out and "test_round_trip" in out
    assert "total                                           8 / 10" in out
    assert "instructor total                                0 / 1" in out
