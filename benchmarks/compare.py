"""The families side by side on the digits (chapter 8, The families side by side).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare.py        # writes results/compare.json
    .venv/bin/python benchmarks/compare.py --part features           # one part, updated in the file
    .venv/bin/python benchmarks/compare.py --train made8 vae         # only make sure of the models
    .venv/bin/python benchmarks/compare.py --quick --out /tmp/c.json # a smoke run, tiny budgets

One seed-0 model per family, the family benchmark's own model and training: loaded from
benchmarks/checkpoints/ where the family benchmark saved it, otherwise trained (and saved) with
that benchmark's training function. The leaderboard itself (test NLLs over 3 seeds) is read by
the chapter from the family benchmarks' JSON files; this script measures what they do not:

* sampling: milliseconds per 100 samples of every family's sampler with one torch thread
  (diffusion and flow matching at several step counts), the best of 3 timings; the Fréchet
  digits distance (FDD) of 350 samples against the test split (3 sampling seeds) where the
  family benchmark has not measured it with that protocol;
* likelihood: milliseconds per image and the Monte Carlo error of each likelihood estimator at
  several budgets on the first 100 test images (IW dequantization k, IWAE k, diffusion's
  stratified K, flow matching's Hutchinson probes P);
* features: a linear probe (logistic regression on 100 labelled training digits, 10 per class;
  10 draws of the labelled set) on each model's representation, and on the pixels;
* samples: 16 samples per family for the chapter's figure, diffusion and flow matching at
  several step counts from the same noise.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from dgm import data, metrics

from common import best_seconds, checkpoint, spread, write_results

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "compare.json"
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ["made8", "spline_flow", "vae", "gan", "diffusion", "flow_matching"]


def family_json(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load_or_train(name: str, quick: bool = False):
    """The seed-0 model `name` in eval mode: from its checkpoint, else trained and saved.

    Quick runs train for a few epochs and save nothing (and never read a checkpoint).
    """
    import diffusion as diffusion_bench
    import flow_matching as fm_bench
    import flows as flows_bench
    import gans as gans_bench
    import vae as vae_bench

    path = checkpoint(name)
    if name == "made8":
        build = lambda: flows_bench.DigitsMADE(flows_bench.MADE_ORDERINGS)
        train = lambda: flows_bench.train_made(flows_bench.MADE_ORDERINGS, 0, 2 if quick else 400)[0]
    elif name == "spline_flow":
        build = lambda: flows_bench.spline_flow(0)

        def train():
            flow = flows_bench.spline_flow(0)
            flows_bench.train_spline_flow(flow, 0, 2 if quick else 400)
            return flow
    elif name == "vae":
        config = family_json("vae")["config"]
        build = lambda: vae_bench.VAE(likelihood="logistic", **config)
        train = lambda: vae_bench.train_vae("logistic", 0, 2 if quick else 800, config)[0]
    elif name == "gan":
        build = lambda: torch.nn.ModuleDict(dict(zip("GD", gans_bench.digits_gan("GAN", 0))))

        def train():
            G, D = gans_bench.digits_gan("GAN", 0)
            gans_bench.train_digits_gan(G, D, "GAN", 0, 20 if quick else gans_bench.DIGITS_STEPS)
            return torch.nn.ModuleDict({"G": G, "D": D})
    elif name == "diffusion":
        def build():
            torch.manual_seed(0)
            return diffusion_bench.DDPM()

        def train():
            model = build()
            diffusion_bench.train_digits(model, 2 if quick else diffusion_bench.EPOCHS)
            return model
    elif name == "flow_matching":
        build = fm_bench.digits_model

        def train():
            model = fm_bench.digits_model()
            fm_bench.train_digits_model(model, 2 if quick else fm_bench.DIGITS_EPOCHS, data.digits("val"))
            return model
    else:
        raise ValueError(f"unknown model {name!r}; one of {MODELS}")
    if path.exists() and not quick:
        model = build()
        model.load_state_dict(torch.load(path))
        return model.eval()
    print(f"training {name} (no checkpoint at {path})", flush=True)
    start = time.perf_counter()
    model = train()
    print(f"  {name}: {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    if not quick:
        torch.save(model.state_dict(), path)
    return model.eval()


N_SAMPLES, SAMPLE_SEEDS, LIKELIHOOD_IMAGES = 350, [0, 1, 2], 100
DIFFUSION_STEPS = [("DDPM", 1.0, 1000), ("DDPM", 1.0, 250), ("DDPM", 1.0, 50), ("DDIM", 0.0, 50),
                   ("DDIM", 0.0, 10)]
FM_STEPS = [("heun", 50), ("heun", 10), ("euler", 10), ("euler", 4)]
SLIDER_STEPS = [4, 10, 20, 50, 250]  # network evaluations (Heun: half as many steps)
FEATURE_T = 100  # the diffusion step of the noisy input to the networks (features part)


def levels(y: torch.Tensor) -> torch.Tensor:
    """The levels 0..16 whose bins of [0, 1) hold the flow's samples y (clamped)."""
    return (y * data.DIGITS_LEVELS).floor().clamp(0, data.DIGITS_LEVELS - 1).long()


