"""What the benchmark scripts share: the spread of a result over seeds, and writing the results.

The scripts run as ``.venv/bin/python benchmarks/<name>.py``; Python puts this folder on the
path, so they import this module as ``common``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import textwrap
import time
from dataclasses import dataclass
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
    add_scale_arguments(parser)
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


# ------------------------------------------------ the same benchmark on MNIST-size images
#: What --data may name: the book's 8x8 digits, the two MNIST-format datasets (28x28, 256
#: levels; files under --root, $DGM_DATA or ~/.cache/dgm, see dgm.data.mnist), and
#: "digits28": the 8x8 digits upscaled to 28x28 with 256 levels (dgm.data.digits28), an
#: embedded stand-in of the same shape for smoke runs without a download.
DATA_CHOICES = ("digits", "mnist", "fashion_mnist", "digits28")
RESULTS = Path(__file__).resolve().parent / "results"


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --device, --root, --download, --epochs and --subset (see scaled_main)."""
    parser.add_argument("--data", choices=DATA_CHOICES, default="digits",
                        help="digits (the book's numbers, on the CPU), mnist or fashion_mnist "
                             "(28x28, 256 levels), or digits28 (an embedded 28x28 stand-in)")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1, mps; used by "
                             "the 28x28 runs (the digits results are the CPU's)")
    parser.add_argument("--root", help="the folder holding mnist/ and fashion_mnist/ "
                                       "(default $DGM_DATA, else ~/.cache/dgm)")
    parser.add_argument("--download", action="store_true",
                        help="download the MNIST files first if they are missing")
    parser.add_argument("--epochs", type=int, help="the 28x28 run's training epochs")
    parser.add_argument("--subset", type=int,
                        help="only the first N images of each split (a smoke run)")


