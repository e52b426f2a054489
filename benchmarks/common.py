"""What the benchmark scripts share: the spread of a result over seeds, and writing the results.

The scripts run as ``.venv/bin/python benchmarks/<name>.py``; Python puts this folder on the
path, so they import this module as ``common``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from pathlib import Path

import torch


CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"  # trained models, not in git


def checkpoint(name: str) -> Path:
    """Where a benchmark keeps the state_dict of its trained model `name` (for compare.py)."""
    CHECKPOINTS.mkdir(exist_ok=True)
    return CHECKPOINTS / f"{name}.pt"


def best_seconds(fn, repeat: int = 3) -> float:
    """The fastest of `repeat` wall-clock timings of fn() in seconds (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def best_val_epoch(history: dict) -> int:
    """The epoch of the lowest validation value in a dgm.diffusion.train_diffusion history."""
    return history["val_epoch"][min(range(len(history["val"])), key=history["val"].__getitem__)]


def mc_se_of_mean(ses) -> float:
    """The Monte Carlo standard error of a mean over independent runs with standard errors ses."""
    ses = list(ses)
    return sum(se ** 2 for se in ses) ** 0.5 / len(ses)


def spread(values) -> dict:
    """Mean, minimum and maximum of a result over seeds."""
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def write_results(out: Path, results: dict, note: str | None = None) -> None:
    """Stamp the results with the date, torch's thread count and version (and a note), and write them."""
    results.update({"date": dt.date.today().isoformat(), "cpus": torch.get_num_threads(),
                    "torch": torch.__version__})
    if note:
        results["note"] = note
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


def two_part_arguments(doc: str, argv=None, extra=(), parts=("digits", "toys")) -> argparse.Namespace:
    """The options of a benchmark with a toys and a digits part (or `parts`), parsed; sets threads.

    --quick (tiny budgets, nothing written), --part digits|toys, --note, --threads, and the
    extra options given as (flag, help) pairs.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, nothing written")
    parser.add_argument("--part", choices=list(parts),
                        help="run one part and update it in the file")
    parser.add_argument("--note", help="a note kept in the results, e.g. that the machine was shared")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (default 2, the book's machine)")
    for flag, text in extra:
        parser.add_argument(flag, help=text)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def run_parts(out: Path, args: argparse.Namespace, parts: dict) -> dict | None:
    """Run the parts that --part selects (name -> function of quick), updating the results file.

    Returns the results to write, or None after a quick run (nothing is written then).
    """
    results = json.loads(out.read_text()) if out.exists() and not args.quick else {}
    for name, run in parts.items():
        if args.part in (None, name):
            results[name] = run(args.quick)
    if args.quick:
        print("quick run: nothing written")
        return None
    return results
