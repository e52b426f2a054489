"""Diffusion models of the diffusion chapter, trained longer than in the chapter.

    .venv/bin/python benchmarks/diffusion.py                 # both parts; writes benchmarks/results/diffusion.json
    .venv/bin/python benchmarks/diffusion.py --part digits   # only the digits (updates its part of the file)
    .venv/bin/python benchmarks/diffusion.py --part toys     # only the 2D toys
    .venv/bin/python benchmarks/diffusion.py --part seeds    # the digits model with training seeds 1 and 2
    .venv/bin/python benchmarks/diffusion.py --quick         # a smoke run with tiny budgets (nothing written)
    python benchmarks/diffusion.py --data mnist --device cuda   # 28x28: writes results/diffusion-mnist.json

* **digits**: ``dgm.diffusion.DDPM()`` with its defaults (categorical denoiser, convolutional
  network, cosine schedule with sigma_1 = 0.02), trained on the 1000 training digits with early
  stopping on the validation bound. Reported: the valid upper bound on -log P(x) in nats per test
  image with all 1000 terms evaluated twice (the mean and its Monte Carlo standard error; target:
  below 95, aim below 89), the per-step means of the terms on the test and validation splits,
  where the bound goes by range of t, training minutes and parameters; the same network as an
  epsilon-predictor, first under the default schedule (one change: the parameterization), then
  under the linear schedule with sigma_1 = 0.01 (both changed); and for each sampler (DDPM / DDIM, 1000 to 10 steps) the Fréchet
  digits distance of 350 samples to the test split (3 sampling seeds), the other scores of
  dgm.metrics.digits_scores (KID, precision/recall, density/coverage) on the same samples, and the
  wall time per 100 samples.
* **seeds**: the digits part's model trained with seeds 1 and 2, each with its test bound (all
  1000 terms, twice): the spread of the bound over training seeds.
* **toys**: ``GaussianDiffusion`` on 8gaussians and the 5x5 grid, 3 seeds each: components covered
  and the share of high-quality samples (dgm.metrics.mode_coverage on 10 000 samples).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from common import (best_val_epoch, checkpoint, denoiser_network, per_image_summary, run_parts,
                    sample_scores, scaled_main, spread, two_part_arguments, write_results)

from dgm import data, metrics
from dgm.diffusion import DDPM, GaussianDiffusion, Schedule, train_diffusion

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "diffusion.json"

EPOCHS, EVAL_EVERY = 120, 10
SAMPLERS = [("DDPM", 1.0, 1000), ("DDPM", 1.0, 250), ("DDIM", 0.0, 250), ("DDIM", 0.0, 50), ("DDPM", 1.0, 50),
            ("DDIM", 0.0, 10)]
SAMPLE_SEEDS = [0, 1, 2]
SEEDS = [0, 1, 2]  # training seeds: 0 in the digits part, the others in the seeds part
T_RANGES = [(1, 10), (10, 50), (50, 200), (200, 500), (500, 1001)]



def train_digits(model: DDPM, epochs: int, seed: int = 0) -> tuple[dict, float]:
    x_train, x_val = data.digits("train"), data.digits("val")
    start = time.perf_counter()
    history = train_diffusion(model, x_train, epochs=epochs, eval_every=min(EVAL_EVERY, epochs), seed=seed,
                              val=lambda m: m.nll_bound(x_val, t_samples=100).mean().item(),
                              log=lambda s: print("  ", s, f"({time.perf_counter() - start:.0f} s)", flush=True))
    return history, (time.perf_counter() - start) / 60


def per_t_means(terms: torch.Tensor) -> list[float]:
    """The mean over the images of each of the T terms, rounded for the JSON file."""
    return [float(f"{v:.5g}") for v in terms.mean(1).tolist()]


def evaluate_bound(model: DDPM, x_val, x_test) -> tuple[dict, torch.Tensor]:
    """All T terms on the test split twice (mean and Monte Carlo error), once on validation.

    The test bound is the mean of the two passes; its Monte Carlo standard error comes from
    their difference (dgm.metrics.paired_estimate). The per-t means of the terms (test: both
    passes pooled; validation) let the chapter recompute the bound with fewer steps or with
    other reverse variances without running the network. Returns the results for the JSON
    file and the pooled test terms, shape (T, 2N).
    """
    torch.manual_seed(1)
    prior = model.prior_kl(x_test)
    terms_a, terms_b = model.all_terms(x_test), model.all_terms(x_test)
    bound, mc_se = metrics.paired_estimate(prior + terms_a.sum(0), prior + terms_b.sum(0))
    test_terms = torch.cat([terms_a, terms_b], 1)
    torch.manual_seed(2)
    val_terms = model.all_terms(x_val)
    return {"test_bound": bound, "test_bound_mc_se": mc_se,
            "val_bound": (model.prior_kl(x_val) + val_terms.sum(0)).mean().item(),
            "prior": prior.mean().item(), "test_terms_mean": per_t_means(test_terms),
            "val_terms_mean": per_t_means(val_terms)}, test_terms


def digits_part(quick: bool) -> dict:
    epochs = 2 if quick else EPOCHS
    x_val, x_test = data.digits("val"), data.digits("test")
    if quick:
        x_val, x_test = x_val[:8], x_test[:8]
    torch.manual_seed(0)
    model = DDPM()
    print("digits: DDPM() with the categorical denoiser", flush=True)
    history, minutes = train_digits(model, epochs)
    if not quick:  # for benchmarks/compare.py
        torch.save(model.state_dict(), checkpoint("diffusion"))
    ev, test_terms = evaluate_bound(model, x_val, x_test)
    print(f"   test bound {ev['test_bound']:.2f} +- {ev['test_bound_mc_se']:.3f}, "
          f"validation {ev['val_bound']:.2f}", flush=True)
    per_range = {f"{a}-{b - 1}": test_terms[a - 1:b - 1].sum(0).mean().item() for a, b in T_RANGES}
    per_range["prior"] = ev["prior"]
    best = best_val_epoch(history)

    samplers = []
    for name, eta, steps in SAMPLERS:
        scores, seconds = [], []
        for seed in SAMPLE_SEEDS[:1] if quick else SAMPLE_SEEDS:
            torch.manual_seed(seed)
            start = time.perf_counter()
            xs = model.sample(350, steps=steps if not quick else min(steps, 10), eta=eta)
            seconds.append((time.perf_counter() - start) / 3.5)
            scores.append(metrics.digits_scores(xs, x_test))
        fdds = [s["fdd"] for s in scores]
        samplers.append({"sampler": name, "eta": eta, "steps": steps, "fdd": spread(fdds),
                         "scores": {k: spread([s[k] for s in scores]) for k in scores[0]},
                         "seconds_per_100": statistics.fmean(seconds)})
        print(f"   {name} {steps} steps: FDD {statistics.fmean(fdds):.2f}, {statistics.fmean(seconds):.2f} s / 100", flush=True)

    baselines = {}  # from the default, change the parameterization, then also the schedule
    for key, schedule, what in [("eps_cosine", None, "epsilon-predicting network, the default cosine schedule"),
                                ("eps_linear", Schedule.linear(1000), "epsilon-predicting network, linear schedule")]:
        print(f"digits: {what}", flush=True)
        torch.manual_seed(0)
        eps_model = DDPM(schedule, denoiser="eps")
        eps_history, eps_minutes = train_digits(eps_model, epochs)
        eps_ev = evaluate_bound(eps_model, x_val, x_test)[0]
        print(f"   test bound {eps_ev['test_bound']:.2f} +- {eps_ev['test_bound_mc_se']:.3f}", flush=True)
        baselines[key] = {"what": what, **eps_ev, "train_minutes": eps_minutes, "history": eps_history}
    return {
        "config": {"model": "DDPM() defaults: categorical denoiser, 6 residual 3x3 conv layers of 64 channels, "
                            "cosine schedule with sigma_1 = 0.02, T = 1000",
                   "training": f"AdamW lr 1e-3, batch 50, EMA 0.99, up to {epochs} epochs, validation bound "
                               f"(100-step estimate) every {EVAL_EVERY} epochs, best kept; t drawn with "
                               "p(t) proportional to the root mean square of its bin's terms (DDPM.t_probs)"},
        **ev, "best_epoch": best,
        "bound_by_t": per_range, "train_minutes": minutes,
        "parameters": sum(p.numel() for p in model.parameters()),
        "history": history, "samplers": samplers, "sample_seeds": SAMPLE_SEEDS[:1] if quick else SAMPLE_SEEDS,
        **baselines,
    }


def seeds_part(quick: bool) -> dict:
    """The digits DDPM of the digits part, trained again with the other seeds: the test bound
    (all T terms, twice) of each, for the spread over training seeds."""
    epochs = 2 if quick else EPOCHS
    x_val, x_test = data.digits("val"), data.digits("test")
    if quick:
        x_val, x_test = x_val[:8], x_test[:8]
    runs = []
    for seed in SEEDS[1:]:
        torch.manual_seed(seed)
        model = DDPM()
        print(f"digits: DDPM(), seed {seed}", flush=True)
        history, minutes = train_digits(model, epochs, seed=seed)
        ev, _ = evaluate_bound(model, x_val, x_test)
        best = best_val_epoch(history)
        runs.append({"seed": seed, "test_bound": ev["test_bound"], "test_bound_mc_se": ev["test_bound_mc_se"],
                     "val_bound": ev["val_bound"], "best_epoch": best, "train_minutes": minutes})
        print(f"   test bound {ev['test_bound']:.2f} +- {ev['test_bound_mc_se']:.3f}", flush=True)
    return {"what": "the digits part's model and training with seeds " + ", ".join(map(str, SEEDS[1:])),
            "runs": runs}


def toys_part(quick: bool) -> dict:
    results, toy_epochs = {}, 1 if quick else 150
    for toy in ["8gaussians", "grid"]:
        runs = []
        for seed in [0] if quick else [0, 1, 2]:
            torch.manual_seed(seed)
            model = GaussianDiffusion(dim=2)
            start = time.perf_counter()
            train_diffusion(model, data.toy(toy, 20_000, seed=seed), epochs=toy_epochs, batch_size=256,
                            lr=2e-3, ema=0.995, seed=seed)
            minutes = (time.perf_counter() - start) / 60
            torch.manual_seed(100 + seed)
            covered, quality = metrics.mode_coverage(model.sample(10_000), toy)
            runs.append({"seed": seed, "covered": covered, "high_quality": quality, "train_minutes": minutes})
            print(f"{toy} seed {seed}: {covered} covered, {100 * quality:.1f} % high quality, {minutes:.1f} min", flush=True)
        results[toy] = {"runs": runs, "covered": spread([r["covered"] for r in runs]),
                        "high_quality": spread([r["high_quality"] for r in runs]),
                        "components": len(data.toy_components(toy)[0]), "epochs": toy_epochs}
    return results


SCALED_EPOCHS = 100  # the 28x28 run's default budget (--epochs overrides it)
SCALED_SAMPLE_STEPS = 100  # DDIM steps of the 28x28 run's samples


def scaled_model(dim: int, levels: int, quick: bool = False) -> DDPM:
    """The 28x28 run's (untrained) DDPM, categorical denoiser; seed 0."""
    torch.manual_seed(0)
    return DDPM(dim=dim, levels=levels, **denoiser_network(quick))


