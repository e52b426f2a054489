"""Quality of the flows chapter's models, trained longer than in the chapter.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flows.py   # writes benchmarks/results/flows.json
    .venv/bin/python benchmarks/flows.py --quick    # a smoke run with tiny budgets (not written)
    .venv/bin/python benchmarks/flows.py --part toys   # rerun one part (toys or digits)
    python benchmarks/flows.py --data mnist --device cuda   # 28x28: writes results/flows-mnist.json

Measures, on the book's splits:
- 2D toys: held-out KL(p_data || p_flow) = mean(log p_true - log p_flow) on fresh points, in
  nats, with its Monte Carlo standard error (targets: 8gaussians < 0.10, checkerboard < 0.15);
- digits: the valid discrete test NLL bound of a neural spline flow under uniform
  dequantization, in nats per image and bits/dim (target < 93), with its size and training time;
- digits baselines on the same split: uniform, independent per-pixel categorical (add-0.5
  smoothing), a mixture of 10 independent categoricals (EM), and a discrete autoregressive
  MADE with 17-way softmax outputs (the masks of the chapter), all exact discrete NLLs;
  the flow's and the MADE's with standard errors over the test images.
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
from pathlib import Path

import torch
import torch.nn.functional as F

from dgm import data, metrics
from dgm.flows import MADE, Flow, Logit, NeuralSpline, dequantization_bound, dequantized_nll
from dgm.flows import toy_kl as kl_to_truth
from dgm.train import fit

from common import (add_scale_arguments, checkpoint, mc_se_of_mean, per_image_summary,
                    scaled_main, spread)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "flows.json"
LEVELS, DIM = data.DIGITS_LEVELS, 64
SEEDS = (0, 1, 2)
MADE_ORDERINGS = 8


def toy_kl(name: str, epochs: int) -> dict:
    x_train, x_val, x_test = data.toy(name, 20_000, seed=1), data.toy(name, 5_000, seed=2), data.toy(name, 20_000, seed=3)
    flow = NeuralSpline(2, n_layers=6, hidden=128, bins=12, bound=5.0)
    hist = fit(flow, lambda m, x: -m.log_prob(x).mean(), x_train, val=x_val, epochs=epochs, batch_size=256,
               lr=2e-3, patience=10, seed=0, progress=False)
    kl, kl_se = kl_to_truth(flow, name, x_test)
    return {"kl_nats": kl, "kl_se_nats": kl_se, "test_nll_nats": kl + data.toy_entropy(name), "entropy_nats": data.toy_entropy(name),
            "seconds": hist.seconds, "epochs": len(hist.train)}


def spline_flow(seed: int) -> Flow:
    """The benchmark's spline flow for the digits (untrained), its weights initialized by seed."""
    torch.manual_seed(seed)
    return Flow([Logit()] + list(NeuralSpline(DIM, n_layers=8, hidden=192, bins=8, bound=5.0).layers), dim=DIM)


def train_spline_flow(flow: Flow, seed: int, epochs: int):
    """Train the benchmark's spline flow in place (early stopping on validation); its history."""
    return fit(flow, dequantized_nll, data.digits("train"), val=data.digits("val"), epochs=epochs,
               batch_size=100, lr=1e-3, weight_decay=1e-4, patience=30, seed=seed, progress=False)


