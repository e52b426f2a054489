"""Quality of the VAE chapter's model on the digits, trained longer than in the chapter.

    .venv/bin/python benchmarks/vae.py            # writes benchmarks/results/vae.json
    .venv/bin/python benchmarks/vae.py --quick    # a smoke run with tiny budgets (not written)
    python benchmarks/vae.py --data mnist --device cuda   # 28x28: writes results/vae-mnist.json
    python benchmarks/vae.py --data digits28 --quick      # the 28x28 path on an embedded stand-in

Selection on the validation split: a small sweep (SWEEP, one seed each, the mixture of
discretized logistics decoder) is scored by the importance-weighted estimate on the
validation split (k = K_SELECT); the configuration with the best validation estimate is then
trained with two more seeds. The test split is evaluated once, for the selected configuration
only: for dgm.vae.VAE with a mixture of discretized logistics (3 seeds) and with a 17-way
categorical decoder (1 seed), the importance-weighted estimate of the NLL with k = 1000
samples, the negative ELBO (both in nats per image and bits/dim, each with its Monte Carlo
standard error), the model size and the CPU time of training. Every sweep row (validation only) is written to the JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from common import (add_scale_arguments, iwae_per_image, mc_se_of_mean, per_image_summary,
                    scaled_main)

from dgm import data, metrics
from dgm.train import fit
from dgm.vae import VAE, vae_loss

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "vae.json"
# The candidates, scored on the validation split only (early stopping also uses validation).
SWEEP = [dict(z_dim=16, hidden=512, components=3, dropout=0.1),
         dict(z_dim=16, hidden=512, components=3, dropout=0.0),
         dict(z_dim=32, hidden=512, components=3, dropout=0.1)]
K_SELECT = 100


def train_vae(likelihood: str, seed: int, epochs: int, config: dict):
    """The benchmark's VAE trained on the digits (early stopping on validation): (model, history)."""
    torch.manual_seed(seed)
    model = VAE(likelihood=likelihood, **config)
    start = time.process_time()
    hist = fit(model, vae_loss(warmup_steps=3000), data.digits("train"), val=data.digits("val"), epochs=epochs,
               batch_size=100, lr=1e-3, patience=80, seed=seed, progress=False, device="cpu")
    hist.cpu_seconds = time.process_time() - start
    return model, hist


def iwae_nll(model, x, k: int) -> float:
    """Mean of -log (1/k) sum_i w_i over the images of x (nats per image)."""
    return iwae_per_image(model, x, k).mean().item()


def test_estimates(model, x, k: int, seed: int) -> dict:
    """The test-split estimates with their Monte Carlo standard errors (nats per image).

    IWAE: two independent draws a, b of the per-image estimate; the reported value is the
    mean of (a + b) / 2 over the N images, whose Monte Carlo variance is Var(a - b) / (4 N)
    (a and b are i.i.d. given the image). -ELBO: ten single-sample passes over the split;
    the standard error of their mean. 'images_se' is the standard error over the test images
    (what a different test set of the same size would change), a separate quantity.
    """
    torch.manual_seed(1000 + seed)
    a, b = iwae_per_image(model, x, k), iwae_per_image(model, x, k)
    per_image = (a + b) / 2
    mean, mc_se = metrics.paired_estimate(a, b)
    with torch.no_grad():  # the split's mean -ELBO of each of 10 independent passes
        passes = -torch.stack([model.elbo(x).mean() for _ in range(10)])
    n = len(x)
    return {"test_nll_nats": mean, "test_nll_mc_se": mc_se,
            "test_nll_images_se": (per_image.std() / n ** 0.5).item(),
            "test_neg_elbo_nats": passes.mean().item(),
            "test_neg_elbo_mc_se": (passes.std() / len(passes) ** 0.5).item()}


def validation_score(config: dict, epochs: int, k: int):
    """Train seed 0 of one candidate; its validation IWAE estimate (the selection score).

    Returns (row, state_dict, history) so that the selected model is not trained twice.
    """
    torch.set_num_threads(1)
    model, hist = train_vae("logistic", 0, epochs, config)
    torch.manual_seed(1000)
    row = {"config": config, "val_nll_nats": iwae_nll(model, data.digits("val"), k),
           "best_epoch": hist.best_epoch + 1, "cpu_seconds": hist.cpu_seconds}
    print(f"  {config}: validation NLL (IWAE, k={k}) {row['val_nll_nats']:.2f}", flush=True)
    return row, model.state_dict(), hist


def _final_run(args):
    """One test-split run of the selected configuration (for the process pool)."""
    torch.set_num_threads(1)
    return train_and_evaluate(*args)


def train_and_evaluate(likelihood: str, seed: int, epochs: int, k: int, config: dict,
                       trained=None) -> dict:
    model, hist = trained if trained is not None else train_vae(likelihood, seed, epochs, config)
    est = test_estimates(model, data.digits("test"), k, seed)
    return {"seed": seed, **est, "bits_per_dim": data.bits_per_dim(est["test_nll_nats"], 64),
            "parameters": sum(p.numel() for p in model.parameters()), "cpu_seconds": hist.cpu_seconds,
            "best_epoch": hist.best_epoch + 1, "epochs_run": len(hist.train)}


