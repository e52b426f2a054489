"""The grader of the project tasks, for a student (one file) and for an instructor (a class).

    python -m dgm.grade exercises/projects/flows                     # grade template.py there
    python -m dgm.grade exercises/projects/flows --submission my.py  # grade your file
    python -m dgm.grade exercises/projects/flows --others 7 9.5      # and the bonus with your other projects
    python -m dgm.grade --all my_projects/                           # flows.py, vae.py, diffusion.py and the bonus
    python -m dgm.grade --roster submissions/ --out gradebook.csv    # a class: submissions/<student>/<topic>.py
    ... --hidden DIR                                                 # and the instructor's own tests in DIR/<topic>/

A project folder holds ``grading_tests.py``, the reference solution ``reference/solution.py`` and
``template.py``, which is *generated* from the solution: every block between ``# TODO (...)`` and
``# END TODO`` becomes ``raise NotImplementedError``. Each TODO block sits in one function or
method, its *part* (``"Coupling.forward"``, ``"train"``).

A grading test is a function ``test_*(run)`` marked ``@grades(part, points)``. Its body runs in
the grader's process and never sees the submission; it calls ``run(fn, **inputs)`` to have the
module-level function ``fn(sub, **inputs)`` of the same file executed in a fresh process of the
submission's own (:mod:`dgm.grade_worker`), where ``sub`` is the student's file with every
definition except ``part`` taken from the reference. ``run`` returns what ``fn`` returned
(tensors, numbers, strings, lists, tuples and dicts with string keys, e.g. state dicts), and
the body decides with ``assert``s whose messages say what
was expected and what came out. So one bug costs exactly the points of its part, and nothing a
submission does (exit, hang, print, patch torch or pytest) decides its score.
"""

from __future__ import annotations

import argparse
import ast
import csv
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from .grade_worker import END_TODO, TODO, _load_module, compose, parts_of
from .grading import PROJECT_POINTS, bonus

__all__ = ["TestResult", "SubmissionFailed", "grades", "expect_tensor", "expect_close", "reference", "plan", "grade", "grade_all", "grade_roster",
           "make_template", "main", "PROJECTS_DIR", "TEST_TIMEOUT", "PROJECT_TIMEOUT", "TOPICS"]

#: Where the project folders live (exercises/projects/<topic>/ in the repository).
PROJECTS_DIR = Path(__file__).resolve().parents[1] / "exercises" / "projects"
#: The projects of the course, in course order (the file names of a submission folder).
TOPICS = ("flows", "vae", "diffusion")
#: Wall-clock limits in seconds: of one test's submission process, and of all tests of one
#: project. They only stop a submission that hangs: the slowest reference test takes about
#: 15 s on 2 busy cores, a whole project under 40 s, so a correct submission is far inside.
TEST_TIMEOUT = 300.0
PROJECT_TIMEOUT = 900.0


# ---------------------------------------------------------------------------------------------
# Writing grading tests


def grades(part: str, points: float):
    """Mark a grading test: it checks the TODO block of ``part`` and is worth ``points``."""

    def mark(test):
        test.grade_part, test.grade_points = part, float(points)
        return test

    return mark


def expect_tensor(value, shape: tuple, what: str, dtype=None):
    """``value`` if it is a tensor of ``shape`` (and ``dtype``, when given); else a failed check
    that says what came instead."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{what} must be a tensor of shape {tuple(shape)}, got {_kind(value)}")
    if tuple(value.shape) != tuple(shape):
        raise AssertionError(f"{what} must have shape {tuple(shape)}, got {tuple(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        raise AssertionError(f"{what} must be {dtype}, got {value.dtype}")
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise AssertionError(f"{what} has {int((~torch.isfinite(value)).sum())} entries that are inf or nan")
    return value


def expect_close(got, want, what: str, atol: float, rtol: float = 0.0) -> None:
    """A check that ``got`` equals ``want`` (a tensor the grader computed) up to atol + rtol |want|."""
    import torch

    got = expect_tensor(got, tuple(want.shape), what)
    err = (got.to(want.dtype) - want).abs()
    bad = err > atol + rtol * want.abs()
    if bad.any():
        i = int(err.argmax())
        raise AssertionError(f"{what} is off in {int(bad.sum())} of {want.numel()} entries: "
                             f"e.g. {got.reshape(-1)[i].item():.6g} where {want.reshape(-1)[i].item():.6g} "
                             f"is expected (tolerance {atol:g}" + (f" + {rtol:g} |expected|)" if rtol else ")"))


def _kind(value) -> str:
    if isinstance(value, str) and value.startswith("<"):
        return value.strip("<>")
    return f"a {type(value).__name__}" + (f" of length {len(value)}" if isinstance(value, (list, tuple)) else "")


class SubmissionFailed(Exception):
    """The submission's process did not return a result (it raised, exited, hung or died)."""