def samplers(models: dict) -> dict:
    """name -> (family, what, function n -> n digits (torch.long)) for every sampler."""
    from dgm.flow_matching import unit_to_digits

    flow, ddpm, fm = models["spline_flow"], models["diffusion"], models["flow_matching"]
    out = {
        "GAN": ("GAN", "one pass of G", lambda n: models["gan"]["G"].sample(n)),
        "spline flow": ("flow", "one pass of the inverse flow", lambda n: levels(flow.sample(n))),
        "VAE": ("VAE", "one pass of the decoder", models["vae"].sample),
        "MADE mixture": ("MADE", "64 sequential passes", models["made8"].sample),
    }
    for kind, eta, steps in DIFFUSION_STEPS:
        out[f"{kind} {steps}"] = ("diffusion", f"{steps} network passes",
                                  lambda n, e=eta, s=steps: ddpm.sample(n, steps=s, eta=e))
    for method, steps in FM_STEPS:
        evaluations = steps * (2 if method == "heun" else 1)
        out[f"FM {method.capitalize()} {steps}"] = (
            "flow matching", f"{evaluations} network passes",
            lambda n, m=method, s=steps: unit_to_digits(fm.sample(n, steps=s, method=m)))
    return out


def measured_fdd(name: str) -> dict | None:
    """The FDD of sampler `name` where its family benchmark measured it with this protocol
    (350 samples against the test split, 3 seeds), else None."""
    if name in ("GAN", "VAE"):  # gans.py: 3 training seeds, one set of 350 samples each
        digits = family_json("gans").get("digits", {})
        key = "GAN" if name == "GAN" else "VAE (chapter 3), samples x ~ p(x | z)"
        if digits.get("n") == N_SAMPLES and key in digits.get("models", {}):
            return {**digits["models"][key]["fdd"], "over": "3 training seeds", "source": "gans.json"}
    for family, rows in (("diffusion", "samplers"), ("flow_matching", "samplers")):
        for row in family_json(family).get("digits", {}).get(rows, []):
            label = (f"{row['sampler']} {row['steps']}" if family == "diffusion"
                     else f"FM {row['method'].capitalize()} {row['steps']}")
            if label == name:
                return {**row["fdd"], "over": "3 sampling seeds", "source": f"{family}.json"}
    return None


def sampling_part(models: dict, quick: bool) -> dict:
    """ms per 100 samples (one thread, best of 3) and FDD against the test split."""
    x_test = data.digits("test")
    n = 20 if quick else N_SAMPLES
    out = {}
    for name, (family, what, draw) in samplers(models).items():
        if quick and "1000" in name:
            continue
        torch.manual_seed(0)
        once = best_seconds(lambda: draw(10 if quick else 100), repeat=1)
        seconds = once if once > 10 else min(once, best_seconds(lambda: draw(10 if quick else 100), 2))
        fdd = None if quick else measured_fdd(name)
        if fdd is None:
            values = []
            for seed in SAMPLE_SEEDS[:1] if quick else SAMPLE_SEEDS:
                torch.manual_seed(seed)
                values.append(metrics.frechet_digits_distance(draw(n), x_test))
            fdd = {**spread(values), "over": "3 sampling seeds", "source": "compare.py"}
        out[name] = {"family": family, "what": what, "ms_per_100": 1000 * seconds, "fdd": fdd}
        print(f"  {name}: {1000 * seconds:.0f} ms / 100, FDD {fdd['mean']:.2f}", flush=True)
    floor = family_json("gans").get("digits", {})
    return {"n": n, "threads": torch.get_num_threads(), "reference": "test split",
            "floor": floor.get("floor"), "train_vs_test": floor.get("baselines", {}).get(
                "real digits, training split"), "samplers": out}


