"""Flow-matching models of the flow-matching chapter, trained longer than in the chapter.

    .venv/bin/python benchmarks/flow_matching.py                 # both parts; writes benchmarks/results/flow_matching.json
    .venv/bin/python benchmarks/flow_matching.py --part digits   # only the digits (updates its part of the file)
    .venv/bin/python benchmarks/flow_matching.py --part toys     # only the 2D toys
    .venv/bin/python benchmarks/flow_matching.py --part seeds    # the digits model again with seeds 1 and 2
    .venv/bin/python benchmarks/flow_matching.py --quick         # a smoke run with tiny budgets (nothing written)
    python benchmarks/flow_matching.py --data mnist --device cuda   # 28x28: results/flow_matching-mnist.json

* **toys**: ``FlowMatching(toy_net(), 2)`` (linear path, independent coupling) on 8gaussians,
  checkerboard, moons and the 5x5 grid, 3 seeds each. Reported: the exact held-out
  ``NLL - entropy`` (the KL divergence from the true density, with its standard error) on 20 000
  fresh points where the toy has a known density, by RK4 with the exact divergence; components
  covered and the share of high-quality samples (dgm.metrics.mode_coverage, 10 000 samples) on the
  two mixtures.
* **digits**: ``FlowMatching(DigitsDenoiser(64, 64), 64, num_classes=10, p_uncond=0.2)`` on the
  1000 dequantized training digits, early stopping on the validation bound. Reported: the valid
  upper bound on -log P(x) in nats per test image (dequantization, eq-fm-digits-bound; two
  independent draws of the dequantization and of Hutchinson's probes give the Monte Carlo error,
  dgm.metrics.paired_estimate) with RK4 at 10, 20, 40 and 80 steps, the same dequantizations for each,
  and the differences between step counts image by image (the solver's error); for several
  solvers and step counts the digits scores (FDD, KID, precision/recall, density/coverage) of 350
  unconditional samples against the test split (3 sampling seeds) and the wall time per 100
  samples; classifier-free guidance at several weights (the classifier's accuracy on the
  requested digit, FDD).
* **seeds**: the digits model and training again with seeds 1 and 2, and the test bound of each
  with RK4 at the finest step count, for the spread over training seeds.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from functools import partial

from common import (best_val_epoch, checkpoint, denoiser_network, per_image_summary, run_parts,
                    sample_scores, scaled_main, spread, two_part_arguments, write_results)

from dgm import data, metrics
from dgm.diffusion import DigitsDenoiser, train_diffusion
from dgm.flow_matching import SOLVERS, FlowMatching, digits_nll_bound, digits_to_unit, toy_net, unit_to_digits

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "flow_matching.json"

TOYS_KL = ["8gaussians", "checkerboard", "moons"]
TOYS_MODES = ["8gaussians", "grid"]
TOY_EPOCHS, DIGITS_EPOCHS, EVAL_EVERY = 150, 600, 25
BOUND_STEPS = [10, 20, 40, 80]
SAMPLERS = [("euler", 10), ("euler", 50), ("heun", 10), ("heun", 50), ("rk4", 25)]
SAMPLE_SEEDS = [0, 1, 2]
GUIDANCE = [0.0, 1.0, 2.0, 4.0]



def toys_part(quick: bool) -> dict:
    results, epochs, n_eval = {}, 1 if quick else TOY_EPOCHS, 500 if quick else 20_000
    for toy in dict.fromkeys(TOYS_KL + TOYS_MODES):
        runs = []
        for seed in [0] if quick else [0, 1, 2]:
            torch.manual_seed(seed)
            model = FlowMatching(toy_net(), 2)
            start = time.perf_counter()
            train_diffusion(model, data.toy(toy, 20_000, seed=seed), epochs=epochs, batch_size=256,
                            lr=2e-3, ema=0.995, seed=seed)
            run = {"seed": seed, "train_minutes": (time.perf_counter() - start) / 60}
            if toy in TOYS_KL:
                x = data.toy(toy, n_eval, seed=1000 + seed)
                gap = data.toy_log_prob(toy, x).double() - model.log_prob(x, steps=20, method="rk4").double()
                run.update(kl_nats=gap.mean().item(), kl_se_nats=(gap.std() / math.sqrt(len(x))).item())
            if toy in TOYS_MODES:
                torch.manual_seed(100 + seed)
                covered, quality = metrics.mode_coverage(model.sample(10_000, steps=50, method="heun"), toy)
                run.update(covered=covered, high_quality=quality)
            runs.append(run)
            print(toy, run, flush=True)
        entry = {"runs": runs, "epochs": epochs}
        for key in ["kl_nats", "covered", "high_quality"]:
            if key in runs[0]:
                entry[key] = spread([r[key] for r in runs])
        if toy in TOYS_KL:
            entry["entropy_nats"] = data.toy_entropy(toy)
        if toy in TOYS_MODES:
            entry["components"] = len(data.toy_components(toy)[0])
        results[toy] = entry
    return results


def test_bounds(model, x, step_counts, seed: int = 1) -> dict:
    """The bound with RK4 at each step count: two draws per image, the same two dequantizations
    for every step count (fresh probes), so that the step counts can be compared image by image.

    Per step count: the mean and its Monte Carlo error (dgm.metrics.paired_estimate) and the
    time per 100 images; per pair of step counts, the mean difference and its standard error
    over the images (the solver's error, with the probes' noise).
    """
    out, per_image = {}, {}
    for steps in step_counts:
        t0 = time.perf_counter()
        draws = []
        for k in range(2):
            u_gen, probe_gen = torch.Generator().manual_seed(seed + k), torch.Generator().manual_seed(100 + seed + k)
            draws.append(digits_nll_bound(model, x, steps=steps, generator=u_gen, probe_generator=probe_gen))
        mean, se = metrics.paired_estimate(*draws)
        per_image[steps] = (draws[0] + draws[1]).double() / 2
        out[str(steps)] = {"test_bound": mean, "test_bound_mc_se": se,
                           "seconds_per_100": (time.perf_counter() - t0) / (2 * len(x) / 100)}
        print(f"   RK4 {steps} steps: test bound {mean:.2f} +- {se:.3f}", flush=True)
    finest = max(step_counts)
    diffs = {f"{k}-{finest}": {"mean": (per_image[k] - per_image[finest]).mean().item(),
                               "se": ((per_image[k] - per_image[finest]).std() / math.sqrt(len(x))).item()}
             for k in step_counts if k != finest}
    return {"bounds": out, "solver_differences": diffs}


def dequantization_spread(model, x, steps: int = 10, seed: int = 7) -> dict:
    """How much the bound varies with the dequantization u, separated from the probes' noise.

    Three draws per image: (u_1, probes 1), (u_1, probes 2), (u_2, probes 3). The first two
    differ only by the probes, the first and last by both, so
    Var_u = (E[(B_11 - B_23)^2] - E[(B_11 - B_12)^2]) / 2, image by image and averaged. If
    log p(x_tilde) is roughly normal over u, the Jensen gap of the dequantization bound,
    E_u[-log p] - (-log E_u p), is about Var_u / 2: how far the bound lies above the
    model's own -log P(x).
    """
    def draw(u_seed, probe_seed):
        return digits_nll_bound(model, x, steps=steps, generator=torch.Generator().manual_seed(u_seed),
                                probe_generator=torch.Generator().manual_seed(probe_seed)).double()

    b11, b12, b23 = draw(seed, 1000 + seed), draw(seed, 2000 + seed), draw(seed + 1, 3000 + seed)
    var_probe = ((b11 - b12) ** 2).mean().item() / 2
    var_total = ((b11 - b23) ** 2).mean().item() / 2
    var_u = max(var_total - var_probe, 0.0)
    return {"steps": steps, "var_probes": var_probe, "var_u": var_u, "gap_estimate": var_u / 2}


def digits_model(seed: int = 0) -> FlowMatching:
    """The benchmark's (untrained) class-conditional flow-matching model of the digits."""
    torch.manual_seed(seed)
    return FlowMatching(DigitsDenoiser(64, 64), 64, num_classes=10, p_uncond=0.2)


