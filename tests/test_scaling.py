"""The step up from the 8x8 digits to MNIST-size images (issue 22), on the CPU and tiny budgets.

Every model that a chapter exports builds at side 28 / 256 levels and trains one step with tiny
widths; the likelihood helpers stay normalized at 256 levels; the devices resolve as documented;
and the five family benchmarks run their 28x28 path (``--data digits28`` and a small
MNIST-format folder written here) in quick mode, writing nothing, or with a budget of one epoch,
writing ``<name>-<data>.json`` and never the digits file. That the digits results do not move is
what the chapters' glued numbers and benchmarks' JSON check on every build.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

import dgm.data as D
from dgm import data, metrics
from dgm.diffusion import DDPM, DigitsDenoiser, discretized_gaussian_log_prob, train_diffusion
from dgm.flow_matching import FlowMatching, digits_nll_bound, digits_to_unit, unit_to_digits
from dgm.flows import Flow, Logit, NeuralSpline, RealNVP, dequantization_bound, dequantized_nll
from dgm.gans import ConvDiscriminator, ConvGenerator, Discriminator, Generator, to_unit, train_gan
from dgm.train import default_device, fit
from dgm.vae import CVAE, HVAE, VAE, VQVAE, discretized_logistic_log_prob, vae_loss

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
L, SIDE = data.MNIST_LEVELS, data.MNIST_SIDE
DIM = SIDE * SIDE


@pytest.fixture(scope="module")
def x28() -> torch.Tensor:
    """Eight 28x28 images with 256 levels (the embedded stand-in)."""
    return data.digits28("train")[:8]


def one_step(model, loss_fn, x) -> float:
    """Train `model` for exactly one minibatch step; the loss, after checking weights moved."""
    before = [p.detach().clone() for p in model.parameters()]
    n = len(x[0]) if isinstance(x, tuple) else len(x)
    hist = fit(model, loss_fn, x, epochs=1, batch_size=n, progress=False, device="cpu")
    assert len(hist.step) == 1 and math.isfinite(hist.step[0])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    return hist.step[0]


# ----------------------------------------------------------------- the stand-in and helpers
def test_digits28_is_the_digits_upscaled_to_mnist_format():
    x, y = data.digits28("val", labels=True)
    assert x.dtype == torch.long and x.shape == (data.DIGITS_SPLITS["val"][1] - data.DIGITS_SPLITS["val"][0], DIM)
    assert int(x.min()) == 0 and int(x.max()) <= L - 1
    assert torch.equal(y, data.digits("val", labels=True)[1])
    # the upscaled image keeps the digit: its block means follow the 8x8 levels
    small = data.digits("val")[0].reshape(8, 8).float() / 16
    big = x[0].reshape(SIDE, SIDE).float() / 255
    coarse = torch.nn.functional.adaptive_avg_pool2d(big[None, None], 8)[0, 0]
    assert torch.corrcoef(torch.stack([small.flatten(), coarse.flatten()]))[0, 1] > 0.9


def test_shift_digits_works_on_any_square_side(x28):
    one = torch.zeros(1, DIM, dtype=torch.long)
    one[0, 14 * SIDE + 14] = 200
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        out = data.shift_digits(one, generator=g).reshape(SIDE, SIDE)
        (r, c), = out.nonzero().tolist()
        assert abs(r - 14) <= 1 and abs(c - 14) <= 1 and out.sum() == 200
    assert torch.equal(data.shift_digits(x28, max_shift=0), x28)
    with pytest.raises(ValueError, match="square images"):
        data.shift_digits(torch.zeros(2, 50, dtype=torch.long))


def test_devices_resolve_as_documented():
    here = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert default_device("auto").type == default_device(None).type == default_device().type == here
    assert default_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda'"):
        default_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
            default_device("cuda")


# ---------------------------------------------------- normalized likelihoods at 256 levels
def test_discretized_logistic_sums_to_one_over_256_levels():
    k = torch.arange(L, dtype=torch.float64)[:, None]
    mean = torch.tensor([-20.0, 0.0, 3.3, 127.5, 254.9, 300.0], dtype=torch.float64)
    log_scale = torch.tensor([-3.0, 0.0, 1.0, 2.0, 4.0, 0.5], dtype=torch.float64)
    total = discretized_logistic_log_prob(k, mean, log_scale, levels=L).logsumexp(0)
    assert torch.allclose(total, torch.zeros_like(total), atol=1e-9)


@pytest.mark.parametrize("likelihood", ["logistic", "categorical"])
def test_vae_pixel_distributions_are_normalized_at_256_levels(likelihood):
    torch.manual_seed(0)
    model = VAE(z_dim=3, hidden=16, likelihood=likelihood, dim=DIM, levels=L).eval()
    log_p = model.pixel_log_probs(torch.randn(2, 3))
    assert log_p.shape == (2, DIM, L)
    assert torch.allclose(log_p.logsumexp(-1), torch.zeros(2, DIM), atol=1e-4)
    x = model.sample(2)
    assert x.dtype == torch.long and x.shape == (2, DIM) and int(x.max()) < L


@pytest.mark.parametrize("denoiser", ["categorical", "eps"])
def test_ddpm_decoder_is_normalized_at_256_levels(denoiser):
    torch.manual_seed(0)
    model = DDPM(denoiser=denoiser, dim=DIM, levels=L, channels=4, conv_layers=1).eval()
    t = torch.tensor([1, 500])
    x0_hat, logp = model.denoise(torch.randn(2, DIM), t)
    assert x0_hat.shape == (2, DIM) and logp.shape == (2, DIM, L)
    assert torch.allclose(logp.logsumexp(-1), torch.zeros(2, DIM), atol=1e-4)
    levels = torch.linspace(-1, 1, L)
    g = discretized_gaussian_log_prob(torch.tensor([-1.3, 0.0, 0.77]), 0.01, levels)
    assert torch.allclose(g.logsumexp(-1), torch.zeros(3), atol=1e-5)


def test_dequantization_at_256_levels_stays_in_each_pixels_bin(x28):
    y = data.dequantize(x28, L, generator=torch.Generator().manual_seed(0))
    assert torch.equal((y * L).floor().long(), x28)
    x_tilde = digits_to_unit(x28, torch.Generator().manual_seed(1), levels=L)
    assert x_tilde.min() >= -1 and x_tilde.max() < 1
    assert torch.equal(unit_to_digits(x_tilde, levels=L), x28)


class _UniformOnTheCube(torch.nn.Module):
    """A density p_Y = 1 on [0, 1)^D: its dequantization bound is exactly D log L."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def log_prob(self, y):
        return torch.zeros(len(y), dtype=y.dtype)


