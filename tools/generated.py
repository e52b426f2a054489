"""Write generated files, or check them: the one mechanism behind `make notebooks` and its drift checks."""

from __future__ import annotations

from pathlib import Path


def sync(expected: dict[Path, str], root: Path, check: bool, orphans: list[Path] = ()) -> int:
    """Bring files under ``root`` to ``expected`` (relative path -> text) and delete ``orphans``.

    With ``check``, change nothing: print what is out of date and return 1 if anything is.
    Unchanged files are not rewritten, so their modification times (which make reads) stay.
    """
    stale = [p for p, text in expected.items() if not (root / p).exists() or (root / p).read_text() != text]
    if check:
        for p in stale:
            print(f"out of date: {p}")
        for p in orphans:
            print(f"no source for: {p}")
        if stale or orphans:
            print("run `make notebooks` and commit the result")
        return 1 if stale or orphans else 0
    for p in stale:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_text(expected[p])
    for p in orphans:
        (root / p).unlink()
    return 0