def train_digits_model(model: FlowMatching, epochs: int, x_val, log=None, seed: int = 0) -> dict:
    """Train in place with early stopping on the validation bound; returns the history."""
    x_train, y_train = data.digits("train", labels=True)
    gen = torch.Generator()

    def val(m):
        gen.manual_seed(0)  # the same u and probes at every evaluation
        return digits_nll_bound(m, x_val, steps=10, generator=gen).mean().item()

    return train_diffusion(model, x_train, y_train, epochs=epochs, batch_size=50, lr=1e-3, ema=0.99,
                           augment=digits_to_unit, val=val, eval_every=min(EVAL_EVERY, epochs), seed=seed, log=log)


def digits_part(quick: bool, save: str | None = None, load: str | None = None,
                previous: dict | None = None) -> dict:
    epochs = 2 if quick else DIGITS_EPOCHS
    x_val, x_test = data.digits("val"), data.digits("test")
    if quick:
        x_val, x_test = x_val[:8], x_test[:8]
    model = digits_model()
    print("digits: FlowMatching, conditional, linear path", flush=True)
    start = time.perf_counter()
    gen = torch.Generator()
    if load:  # evaluate a model saved by --save; the training record comes from the file
        model.load_state_dict(torch.load(load))
        model.eval()
        history, minutes = previous["history"], previous["train_minutes"]
    else:
        history = train_digits_model(model, epochs, x_val, log=lambda s: print(
            "  ", s, f"({time.perf_counter() - start:.0f} s)", flush=True))
        minutes = (time.perf_counter() - start) / 60
    best = best_val_epoch(history)
    bounds = test_bounds(model, x_test, BOUND_STEPS[:2] if quick else BOUND_STEPS)
    bounds["dequantization"] = dequantization_spread(model, x_test)
    print(f"   dequantization: {bounds['dequantization']}", flush=True)
    if save or not (quick or load):  # by default where benchmarks/compare.py looks for it
        torch.save(model.state_dict(), save or checkpoint("flow_matching"))
    gen.manual_seed(2)
    val_bound = digits_nll_bound(model, x_val, steps=20, generator=gen).mean().item()

    samplers = []
    for method, steps in SAMPLERS[:1] if quick else SAMPLERS:
        scores, seconds = [], []
        for seed in SAMPLE_SEEDS[:1] if quick else SAMPLE_SEEDS:
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            xs = unit_to_digits(model.sample(350, steps=steps, method=method))
            seconds.append((time.perf_counter() - t0) / 3.5)
            scores.append(metrics.digits_scores(xs, x_test))
        fdds = [s["fdd"] for s in scores]
        samplers.append({"method": method, "steps": steps, "evaluations": steps * SOLVERS[method],
                         "fdd": spread(fdds), "scores": {k: spread([s[k] for s in scores]) for k in scores[0]},
                         "seconds_per_100": statistics.fmean(seconds)})
        print(f"   {method} {steps} steps: FDD {statistics.fmean(fdds):.2f}, "
              f"{statistics.fmean(seconds):.2f} s / 100", flush=True)

    classifier = metrics.digits_classifier()
    labels = torch.arange(10).repeat_interleave(35)
    guidance = []
    for w in GUIDANCE:
        torch.manual_seed(7)
        xs = unit_to_digits(model.sample(len(labels), steps=25, method="heun", y=labels, w=w))
        with torch.no_grad():
            acc = (classifier(xs).argmax(1) == labels).float().mean().item()
        guidance.append({"w": w, "accuracy": acc, "fdd": metrics.frechet_digits_distance(xs, x_test)})
        print(f"   guidance w = {w}: accuracy {100 * acc:.1f} %, FDD {guidance[-1]['fdd']:.2f}", flush=True)
    return {
        "config": {"model": "FlowMatching(DigitsDenoiser(64, 64), 64, num_classes=10, p_uncond=0.2): linear path, "
                            "independent coupling, 6 residual 3x3 conv layers of 64 channels",
                   "training": f"AdamW lr 1e-3, batch 50, EMA 0.99, up to {epochs} epochs on dequantized digits "
                               f"scaled to [-1, 1), validation bound (RK4, 10 steps, one draw) every "
                               f"{min(EVAL_EVERY, epochs)} epochs, best kept",
                   "bound": "uniform dequantization (Jensen) + the ODE's log-density by RK4 with Hutchinson's "
                            "estimator (a fresh Rademacher probe per evaluation); unconditional (null label)"},
        **bounds, "val_bound": val_bound, "best_epoch": best, "train_minutes": minutes,
        "parameters": sum(p.numel() for p in model.parameters()), "history": history,
        "samplers": samplers, "sample_seeds": SAMPLE_SEEDS[:1] if quick else SAMPLE_SEEDS,
        "n_samples": 350, "guidance": guidance, "guidance_samples": len(labels),
    }


