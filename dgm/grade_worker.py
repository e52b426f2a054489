"""The submission's side of the grader: the one process that runs a student's code.

The grader (``dgm.grade``) never imports a submission. For each grading test it starts this
module in a fresh interpreter (``python -I``: no user site, no PYTHON* variables, the
submission's folder not on the path; a fresh empty working folder; a fixed thread count) and
hands it a job folder with ``job.json`` and ``inputs.pt``. The worker

1. builds the submission's *view* for the part under test (:func:`compose`): the student's file
   with every definition that the reference solution also defines replaced by the reference's,
   except the graded part itself. A test of ``Coupling.inverse`` therefore runs the student's
   ``inverse`` with the reference's ``forward``, ``log_prob``, ``sample`` and ``train``, and one
   bug can only cost the points of the part it is in;
2. calls the test's compute function ``fn(sub, **inputs)`` (written in the project's
   ``grading_tests.py``) under a fixed seed;
3. writes what it returned, reduced to tensors, numbers, strings and containers, to
   ``result.pt``, or what went wrong to ``error.json``.

The grader reads ``result.pt`` with ``torch.load(weights_only=True)`` and decides there, in its
own process, whether the test passed. Whatever the submission does here (exit, hang, print,
patch torch or pytest) can only spoil its own results.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import traceback
import types
from pathlib import Path

__all__ = ["compose", "parts_of", "main"]

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
#: A part to implement: ``# TODO (n points): what to do`` ... ``# END TODO`` in the reference.
TODO = re.compile(r"^(?P<indent>[ \t]*)# TODO \((?P<points>[\d.]+) points?\): (?P<text>.*)$")
END_TODO = re.compile(r"^[ \t]*# END TODO\s*$")


def _top_defs(tree: ast.Module) -> dict[str, ast.stmt]:
    return {n.name: n for n in tree.body if isinstance(n, (*_DEFS, ast.ClassDef))}


def parts_of(reference: str) -> dict[str, float]:
    """The parts of a reference solution: ``{qualname: points}`` for every function or method
    that holds a ``# TODO (n points): ...`` block, in file order (e.g. ``"Coupling.forward"``)."""
    tree = ast.parse(reference)
    spans = []
    for node in tree.body:
        if isinstance(node, _DEFS):
            spans.append((node.name, node))
        elif isinstance(node, ast.ClassDef):
            spans += [(f"{node.name}.{m.name}", m) for m in node.body if isinstance(m, _DEFS)]
    parts: dict[str, float] = {}
    for lineno, line in enumerate(reference.splitlines(), 1):
        todo = TODO.match(line)
        if not todo:
            continue
        owners = [name for name, n in spans if n.lineno <= lineno <= n.end_lineno]
        if not owners:
            raise ValueError(f"line {lineno}: a TODO outside any function or method")
        if owners[-1] in parts:
            raise ValueError(f"{owners[-1]} holds two TODO blocks: give each part one")
        parts[owners[-1]] = float(todo["points"])
    return parts


def compose(reference: str, submission: str, part: str) -> list[tuple[ast.stmt, str]]:
    """The statements of the submission's view for ``part``, each tagged "sub" or "ref".

    The student's module is kept statement by statement (imports, constants, helpers, and
    whatever else it runs at import), except that every function and class the reference also
    defines is the reference's, with one exception: the graded part. For a method part
    ``"C.m"`` the class is the reference's ``C`` (its bases, ``__init__`` and given methods)
    holding the student's ``m`` and any methods the student added. The reference's imports
    come first, so that its code finds its names, and its module constants last, so that the
    given values hold. Definitions the student left out are taken from the reference, except
    the graded part: a missing part fails its tests.
    """
    ref_tree, sub_tree = ast.parse(reference), ast.parse(submission)
    ref_defs = _top_defs(ref_tree)
    cls_name, _, method = part.rpartition(".")
    top_part = part if not cls_name else None
    imports = [(n, "ref") for n in ref_tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    constants = [(n, "ref") for n in ref_tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))]
    body: list[tuple[ast.stmt, str]] = []
    seen: set[str] = set()
    for node in sub_tree.body:
        name = getattr(node, "name", None)
        if name not in ref_defs or not isinstance(node, (*_DEFS, ast.ClassDef)):
            body.append((node, "sub"))
        elif name == top_part:
            body.append((node, "sub"))
            seen.add(name)
        elif name == cls_name and isinstance(node, ast.ClassDef) and isinstance(ref_defs[name], ast.ClassDef):
            body.append((_mixed_class(ref_defs[name], node, method), "sub"))
            seen.add(name)
        else:
            body.append((ref_defs[name], "ref"))
            seen.add(name)
    for name, node in ref_defs.items():
        if name in seen or name == top_part:
            continue
        if name == cls_name:  # the student's class is missing: the reference's, without the part
            empty = ast.ClassDef(name=name, bases=[], keywords=[], body=[], decorator_list=[], lineno=1, col_offset=0)
            node = _mixed_class(node, empty, method)
        body.append((node, "ref"))
    return imports + body + constants