def scaled_run(images, epochs: int, device, quick: bool) -> dict:
    """DDPM (categorical denoiser, the chapter's convolutional network) at 784 pixels and 256
    levels, early stopping on a stratified estimate of the validation bound; the test bound (L_T
    plus one uniform draw of t in each of T_STRATA equal strata of 1..T, an unbiased estimate of
    the full bound) twice per image, so that its Monte Carlo error comes with it; and the scores
    of samples by DDIM with SCALED_SAMPLE_STEPS steps (common.sample_scores)."""
    network, model = denoiser_network(quick), scaled_model(images.dim, images.levels, quick)
    strata = 4 if quick else 100
    x_val, x_test = images.val[:1000].to(device), images.test.to(device)
    chunk = 500

    def bound(m, x):
        return torch.cat([m.nll_bound(x[i:i + chunk], t_samples=strata) for i in range(0, len(x), chunk)])

    history = train_diffusion(model, images.train, epochs=epochs, batch_size=128, lr=1e-3, ema=0.999,
                              eval_every=max(1, min(EVAL_EVERY, epochs)), seed=0, device=device,
                              val=lambda m: bound(m, x_val).mean().item())
    torch.manual_seed(1)
    a, b = bound(model, x_test), bound(model, x_test)
    sample_steps = 3 if quick else SCALED_SAMPLE_STEPS
    scores = sample_scores(images, lambda k: model.sample(k, steps=sample_steps, eta=0.0),
                           device, quick)
    return {"model": "dgm.diffusion.DDPM, categorical denoiser", "network": network,
            "what": f"L_T plus one draw of t in each of {strata} strata of 1..T, two draws per "
                    "test image: an unbiased estimate of the valid upper bound on the NLL",
            "t_strata": strata, **per_image_summary(a, b, images.dim, "test_nll"),
            "sampler": f"DDIM, {sample_steps} steps", **scores,
            "val_bound_nats": min(history["val"]), "best_epoch": best_val_epoch(history),
            "steps": images.steps(epochs, 128),
            "parameters": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> int:
    args = two_part_arguments(__doc__, argv, parts=("digits", "toys", "seeds"))
    if args.data != "digits":
        return scaled_main("diffusion", args, scaled_run, default_epochs=SCALED_EPOCHS)
    results = run_parts(OUT, args, {"toys": toys_part, "digits": digits_part, "seeds": seeds_part})
    if results is not None:
        results.pop("scores_note", None)  # the scores now come from the same run as the rest
        write_results(OUT, results, args.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
