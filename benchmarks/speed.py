"""Speed of the book: chapter execution, a clean build and a rebuild with nothing changed.

    .venv/bin/python benchmarks/speed.py        # writes benchmarks/results/speed.json

The builds run in a fresh copy of the tracked files (sharing this checkout's .venv), so the
benchmark neither uses nor disturbs your _build. Targets (issue: foundation): the
Introduction executes in under 60 s on 2 CPU cores, a clean build in under 3 minutes, a
rebuild with nothing changed in under 30 s.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "speed.json"
TARGETS_S = {"execute book/00_intro.md": 60, "clean build": 180, "rebuild, nothing changed": 30}


def execute_seconds(source: Path) -> float:
    """Wall time to execute one chapter in a fresh kernel, as the site build does."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(source)
    os.environ["DGM_STATIC_SITE"] = "1"  # as in the site build; the kernel inherits it
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(source.parent)}}).execute()
    return time.perf_counter() - start


def build_seconds(workdir: Path) -> float:
    start = time.perf_counter()
    # -o: the shared .venv counts as installed (never reinstall it from the temporary copy)
    subprocess.run(["make", "-o", ".venv/.installed", "book"], cwd=workdir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def copy_tracked(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    (dest / ".venv").symlink_to(ROOT / ".venv")


def main() -> int:
    results = {"execute book/00_intro.md": execute_seconds(ROOT / "book" / "00_intro.md")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy_tracked(work)
        results["clean build"] = build_seconds(work)
        results["rebuild, nothing changed"] = build_seconds(work)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": sys.version.split()[0]},
        "seconds": {k: round(v, 1) for k, v in results.items()},
        "target_seconds": TARGETS_S,
        "within_target": {k: results[k] < TARGETS_S[k] for k in results},
    }
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    for k, v in results.items():
        print(f"{k:>28}: {v:6.1f} s  (target < {TARGETS_S[k]} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