def _mixed_class(ref_cls: ast.ClassDef, sub_cls: ast.ClassDef, method: str) -> ast.ClassDef:
    """The reference class with the student's ``method`` and the methods only the student has."""
    theirs = {n.name: n for n in sub_cls.body if isinstance(n, _DEFS)}
    ours = {n.name for n in ref_cls.body if isinstance(n, _DEFS)}
    body = []
    for node in ref_cls.body:
        if isinstance(node, _DEFS) and node.name == method:
            if method in theirs:
                body.append(theirs[method])
        else:
            body.append(_at(node, sub_cls.lineno))
    body += [n for name, n in theirs.items() if name not in ours]
    mixed = ast.ClassDef(name=ref_cls.name, bases=ref_cls.bases, keywords=ref_cls.keywords, body=body,
                         decorator_list=ref_cls.decorator_list, type_params=getattr(ref_cls, "type_params", []))
    return ast.copy_location(mixed, sub_cls)


def _at(node: ast.AST, lineno: int) -> ast.AST:
    """A copy of a reference node placed at ``lineno`` of the student's file (for tracebacks)."""
    import copy

    node = copy.deepcopy(node)
    for n in ast.walk(node):
        if "lineno" in n._attributes:
            n.lineno = n.end_lineno = lineno
    return node


def load_view(reference: Path, submission: Path, part: str) -> types.ModuleType:
    """Execute the view of ``part`` as the module ``submission`` and return it."""
    module = types.ModuleType("submission")
    module.__file__ = str(submission)
    sys.modules["submission"] = module
    origin = {"sub": str(submission), "ref": str(reference)}
    for node, where in compose(reference.read_text(), submission.read_text(), part):
        code = compile(ast.Module(body=[node], type_ignores=[]), origin[where], "exec")
        exec(code, module.__dict__)
    return module


def _load_module(path: Path, name: str) -> types.ModuleType:
    """The Python file at ``path`` imported as the module ``name`` (and kept in sys.modules)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sanitize(value, depth: int = 0):
    """What a compute function returned, reduced to what ``torch.load(weights_only=True)`` reads:
    tensors (detached, on the CPU), numbers, strings, None and lists, tuples and dicts of them
    (their keys become strings).
    Anything else becomes a string that names its type, for the grader's message."""
    import numbers

    import numpy as np
    import torch

    if depth > 20:
        return "<nested too deeply>"
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, np.ndarray):
        return torch.as_tensor(value).clone()
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {str(k): sanitize(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [sanitize(v, depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return f"<an object of type {type(value).__module__}.{type(value).__qualname__}>"


def _describe(exc: BaseException, submission: str) -> dict:
    """What went wrong, in one line, with the submission's line where the error arose."""
    if isinstance(exc, SystemExit):
        message = f"the submission called sys.exit({exc.code!r})"
        kind = "SystemExit"
    else:
        kind = type(exc).__name__
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == submission:
            line = frame.lineno
    return {"type": kind, "message": message, "line": line}


def main(job_dir: str | None = None) -> None:
    job_dir = Path(job_dir or sys.argv[1])
    job = json.loads((job_dir / "job.json").read_text())
    import random

    import numpy as np
    import torch

    torch.set_num_threads(job["threads"])
    stage = "loading the grading test"
    try:
        tests = _load_module(Path(job["tests"]), "grading_tests")
        inputs = torch.load(job_dir / "inputs.pt", weights_only=True)
        stage = "importing the submission"
        sub = load_view(Path(job["reference"]), Path(job["submission"]), job["part"])
        stage = "running the submission"
        torch.manual_seed(job["seed"])
        random.seed(job["seed"])
        np.random.seed(job["seed"] % 2**32)
        out = getattr(tests, job["fn"])(sub, **inputs)
        out = sanitize(out)
        torch.save(out, job_dir / "result.pt")
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the submission's doing
        record = _describe(exc, job["submission"]) | {"stage": stage}
        (job_dir / "error.json").write_text(json.dumps(record))
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)  # skip exit handlers the submission may have registered


if __name__ == "__main__":
    main()
