"""GANs of the GAN chapter, trained longer than in the chapter: mode coverage and the Fréchet digits distance.

    .venv/bin/python benchmarks/gans.py                 # both parts; writes benchmarks/results/gans.json
    .venv/bin/python benchmarks/gans.py --part grid     # only the 5x5 grid (updates its part of the file)
    .venv/bin/python benchmarks/gans.py --part digits   # only the digits
    .venv/bin/python benchmarks/gans.py --quick         # a smoke run with tiny budgets (nothing written)
    python benchmarks/gans.py --data mnist --device cuda   # 28x28: writes results/gans-mnist.json

* **grid**: a vanilla GAN (non-saturating loss) and the same GAN with the R1 penalty on the
  discriminator, on the 5x5 grid of Gaussians, 5 seeds each. Reported: the components covered
  and the fraction of high-quality samples (dgm.metrics.mode_coverage, on 10 000 samples), mean
  and spread over the seeds (target: the best variant covers 25/25 with >= 90 % high-quality
  samples on the majority of the seeds), and the samples of seed 0 during training.
* **digits**: the Fréchet digits distance (dgm.metrics.frechet_digits_distance) to the test split
  (447 digits) of 350 samples of a GAN, a class-conditional GAN and the VAE of chapter 3, with
  KID, precision/recall and density/coverage on the same features (dgm.metrics.digits_scores).
  Beside them: the **floor**, two disjoint random sets of real training digits of the same sizes
  (350 and 447; 5 random partitions), which is what two samples of one distribution score;
  350 real validation digits (other writers: a distribution shift, not a floor); 350 real
  training digits against the test split; and a Gaussian fitted to the training pixels.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from common import add_scale_arguments, sample_scores, scaled_main

from dgm import data, metrics
from dgm.gans import ConvDiscriminator, ConvGenerator, Discriminator, Generator, to_unit, train_gan

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "gans.json"

GRID_VARIANTS = {"vanilla": {}, "R1": {"r1": 0.1}}
GRID_STEPS = 30_000
GRID_SEEDS = [0, 1, 2, 3, 4]
GRID_SAMPLES = 10_000  # samples per trained generator scored by dgm.metrics.mode_coverage
SNAPSHOT_STEPS = [0, 250, 500, 1000, 2000, 4000, 8000, 15_000, 22_000, 30_000]


def grid_run(args: tuple[str, int, int]) -> dict:
    variant, seed, steps = args
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    G, D = Generator(scale=2.0), Discriminator(scale=2.0)
    x = data.toy("grid", 100_000, seed=seed).float()
    z_fixed = torch.randn(400, G.z_dim, generator=torch.Generator().manual_seed(1000 + seed))
    snapshots = {}

    def record(step, G, D):
        with torch.no_grad():
            snapshots[step] = G(z_fixed).round(decimals=3).tolist()

    start = time.time()
    at = [s for s in SNAPSHOT_STEPS if s <= steps] if seed == 0 else []
    train_gan(G, D, x, steps, record=record, record_at=at, seed=seed, **GRID_VARIANTS[variant])
    seconds = time.time() - start
    torch.manual_seed(2000 + seed)
    covered, quality = metrics.mode_coverage(G.sample(GRID_SAMPLES), "grid")
    print(f"grid {variant} seed {seed}: {covered}/25 components, {quality:.3f} high quality, {seconds / 60:.1f} min", flush=True)
    return {"variant": variant, "seed": seed, "covered": covered, "high_quality": quality, "seconds": seconds,
            "snapshots": snapshots}


def spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values)}


def grid_part(quick: bool, processes: int) -> dict:
    steps, seeds = (300, [0, 1]) if quick else (GRID_STEPS, GRID_SEEDS)
    jobs = [(v, s, steps) for v in GRID_VARIANTS for s in seeds]
    with mp.get_context("spawn").Pool(processes) as pool:
        runs = pool.map(grid_run, jobs)
    out = {"steps": steps, "seeds": seeds, "samples": GRID_SAMPLES, "variants": {}}
    for v, options in GRID_VARIANTS.items():
        rs = [r for r in runs if r["variant"] == v]
        full = sum(r["covered"] == 25 and r["high_quality"] >= 0.9 for r in rs)
        out["variants"][v] = {
            "options": options,
            "covered": spread([r["covered"] for r in rs]),
            "high_quality": spread([r["high_quality"] for r in rs]),
            "seeds_with_25_and_90pct": full,
            "minutes_per_seed": statistics.mean(r["seconds"] for r in rs) / 60,
            "runs": [{k: r[k] for k in ("seed", "covered", "high_quality", "seconds")} for r in rs],
            "snapshots_seed0": next(r["snapshots"] for r in rs if r["seed"] == 0),
        }
        print(f"grid {v}: {out['variants'][v]['covered']['mean']:.1f}/25 components, "
              f"{out['variants'][v]['high_quality']['mean']:.3f} high quality, "
              f"25/25 and >= 90 % on {full} of {len(rs)} seeds", flush=True)
    return out


DIGITS_GAN = dict(dim=64, z_dim=16, hidden=256, depth=2)
DIGITS_TRAIN = dict(r1=1.0, batch_size=128)
DIGITS_STEPS = 6000
DIGITS_SEEDS = [0, 1, 2]
N_EVAL = 350  # the size of the validation split: every set compared with the test split has this size
FLOOR_PARTITIONS = 5


def digits_gan(variant: str, seed: int) -> tuple[Generator, Discriminator]:
    """The untrained generator and discriminator of a digits variant, initialized by seed."""
    torch.manual_seed(seed)
    n_classes = 10 if variant == "conditional GAN" else 0
    G = Generator(levels=data.DIGITS_LEVELS, n_classes=n_classes, **DIGITS_GAN)
    D = Discriminator(dim=64, hidden=DIGITS_GAN["hidden"], depth=DIGITS_GAN["depth"], n_classes=n_classes)
    return G, D


def train_digits_gan(G: Generator, D: Discriminator, variant: str, seed: int, steps: int) -> float:
    """Train a digits variant's G and D in place (the benchmark's settings); returns the seconds."""
    x, y = data.digits("train", labels=True)
    shift = variant == "GAN, trained on ±1-pixel shifts"
    start = time.time()
    train_gan(G, D, x, steps, y=y if G.n_classes else None, augment=lambda b: to_unit(b, shift), seed=seed,
              **DIGITS_TRAIN)
    return time.time() - start


def digits_gan_run(args: tuple[str, int, int]) -> dict:
    variant, seed, steps = args
    torch.set_num_threads(1)
    G, D = digits_gan(variant, seed)
    n_classes = G.n_classes
    seconds = train_digits_gan(G, D, variant, seed, steps)
    torch.manual_seed(3000 + seed)
    labels = torch.arange(N_EVAL) % 10 if n_classes else None
    samples = G.sample(N_EVAL, labels)
    scores = metrics.digits_scores(samples, data.digits("test"))
    out = {"variant": variant, "seed": seed, "fdd": scores["fdd"], "scores": scores, "seconds": seconds, "parameters": sum(p.numel() for p in G.parameters())}
    if n_classes:  # does the classifier read the digit the generator was asked for?
        out["label_accuracy"] = (metrics.digits_classifier()(samples).argmax(1) == labels).float().mean().item()
    print(f"digits {variant} seed {seed}: FDD {out['fdd']:.2f}, {seconds / 60:.1f} min", flush=True)
    return out


def digits_vae_run(args: tuple[int, int]) -> dict:
    seed, epochs = args
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vae import train_vae  # the VAE benchmark's model and training, not a copy

    config = json.loads((ROOT / "benchmarks" / "results" / "vae.json").read_text())["config"]  # selected on val
    model, hist = train_vae("logistic", seed, epochs, config)
    model.eval()
    torch.manual_seed(3000 + seed)
    test = data.digits("test")
    samples = model.sample(N_EVAL)
    with torch.no_grad():
        means = model.decode_mean(torch.randn(N_EVAL, model.z_dim)).round().long()
    scores, means_scores = metrics.digits_scores(samples, test), metrics.digits_scores(means, test)
    out = {"seed": seed, "fdd": scores["fdd"], "fdd_decoder_means": means_scores["fdd"], "scores": scores,
           "scores_decoder_means": means_scores, "seconds": hist.seconds}
    print(f"digits VAE seed {seed}: FDD {out['fdd']:.2f} (decoder means {out['fdd_decoder_means']:.2f})", flush=True)
    return out


def digits_part(quick: bool, processes: int) -> dict:
    steps, seeds, epochs = (200, [0], 2) if quick else (DIGITS_STEPS, DIGITS_SEEDS, 800)
    test, train = data.digits("test"), data.digits("train")
    g = torch.Generator().manual_seed(0)
    train_subset = train[torch.randperm(len(train), generator=g)[:N_EVAL]]
    gauss_samples = metrics.pixel_gaussian_digits(train, N_EVAL)
    sets = {
        "real digits of other writers (validation split)": data.digits("val"),
        "real digits, training split": train_subset,
        "Gaussian fitted to the training pixels": gauss_samples,
    }
    baseline_scores = {name: metrics.digits_scores(x, test) for name, x in sets.items()}
    rows = {name: s["fdd"] for name, s in baseline_scores.items()}
    floor_runs = []  # two disjoint sets of one split (train) at the compared sizes: N_EVAL samples, len(test)
    for r in range(FLOOR_PARTITIONS):
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(100 + r))
        floor_runs.append(metrics.digits_scores(train[perm[:N_EVAL]], train[perm[N_EVAL:N_EVAL + len(test)]]))
    floor = {"what": f"two disjoint random sets of training digits, {N_EVAL} and {len(test)}",
             "partitions": FLOOR_PARTITIONS, "scores": {k: spread([f[k] for f in floor_runs]) for k in floor_runs[0]}}
    variants = ["GAN", "GAN, trained on ±1-pixel shifts", "conditional GAN"]
    with mp.get_context("spawn").Pool(processes) as pool:
        gan_async = pool.map_async(digits_gan_run, [(v, s, steps) for v in variants for s in seeds], chunksize=1)
        vae_async = pool.map_async(digits_vae_run, [(s, epochs) for s in seeds], chunksize=1)
        gan_runs, vae_runs = gan_async.get(), vae_async.get()
    models = {}
    for v in variants:
        rs = [r for r in gan_runs if r["variant"] == v]
        models[v] = {"fdd": spread([r["fdd"] for r in rs]), "minutes_per_seed": statistics.mean(r["seconds"] for r in rs) / 60,
                     "parameters": rs[0]["parameters"], "runs": rs}
        models[v]["scores"] = {k: spread([r["scores"][k] for r in rs]) for k in rs[0]["scores"]}
        if "label_accuracy" in rs[0]:
            models[v]["label_accuracy"] = spread([r["label_accuracy"] for r in rs])
    models["VAE (chapter 3), samples x ~ p(x | z)"] = {"fdd": spread([r["fdd"] for r in vae_runs]),
                                                       "minutes_per_seed": statistics.mean(r["seconds"] for r in vae_runs) / 60,
                                                       "runs": vae_runs,
                                                       "scores": {k: spread([r["scores"][k] for r in vae_runs])
                                                                  for k in vae_runs[0]["scores"]}}
    models["VAE (chapter 3), decoder means E[x | z], rounded"] = {
        "fdd": spread([r["fdd_decoder_means"] for r in vae_runs]),
        "scores": {k: spread([r["scores_decoder_means"][k] for r in vae_runs]) for k in vae_runs[0]["scores"]}}
    print(f"digits floor ({floor['what']}): FDD {floor['scores']['fdd']['mean']:.2f}")
    for name, value in rows.items():
        print(f"digits {name}: FDD {value:.2f}")
    for name, r in models.items():
        print(f"digits {name}: FDD {r['fdd']['mean']:.2f} ({r['fdd']['min']:.2f}..{r['fdd']['max']:.2f})", flush=True)
    return {"n": N_EVAL, "reference": "test split", "steps": steps, "seeds": seeds, "gan": DIGITS_GAN,
            "train": DIGITS_TRAIN, "floor": floor, "baselines": rows,
            "baseline_scores": baseline_scores, "models": models}


SCALED_EPOCHS = 50  # the 28x28 run's default budget (--epochs overrides it)


SCALED_SIZE = {False: dict(channels=64, z_dim=64), True: dict(channels=4, z_dim=8)}  # quick


def scaled_model(side: int, levels: int, quick: bool = False):
    """The 28x28 run's (untrained) ConvGenerator and ConvDiscriminator; seed 0."""
    torch.manual_seed(0)
    size = SCALED_SIZE[quick]
    return (ConvGenerator(**size, levels=levels, side=side),
            ConvDiscriminator(channels=size["channels"], side=side))