def spline_flow_digits(epochs: int, seeds=(0, 1, 2), k: int = 1000, save: bool = False) -> dict:
    """The spline flow on the digits, one training run per seed, with two test bounds each.

    'jensen': the uniform-dequantization bound (eq. dequant-bound), 20 noise draws;
    'importance-weighted': the bound of eq. dequant-iw with k draws inside the logarithm,
    two independent draws per image (their difference gives the Monte Carlo error).
    """
    runs, x_test = [], data.digits("test")
    for seed in seeds:
        flow = spline_flow(seed)
        hist = train_spline_flow(flow, seed, epochs)
        flow.eval()
        if save and seed == seeds[0]:
            torch.save(flow.state_dict(), checkpoint("spline_flow"))
        jensen = dequantization_bound(flow, x_test, per_image=True).mean(0)
        start = time.perf_counter()
        a, b = dequantization_bound(flow, x_test, draws=2, per_image=True, k=k)
        seconds_per_image = (time.perf_counter() - start) / (2 * len(x_test))
        iw, iw_se = metrics.paired_estimate(a, b)
        runs.append({"seed": seed, "test_nll_nats": iw, "test_nll_mc_se": iw_se,
                     "test_nll_images_se": (((a + b) / 2).std() / math.sqrt(len(a))).item(),
                     "jensen_nll_nats": jensen.mean().item(),
                     "jensen_nll_images_se": (jensen.std() / math.sqrt(len(jensen))).item(),
                     "seconds": hist.seconds, "best_epoch": hist.best_epoch + 1,
                     "eval_seconds_per_image": seconds_per_image})
    mean = lambda key: statistics.fmean(r[key] for r in runs)
    return {"bound": f"importance-weighted uniform dequantization, k = {k} (eq. dequant-iw); "
                     "the Jensen bound (k = 1, 20 draws) as jensen_nll_nats",
            "k": k, "runs": runs, "test_nll_nats": mean("test_nll_nats"),
            "test_nll_spread": spread([r["test_nll_nats"] for r in runs]),
            "test_nll_mc_se": mc_se_of_mean(r["test_nll_mc_se"] for r in runs),
            "test_nll_se_nats": mean("test_nll_images_se"),
            "jensen_nll_nats": mean("jensen_nll_nats"),
            "bits_per_dim": data.bits_per_dim(mean("test_nll_nats"), DIM),
            "parameters": sum(p.numel() for p in flow.parameters()), "seconds": mean("seconds")}


def pixel_counts(x: torch.Tensor, levels: int) -> torch.Tensor:
    """How often each pixel takes each level in the images x: float64 (D, levels), built
    without the (n, D, levels) one-hot tensor (80 GB for MNIST's training split)."""
    xt = x.T.contiguous()
    return torch.zeros(x.shape[1], levels, dtype=torch.long).scatter_add_(
        1, xt, torch.ones_like(xt)).double()


def categorical_nll(log_p: torch.Tensor, x: torch.Tensor) -> float:
    """Exact NLL (nats per image) of independent categoricals log_p (64, 17) on integer images x."""
    return -log_p.gather(1, x.T).sum(0).mean().item()


def mixture_of_categoricals(k: int, iters: int = 200, seed: int = 0) -> float:
    """EM for a mixture of k independent per-pixel categoricals (add-0.5 smoothing in the M-step)."""
    x_train, x_test = data.digits("train"), data.digits("test")
    onehot = F.one_hot(x_train, LEVELS).double()  # (n, 64, 17)
    g = torch.Generator().manual_seed(seed)
    resp = torch.rand(len(x_train), k, generator=g, dtype=torch.float64)
    resp /= resp.sum(1, keepdim=True)
    for _ in range(iters):
        counts = torch.einsum("nk,ndl->kdl", resp, onehot) + 0.5
        log_p = (counts / counts.sum(-1, keepdim=True)).log()  # (k, 64, 17)
        log_pi = (resp.sum(0) / len(x_train)).log()
        log_joint = log_pi + torch.einsum("ndl,kdl->nk", onehot, log_p)
        resp = (log_joint - log_joint.logsumexp(1, keepdim=True)).exp()
    test = F.one_hot(x_test, LEVELS).double()
    return -(log_pi + torch.einsum("ndl,kdl->nk", test, log_p)).logsumexp(1).mean().item()


def digit_orderings(k: int, seed: int = 0) -> list[torch.Tensor]:
    """k pixel orderings of the 8x8 digits: raster, reversed raster, column-major, reversed
    column-major, then random permutations (fixed by seed)."""
    grid = torch.arange(DIM).view(8, 8)
    orders = [grid.flatten(), grid.flatten().flip(0), grid.T.flatten(), grid.T.flatten().flip(0)]
    g = torch.Generator().manual_seed(seed)
    orders += [torch.randperm(DIM, generator=g) for _ in range(max(k - len(orders), 0))]
    return orders[:k]