def test_dequantization_bound_of_the_uniform_density_is_the_uniform_nll(x28):
    bound = dequantization_bound(_UniformOnTheCube(DIM), x28, draws=2, levels=L)
    assert torch.allclose(bound, torch.full((2,), DIM * math.log(L)))


# -------------------------------------------- every exported model: build, one step at 28x28
@pytest.mark.parametrize("make", [
    lambda: VAE(z_dim=4, hidden=16, dim=DIM, levels=L),
    lambda: VAE(z_dim=4, hidden=16, likelihood="categorical", dim=DIM, levels=L),
    lambda: HVAE(z_dim=4, z2_dim=2, hidden=16, hidden2=8, dim=DIM, levels=L),
], ids=["VAE-logistic", "VAE-categorical", "HVAE"])
def test_vaes_train_one_step_at_28x28(make, x28):
    torch.manual_seed(0)
    model = make()
    loss = one_step(model, vae_loss(warmup_steps=10), x28)
    assert loss > 0
    assert model.log_prob(x28[:2], k=4).shape == (2,)


def test_cvae_and_vqvae_train_one_step_at_28x28(x28):
    torch.manual_seed(0)
    y = torch.arange(len(x28)) % 10
    cvae = CVAE(z_dim=4, hidden=16, dim=DIM, levels=L)
    one_step(cvae, lambda m, b: -m.elbo(*b).mean(), (x28, y))
    assert cvae.sample(3, y[:3]).shape == (3, DIM)
    vq = VQVAE(positions=2, codes=4, code_dim=3, hidden=16, dim=DIM, levels=L)
    one_step(vq, lambda m, b: -m.loss_terms(b)[0].mean(), x28)
    assert vq.pixel_log_probs(vq.quantize(vq.encode(x28[:2]))[1]).shape == (2, DIM, L)


def test_flows_train_one_step_at_28x28(x28):
    torch.manual_seed(0)
    flow = Flow([Logit()] + list(NeuralSpline(DIM, n_layers=2, hidden=8).layers), dim=DIM)
    loss = one_step(flow, lambda m, x: dequantized_nll(m, x, L), x28)
    bits = data.bits_per_dim(loss + DIM * math.log(L), DIM)
    assert 0 < bits < 30
    assert dequantization_bound(flow.eval(), x28, draws=1, levels=L).shape == (1,)
    nvp = RealNVP(DIM, n_layers=2, hidden=8)
    one_step(nvp, lambda m, x: dequantized_nll(m, x, L), x28)


@pytest.mark.parametrize("denoiser", ["categorical", "eps"])
def test_ddpm_trains_one_step_and_bounds_at_28x28(denoiser, x28):
    torch.manual_seed(0)
    model = DDPM(denoiser=denoiser, dim=DIM, levels=L, channels=4, conv_layers=1)
    hist = train_diffusion(model, x28, epochs=1, batch_size=len(x28), device="cpu")
    assert len(hist["loss"]) == 1 and math.isfinite(hist["loss"][0])
    assert model.nll_bound(x28[:2], t_samples=3).shape == (2,)
    assert model.sample(2, steps=3).shape == (2, DIM)