def likelihood_part(models: dict, quick: bool) -> dict:
    """Each estimator at several budgets on the first test images: estimate, MC error, cost.

    Two independent draws per budget; their difference gives the Monte Carlo standard error
    of the mean (dgm.metrics.paired_estimate), the time of one draw the ms per image.
    """
    from dgm.flows import dequantization_bound
    from dgm.flow_matching import digits_nll_bound

    x = data.digits("test")[: 8 if quick else LIKELIHOOD_IMAGES]
    flow, vae, ddpm, fm, made = (models[k] for k in ["spline_flow", "vae", "diffusion",
                                                     "flow_matching", "made8"])
    gen = torch.Generator()

    def fm_draw(p):
        return torch.stack([digits_nll_bound(fm, x, steps=4 if quick else 20, generator=gen)
                            for _ in range(p)]).mean(0)

    def seeded(draw):  # two independent draws: torch's global seed 0, then 1
        return lambda k: [(torch.manual_seed(s), gen.manual_seed(s), draw(k))[2] for s in (0, 1)]

    estimators = {  # family -> (what, budget's name, budgets, k -> two draws per image)
        "flow": ("importance-weighted dequantization bound", "k", [1, 10, 100, 1000],
                 lambda k: dequantization_bound(flow, x, draws=2, per_image=True, k=k)),
        "VAE": ("IWAE estimate (a stochastic bound that tightens with k)", "k", [1, 10, 100, 1000],
                seeded(lambda k: -vae.log_prob(x, k=k))),
        "diffusion": ("the valid bound, K strata of t", "K", [10, 100, 1000],
                      seeded(lambda k: ddpm.nll_bound(x, t_samples=k))),
        "flow matching": ("the valid bound, RK4 20 steps, P draws of u and probe averaged", "P",
                          [1, 4, 16], seeded(fm_draw)),
    }
    out = {}
    with torch.no_grad():
        start = time.perf_counter()
        exact = -made.log_prob(x)
        out["MADE"] = {"what": "exact", "budget": None, "rows": [{
            "budget": 1, "nll_nats": exact.mean().item(), "mc_se": 0.0,
            "ms_per_image": 1000 * (time.perf_counter() - start) / len(x)}]}
    for family, (what, budget, values, draw) in estimators.items():
        rows = []
        for k in values[:2] if quick else values:
            start = time.perf_counter()
            a, b = draw(k)
            seconds = (time.perf_counter() - start) / 2
            estimate, se = metrics.paired_estimate(a.detach(), b.detach())
            rows.append({"budget": k, "nll_nats": estimate, "mc_se": se,
                         "ms_per_image": 1000 * seconds / len(x)})
            print(f"  {family} {budget} = {k}: {estimate:.2f} +- {se:.3f}, "
                  f"{rows[-1]['ms_per_image']:.1f} ms / image", flush=True)
        out[family] = {"what": what, "budget": budget, "rows": rows}
    return {"images": len(x), "split": "the first test images", "estimators": out}


def representations(models: dict) -> dict:
    """name -> function digits -> features (n, d), the same for every family."""
    from dgm.flow_matching import digits_to_unit

    flow, vae, gan, made = (models[k] for k in ["spline_flow", "vae", "gan", "made8"])
    ddpm, fm = models["diffusion"], models["flow_matching"]
    centre = lambda x: (x.float() + 0.5) / data.DIGITS_LEVELS  # the bin centres in [0, 1)
    ab = ddpm.schedule.alpha_bar[FEATURE_T - 1]
    ratio = ((1 - ab) / ab).sqrt().item()  # sigma / a at the diffusion step FEATURE_T
    t_fm = ratio / (1 + ratio)             # the same sigma / a on the linear path

    def hidden(net, run):
        """The input of the network's last 1x1 convolution: 64 channels x 64 pixels."""
        grabbed = []
        handle = net.conv_out.register_forward_hook(lambda m, i, o: grabbed.append(i[0]))
        try:
            run()
        finally:
            handle.remove()
        return grabbed[0].flatten(1)

    def ddpm_features(x):
        torch.manual_seed(0)
        t = torch.full((len(x),), FEATURE_T)
        xt = ddpm.schedule.q_sample(ddpm.levels[x], t)
        return hidden(ddpm.net, lambda: ddpm.denoise(xt, t))

    def fm_features(x):
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        t = torch.full((len(x),), t_fm)
        xt, _ = fm.path.sample(digits_to_unit(x, g), torch.randn(len(x), 64), t)
        return hidden(fm.net, lambda: fm.velocity(xt, t))

    return {
        "pixels": lambda x: x.float(),
        "VAE mu(x)": lambda x: vae.encode(x)[0],
        "flow z = f(x)": lambda x: flow(centre(x))[0],
        "GAN discriminator, last hidden layer": lambda x: gan["D"].net[:-1](2 * centre(x) - 1),
        "MADE hidden layer": made.features,
        f"diffusion network, t = {FEATURE_T}": ddpm_features,
        f"flow-matching network, t = {t_fm:.3f}": fm_features,
    }