class DigitsMADE(torch.nn.Module):
    """A discrete autoregressive model of the digits: a uniform mixture of k MADEs, each with a
    17-way softmax per pixel in its own pixel ordering (k = 1: one MADE in raster order).

    log P(x) = log (1/k) sum_j P_j(x) is exact: each P_j is a normalized distribution, and so
    is their average. Inputs are scaled to [0, 1]; while training, dropout on the inputs.
    """

    def __init__(self, k: int = 1, hidden: int = 512, depth: int = 2, dropout: float = 0.2):
        super().__init__()
        self.orders = digit_orderings(k)
        self.mades = torch.nn.ModuleList(MADE(DIM, hidden=hidden, n_out=LEVELS, depth=depth) for _ in range(k))
        self.dropout = dropout

    def component_log_prob(self, x, j: int):
        """log P_j(x) per image: the j-th MADE on the pixels of x in its ordering."""
        xj = x[:, self.orders[j]]
        made = self.mades[j]  # dropout while that MADE trains
        logits = made(F.dropout(xj.float() / (LEVELS - 1), self.dropout, made.training))  # (n, 17, 64)
        return -F.cross_entropy(logits, xj, reduction="none").sum(1)

    def log_prob(self, x):
        log_p = torch.stack([self.component_log_prob(x, j) for j in range(len(self.mades))])
        return torch.logsumexp(log_p, 0) - math.log(len(self.mades))

    @torch.no_grad()
    def sample(self, n: int):
        """n images: a component per image, then its 64 pixels one pass at a time."""
        x = torch.zeros(n, DIM, dtype=torch.long)
        which = torch.randint(len(self.mades), (n,))
        for j in which.unique().tolist():
            rows, xj = which == j, torch.zeros(int((which == j).sum()), DIM, dtype=torch.long)
            for i in range(DIM):  # pixel i of the ordering needs the pixels before it
                logits = self.mades[j](xj.float() / (LEVELS - 1))[:, :, i]
                xj[:, i] = torch.distributions.Categorical(logits=logits).sample()
            x[rows.nonzero()[:, 0][:, None], self.orders[j]] = xj
        return x

    @torch.no_grad()
    def features(self, x):
        """The last hidden layer of the first (raster-order) MADE."""
        return self.mades[0].net[:-1](x[:, self.orders[0]].float() / (LEVELS - 1))


def train_made(k: int, seed: int, epochs: int) -> tuple[DigitsMADE, object]:
    """Train the k MADEs of a DigitsMADE one after the other, each with early stopping on its own
    validation NLL and ±1-pixel shifts of the training digits; returns (model, histories)."""
    torch.manual_seed(seed)
    model = DigitsMADE(k)
    histories = []
    for j in range(k):
        def nll(m, x, j=j):
            return -model.component_log_prob(data.shift_digits(x) if m.training else x, j).mean()

        histories.append(fit(model.mades[j], nll, data.digits("train"), val=data.digits("val"), epochs=epochs,
                             batch_size=100, lr=1e-3, weight_decay=1e-4, patience=30, seed=seed * 100 + j,
                             progress=False))
    return model.eval(), histories