def test_flow_matching_trains_one_step_and_bounds_at_28x28(x28):
    torch.manual_seed(0)
    model = FlowMatching(DigitsDenoiser(32, DIM, channels=4, conv_layers=1, dim=DIM), DIM)
    hist = train_diffusion(model, x28, epochs=1, batch_size=len(x28), device="cpu",
                           augment=lambda b: digits_to_unit(b, levels=L))
    assert len(hist["loss"]) == 1 and math.isfinite(hist["loss"][0])
    bound = digits_nll_bound(model, x28[:2], steps=2, generator=torch.Generator().manual_seed(0),
                             levels=L)
    assert bound.shape == (2,) and torch.isfinite(bound).all()
    with pytest.raises(ValueError, match="784"):
        digits_nll_bound(model, data.digits("val")[:2], steps=2)


@pytest.mark.parametrize("kind", ["MLP", "conv"])
def test_gans_train_one_step_at_28x28(kind, x28):
    torch.manual_seed(0)
    if kind == "MLP":
        G = Generator(dim=DIM, z_dim=4, hidden=16, depth=1, levels=L)
        D_ = Discriminator(dim=DIM, hidden=16, depth=1)
    else:
        G, D_ = ConvGenerator(z_dim=4, channels=2, levels=L, side=SIDE), ConvDiscriminator(2, side=SIDE)
    hist = train_gan(G, D_, x28, 1, augment=lambda b: to_unit(b, levels=L), r1=1.0, batch_size=4,
                     device="cpu")
    assert len(hist["d_loss"]) == 1 and math.isfinite(hist["g_loss"][0])
    samples = G.sample(3)
    assert samples.dtype == torch.long and samples.shape == (3, DIM) and int(samples.max()) < L


def test_conv_gan_refuses_a_side_it_cannot_reach():
    with pytest.raises(ValueError, match="multiple of 4"):
        ConvGenerator(side=30)
    with pytest.raises(ValueError, match=r"shape \(n, 784\), 28x28"):
        ConvDiscriminator(2, side=28)(torch.zeros(2, 64))


def test_a_classifier_for_other_images_gives_the_digits_scores(x28):
    y = torch.arange(len(x28)) % 10
    net = metrics.train_classifier(x28, y, L, epochs=2, batch_size=4)
    assert net.features(x28).shape == (len(x28), 32)
    more = data.digits28("val")[:24]
    scores = metrics.image_scores(more[:12], more[12:], net)
    assert set(scores) == {"fdd", "kid", "precision", "recall", "density", "coverage"}


# ------------------------------------------------------------ the benchmarks' 28x28 path
FAMILIES = ["vae", "flows", "diffusion", "gans", "flow_matching"]


def benchmark(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


def results_snapshot() -> dict:
    return {p.name: p.stat().st_mtime_ns for p in (BENCHMARKS / "results").glob("*.json")}


@pytest.mark.parametrize("name", FAMILIES + ["vae_models", "flows_families", "gans_conv"])
def test_benchmark_smoke_run_on_the_28x28_stand_in_writes_nothing(name, capsys):
    before = results_snapshot()
    assert benchmark(name).main(["--data", "digits28", "--quick", "--subset", "16",
                                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "16 / 16 / 16 images of 28x28, 256 levels" in out and "nothing written" in out
    assert results_snapshot() == before


def test_benchmark_writes_its_own_file_never_the_digits_one(tmp_path, monkeypatch):
    common = benchmark("common")
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    gans = benchmark("gans")
    assert gans.main(["--data", "digits28", "--subset", "16", "--epochs", "1", "--device", "cpu"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["gans-digits28.json"]
    result = json.loads((tmp_path / "gans-digits28.json").read_text())
    assert result["data"] == "digits28" and result["side"] == 28 and result["levels"] == 256
    assert result["device"].startswith("cpu") and result["steps"] == 1
    assert common.results_path("gans", "digits").name == "gans.json"
    assert common.results_path("vae", "mnist").name == "vae-mnist.json"


def test_benchmark_on_mnist_files_and_the_message_when_they_are_missing(tmp_path, monkeypatch):
    from tests.test_mnist import FILES, N_TEST, N_TRAIN, N_VAL, sha, write

    monkeypatch.setattr(D, "MNIST_SPLITS", {"train": N_TRAIN, "val": N_VAL, "test": N_TEST})
    monkeypatch.setattr(D, "MNIST_SHA256", {ds: {k: sha(gz) for k, (_, gz) in f.items()}
                                            for ds, f in FILES.items()})
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    write(tmp_path / "cache", "mnist")
    vae = benchmark("vae")
    assert vae.main(["--data", "mnist", "--root", str(tmp_path / "cache"), "--quick",
                     "--device", "cpu"]) == 0
    with pytest.raises(D.MissingDataError, match="python -m dgm.data download fashion_mnist"):
        vae.main(["--data", "fashion_mnist", "--root", str(tmp_path / "cache"), "--quick"])


def test_pixel_counts_match_the_one_hot_sum_without_building_it(x28):
    counts = benchmark("flows").pixel_counts(x28, L)
    assert counts.dtype == torch.float64 and counts.shape == (DIM, L)
    assert torch.equal(counts, torch.nn.functional.one_hot(x28, L).sum(0).double())
