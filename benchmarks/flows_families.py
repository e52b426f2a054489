"""Flow layer families compared on 2D toys, and learned linear mixing on the digits.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flows_families.py   # writes the JSON
    .venv/bin/python benchmarks/flows_families.py --quick   # a smoke run (not written)
    python benchmarks/flows_families.py --data mnist --device cuda   # the digits part at 28x28:
        writes results/flows_families-mnist.json

Writes benchmarks/results/flows_families.json with
- toys (8gaussians, checkerboard, moons): affine coupling (RealNVP), MAF (a reversing
  permutation between layers) and rational-quadratic spline coupling, each with 8 layers
  (each after an ActNorm), hidden widths chosen so that the parameter counts are about
  equal, and the same number of gradient steps (epochs x batches), keeping the best
  validation epoch. For each: KL(p_data || p_model) in nats on 20000 fresh points with
  its Monte Carlo standard error (dgm.flows.toy_kl), parameters, training seconds, and
  seconds to draw 10^4 samples and to evaluate log_prob at 10^4 points (single thread);
- digits: the chapter's spline flow (Logit, then 6 x [ActNorm, spline coupling], fixed
  alternating masks) against the same flow with an LULinear layer before each coupling,
  started as a random rotation (Glow) or as the identity; same epochs, best validation
  epoch; the test bound under uniform dequantization (20 noise draws) in nats per image
  and bits/dim, with its standard error over the 447 test images, and the paired
  difference to the fixed masks with its standard error.

--part toys or --part digits reruns one part and keeps the other from the existing JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
from pathlib import Path

import torch

from dgm import data
from dgm.flows import (
    MAF, ActNorm, Flow, Logit, LULinear, NeuralSpline, Permutation, RealNVP, SplineCoupling,
    dequantization_bound, dequantized_nll, toy_kl,
)
from dgm.train import fit

from common import add_scale_arguments, best_seconds, per_image_summary, scaled_main

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "flows_families.json"
TOYS = ["8gaussians", "checkerboard", "moons"]
N_LAYERS, TARGET_PARAMS = 8, 37_000


def maf_flow(dim: int, n_layers: int, hidden: int) -> Flow:
    """n_layers of [ActNorm, MAF], with the coordinate order reversed between layers."""
    layers = []
    for _ in range(n_layers):
        layers += [ActNorm(dim), MAF(dim, hidden), Permutation(torch.arange(dim).flip(0))]
    return Flow(layers, dim)


FAMILIES = {
    "affine coupling (RealNVP)": lambda h: RealNVP(2, n_layers=N_LAYERS, hidden=h),
    "MAF": lambda h: maf_flow(2, N_LAYERS, h),
    "spline coupling (NSF)": lambda h: NeuralSpline(2, n_layers=N_LAYERS, hidden=h, bins=8,
                                                    bound=5.0),
}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def hidden_for(make, target: int) -> int:
    """The hidden width whose model's parameter count is closest to target."""
    return min(range(8, 257), key=lambda h: abs(n_params(make(h)) - target))


def family_on_toy(family: str, name: str, epochs: int) -> dict:
    make = FAMILIES[family]
    hidden = hidden_for(make, TARGET_PARAMS)
    torch.manual_seed(0)
    flow = make(hidden)
    x_train, x_val = data.toy(name, 20_000, seed=1), data.toy(name, 5_000, seed=2)
    x_test = data.toy(name, 20_000, seed=3)
    hist = fit(flow, lambda m, x: -m.log_prob(x).mean(), x_train, val=x_val, epochs=epochs,
               batch_size=256, lr=2e-3, seed=0, progress=False)
    flow.eval()
    kl, kl_se = toy_kl(flow, name, x_test)
    with torch.no_grad():
        sample_s = best_seconds(lambda: flow.sample(10_000))
        log_prob_s = best_seconds(lambda: flow.log_prob(x_test[:10_000]))
    return {"kl_nats": kl, "kl_se_nats": kl_se, "parameters": n_params(flow), "hidden": hidden,
            "train_seconds": hist.seconds, "steps": len(hist.train) * math.ceil(20_000 / 256),
            "best_epoch": hist.best_epoch + 1, "sample_1e4_seconds": sample_s,
            "log_prob_1e4_seconds": log_prob_s}


def digits_flow(mixing: str | None, dim: int = 64, hidden: int = 128) -> Flow:
    """The chapter's digits flow; with mixing ("rotation" or "identity", the LULinear
    initialization), an LULinear layer before each coupling. dim=784 for 28x28 images."""
    torch.manual_seed(0)
    layers = []
    for k, layer in enumerate(NeuralSpline(dim, n_layers=6, hidden=hidden, bins=8,
                                           bound=5.0).layers):
        if mixing and isinstance(layer, SplineCoupling):
            layers.append(LULinear(dim, seed=k, init=mixing))
        layers.append(layer)
    return Flow([Logit()] + layers, dim=dim)