def features_part(models: dict, quick: bool, labelled: int = 100, draws: int = 10) -> dict:
    """Test accuracy of a logistic regression on `labelled` training digits (10 per class),
    C chosen by 5-fold cross-validation on them, mean and sd over `draws` labelled sets."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train = data.digits("train", labels=True)
    x_test, y_test = data.digits("test", labels=True)
    draws = 2 if quick else draws
    picks = []
    for d in range(draws):
        g = torch.Generator().manual_seed(d)
        picks.append(torch.cat([(y_train == c).nonzero()[:, 0][torch.randperm(
            int((y_train == c).sum()), generator=g)[: labelled // 10]] for c in range(10)]))
    out = {}
    for name, features in representations(models).items():
        with torch.no_grad():
            f_train, f_test = features(x_train).numpy(), features(x_test).numpy()
        accuracies = []
        for idx in picks:
            probe = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                                 {"logisticregression__C": [0.001, 0.01, 0.1, 1.0, 10.0]}, cv=5)
            probe.fit(f_train[idx.numpy()], y_train[idx].numpy())
            accuracies.append(float(probe.score(f_test, y_test.numpy())))
        out[name] = {"dim": int(f_train.shape[1]), "accuracy": statistics.fmean(accuracies),
                     "accuracy_sd": statistics.stdev(accuracies), "values": accuracies}
        print(f"  {name} ({f_train.shape[1]} dims): {100 * out[name]['accuracy']:.1f} % "
              f"(sd {100 * out[name]['accuracy_sd']:.1f})", flush=True)
    return {"labelled": labelled, "draws": draws, "test_images": len(x_test),
            "probe": "standardized features, logistic regression, C by 5-fold CV on the labelled set",
            "representations": out}


def samples_part(models: dict, quick: bool, n: int = 16) -> dict:
    """n samples of every family, and DDIM / Heun at SLIDER_STEPS from one fixed noise."""
    from dgm.flow_matching import unit_to_digits

    out = {}
    for name, (family, _, draw) in samplers(models).items():
        if name in ("GAN", "spline flow", "VAE", "MADE mixture", "DDPM 250"):
            torch.manual_seed(0)
            out[family] = draw(n).tolist()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(n, 64, generator=g)
    by_steps = {}
    for steps in SLIDER_STEPS[:2] if quick else SLIDER_STEPS:
        by_steps[str(steps)] = {
            "DDIM": models["diffusion"].sample_from(noise, steps=steps, eta=0.0).tolist(),
            "FM Heun": unit_to_digits(models["flow_matching"].sample_from(
                noise, steps=max(steps // 2, 1), method="heun")).tolist()}
    return {"n": n, "default": out, "by_steps": by_steps,
            "steps_are": "network evaluations: DDIM steps, Heun steps x 2"}


PARTS = {"sampling": sampling_part, "likelihood": likelihood_part, "features": features_part,
         "samples": samples_part}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (written only with --out)")
    parser.add_argument("--part", choices=list(PARTS), nargs="+", help="run these parts only")
    parser.add_argument("--train", nargs="+", choices=MODELS, help="only load or train these models")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, help=f"where to write (default {OUT})")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train:
        for name in args.train:
            load_or_train(name, args.quick)
        return 0
    out = args.out or OUT
    if args.quick and args.out is None:
        print("quick run: nothing written (give --out to keep it)")
    models = {name: load_or_train(name, args.quick) for name in MODELS}
    results = json.loads(out.read_text()) if out.exists() else {}
    for name, run in PARTS.items():
        if args.part is None or name in args.part:
            print(name, flush=True)
            results[name] = run(models, args.quick)
            results[f"date_{name}"] = time.strftime("%Y-%m-%d")
            if not args.quick or args.out:  # each part is kept as soon as it is done
                write_results(out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