def made_digits(epochs: int, k: int, seeds=(0, 1, 2), save: bool = False) -> dict:
    """The DigitsMADE of k orderings per seed: exact test NLL, its standard error over the images."""
    runs, x_test = [], data.digits("test")
    for seed in seeds:
        model, histories = train_made(k, seed, epochs)
        if save and seed == seeds[0]:
            torch.save(model.state_dict(), checkpoint(f"made{k}"))
        with torch.no_grad():
            per_image = -model.log_prob(x_test)
        runs.append({"seed": seed, "test_nll_nats": per_image.mean().item(),
                     "test_nll_images_se": (per_image.std() / math.sqrt(len(per_image))).item(),
                     "seconds": sum(h.seconds for h in histories),
                     "best_epochs": [h.best_epoch + 1 for h in histories]})
    nll = statistics.fmean(r["test_nll_nats"] for r in runs)
    return {"orderings": k, "runs": runs, "test_nll_nats": nll,
            "test_nll_spread": spread([r["test_nll_nats"] for r in runs]),
            "test_nll_se_nats": statistics.fmean(r["test_nll_images_se"] for r in runs),
            "bits_per_dim": data.bits_per_dim(nll, DIM),
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds": statistics.fmean(r["seconds"] for r in runs)}


SCALED_EPOCHS = 100  # the 28x28 run's default budget (--epochs overrides it)


SCALED_SIZE = {False: dict(layers=8, hidden=512), True: dict(layers=2, hidden=16)}  # quick


def scaled_model(dim: int, levels: int, quick: bool = False) -> Flow:
    """The 28x28 run's (untrained) flow: Logit, then ActNorm + spline couplings; seed 0."""
    torch.manual_seed(0)
    layers, hidden = SCALED_SIZE[quick]["layers"], SCALED_SIZE[quick]["hidden"]
    return Flow([Logit()] + list(NeuralSpline(dim, n_layers=layers, hidden=hidden, bins=8,
                                              bound=5.0).layers), dim=dim)


def scaled_loss(levels: int):
    """The 28x28 run's loss: the chapter's, a fresh dequantization per batch, and no pixel shifts
    (50 000 images are not few)."""
    return lambda m, x: dequantized_nll(m, x, levels, shift=False)


def scaled_run(images, epochs: int, device, quick: bool) -> dict:
    """The chapter's digits flow (Logit, then ActNorm + spline couplings with the alternating
    masks) at 784 dimensions: the test bound under uniform dequantization (two draws per image
    give its Monte Carlo error) in nats and bits/dim, with the exact uniform and independent
    per-pixel categorical NLLs beside it."""
    layers, hidden = SCALED_SIZE[quick]["layers"], SCALED_SIZE[quick]["hidden"]
    flow = scaled_model(images.dim, images.levels, quick)
    levels = images.levels
    hist = fit(flow, scaled_loss(levels), images.train, val=images.val,
               epochs=epochs, batch_size=128, lr=1e-3, patience=10, seed=0, progress=False,
               device=device)
    x = images.test.to(device)
    a, b = dequantization_bound(flow, x, draws=2, per_image=True, levels=levels)
    counts = pixel_counts(images.train, levels) + 0.5
    return {"model": f"Logit + {layers} x [ActNorm, spline coupling] (hidden {hidden}, 8 bins)",
            "what": "the Jensen bound under uniform dequantization (eq. dequant-bound), two "
                    "draws per test image: an unbiased estimate of an upper bound on the NLL",
            **per_image_summary(a, b, images.dim, "test_nll"),
            "uniform_nats": images.dim * math.log(levels),
            "independent_categorical_nats": categorical_nll(
                (counts / counts.sum(1, keepdim=True)).log(), images.test),
            "val_nll_nats": hist.best_val, "best_epoch": hist.best_epoch + 1,
            "steps": len(hist.step), "parameters": sum(p.numel() for p in flow.parameters())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, results not written")
    parser.add_argument("--part", choices=["all", "toys", "digits"], default="all",
                        help="rerun one part, keeping the other from the existing JSON")
    add_scale_arguments(parser)
    args = parser.parse_args(argv)
    if args.data != "digits":
        return scaled_main("flows", args, scaled_run, default_epochs=SCALED_EPOCHS)
    e = (lambda n: 2) if args.quick else (lambda n: n)
    seeds = (0,) if args.quick else SEEDS
    x_train, x_test = data.digits("train"), data.digits("test")
    counts = pixel_counts(x_train, LEVELS) + 0.5
    old = json.loads(OUT.read_text()) if OUT.exists() and args.part != "all" else {}
    results = {"toys": old.get("toys", {}), "digits": old.get("digits", {})}
    if args.part in ("all", "toys"):
        results["toys"] = {name: toy_kl(name, e(80)) for name in ["8gaussians", "checkerboard", "moons"]}
    if args.part in ("all", "digits"):
        results["digits"] = {
            "uniform": {"test_nll_nats": DIM * math.log(LEVELS)},
            "independent categorical": {"test_nll_nats": categorical_nll((counts / counts.sum(1, keepdim=True)).log(), x_test)},
            "mixture of 10 categoricals": {"test_nll_nats": mixture_of_categoricals(10, iters=e(200))},
            "MADE, 17-way softmax": made_digits(e(400), k=1, seeds=seeds, save=not args.quick),
            f"mixture of {MADE_ORDERINGS} MADEs (orderings)": made_digits(e(400), k=2 if args.quick else MADE_ORDERINGS,
                                                                     seeds=seeds, save=not args.quick),
            "neural spline flow": spline_flow_digits(e(400), seeds=seeds, k=4 if args.quick else 1000,
                                                 save=not args.quick),
        }
    for v in results["digits"].values():
        v.setdefault("bits_per_dim", data.bits_per_dim(v["test_nll_nats"], DIM))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results["meta"] = {**old.get("meta", {}), "cpus": os.cpu_count(),
                       "split": "digits test (447 images); toys: 20000 fresh points", "torch": torch.__version__}
    results["meta"]["date" if args.part == "all" else f"date_{args.part}"] = now
    print(json.dumps(results, indent=2))
    if not args.quick:
        OUT.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
