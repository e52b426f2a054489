"""Flows as variational families: reverse-KL fits to the 2D energies of Rezende & Mohamed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flows_vi.py          # writes results/flows_vi.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flows_vi.py --quick  # a smoke run (not written)

For each target U1, U2, U3 of the flows chapter (eq. rezende-energies), planar stacks of
K = 2..32 layers and IAFs of K = 1..8 layers are fitted by `dgm.flows.fit_reverse_kl` (the
chapter's loop, run longer), over several seeds. Reported per model: KL(q || p) in nats,
estimated from fresh samples of q with log Z by quadrature (`log_Z_quadrature`), as the mean
over seeds, each seed's estimate and its Monte Carlo standard error; and the CPU seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import time
from pathlib import Path

import torch

from dgm.flows import fit_reverse_kl, log_Z_quadrature, reverse_kl_terms, rezende_energy, vi_flow

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "flows_vi.json"
TARGETS = ["U1", "U2", "U3"]
MODELS = [("planar", K) for K in (2, 4, 8, 16, 32)] + [("iaf", K) for K in (1, 2, 4, 8)]


def run(target: str, family: str, K: int, steps: int, seeds: int, n_eval: int) -> dict:
    def energy(z):
        return rezende_energy(target, z)

    log_Z = log_Z_quadrature(energy)
    kls, ses, seconds = [], [], 0.0
    for seed in range(seeds):
        torch.manual_seed(seed)
        flow = vi_flow(family, K)
        start = time.process_time()
        fit_reverse_kl(flow, energy, steps=steps, seed=seed)
        seconds += time.process_time() - start
        with torch.no_grad():
            kl = reverse_kl_terms(flow, energy, n_eval)[1] + log_Z
        kls.append(kl.mean().item())
        ses.append(kl.std().item() / math.sqrt(n_eval))
    return {"kl_nats": sum(kls) / len(kls), "kl_per_seed": kls, "mc_se_per_seed": ses,
            "cpu_seconds_per_fit": seconds / seeds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, results not written")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps, seeds, n_eval = (50, 1, 1000) if args.quick else (3000, 2, 20_000)
    results = {"targets": {}}
    for target in TARGETS:
        log_Z = log_Z_quadrature(lambda z: rezende_energy(target, z))
        entry = {"log_Z": log_Z, "models": {}}
        for family, K in MODELS:
            entry["models"][f"{family} K={K}"] = r = run(target, family, K, steps, seeds, n_eval)
            print(f"{target} {family:>6} K={K:2d}: KL {r['kl_nats']:.3f} nats "
                  f"(seeds {', '.join(f'{v:.3f}' for v in r['kl_per_seed'])}), "
                  f"{r['cpu_seconds_per_fit']:.1f} s", flush=True)
        results["targets"][target] = entry
    results["meta"] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "cpus": os.cpu_count(), "steps": steps, "batch": 256, "seeds": seeds,
                       "eval_samples": n_eval, "torch": torch.__version__}
    if not args.quick:
        OUT.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
