"""VAE variants of the VAE chapter, trained longer: two stochastic layers and the VQ-VAE.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vae_models.py --jobs 2   # writes
        benchmarks/results/vae_models.json (the VQ part about 20 CPU minutes, the
        hierarchical part, 4 models x 3 seeds, about 10 CPU minutes)
    ... --part hierarchical --jobs 2   # or --part vq: rerun one half, update its entry
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vae_models.py --quick  # smoke run
    python benchmarks/vae_models.py --data mnist --device cuda  # 28x28, the hierarchical part:
        writes results/vae_models-mnist.json

Hierarchical VAE (dgm.vae.HVAE) against the one-layer VAE (dgm.vae.VAE) on the digits, same
splits and budget (at most EPOCHS epochs, early stopping on the validation -ELBO), SEEDS
(--jobs N trains the models in N parallel single-threaded processes).
Three ways of training the two-layer model (no remedy, KL warm-up, warm-up and free bits) are
scored on the VALIDATION split: the rates R_1 and R_2 of each layer (eq. hvae-elbo), the
-ELBO and the importance-weighted estimate of the NLL (k = K_SELECT). The two-layer variant
with the best validation estimate is selected, and the test split is evaluated once, for it
and for the one-layer VAE: the IWAE estimate with k = K_TEST (a stochastic upper bound on the
NLL: its negative is a lower bound on log p) and the -ELBO (an upper bound), in nats per image.

VQ-VAE (dgm.vae.VQVAE, 4 codes from a codebook of 32 and of 64) with an autoregressive prior
over the codes (dgm.vae.CodePrior), trained for VQ_STEPS and PRIOR_STEPS: the codebook's
perplexity and dead codes on the training images, the prior's validation NLL of the codes,
and the bound -log p(x | z_q) - log pi(c) (eq. vq-bound) on validation; the codebook size with
the better validation bound is evaluated once on test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from common import add_scale_arguments, iwae_per_image, per_image_summary, scaled_main

from dgm import data
from dgm.train import fit
from dgm.vae import HVAE, VAE, CodePrior, VQVAE, hvae_loss, vae_loss

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "vae_models.json"
EPOCHS, K_SELECT, K_TEST, SEEDS = 600, 100, 1000, [0, 1, 2]
VQ_STEPS, PRIOR_STEPS, BETA_C = 3000, 1500, 0.25
HIERARCHICAL = {"two layers, no remedy": dict(),
                "two layers, KL warm-up": dict(warmup_steps=2000),
                "two layers, warm-up and free bits": dict(warmup_steps=2000,
                                                          free_bits=0.1)}


def iwae_nll(model, x, k: int) -> float:
    """Mean of -log (1/k) sum_i w_i over the images of x (nats per image)."""
    return iwae_per_image(model, x, k).mean().item()


def rates(model, x) -> dict:
    """Reconstruction and the rate of each layer, averaged over x and 10 samples."""
    with torch.no_grad():
        terms = [model.elbo_terms(x) for _ in range(10)]
    if isinstance(model, HVAE):
        rec, r1, r2 = (torch.stack(t).mean().item() for t in zip(*terms))
        return {"reconstruction": rec, "rate_1": r1, "rate_2": r2, "neg_elbo": r1 + r2 - rec}
    rec, r1 = (torch.stack(t).mean().item() for t in zip(*terms))
    return {"reconstruction": rec, "rate_1": r1, "neg_elbo": r1 - rec}


def train(name: str, seed: int, epochs: int):
    torch.manual_seed(seed)
    if name == "one layer":
        model, loss = VAE(z_dim=16, hidden=256, dropout=0.1), vae_loss(warmup_steps=2000)
    else:
        model, loss = (HVAE(z_dim=16, z2_dim=8, hidden=256, dropout=0.1),
                       hvae_loss(**HIERARCHICAL[name]))
    hist = fit(model, loss, data.digits("train"), val=data.digits("val"), epochs=epochs,
               batch_size=100, lr=2e-3, patience=40, seed=seed, progress=False,
               device="cpu")
    model.eval()
    return model, hist


def validation_run(name: str, seed: int, epochs: int, k_select: int):
    """Train one model and score it on the validation split: (row, state_dict)."""
    torch.set_num_threads(1)
    model, hist = train(name, seed, epochs)
    torch.manual_seed(1000 + seed)
    row = {"seed": seed, "val": rates(model, data.digits("val")),
           "val_nll_nats": iwae_nll(model, data.digits("val"), k_select),
           "best_epoch": hist.best_epoch + 1, "seconds": hist.seconds,
           "parameters": sum(p.numel() for p in model.parameters())}
    print(f"  {name}, seed {seed}: validation -ELBO {row['val']['neg_elbo']:.2f}, "
          f"rates {row['val']['rate_1']:.2f} / {row['val'].get('rate_2', 0):.2f}, "
          f"IWAE (k={k_select}) {row['val_nll_nats']:.2f}, "
          f"{hist.seconds:.0f} s", flush=True)
    return row, model.state_dict()


def rebuild(name: str, state: dict):
    model = (VAE(z_dim=16, hidden=256, dropout=0.1) if name == "one layer"
             else HVAE(z_dim=16, z2_dim=8, hidden=256, dropout=0.1))
    model.load_state_dict(state)
    return model.eval()


def hierarchical(epochs: int, k_select: int, k_test: int, seeds: list[int],
                 jobs: int = 1) -> dict:
    """Every (model, seed) trained in `jobs` parallel single-threaded processes."""
    x_test = data.digits("test")
    names = ["one layer", *HIERARCHICAL]
    tasks = [(name, seed, epochs, k_select) for name in names for seed in seeds]
    with ProcessPoolExecutor(jobs) as pool:
        done = list(pool.map(validation_run, *zip(*tasks)))
    rows, models = {n: [] for n in names}, {n: [] for n in names}
    for (name, *_), (row, state) in zip(tasks, done):
        rows[name].append(row)
        models[name].append(rebuild(name, state))
    mean_val = {n: statistics.mean(r["val_nll_nats"] for r in rs) for n, rs in rows.items()}
    selected = min(HIERARCHICAL, key=mean_val.get)
    print(f"selected on validation: {selected}; test once", flush=True)
    for name in ["one layer", selected]:
        for row, model in zip(rows[name], models[name]):
            torch.manual_seed(2000 + row["seed"])
            row["test"] = rates(model, x_test)
            row["test_nll_nats"] = iwae_nll(model, x_test, k_test)
    test = {}
    for name in ["one layer", selected]:
        values = [r["test_nll_nats"] for r in rows[name]]
        elbos = [r["test"]["neg_elbo"] for r in rows[name]]
        test[name] = {"test_nll_nats": statistics.mean(values),
                      "test_nll_nats_spread": (max(values) - min(values)) / 2,
                      "test_neg_elbo_nats": statistics.mean(elbos),
                      "parameters": rows[name][0]["parameters"]}
        print(f"  {name}: test NLL (IWAE, k={k_test}) {test[name]['test_nll_nats']:.2f}"
              f", -ELBO {test[name]['test_neg_elbo_nats']:.2f}", flush=True)
    return {"runs": rows, "selected": selected, "test": test,
            "selection": f"mean over seeds of the validation IWAE estimate, k = {k_select}"}


def vq_run(codes: int, steps: int, prior_steps: int, seed: int = 0) -> tuple[dict, tuple]:
    x_train, x_val = data.digits("train"), data.digits("val")
    torch.manual_seed(seed)
    start = time.perf_counter()
    vq = VQVAE(positions=4, codes=codes, code_dim=8)
    with torch.no_grad():
        z_e = vq.encode(x_train[:400]).flatten(0, 1)
        vq.codebook.copy_(z_e[torch.randperm(len(z_e))[:codes]])
    opt = torch.optim.Adam(vq.parameters(), lr=1e-3)
    batches = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(x_train), (100,), generator=batches)
        rec, cb, cm, _ = vq.loss_terms(data.shift_digits(x_train[idx]))
        loss = (-rec + cb + BETA_C * cm).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    vq.eval()
    with torch.no_grad():
        c_train, c_val = (vq.quantize(vq.encode(x))[0] for x in (x_train, x_val))
    prior = CodePrior(4, codes, hidden=128)
    opt = torch.optim.Adam(prior.parameters(), lr=2e-3)
    for _ in range(prior_steps):
        idx = torch.randint(len(x_train), (100,), generator=batches)
        loss = -prior.log_prob(c_train[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    usage = torch.bincount(c_train.flatten(), minlength=codes).float()
    u = usage / usage.sum()
    with torch.no_grad():
        val_rec = -vq.log_lik(x_val, vq.codebook[c_val]).mean().item()
        val_prior = -prior.log_prob(c_val).mean().item()
    row = {"codes": codes, "perplexity": torch.exp(-(u[u > 0] * u[u > 0].log()).sum()).item(),
           "dead_codes": int((usage == 0).sum()), "val_reconstruction_nats": val_rec,
           "val_prior_nats": val_prior, "val_bound_nats": val_rec + val_prior,
           "seconds": time.perf_counter() - start}
    print(f"  VQ-VAE, K = {codes}: perplexity {row['perplexity']:.1f}, "
          f"{row['dead_codes']} dead, validation bound {row['val_bound_nats']:.2f} "
          f"({val_rec:.2f} + {val_prior:.2f}), {row['seconds']:.0f} s", flush=True)
    return row, (vq, prior)


def vq(steps: int, prior_steps: int) -> dict:
    runs = [vq_run(codes, steps, prior_steps) for codes in (32, 64)]
    row, (model, prior) = min(runs, key=lambda r: r[0]["val_bound_nats"])
    x_test = data.digits("test")
    with torch.no_grad():
        c = model.quantize(model.encode(x_test))[0]
        test_rec = -model.log_lik(x_test, model.codebook[c]).mean().item()
        test_prior = -prior.log_prob(c).mean().item()
    print(f"  selected K = {row['codes']}: test bound {test_rec + test_prior:.2f}", flush=True)
    return {"runs": [r for r, _ in runs], "selected_codes": row["codes"],
            "test_bound_nats": test_rec + test_prior, "test_reconstruction_nats": test_rec,
            "test_prior_nats": test_prior}


SCALED_EPOCHS = 100  # the 28x28 run's default budget per model (--epochs overrides it)


def scaled_model(name: str, dim: int, levels: int, quick: bool = False):
    """The 28x28 run's (untrained) one-layer VAE or two-layer HVAE, and its training loss."""
    hidden, z, z2 = (16, 4, 2) if quick else (512, 32, 16)
    if name == "one layer":
        return (VAE(z_dim=z, hidden=hidden, dropout=0.0, dim=dim, levels=levels),
                vae_loss(warmup_steps=2000, shift=False))
    return (HVAE(z_dim=z, z2_dim=z2, hidden=hidden, hidden2=hidden // 2, dropout=0.0, dim=dim,
                 levels=levels), hvae_loss(**HIERARCHICAL[name], shift=False))


