"""Self-checking coding exercises: run a check on the reader's code and say what happened.

A sheet defines, for each coding task, a check function that raises AssertionError with a
helpful message when the reader's code is wrong. ``report(title, check, *args)`` runs it and
prints one line, so a notebook with unsolved tasks still runs from top to bottom:

* ``PASSED: <title>`` when the check succeeds,
* ``NOT YET: <title>: <hint>`` when the code still raises NotImplementedError (the stub),
* ``FAILED: <title>: <message>`` when a check assertion fails or the code raises.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["report", "PASSED", "NOT_YET", "FAILED"]

PASSED, NOT_YET, FAILED = "PASSED", "NOT YET", "FAILED"


def report(title: str, check: Callable, *args) -> str:
    """Run ``check(*args)``; print and return PASSED, NOT YET or FAILED (never raises)."""
    try:
        check(*args)
    except NotImplementedError as e:
        status, detail = NOT_YET, str(e) or "this task is not implemented yet"
    except AssertionError as e:
        status, detail = FAILED, (str(e).splitlines() or ["a check failed"])[0]
    except Exception as e:  # the reader's code crashed: show what, not a traceback
        status, detail = FAILED, f"{type(e).__name__}: {e}"
    else:
        status, detail = PASSED, ""
    print(f"{status}: {title}" + (f": {detail}" if detail else ""))
    return status