def seeds_part(quick: bool) -> dict:
    """The digits part's model trained again with seeds 1 and 2: the test bound (RK4 with the
    finest step count, two draws) of each, for the spread over training seeds."""
    epochs, finest = (2, 4) if quick else (DIGITS_EPOCHS, max(BOUND_STEPS))
    x_val, x_test = data.digits("val"), data.digits("test")
    if quick:
        x_val, x_test = x_val[:8], x_test[:8]
    runs = []
    for seed in [1, 2]:
        model = digits_model(seed)
        print(f"digits: FlowMatching, seed {seed}", flush=True)
        start = time.perf_counter()
        history = train_digits_model(model, epochs, x_val, seed=seed)
        minutes = (time.perf_counter() - start) / 60
        bound = test_bounds(model, x_test, [finest])["bounds"][str(finest)]
        runs.append({"seed": seed, "steps": finest, "test_bound": bound["test_bound"],
                     "test_bound_mc_se": bound["test_bound_mc_se"], "best_epoch": best_val_epoch(history),
                     "train_minutes": minutes})
    return {"what": "the digits part's model and training with seeds 1, 2", "runs": runs}


SCALED_EPOCHS = 100  # the 28x28 run's default budget (--epochs overrides it)
SCALED_SAMPLE_STEPS = 25  # Heun steps of the 28x28 run's samples (50 network evaluations)