def scaled_run(images, epochs: int, device, quick: bool) -> dict:
    """The hierarchical part at 28x28 (seed 0 each): the three ways of training the two-layer
    model are scored on the validation split (IWAE estimate, k = K_SELECT), the best one and the
    one-layer VAE are evaluated once on test (IWAE, k = K_TEST, two draws for the Monte Carlo
    error; and the -ELBO). The VQ-VAE part is for the digits only."""
    k_select, k_test = (4, 8) if quick else (K_SELECT, K_TEST)
    x_val, x_test = images.val[:2000].to(device), images.test.to(device)
    rows, models = {}, {}
    for name in ["one layer", *HIERARCHICAL]:
        torch.manual_seed(0)
        model, loss = scaled_model(name, images.dim, images.levels, quick)
        hist = fit(model, loss, images.train, val=images.val, epochs=epochs, batch_size=128,
                   lr=1e-3, patience=10, seed=0, progress=False, device=device)
        torch.manual_seed(1000)
        rows[name] = {"val": rates(model, x_val), "val_nll_nats": iwae_nll(model, x_val, k_select),
                      "best_epoch": hist.best_epoch + 1, "seconds": hist.seconds,
                      "parameters": sum(p.numel() for p in model.parameters())}
        models[name] = model
        print(f"  {name}: validation IWAE {rows[name]['val_nll_nats']:.1f}", flush=True)
    selected = min(HIERARCHICAL, key=lambda n: rows[n]["val_nll_nats"])
    for name in ["one layer", selected]:
        model = models[name]
        torch.manual_seed(2000)
        a, b = iwae_per_image(model, x_test, k_test), iwae_per_image(model, x_test, k_test)
        rows[name]["test"] = {**per_image_summary(a, b, images.dim, "test_nll"),
                              **rates(model, x_test)}
    return {"runs": rows, "selected": selected, "k_select": k_select, "k_test": k_test,
            "selection": "validation IWAE estimate, seed 0"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, nothing written")
    parser.add_argument("--part", choices=["all", "hierarchical", "vq"], default="all",
                        help="run one half and update its entry in the JSON")
    parser.add_argument("--jobs", type=int, default=1,
                        help="parallel single-threaded training processes")
    add_scale_arguments(parser)
    args = parser.parse_args(argv)
    if args.data != "digits":
        return scaled_main("vae_models", args, scaled_run, default_epochs=SCALED_EPOCHS)
    if args.quick:
        budgets = dict(epochs=2, k_select=5, k_test=10, seeds=[0]), (20, 20)
    else:
        budgets = dict(epochs=EPOCHS, k_select=K_SELECT, k_test=K_TEST, seeds=SEEDS), (
            VQ_STEPS, PRIOR_STEPS)
    results = {}
    if args.part in ("all", "hierarchical"):
        start = time.perf_counter()
        print("hierarchical VAE (selection on validation):", flush=True)
        results["hierarchical"] = hierarchical(**budgets[0], jobs=args.jobs)
        results["hierarchical"]["seconds"] = time.perf_counter() - start
    if args.part in ("all", "vq"):
        start = time.perf_counter()
        print("VQ-VAE:", flush=True)
        results["vq"] = vq(*budgets[1])
        results["vq"]["seconds"] = time.perf_counter() - start
    if args.quick:
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    OUT.write_text(json.dumps({**old, "date": dt.date.today().isoformat(),
                               "cpus": os.cpu_count(), "torch": torch.__version__,
                               "k_test": K_TEST, "epochs": EPOCHS, **results},
                              indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