def digits_run(mixing: str | None, epochs: int) -> tuple[dict, torch.Tensor]:
    flow = digits_flow(mixing)
    hist = fit(flow, dequantized_nll, data.digits("train"), val=data.digits("val"),
               epochs=epochs, batch_size=100, lr=2e-3, weight_decay=1e-4, seed=0,
               progress=False)
    flow.eval()
    per_image = dequantization_bound(flow, data.digits("test"), per_image=True).mean(0)
    nll, se = per_image.mean().item(), (per_image.std() / math.sqrt(len(per_image))).item()
    return ({"test_nll_nats": nll, "test_nll_se_nats": se,
             "bits_per_dim": data.bits_per_dim(nll, 64),
             "bits_per_dim_se": data.bits_per_dim(se, 64), "parameters": n_params(flow),
             "train_seconds": hist.seconds, "epochs": epochs,
             "best_epoch": hist.best_epoch + 1}, per_image)


SCALED_EPOCHS = 50  # the 28x28 run's default budget per flow (--epochs overrides it)


def scaled_run(images, epochs: int, device, quick: bool) -> dict:
    """The digits part at 28x28: the chapter's spline flow with fixed masks against the same
    flow with an LULinear layer before each coupling (rotation or identity init); seed 0, the
    same epochs, best validation epoch; the test bound under uniform dequantization, two draws
    per image (its Monte Carlo error), and the paired difference to the fixed masks with its
    standard error over the test images."""
    levels, hidden = images.levels, (8 if quick else 256)
    x_test, out, fixed = images.test.to(device), {}, None
    for mixing in (None, "rotation", "identity"):
        flow = digits_flow(mixing, images.dim, hidden)
        hist = fit(flow, lambda m, x: dequantized_nll(m, x, levels, shift=False), images.train,
                   val=images.val,
                   epochs=epochs, batch_size=128, lr=1e-3, weight_decay=1e-4, patience=10, seed=0,
                   progress=False, device=device)
        a, b = dequantization_bound(flow, x_test, draws=2, per_image=True, levels=levels)
        per_image = ((a + b) / 2).cpu()
        row = {**per_image_summary(a, b, images.dim, "test_nll"), "parameters": n_params(flow),
               "train_seconds": hist.seconds, "best_epoch": hist.best_epoch + 1}
        if fixed is None:
            fixed, name = per_image, "fixed masks"
        else:
            diff = per_image - fixed
            row["difference to fixed masks"] = {
                "test_nll_nats": diff.mean().item(),
                "test_nll_se_nats": (diff.std() / math.sqrt(len(diff))).item()}
            name = f"LULinear before each coupling, {mixing} init"
        out[name] = row
        print(f"  {name}: {row['test_nll_bits_per_dim']:.3f} bits/dim", flush=True)
    return {"flows": out, "hidden": hidden}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, results not written")
    parser.add_argument("--part", choices=["all", "toys", "digits"], default="all")
    add_scale_arguments(parser)
    args = parser.parse_args(argv)
    if args.data != "digits":
        return scaled_main("flows_families", args, scaled_run, default_epochs=SCALED_EPOCHS)
    toy_epochs, digit_epochs = (1, 1) if args.quick else (30, 80)
    torch.set_num_threads(1)
    old = json.loads(OUT.read_text()) if OUT.exists() and args.part != "all" else {}
    results = {"toys": old.get("toys", {}), "digits": old.get("digits", {})}
    if args.part in ("all", "toys"):
        for name in TOYS:
            results["toys"][name] = {f: family_on_toy(f, name, toy_epochs) for f in FAMILIES}
            print(name, json.dumps(results["toys"][name], indent=1), flush=True)
    if args.part in ("all", "digits"):
        fixed, fixed_images = digits_run(None, digit_epochs)
        results["digits"] = {"fixed masks": fixed}
        for init in ("rotation", "identity"):
            mixed, mixed_images = digits_run(init, digit_epochs)
            diff = mixed_images - fixed_images
            mixed["difference to fixed masks"] = {
                "test_nll_nats": diff.mean().item(),
                "test_nll_se_nats": (diff.std() / math.sqrt(len(diff))).item()}
            results["digits"][f"LULinear before each coupling, {init} init"] = mixed
            print(init, json.dumps(mixed, indent=1), flush=True)
    results["meta"] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "toys": f"20000 train, 5000 validation, 20000 test points; {toy_epochs} epochs of "
                "batch 256 for every family; KL on the test points",
        "digits": "digits test split (447 images); uniform dequantization bound, 20 draws",
    }
    print(json.dumps(results, indent=2))
    if not args.quick:
        OUT.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
