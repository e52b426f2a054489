"""Quality of the flows chapter's models, trained longer than in the chapter.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flows.py   # writes benchmarks/results/flows.json
    .venv/bin/python benchmarks/flows.py --quick    # a smoke run with tiny budgets (not written)
    .venv/bin/python benchmarks/flows.py --part toys   # rerun one part (toys or digits)

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
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dgm import data
from dgm.flows import MADE, Flow, Logit, NeuralSpline, dequantization_bound, dequantized_nll
from dgm.flows import toy_kl as kl_to_truth
from dgm.train import fit

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "flows.json"
LEVELS, DIM = data.DIGITS_LEVELS, 64


def toy_kl(name: str, epochs: int) -> dict:
    x_train, x_val, x_test = data.toy(name, 20_000, seed=1), data.toy(name, 5_000, seed=2), data.toy(name, 20_000, seed=3)
    flow = NeuralSpline(2, n_layers=6, hidden=128, bins=12, bound=5.0)
    hist = fit(flow, lambda m, x: -m.log_prob(x).mean(), x_train, val=x_val, epochs=epochs, batch_size=256,
               lr=2e-3, patience=10, seed=0, progress=False)
    kl, kl_se = kl_to_truth(flow, name, x_test)
    return {"kl_nats": kl, "kl_se_nats": kl_se, "test_nll_nats": kl + data.toy_entropy(name), "entropy_nats": data.toy_entropy(name),
            "seconds": hist.seconds, "epochs": len(hist.train)}


def spline_flow_digits(epochs: int) -> dict:
    torch.manual_seed(0)
    flow = Flow([Logit()] + list(NeuralSpline(DIM, n_layers=8, hidden=192, bins=8, bound=5.0).layers), dim=DIM)
    hist = fit(flow, dequantized_nll, data.digits("train"), val=data.digits("val"), epochs=epochs, batch_size=100,
               lr=1e-3, weight_decay=1e-4, patience=30, seed=0, progress=False)
    per_image = dequantization_bound(flow, data.digits("test"), per_image=True).mean(0)
    nll, se = per_image.mean().item(), (per_image.std() / math.sqrt(len(per_image))).item()
    return {"bound": "uniform dequantization (Jensen), 20 noise draws", "test_nll_nats": nll,
            "test_nll_se_nats": se,
            "bits_per_dim": data.bits_per_dim(nll, DIM), "parameters": sum(p.numel() for p in flow.parameters()),
            "seconds": hist.seconds, "best_epoch": hist.best_epoch + 1}


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


def made_digits(epochs: int) -> dict:
    """Discrete autoregressive model: MADE with a 17-way softmax per pixel, inputs scaled to [0, 1]."""
    model = MADE(DIM, hidden=512, n_out=LEVELS, depth=2)
    drop = torch.nn.Dropout(0.2)

    def nll_per_image(m, x):
        if m.training:
            x = data.shift_digits(x)
        logits = m(drop(x.float() / (LEVELS - 1)) if m.training else x.float() / (LEVELS - 1))  # (n, 17, 64)
        return F.cross_entropy(logits, x, reduction="none").sum(1)

    def nll(m, x):
        return nll_per_image(m, x).mean()

    hist = fit(model, nll, data.digits("train"), val=data.digits("val"), epochs=epochs, batch_size=100, lr=1e-3,
               weight_decay=1e-4, patience=30, seed=0, progress=False)
    model.eval()
    with torch.no_grad():
        per_image = nll_per_image(model, data.digits("test"))
    test, se = per_image.mean().item(), (per_image.std() / math.sqrt(len(per_image))).item()
    return {"test_nll_nats": test, "test_nll_se_nats": se, "bits_per_dim": data.bits_per_dim(test, DIM),
            "parameters": sum(p.numel() for p in model.parameters()), "seconds": hist.seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, results not written")
    parser.add_argument("--part", choices=["all", "toys", "digits"], default="all",
                        help="rerun one part, keeping the other from the existing JSON")
    args = parser.parse_args(argv)
    e = (lambda n: 2) if args.quick else (lambda n: n)
    x_train, x_test = data.digits("train"), data.digits("test")
    counts = F.one_hot(x_train, LEVELS).sum(0).double() + 0.5
    old = json.loads(OUT.read_text()) if OUT.exists() and args.part != "all" else {}
    results = {"toys": old.get("toys", {}), "digits": old.get("digits", {})}
    if args.part in ("all", "toys"):
        results["toys"] = {name: toy_kl(name, e(80)) for name in ["8gaussians", "checkerboard", "moons"]}
    if args.part in ("all", "digits"):
        results["digits"] = {
            "uniform": {"test_nll_nats": DIM * math.log(LEVELS)},
            "independent categorical": {"test_nll_nats": categorical_nll((counts / counts.sum(1, keepdim=True)).log(), x_test)},
            "mixture of 10 categoricals": {"test_nll_nats": mixture_of_categoricals(10, iters=e(200))},
            "MADE, 17-way softmax": made_digits(e(400)),
            "neural spline flow": spline_flow_digits(e(400)),
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