def _reference_path(where: str | Path) -> Path:
    where = Path(where)
    if not where.is_absolute() and len(where.parts) == 1 and (PROJECTS_DIR / where).is_dir():
        where = PROJECTS_DIR / where
    if where.is_file():
        where = where.parent
    return where / "reference" / "solution.py"


@functools.lru_cache(maxsize=None)
def _load_reference(path: Path):
    return _load_module(path, f"reference_{_digest(str(path))[:12]}")


def reference(where: str | Path):
    """The reference solution of a project, as a module, for the grader's own computations:
    ``reference("flows")``, or the project folder (or a file in it) by path."""
    path = _reference_path(where)
    if not path.exists():
        raise FileNotFoundError(f"no reference solution at {path}")
    return _load_reference(path.resolve())


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Templates


def make_template(solution: str, only: int | None = None) -> str:
    """The template of a reference solution: each TODO block's code replaced by NotImplementedError.

    With ``only=k``, only the k-th block (from 0) is replaced and the others keep the solution.
    """
    out, inside, index = [], None, -1
    for line in solution.splitlines():
        start = TODO.match(line)
        if start:
            if inside:
                raise ValueError(f"nested TODO: {line.strip()}")
            inside, index = start, index + 1
            out.append(line)
        elif END_TODO.match(line):
            if not inside:
                raise ValueError("an END TODO without its TODO")
            if only is None or only == index:
                text = inside["text"].replace('"', "'")
                out.append(f'{inside["indent"]}raise NotImplementedError("{text}")')
            else:
                out.append(line)
            inside = None
        elif not inside or (only is not None and only != index):
            out.append(line)
    if inside:
        raise ValueError(f"TODO without END TODO: {inside['text']}")
    if only is not None and not 0 <= only <= index:
        raise ValueError(f"the solution has {index + 1} TODO blocks, not a block {only}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Plans and results


@dataclass(frozen=True)
class _Test:
    tests: str  # the grading module's path
    name: str
    part: str
    points: float
    hidden: bool
    reference: str  # the reference solution the submission's view is composed with


@dataclass
class TestResult:
    name: str
    points: float
    passed: bool
    message: str = ""
    part: str = ""
    hidden: bool = False
    seconds: float = 0.0


_MODULES: dict[str, object] = {}


def _grading_module(path: str):
    """The grading module at ``path``, loaded once per process and content (an edited file is
    loaded again)."""
    key = _digest(path, Path(path).read_bytes())
    if key not in _MODULES:
        _MODULES[key] = _load_module(Path(path), f"grading_tests_{key[:12]}")
    return _MODULES[key]


def _tests_in(path: Path, hidden: bool, reference: Path) -> list[_Test]:
    module = _grading_module(str(path))
    tests = [_Test(str(path), name, f.grade_part, f.grade_points, hidden, str(reference))
             for name, f in vars(module).items() if name.startswith("test_") and hasattr(f, "grade_part")]
    if not tests:
        raise ValueError(f"{path} has no grading tests (functions test_* marked with @grades(part, points))")
    return tests


def plan(project: str | Path, hidden: str | Path | None = None) -> list[_Test]:
    """The grading tests of a project, in file order, then those of ``hidden/<topic>/`` if any.

    Checks that every test grades a part of the reference solution and that the public tests
    of each part add up to the points of its TODO block."""
    project = Path(project).resolve()
    tests_file = project / "grading_tests.py"
    if not tests_file.exists():
        raise FileNotFoundError(f"{project} has no grading_tests.py: is it a project folder?")
    ref = project / "reference" / "solution.py"
    tests = _tests_in(tests_file, False, ref)
    if ref.exists():
        parts = parts_of(ref.read_text())
        got = defaultdict(float)
        for t in tests:
            if t.part not in parts:
                raise ValueError(f"{t.name} grades {t.part!r}, which is no part of the reference ({', '.join(parts)})")
            got[t.part] += t.points
        wrong = {p: (got[p], pts) for p, pts in parts.items() if abs(got[p] - pts) > 1e-9}
        if wrong:
            raise ValueError("tests and TODO blocks disagree on points: " +
                             ", ".join(f"{p}: tests {a:g}, TODO {b:g}" for p, (a, b) in wrong.items()))
    if hidden is not None:
        extra = Path(hidden).resolve() / project.name / "grading_tests.py"
        if extra.exists():
            tests += _tests_in(extra, True, ref)
    return tests


# ---------------------------------------------------------------------------------------------
# Running one test: its body here, its computations in the submission's process


@dataclass
class _Options:
    timeout: float = TEST_TIMEOUT
    threads: int = 1
    cache: str | Path | None = None  # kept as a string (it travels to the pool's processes)

    def __post_init__(self):
        self.cache = str(self.cache) if self.cache else None


@functools.lru_cache(maxsize=None)
def _environment_digest() -> str:
    import torch

    package = Path(__file__).resolve().parent
    sources = b"".join(p.read_bytes() for p in sorted(package.glob("*.py")))
    return _digest(sources, torch.__version__, sys.version)


class _Runner:
    """The ``run`` a test body gets: one call, one fresh process of the submission."""

    def __init__(self, test: _Test, submission: Path, reference: Path, options: _Options, deadline: float):
        self.test, self.submission, self.reference = test, submission, reference
        self.options, self.deadline, self.calls = options, deadline, 0
        self.transient = False  # a time limit or a kill decided the outcome: not to be cached

    def __call__(self, fn, **inputs):
        import torch

        module = _grading_module(self.test.tests)
        if getattr(module, getattr(fn, "__name__", ""), None) is not fn:
            raise TypeError(f"run() takes a module-level function of {self.test.tests}, got {fn!r}")
        self.calls += 1
        seed = zlib.crc32(f"{self.test.name}#{self.calls}".encode())
        limit = self.deadline - time.monotonic()
        if limit <= 0:
            self.transient = True
            raise SubmissionFailed("not run: the project's tests used up its time limit")
        job = Path(tempfile.mkdtemp(prefix="dgm-grade-"))
        try:
            torch.save(inputs, job / "inputs.pt")
            (job / "job.json").write_text(json.dumps({
                "tests": self.test.tests, "fn": fn.__name__, "part": self.test.part, "seed": seed,
                "submission": str(self.submission), "reference": str(self.reference),
                "threads": self.options.threads}))
            return self._execute(job, limit)
        finally:
            shutil.rmtree(job, ignore_errors=True)

    def _execute(self, job: Path, limit: float):
        import torch

        limit = min(self.options.timeout, limit)
        # -I leaves out the user's site-packages: give back the installed packages' folders
        # (a user-site torch), never the working or the submission's folder.
        packages = [p for p in sys.path if p and Path(p).name in ("site-packages", "dist-packages")]
        boot = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
                f"sys.path += [p for p in {packages!r} if p not in sys.path]; "
                "from dgm.grade_worker import main; main()")
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT") if k in os.environ}
        env |= {v: str(self.options.threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        env |= {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
        cwd = job / "cwd"
        cwd.mkdir()
        with open(job / "output.txt", "wb") as output:
            proc = subprocess.Popen([sys.executable, "-I", "-c", boot, str(job)], cwd=cwd, env=env,
                                    stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                try:  # the submission's process and everything it started
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        if rc is None:
            self.transient = True
            raise SubmissionFailed(f"stopped after {limit:.0f} s, the time limit of "
                                   + ("a test" if limit >= self.options.timeout else "the project's remaining tests")
                                   + " (does it hang?)")
        error = job / "error.json"
        if error.exists():
            try:
                record = json.loads(error.read_text())
                where = f" (line {record['line']} of the submission)" if record.get("line") else ""
                text = record["message"] if record["type"] == "SystemExit" else \
                    f"{record['type']}: {record['message']}".rstrip(": ")
                stage = "" if record["stage"] == "running the submission" else f", while {record['stage']}"
                message = f"{text}{where}{stage}"
            except (ValueError, KeyError, TypeError):
                message = "the submission's process failed and left an unreadable error report"
            raise SubmissionFailed(message)
        result = job / "result.pt"
        if rc != 0 or not result.exists():
            if rc == 0:
                raise SubmissionFailed("the submission's process ended (exit code 0) before it returned a result "
                                       "(does it call os._exit or sys.exit?)")
            self.transient = rc < 0  # killed from outside (e.g. out of memory): may not recur
            cause = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
            last = (job / "output.txt").read_text(errors="replace").strip().splitlines()[-1:]
            raise SubmissionFailed(f"the submission's process died ({cause}) before it returned a result"
                                   + (f"; its last output: {last[0][:200]}" if last else ""))
        try:
            out = torch.load(result, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - whatever the file holds, it is no result
            raise SubmissionFailed(f"the submission's result could not be read ({type(exc).__name__})") from None
        return out


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _run_test(test: _Test, submission: str, options: _Options, budget: float) -> TestResult:
    """Run one grading test; its decisions are made here, in the grader's process."""
    import torch

    start = time.monotonic()
    key = _cache_key(test, Path(submission), options)
    if key and (Path(options.cache) / f"{key}.json").exists():
        return TestResult(**json.loads((Path(options.cache) / f"{key}.json").read_text()))
    runner = _Runner(test, Path(submission), Path(test.reference), options, start + budget)
    fn = getattr(_grading_module(test.tests), test.name)
    _seed_everything(zlib.crc32(test.name.encode()))
    passed, message = False, ""
    with torch.random.fork_rng(devices=[]):
        try:
            fn(runner)
            passed = True
        except AssertionError as exc:
            message = str(exc).strip() or "a check failed"
        except SubmissionFailed as exc:
            message = str(exc)
        except Exception as exc:  # noqa: BLE001 - the result had the wrong form for the checks
            message = f"the submission's result could not be checked ({type(exc).__name__}: {exc})"
    message = " ".join(message.split())
    result = TestResult(test.name, test.points, passed, message, test.part, test.hidden, time.monotonic() - start)
    if key and not runner.transient:
        folder = Path(options.cache)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(asdict(result) | {"seconds": 0.0}))
        os.replace(tmp, folder / f"{key}.json")
    return result


def _cache_key(test: _Test, submission: Path, options: _Options) -> str | None:
    """What a test's outcome depends on, for the result cache: the submission's view of the part
    under test (the code that runs, see :func:`dgm.grade_worker.compose`), the grading test and
    the reference solution, the package and library versions, and the thread count. The test's
    inputs and seeds are fixed by its code, so two submissions with the same view get the same
    outcome, and a one-bug submission's other parts are read back from the reference's grading.
    None without a cache, or when the submission does not parse (it is then run, and fails)."""
    if not options.cache:
        return None
    try:
        view = compose(Path(test.reference).read_text(), submission.read_text(), test.part)
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return None
    dump = ast.dump(ast.Module(body=[n for n, _ in view], type_ignores=[]))
    return _digest(dump, "".join(w for _, w in view), Path(test.tests).read_bytes(), test.name, test.part,
                   Path(test.reference).read_bytes(), options.threads, _environment_digest())


def _init_pool(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


@dataclass
class _Task:
    key: tuple  # (student or "", topic): the project whose time budget the test uses
    test: _Test
    submission: str | None  # None: no file, the test scores 0 without running
    missing: str = ""


def _execute(tasks: list[_Task], options: _Options, jobs: int, project_timeout: float, progress=None,
             on_done=None) -> list[TestResult]:
    """Run the tasks, at most ``jobs`` at a time; results in the order of ``tasks``."""
    import torch

    results: list[TestResult | None] = [None] * len(tasks)
    used: dict[tuple, float] = defaultdict(float)

    def finish(i: int, result: TestResult) -> None:
        results[i] = result
        used[tasks[i].key] += result.seconds
        if progress is not None:
            progress.update(1)
        if on_done is not None:
            on_done(i, result)

    pending = []
    for i, task in enumerate(tasks):
        if task.submission is None:
            finish(i, TestResult(task.test.name, task.test.points, False, task.missing, task.test.part, task.test.hidden))
        else:
            pending.append(i)
    if jobs <= 1:
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(options.threads)
        try:
            for i in pending:
                finish(i, _run_test(tasks[i].test, tasks[i].submission, options, project_timeout - used[tasks[i].key]))
        finally:
            torch.set_num_threads(torch_threads)
        return results
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_pool, initargs=(options.threads,)) as pool:
        running = {}
        queue = list(pending)
        while queue or running:
            while queue and len(running) < jobs:
                i = queue.pop(0)
                budget = project_timeout - used[tasks[i].key]
                running[pool.submit(_run_test, tasks[i].test, tasks[i].submission, options, budget)] = i
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                finish(running.pop(future), future.result())
    return results


def _jobs(jobs: int | None) -> int:
    return max(1, jobs if jobs is not None else (os.cpu_count() or 1))


def grade(project: str | Path, submission: str | Path | None = None, *, hidden: str | Path | None = None,
          jobs: int | None = None, timeout: float = TEST_TIMEOUT, project_timeout: float = PROJECT_TIMEOUT,
          threads: int = 1, cache: str | Path | None = None) -> list[TestResult]:
    """Grade ``submission`` (default: the project's template.py); one result per test, public
    tests first, then the instructor's tests from ``hidden/<topic>/grading_tests.py``.

    Tests run ``jobs`` at a time (default: one per core), each submission process with
    ``threads`` threads and at most ``timeout`` seconds; no test starts once the project's tests
    have used ``project_timeout`` seconds. With ``cache`` (a folder), a test whose outcome was
    computed before for the same code is read back instead of run again (see :func:`_cache_key`).
    """
    project = Path(project).resolve()
    tests = plan(project, hidden)
    submission = Path(submission).resolve() if submission else project / "template.py"
    if not submission.is_file():
        raise FileNotFoundError(f"no submission at {submission}")
    options = _Options(timeout, threads, cache)
    tasks = [_Task(("", project.name), t, str(submission)) for t in tests]
    return _execute(tasks, options, _jobs(jobs), project_timeout)


def _projects(projects_dir: Path) -> list[Path]:
    """The project folders (those with grading_tests.py) in course order, then by name."""
    found = {p.name: p for p in projects_dir.iterdir() if (p / "grading_tests.py").exists()}
    if not found:
        raise FileNotFoundError(f"no project folders with grading_tests.py in {projects_dir}")
    return [found[t] for t in TOPICS if t in found] + [found[t] for t in sorted(found) if t not in TOPICS]


def grade_all(folder: str | Path | None = None, projects_dir: str | Path | None = None, *,
              hidden: str | Path | None = None, jobs: int | None = None, timeout: float = TEST_TIMEOUT,
              project_timeout: float = PROJECT_TIMEOUT, threads: int = 1,
              cache: str | Path | None = None) -> dict[str, list[TestResult]]:
    """Grade every project: the submission of project <topic> is <folder>/<topic>.py, or its template
    where that file is missing (or folder is None). Returns the results per topic, in course order;
    the tests of all projects share one pool of ``jobs`` processes (options as for :func:`grade`)."""
    projects = _projects(Path(PROJECTS_DIR if projects_dir is None else projects_dir))
    tasks = []
    for project in projects:
        mine = Path(folder) / f"{project.name}.py" if folder is not None else None
        submission = mine.resolve() if mine is not None and mine.is_file() else project / "template.py"
        tasks += [_Task(("", project.name), t, str(submission)) for t in plan(project, hidden)]
    results = _execute(tasks, _Options(timeout, threads, cache), _jobs(jobs), project_timeout)
    out = {p.name: [] for p in projects}
    for task, result in zip(tasks, results):
        out[task.key[1]].append(result)
    return out


# ---------------------------------------------------------------------------------------------
# A class: a roster folder into a gradebook


def _score(results: list[TestResult], hidden: bool = False) -> float:
    return sum(r.points for r in results if r.passed and r.hidden == hidden)


def _feedback(student: str, by_topic: dict[str, list[TestResult]], files: dict[str, bool]) -> str:
    lines = [f"Feedback for {student}", ""]
    for topic, results in by_topic.items():
        lines.append(f"== project {topic}" + ("" if files[topic] else f" (no {topic}.py handed in)"))
        lines += _table_lines(results)
        lines.append("")
    public = sum(_score(r) for r in by_topic.values())
    lines.append(_bonus_line(public))
    return "\n".join(lines) + "\n"


def grade_roster(roster: str | Path, out: str | Path, *, hidden: str | Path | None = None, force: bool = False,
                 jobs: int | None = None, timeout: float = TEST_TIMEOUT, project_timeout: float = PROJECT_TIMEOUT,
                 threads: int = 1, cache: str | Path | None = None, progress: bool = True,
                 projects_dir: str | Path | None = None) -> list[dict]:
    """Grade a class: ``roster/<student>/`` holds ``flows.py``, ``vae.py``, ``diffusion.py`` (any may be
    missing, and scores 0). Writes the gradebook ``out`` (CSV: one row per student with the points of
    each project, the total and the bonus; with ``hidden``, the instructor's tests in columns of
    their own), and ``<out stem>_feedback/<student>.txt`` with every test's message. A student with a
    record in that folder is not graded again unless ``force``. Returns the gradebook's rows."""
    roster, out = Path(roster), Path(out)
    if not roster.is_dir():
        raise NotADirectoryError(f"{roster} is not a folder of student folders")
    projects = _projects(Path(PROJECTS_DIR if projects_dir is None else projects_dir))
    records = out.parent / f"{out.stem}_feedback"
    records.mkdir(parents=True, exist_ok=True)
    students = sorted(p.name for p in roster.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and p.resolve() != records.resolve())
    todo = [s for s in students if force or not (records / f"{s}.json").exists()]
    plans = {p.name: plan(p, hidden) for p in projects}
    tasks: list[_Task] = []
    for s in todo:
        for p in projects:
            file = roster / s / f"{p.name}.py"
            for t in plans[p.name]:
                tasks.append(_Task((s, p.name), t, str(file.resolve()) if file.is_file() else None,
                                   f"no {p.name}.py in the submission folder"))
    remaining = defaultdict(int)
    for task in tasks:
        remaining[task.key[0]] += 1
    collected: dict[str, list[tuple[int, TestResult]]] = defaultdict(list)

    def on_done(i: int, result: TestResult) -> None:
        student = tasks[i].key[0]
        collected[student].append((i, result))
        remaining[student] -= 1
        if remaining[student] == 0:
            by_topic = {p.name: [] for p in projects}
            for j, r in sorted(collected.pop(student)):
                by_topic[tasks[j].key[1]].append(r)
            files = {p.name: (roster / student / f"{p.name}.py").is_file() for p in projects}
            (records / f"{student}.txt").write_text(_feedback(student, by_topic, files))
            record = {"student": student, "results": {k: [asdict(r) for r in v] for k, v in by_topic.items()}}
            (records / f"{student}.json").write_text(json.dumps(record, indent=1))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc=f"grading {len(todo)} of {len(students)} students", unit="test")
    try:
        options = _Options(timeout, threads, cache)
        _execute(tasks, options, _jobs(jobs), project_timeout, progress=bar, on_done=on_done)
    finally:
        if bar is not None:
            bar.close()
    rows = []
    for s in students:
        record = json.loads((records / f"{s}.json").read_text())
        row = {"student": s}
        for p in projects:
            row[p.name] = _score([TestResult(**r) for r in record["results"].get(p.name, [])])
        total = sum(row[p.name] for p in projects)
        row["total"] = total
        row["bonus"] = bonus(min(total, PROJECT_POINTS))
        if hidden is not None:
            for p in projects:
                row[f"{p.name} (hidden)"] = _score([TestResult(**r) for r in record["results"].get(p.name, [])], True)
        rows.append(row)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["student"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:g}" if isinstance(v, float) else v) for k, v in row.items()})
    return rows


# ---------------------------------------------------------------------------------------------
# The command line


def _table_lines(results: list[TestResult]) -> list[str]:
    lines, width = [], max([44] + [len(r.name) + 2 for r in results])
    for hidden in (False, True):
        shown = [r for r in results if r.hidden == hidden]
        if not shown:
            continue
        if hidden:
            lines.append("instructor's tests (reported apart, not in the total above):")
        else:
            lines.append(f"{'test':<{width}} {'points':>8}")
        for r in shown:
            lines.append(f"{r.name:<{width}} {r.points if r.passed else 0:>4g} / {r.points:<3g}"
                         + ("" if r.passed else f"  {r.message}"))
        total = sum(r.points for r in shown if r.passed)
        lines.append(f"{'total' if not hidden else 'instructor total':<{width}} {total:>4g} / {sum(r.points for r in shown):g}")
    return lines


def _table(results: list[TestResult]) -> float:
    print()
    print("\n".join(_table_lines(results)))
    return _score(results)


def _bonus_line(all_points: float) -> str:
    return (f"all projects: {all_points:g} / {PROJECT_POINTS:g} points -> bonus {bonus(min(all_points, PROJECT_POINTS)):.1f} "
            "(applied to a passed exam)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dgm.grade", description="Grade project tasks.")
    parser.add_argument("project", nargs="?", help="the project folder, e.g. exercises/projects/flows")
    parser.add_argument("--submission", help="your solution file (default: the project's template.py)")
    parser.add_argument("--others", nargs="*", type=float, default=[],
                        help="your points in the other project tasks, to compute the bonus")
    parser.add_argument("--all", metavar="FOLDER", nargs="?", const="", default=None,
                        help="grade all projects: FOLDER/<topic>.py for each topic (flows.py, vae.py, diffusion.py), "
                             "the template where a file is missing")
    parser.add_argument("--roster", metavar="DIR", help="grade a class: DIR/<student>/<topic>.py; needs --out")
    parser.add_argument("--out", metavar="CSV", help="the gradebook --roster writes (feedback beside it)")
    parser.add_argument("--force", action="store_true", help="with --roster: grade students already graded again")
    parser.add_argument("--hidden", metavar="DIR", help="add the tests of DIR/<topic>/grading_tests.py, reported apart")
    parser.add_argument("--jobs", type=int, default=None, help="tests run at once (default: one per core)")
    parser.add_argument("--timeout", type=float, default=TEST_TIMEOUT,
                        help=f"seconds one test's submission process may run (default {TEST_TIMEOUT:g})")
    parser.add_argument("--project-timeout", type=float, default=PROJECT_TIMEOUT,
                        help=f"seconds all tests of one project may use (default {PROJECT_TIMEOUT:g})")
    parser.add_argument("--threads", type=int, default=1, help="threads of each submission process (default 1)")
    parser.add_argument("--cache", metavar="DIR", help="reuse the outcome of a test already graded for the same code "
                                                        "(the part's view, the tests, the reference)")
    args = parser.parse_args(argv)
    options = dict(hidden=args.hidden, jobs=args.jobs, timeout=args.timeout, project_timeout=args.project_timeout,
                   threads=args.threads, cache=args.cache)
    if args.hidden is not None and not Path(args.hidden).is_dir():
        parser.error(f"--hidden {args.hidden} is not a folder")
    if args.roster is not None:
        if args.project or args.submission or args.others or args.all is not None:
            parser.error("--roster grades a class: give no project, --submission, --others or --all with it")
        if not args.out:
            parser.error("--roster needs --out gradebook.csv")
        if not Path(args.roster).is_dir():
            parser.error(f"{args.roster} is not a folder (it should hold one folder per student)")
        rows = grade_roster(args.roster, args.out, force=args.force, **options)
        print(f"{len(rows)} students in {args.out}; feedback in {Path(args.out).parent / (Path(args.out).stem + '_feedback')}")
        return 0
    if args.out or args.force:
        parser.error("--out and --force go with --roster")
    if args.all is not None:
        if args.project or args.submission or args.others:
            parser.error("--all grades every project: give no project, --submission or --others with it")
        folder = Path(args.all) if args.all else None
        if folder is not None and not folder.is_dir():
            parser.error(f"{folder} is not a folder (it should hold flows.py, vae.py, diffusion.py)")
        totals = {}
        for topic, results in grade_all(folder, **options).items():
            print(f"\n== project {topic}" + ("" if folder and (folder / f"{topic}.py").exists() else " (template: no submission)"))
            totals[topic] = _table(results)
        print("\n" + ", ".join(f"{topic} {points:g}" for topic, points in totals.items()))
        print(_bonus_line(sum(totals.values())))
        return 0
    if args.project is None:
        parser.error("name a project folder, or use --all or --roster")
    if args.submission and not Path(args.submission).is_file():
        parser.error(f"no submission at {args.submission}")
    total = _table(grade(args.project, args.submission, **options))
    print(_bonus_line(min(total + sum(args.others), PROJECT_POINTS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
