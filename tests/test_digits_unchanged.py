"""The digits path does not move when the code learns other sizes (issue 22).

Seeded, single-threaded, tiny runs of the code the chapters glue their numbers from, in the
chapters' defaults (8x8, 17 levels, the CPU), are compared with the values in
``digits_fingerprint.json``. Those values were recorded when the models learned ``dim=``,
``levels=``, ``side=`` and ``device=``, and they equal, bit for bit, what the code gave before
that change. A change that alters a digits result (a rescaling, a reordered random draw, a
tensor created elsewhere) fails here with the name of the quantity, long before a chapter's
glued number moves unnoticed. Regenerate the file only for an intended change of the digits
results: ``python -m tests.test_digits_unchanged``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dgm import data, metrics
from dgm import diffusion as Df
from dgm import flow_matching as FM
from dgm import flows as Fl
from dgm import gans as G
from dgm import vae as V
from dgm.train import fit

EXPECTED = Path(__file__).with_name("digits_fingerprint.json")
QUANTITIES = ("shift_digits", "dequantize", "vae", "vae_categorical", "vqvae", "gan", "conv_gan",
              "ddpm", "flow_matching", "flow", "digits_scores")


def _summary(t) -> list[float]:
    t = torch.as_tensor(t).detach().double().flatten()
    return [float(v) for v in t[:3]] + [float(t.sum())]


def digits_fingerprint() -> dict[str, list[float]]:
    """The quantities, each a few numbers: first entries and the sum."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        xtr, xva, xte = data.digits("train")[:100], data.digits("val")[:20], data.digits("test")[:20]
        out["shift_digits"] = _summary(data.shift_digits(xtr[:5], generator=torch.Generator().manual_seed(3)))
        out["dequantize"] = _summary(data.dequantize(xtr[:5], generator=torch.Generator().manual_seed(1)))
        torch.manual_seed(0)
        m = V.VAE(hidden=64)
        h = fit(m, V.vae_loss(warmup_steps=10), xtr, val=xva, epochs=1, batch_size=50, progress=False)
        torch.manual_seed(5)
        out["vae"] = _summary(m.log_prob(xte, k=10)) + h.step
        torch.manual_seed(0)
        out["vae_categorical"] = _summary(V.VAE(likelihood="categorical", hidden=32).elbo(xte))
        torch.manual_seed(0)
        out["vqvae"] = _summary(V.VQVAE(hidden=32).loss_terms(xte)[0])
        torch.manual_seed(0)
        gen, dis = G.Generator(dim=64, z_dim=16, hidden=32, depth=2, levels=17), G.Discriminator(dim=64, hidden=32, depth=2)
        hist = G.train_gan(gen, dis, xtr, 5, augment=G.to_unit, r1=1.0, seed=0, batch_size=32)
        out["gan"] = hist["d_loss"] + hist["g_loss"]
        torch.manual_seed(0)
        cg, cd = G.ConvGenerator(channels=4), G.ConvDiscriminator(channels=4)
        hist = G.train_gan(cg, cd, xtr, 3, augment=lambda b: G.to_unit(b, True), seed=1, batch_size=16)
        torch.manual_seed(1)
        out["conv_gan"] = hist["d_loss"] + _summary(cg.sample(4))
        torch.manual_seed(0)
        dd = Df.DDPM(channels=4, conv_layers=1)
        hd = Df.train_diffusion(dd, xtr, epochs=1, batch_size=50)
        torch.manual_seed(2)
        out["ddpm"] = hd["loss"] + _summary(dd.nll_bound(xva, t_samples=5)) + _summary(dd.sample(2, steps=5))
        torch.manual_seed(0)
        fm = FM.FlowMatching(Df.DigitsDenoiser(64, 64, channels=4, conv_layers=1), 64, num_classes=10,
                             p_uncond=0.2)
        y = data.digits("train", labels=True)[1][:100]
        hf = Df.train_diffusion(fm, xtr, y, epochs=1, batch_size=50, augment=FM.digits_to_unit)
        out["flow_matching"] = hf["loss"] + _summary(
            FM.digits_nll_bound(fm, xva[:5], steps=2, generator=torch.Generator().manual_seed(0)))
        torch.manual_seed(0)
        flow = Fl.Flow([Fl.Logit()] + list(Fl.NeuralSpline(64, n_layers=2, hidden=16).layers), dim=64)
        hh = fit(flow, Fl.dequantized_nll, xtr, val=xva, epochs=1, batch_size=50, progress=False)
        out["flow"] = hh.step + _summary(Fl.dequantization_bound(flow, xte, draws=2))
        out["digits_scores"] = [metrics.frechet_digits_distance(data.digits("val")[:60], xte)]
        return out
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fingerprint() -> dict[str, list[float]]:
    return digits_fingerprint()


def test_every_quantity_is_recorded(fingerprint):
    assert set(fingerprint) == set(QUANTITIES) == set(json.loads(EXPECTED.read_text()))


@pytest.mark.parametrize("name", QUANTITIES)
def test_digits_result_is_the_recorded_one(name, fingerprint):
    expected = json.loads(EXPECTED.read_text())[name]
    got = fingerprint[name]
    assert len(got) == len(expected), f"{name}: {len(got)} values, recorded {len(expected)}"
    for g, e in zip(got, expected):
        assert math.isclose(g, e, rel_tol=1e-4, abs_tol=1e-6), (
            f"{name} moved: {got} against the recorded {expected}. If the change of the digits "
            "results is intended, regenerate tests/digits_fingerprint.json "
            "(python -m tests.test_digits_unchanged) and say so in the commit")


if __name__ == "__main__":
    EXPECTED.write_text(json.dumps(digits_fingerprint(), indent=1) + "\n")
    print(f"wrote {EXPECTED}")