def scaled_run(images, epochs: int, device, quick: bool) -> dict:
    """The chapter's convolutional GAN (ConvGenerator, ConvDiscriminator; non-saturating loss,
    R1 penalty gamma = 1) on 28x28 images, with the same scores as on the digits but in the
    features of a classifier trained on this dataset's training split (dgm.metrics.train_classifier):
    not FID, so not comparable to published FIDs. Beside the samples: the floor, two disjoint sets
    of real training images of the sizes compared (what two samples of one distribution score)."""
    G, D = scaled_model(images.side, images.levels, quick)
    batch = 32 if quick else 128
    steps = images.steps(epochs, batch)
    start = time.perf_counter()
    train_gan(G, D, images.train, steps, augment=lambda b: to_unit(b, levels=images.levels), r1=1.0,
              batch_size=batch, seed=0, device=device)
    seconds = time.perf_counter() - start
    return {"model": "dgm.gans.ConvGenerator / ConvDiscriminator, non-saturating, R1 = 1",
            **SCALED_SIZE[quick], "batch_size": batch, "steps": steps,
            "train_seconds": seconds, **sample_scores(images, G.sample, device, quick),
            "parameters": sum(p.numel() for p in [*G.parameters(), *D.parameters()])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, nothing written")
    parser.add_argument("--part", choices=["grid", "digits", "all"], default="all")
    parser.add_argument("--processes", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    add_scale_arguments(parser)
    args = parser.parse_args(argv)
    if args.data != "digits":
        return scaled_main("gans", args, scaled_run, default_epochs=SCALED_EPOCHS)
    results = json.loads(OUT.read_text()) if OUT.exists() and not args.quick else {}
    if args.part in ("grid", "all"):
        results["grid"] = grid_part(args.quick, args.processes)
    if args.part in ("digits", "all"):
        results["digits"] = digits_part(args.quick, args.processes)
    if args.quick:
        return 0
    results.update({"date": dt.date.today().isoformat(), "cpus": os.cpu_count(), "torch": torch.__version__})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results) + "\n")  # one line: the snapshots are long lists
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