def scaled_model(dim: int, levels: int, quick: bool = False) -> FlowMatching:
    """The 28x28 run's (untrained) model: unconditional, linear path; seed 0. The network's
    condition has 32 features, the time features of an unconditional FlowMatching (emb = 32)."""
    torch.manual_seed(0)
    return FlowMatching(DigitsDenoiser(32, dim, dim=dim, **denoiser_network(quick)), dim)


def scaled_run(images, epochs: int, device, quick: bool) -> dict:
    """FlowMatching with the chapter's convolutional network (DigitsDenoiser) at 784 dimensions,
    unconditional, linear path, early stopping on the validation bound; the test bound
    (eq-fm-digits-bound, RK4 with 20 steps, Hutchinson's estimator) twice per image with
    independent dequantizations and probes, for its Monte Carlo error; and the scores of samples
    by Heun's method with SCALED_SAMPLE_STEPS steps (common.sample_scores)."""
    network, model = denoiser_network(quick), scaled_model(images.dim, images.levels, quick)
    steps, levels = (2 if quick else 20), images.levels
    x_val, x_test = images.val[:1000].to(device), images.test.to(device)
    gen = torch.Generator()

    def bound(m, x, seed):
        gen.manual_seed(seed)
        return torch.cat([digits_nll_bound(m, x[i:i + 500], steps=steps, generator=gen, levels=levels)
                          for i in range(0, len(x), 500)])

    history = train_diffusion(model, images.train, epochs=epochs, batch_size=128, lr=1e-3, ema=0.999,
                              augment=partial(digits_to_unit, levels=levels), seed=0, device=device,
                              eval_every=max(1, min(EVAL_EVERY, epochs)),
                              val=lambda m: bound(m, x_val, 0).mean().item())
    a, b = bound(model, x_test, 1), bound(model, x_test, 2)
    sample_steps = 2 if quick else SCALED_SAMPLE_STEPS
    scores = sample_scores(images, lambda k: unit_to_digits(
        model.sample(k, steps=sample_steps, method="heun"), levels), device, quick)
    return {"sampler": f"heun, {sample_steps} steps", **scores,
            "model": "dgm.flow_matching.FlowMatching, linear path, DigitsDenoiser", "network": network,
            "what": f"the dequantization bound (eq-fm-digits-bound) with RK4 ({steps} steps) and "
                    "Hutchinson's estimator, two draws per test image: unbiased for the solver's "
                    "value of an upper bound on the NLL (the solver's error is not bounded)",
            "ode": f"rk4, {steps} steps, Hutchinson", **per_image_summary(a, b, images.dim, "test_nll"),
            "val_bound_nats": min(history["val"]), "best_epoch": best_val_epoch(history),
            "steps": images.steps(epochs, 128),
            "parameters": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> int:
    args = two_part_arguments(__doc__, argv, parts=("digits", "toys", "seeds"), extra=[
        ("--save", "save the trained digits model's state_dict here instead of benchmarks/checkpoints/"),
        ("--load", "evaluate this saved digits model instead of training one (keeps the training "
                   "record of the results file)")])
    if args.data != "digits":
        return scaled_main("flow_matching", args, scaled_run, default_epochs=SCALED_EPOCHS)
    previous = (json.loads(OUT.read_text()).get("digits") if OUT.exists() else None)
    results = run_parts(OUT, args, {"toys": toys_part, "digits": lambda quick: digits_part(
        quick, args.save, args.load, previous), "seeds": seeds_part})
    if results is not None:
        write_results(OUT, results, args.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