def summary(runs: list[dict]) -> dict:
    out = {"runs": runs}
    for key in ("test_nll_nats", "test_neg_elbo_nats", "bits_per_dim", "cpu_seconds"):
        values = [r[key] for r in runs]
        out[key] = statistics.mean(values)
        out[key + "_spread"] = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    # the Monte Carlo error of a mean over independent seeds: root of the mean squared s.e. / n
    for key in ("test_nll_mc_se", "test_neg_elbo_mc_se"):
        out[key] = mc_se_of_mean(r[key] for r in runs)
    out["parameters"] = runs[0]["parameters"]
    return out


# --data mnist / fashion_mnist / digits28: the chapter's VAE at 784 pixels and 256 levels,
# one configuration (no sweep), early stopping on the validation -ELBO.
SCALED_CONFIG = dict(z_dim=32, hidden=1024, components=3, dropout=0.0)
SCALED_QUICK = dict(z_dim=4, hidden=32, components=2, dropout=0.0)


SCALED_EPOCHS = 100  # the 28x28 run's default budget (--epochs overrides it)


def scaled_model(dim: int, levels: int, quick: bool = False) -> VAE:
    """The 28x28 run's (untrained) VAE, its weights initialized by seed 0."""
    torch.manual_seed(0)
    config = SCALED_QUICK if quick else SCALED_CONFIG
    return VAE(likelihood="logistic", dim=dim, levels=levels, **config)


def scaled_loss():
    """The 28x28 run's training loss: KL warm-up over 2000 steps, no pixel shifts (50 000 images)."""
    return vae_loss(warmup_steps=2000, shift=False)


def scaled_run(images, epochs: int, device, quick: bool) -> dict:
    """dgm.vae.VAE (mixture of discretized logistics) on 28x28 images: the test IWAE estimate
    (k = 1000; two draws give its Monte Carlo error) and -ELBO, nats and bits/dim."""
    config = SCALED_QUICK if quick else SCALED_CONFIG
    model = scaled_model(images.dim, images.levels, quick)
    hist = fit(model, scaled_loss(), images.train, val=images.val,
               epochs=epochs, batch_size=128, lr=1e-3, patience=10, seed=0, progress=False,
               device=device)
    k = 8 if quick else 1000
    x = images.test.to(device)
    torch.manual_seed(1000)
    a, b = iwae_per_image(model, x, k), iwae_per_image(model, x, k)
    with torch.no_grad():
        e1, e2 = -model.elbo(x), -model.elbo(x)
    return {"model": "dgm.vae.VAE, mixture of discretized logistics", "config": config, "k": k,
            "what": f"the importance-weighted estimate with k = {k} (eq. iwae), two draws per "
                    "test image: a stochastic upper bound on the NLL (in expectation); the "
                    "-ELBO (k = 1) beside it",
            **per_image_summary(a, b, images.dim, "test_nll"),
            **per_image_summary(e1, e2, images.dim, "test_neg_elbo"),
            "val_neg_elbo_nats": hist.best_val, "best_epoch": hist.best_epoch + 1,
            "steps": len(hist.step), "parameters": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, nothing written")
    add_scale_arguments(parser)
    args = parser.parse_args(argv)
    if args.data != "digits":
        return scaled_main("vae", args, scaled_run, default_epochs=SCALED_EPOCHS)
    epochs, k, k_select, seeds = (3, 20, 5, [0, 1]) if args.quick else (800, 1000, K_SELECT, [0, 1, 2])
    sweep = SWEEP[:2] if args.quick else SWEEP
    print("selection on the validation split:", flush=True)
    # independent single-threaded runs, in parallel processes
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(sweep), mp_context=ctx) as pool:
        scored = list(pool.map(validation_score, sweep, [epochs] * len(sweep), [k_select] * len(sweep)))
    best_row, best_state, best_hist = min(scored, key=lambda r: r[0]["val_nll_nats"])
    config = best_row["config"]
    print(f"selected {config}; now the test split, once", flush=True)
    best_model = VAE(likelihood="logistic", **config)
    best_model.load_state_dict(best_state)
    best_model.eval()
    jobs = [("logistic", s, epochs, k, config) for s in seeds[1:]] + [("categorical", 0, epochs, k, config)]
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=ctx) as pool:
        others = list(pool.map(_final_run, jobs))
    runs = [train_and_evaluate("logistic", 0, epochs, k, config, trained=(best_model, best_hist))]
    runs += others[:-1]
    results = {
        "mixture of discretized logistics": summary(runs),
        "17-way categorical": summary(others[-1:]),
    }
    for name, r in results.items():
        print(f"{name}: test NLL (IWAE, k={k}) {r['test_nll_nats']:.2f} +- {r['test_nll_nats_spread']:.2f} nats, "
              f"(MC s.e. {r['test_nll_mc_se']:.3f}), -ELBO {r['test_neg_elbo_nats']:.2f}, "
              f"{r['parameters'] / 1e6:.2f} M parameters, {r['cpu_seconds'] / 60:.1f} CPU min", flush=True)
    if args.quick:
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"date": dt.date.today().isoformat(), "cpus": os.cpu_count(), "torch": torch.__version__,
                               "selection": {"split": "val", "score": f"IWAE estimate of the NLL, k = {k_select}, seed 0",
                                             "sweep": [r for r, _, _ in scored],
                                             "note": "the test split is evaluated only for the selected config; "
                                                     "cpu_seconds is the CPU time of one single-threaded "
                                                     "training run (time.process_time)"},
                               "config": config, "k": k, "digits": results}, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