@dataclass
class Images:
    """The three splits of an image dataset (torch.long (n, side^2), levels 0..levels-1)."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    y_train: torch.Tensor
    y_test: torch.Tensor
    side: int
    levels: int

    @property
    def dim(self) -> int:
        return self.side * self.side

    def steps(self, epochs: int, batch_size: int) -> int:
        """Minibatch steps in `epochs` passes over the training split."""
        return epochs * -(-len(self.train) // batch_size)


def denoiser_network(quick: bool = False) -> dict:
    """The options of dgm.diffusion.DigitsDenoiser in the 28x28 runs of the DDPM and flow
    matching: 8 residual 3x3 convolutions with 64 channels (tiny with quick)."""
    return dict(channels=8, conv_layers=2) if quick else dict(channels=64, conv_layers=8)


def iwae_per_image(model, x, k: int, chunk: int = 50) -> torch.Tensor:
    """-log (1/k) sum_i w_i for every image of x (nats), one independent draw of the k samples
    of model.log_prob(x, k=k) (a VAE's importance-weighted estimate), `chunk` images at a time."""
    with torch.no_grad():
        return -torch.cat([model.log_prob(x[i:i + chunk], k=k) for i in range(0, len(x), chunk)])


def load_images(args: argparse.Namespace) -> Images:
    """The splits that --data names (first --subset images of each), with labels."""
    from dgm import data

    if args.data == "digits28":
        splits = {s: data.digits28(s, labels=True) for s in ("train", "val", "test")}
        side, levels = 28, data.MNIST_LEVELS
    elif args.data in data.MNIST_DATASETS:
        load = getattr(data, args.data)
        splits = {s: load(s, root=args.root, download=args.download, labels=True)
                  for s in ("train", "val", "test")}
        side, levels = data.MNIST_SIDE, data.MNIST_LEVELS
    else:
        raise ValueError(f"load_images is for 28x28 data, not {args.data!r}")
    n = args.subset
    cut = {s: (x[:n], y[:n]) if n else (x, y) for s, (x, y) in splits.items()}
    return Images(args.data, cut["train"][0], cut["val"][0], cut["test"][0], cut["train"][1],
                  cut["test"][1], side, levels)


def results_path(bench: str, data_name: str) -> Path:
    """benchmarks/results/<bench>.json for the digits, <bench>-<data>.json otherwise."""
    return RESULTS / (f"{bench}.json" if data_name == "digits" else f"{bench}-{data_name}.json")


def device_name(device: torch.device) -> str:
    """What the run ran on, for the results: the GPU's name, or the CPU's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)" if device.type == "cpu" else device.type


def scaled_main(bench: str, args: argparse.Namespace, run, default_epochs: int,
                quick_epochs: int = 1) -> int:
    """Run a benchmark's 28x28 part: run(images, epochs, device, quick) -> results dict.

    --quick: the first 64 images of each split (unless --subset), quick_epochs, nothing
    written. Otherwise the results, with what ran where and how long, go to
    results_path(bench, --data), never over the digits results.
    """
    from dgm.train import default_device

    if args.quick and not args.subset:
        args.subset = 64
    images = load_images(args)
    device = default_device(args.device)
    epochs = args.epochs or (quick_epochs if args.quick else default_epochs)
    print(f"{bench} on {images.name}: {len(images.train)} / {len(images.val)} / "
          f"{len(images.test)} images of {images.side}x{images.side}, {images.levels} levels; "
          f"{epochs} epoch{'s' if epochs != 1 else ''} on {device_name(device)}", flush=True)
    start = time.perf_counter()
    results = run(images, epochs, device, args.quick)
    results.update({"data": images.name, "side": images.side, "levels": images.levels,
                    "n_train": len(images.train), "n_test": len(images.test), "epochs": epochs,
                    "subset": args.subset,
                    "device": device_name(device), "wall_seconds": time.perf_counter() - start})
    for key, value in results.items():
        if isinstance(value, float):
            print(f"  {key}: {value:.4g}")
        elif not isinstance(value, (dict, list)):
            print(textwrap.fill(f"{key}: {value}", 88, initial_indent="  ",
                                subsequent_indent="    "))
    if args.quick:
        print("quick run: nothing written")
        return 0
    write_results(results_path(bench, images.name), results, getattr(args, "note", None))
    return 0


def per_image_summary(a: torch.Tensor, b: torch.Tensor, dim: int, prefix: str = "test") -> dict:
    """Two independent draws a, b of a per-image bound (nats): the mean over images in nats
    and bits/dim, with its Monte Carlo standard error (dgm.metrics.paired_estimate)."""
    from dgm import data, metrics

    mean, mc_se = metrics.paired_estimate(a.detach().cpu(), b.detach().cpu())
    return {f"{prefix}_nats": mean, f"{prefix}_mc_se": mc_se,
            f"{prefix}_bits_per_dim": data.bits_per_dim(mean, dim),
            f"{prefix}_bits_per_dim_mc_se": data.bits_per_dim(mc_se, dim)}


def image_references(images: Images, device, quick: bool, n_max: int = 10_000) -> dict:
    """What every 28x28 model's samples are scored with, computed once per dataset: a classifier
    trained on the training split (dgm.metrics.train_classifier: not the Inception network of
    FID, so not comparable to published FIDs) and its test accuracy, the number n of samples
    to score, and two references in its features: n real training images against the first n
    test images (what the samples' scores match), and the floor, two disjoint sets of n training
    images (two samples of one distribution)."""
    from dgm import metrics

    classifier = metrics.train_classifier(images.train, images.y_train, images.levels,
                                          epochs=1 if quick else 20, device=device)
    with torch.no_grad():
        accuracy = (classifier(images.test).argmax(1).cpu() == images.y_test).float().mean().item()
    n = min(len(images.test), 16 if quick else n_max)
    perm = torch.randperm(len(images.train), generator=torch.Generator().manual_seed(0))
    floor = images.train[perm[:n]], images.train[perm[n:2 * n]]
    return {"classifier": classifier, "n_samples": n, "classifier_test_accuracy": accuracy,
            "train_vs_test": metrics.image_scores(floor[0], images.test[:n], classifier),
            "floor": metrics.image_scores(*floor, classifier) if len(floor[1]) == n else None}


def sample_scores(images: Images, sample, device, quick: bool, references: dict | None = None) -> dict:
    """The digits scores of a 28x28 model's samples against the test split, in the features of
    the references' classifier (image_references, computed here unless given), with the
    references beside them and the sampling time. sample(k) returns k images (torch.long)."""
    from dgm import metrics

    refs = references if references is not None else image_references(images, device, quick)
    n = refs["n_samples"]
    torch.manual_seed(3000)
    start = time.perf_counter()
    samples = torch.cat([sample(min(500, n - i)).cpu() for i in range(0, n, 500)])
    seconds = time.perf_counter() - start
    return {"n_samples": n, "sample_seconds_per_100": 100 * seconds / n,
            "classifier_test_accuracy": refs["classifier_test_accuracy"],
            "scores": metrics.image_scores(samples, images.test[:n], refs["classifier"]),
            "train_vs_test": refs["train_vs_test"], "floor": refs["floor"]}
