"""A convolutional (DCGAN-style) GAN against the chapter's MLP GAN on the digits, at equal parameters.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gans_conv.py          # writes benchmarks/results/gans_conv.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gans_conv.py --quick  # a smoke run (nothing written)
    python benchmarks/gans_conv.py --data mnist --device cuda  # 28x28: results/gans_conv-mnist.json

Both GANs use the chapter's loss (non-saturating, R1 penalty gamma = 1), optimizer, batch size
and step budget (dgm.gans.train_gan); the convolutional networks (dgm.gans.ConvGenerator,
ConvDiscriminator) have C = 50 channels, which matches the MLPs' parameter counts to within 2 %.
Nothing is tuned: the conv GAN takes the MLP GAN's settings unchanged, so there is no choice to
make on the validation split. Each seed's 350 samples are scored against the validation split
(reported as a check) and, once, against the test split (the number the chapter reports): the
Fréchet digits distance and, where dgm.metrics has them, KID, precision/recall and
density/coverage, all in the digits classifier's features. Mean and standard error over seeds.
About 9 minutes single-threaded (two processes: about 5).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from common import add_scale_arguments, image_references, sample_scores, scaled_main

from dgm import data, metrics
from dgm.gans import ConvDiscriminator, ConvGenerator, Discriminator, Generator, to_unit, train_gan

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "gans_conv.json"
STEPS = 4000
SEEDS = [0, 1, 2]
CHANNELS = 50
TRAIN = dict(r1=1.0, batch_size=128)
N_EVAL = 350  # the size of the validation split


def networks(kind: str):
    if kind == "MLP":
        return (Generator(dim=64, z_dim=16, hidden=256, depth=2, levels=data.DIGITS_LEVELS),
                Discriminator(dim=64, hidden=256, depth=2))
    return ConvGenerator(z_dim=16, channels=CHANNELS), ConvDiscriminator(channels=CHANNELS)


def scores(samples: torch.Tensor, reference: torch.Tensor) -> dict:
    if hasattr(metrics, "digits_scores"):
        return metrics.digits_scores(samples, reference)
    return {"fdd": metrics.frechet_digits_distance(samples, reference)}


def run(args: tuple[str, int, int]) -> dict:
    kind, seed, steps = args
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    G, D = networks(kind)
    start = time.process_time()
    train_gan(G, D, data.digits("train"), steps, augment=to_unit, seed=seed, **TRAIN)
    seconds = time.process_time() - start
    torch.manual_seed(3000 + seed)
    samples = G.sample(N_EVAL)
    out = {"kind": kind, "seed": seed, "cpu_seconds": seconds,
           "val": scores(samples, data.digits("val")), "test": scores(samples, data.digits("test"))}
    print(f"{kind} seed {seed}: FDD val {out['val']['fdd']:.2f}, test {out['test']['fdd']:.2f}, "
          f"{seconds / 60:.1f} CPU min", flush=True)
    return out


def mean_se(values: list[float]) -> dict:
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {"mean": statistics.mean(values), "se": se, "values": values}


SCALED_EPOCHS = 50  # the 28x28 run's default budget per network (--epochs overrides it)


def scaled_networks(kind: str, side: int, levels: int, quick: bool = False):
    """The 28x28 run's (untrained) G and D of one kind: the conv GAN with CHANNELS channels, or
    the chapter's MLP GAN (depth 2) with the hidden width that comes closest to the conv GAN's
    parameter count (G and D together)."""
    channels = 4 if quick else CHANNELS
    conv = ConvGenerator(z_dim=16, channels=channels, levels=levels, side=side), \
        ConvDiscriminator(channels=channels, side=side)
    if kind == "convolutional":
        return conv
    dim, target = side * side, sum(p.numel() for net in conv for p in net.parameters())

    def mlp(hidden):
        return (Generator(dim=dim, z_dim=16, hidden=hidden, depth=2, levels=levels),
                Discriminator(dim=dim, hidden=hidden, depth=2))

    size = lambda nets: sum(p.numel() for net in nets for p in net.parameters())
    lo, hi = 2, 2048  # the count grows with the width: bisect for the closest
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mlp(mid)) < target else (lo, mid)
    return min((mlp(lo), mlp(hi)), key=lambda nets: abs(size(nets) - target))


def scaled_run(images, epochs: int, device, quick: bool) -> dict:
    """The MLP and the convolutional GAN at (about) equal parameters on 28x28 images, with the
    chapter's loss and optimizer (TRAIN), seed 0 each, scored by common.sample_scores (a
    classifier trained on the dataset, with the real-vs-real floor)."""
    out, refs = {}, image_references(images, device, quick)  # one classifier for both
    batch = 32 if quick else TRAIN["batch_size"]
    steps = images.steps(epochs, batch)
    for kind in ("MLP", "convolutional"):
        torch.manual_seed(0)
        G, D = scaled_networks(kind, images.side, images.levels, quick)
        start = time.perf_counter()
        train_gan(G, D, images.train, steps, augment=lambda b: to_unit(b, levels=images.levels),
                  seed=0, device=device, **{**TRAIN, "batch_size": batch})
        out[kind] = {"parameters": {"G": sum(p.numel() for p in G.parameters()),
                                    "D": sum(p.numel() for p in D.parameters())},
                     "train_seconds": time.perf_counter() - start,
                     **sample_scores(images, G.sample, device, quick, refs)}
        print(f"{kind}: FD {out[kind]['scores']['fdd']:.2f}", flush=True)
    return {"models": out, "steps": steps, "batch_size": batch, "train": TRAIN}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, nothing written")
    parser.add_argument("--processes", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    add_scale_arguments(parser)
    args = parser.parse_args(argv)
    if args.data != "digits":
        return scaled_main("gans_conv", args, scaled_run, default_epochs=SCALED_EPOCHS)
    steps, seeds = (50, [0, 1]) if args.quick else (STEPS, SEEDS)
    metrics.digits_classifier()  # train (and cache) the feature network once, before the pool
    jobs = [(k, s, steps) for k in ("MLP", "convolutional") for s in seeds]
    with mp.get_context("spawn").Pool(args.processes) as pool:
        runs = pool.map(run, jobs)
    models = {}
    for kind in ("MLP", "convolutional"):
        rs = [r for r in runs if r["kind"] == kind]
        G, D = networks(kind)
        models[kind] = {
            "parameters": {"G": sum(p.numel() for p in G.parameters()),
                           "D": sum(p.numel() for p in D.parameters())},
            "cpu_minutes_per_seed": statistics.mean(r["cpu_seconds"] for r in rs) / 60,
            **{split: {m: mean_se([r[split][m] for r in rs]) for m in rs[0][split]}
               for split in ("val", "test")},
        }
        print(f"{kind}: FDD test {models[kind]['test']['fdd']['mean']:.2f} "
              f"± {models[kind]['test']['fdd']['se']:.2f}", flush=True)
    if args.quick:
        return 0
    results = {"steps": steps, "seeds": seeds, "channels": CHANNELS, "train": TRAIN, "n": N_EVAL,
               "models": models, "date": dt.date.today().isoformat(), "cpus": os.cpu_count(),
               "torch": torch.__version__}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
