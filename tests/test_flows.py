"""Properties of the flows exported from the flows chapter (dgm.flows)."""

from __future__ import annotations

import math

import pytest
import torch

from dgm import data
from dgm.flows import (
    IAF, MADE, MAF, ActNorm, AffineCoupling, Flow, Logit, NeuralSpline, Planar, RealNVP, SplineCoupling,
    check_layer, coupling_masks, rq_spline,
)
from dgm.train import fit


def perturbed(module, scale=0.3, seed=0):
    """Random weights (at initialization every layer is the identity, which would test too little)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


LAYERS = {
    "planar": lambda d: Planar(d, u=torch.linspace(-1, 1, d), w=torch.linspace(1, -0.5, d), b=0.2),
    "nice": lambda d: perturbed(AffineCoupling(coupling_masks(d, 1)[0], 16, affine=False)),
    "affine coupling": lambda d: perturbed(AffineCoupling(coupling_masks(d, 2)[1], 16)),
    "actnorm": lambda d: perturbed(ActNorm(d)),
    "maf": lambda d: perturbed(MAF(d, 16)),
    "iaf": lambda d: perturbed(IAF(d, 16)),
    "spline coupling": lambda d: perturbed(SplineCoupling(coupling_masks(d, 1)[0], 16, bins=6)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_log_det_matches_autograd_and_inverse_inverts(name):
    torch.manual_seed(0)
    layer = LAYERS[name](4).double().train()
    x = torch.randn(6, 4, dtype=torch.float64)
    check_layer(layer, x, atol=1e-8)


def test_logit_layer():
    check_layer(Logit().double(), torch.rand(6, 5, dtype=torch.float64) * 0.98 + 0.01, atol=1e-8)


def test_check_layer_catches_a_wrong_log_det():
    class Wrong(ActNorm):
        def forward(self, x):
            z, ld = super().forward(x)
            return z, ld + 0.1

    with pytest.raises(AssertionError):
        check_layer(perturbed(Wrong(3)).double(), torch.randn(4, 3, dtype=torch.float64))


@pytest.mark.parametrize("make", [lambda: RealNVP(2, n_layers=4, hidden=16),
                                  lambda: NeuralSpline(2, n_layers=2, hidden=16, bins=6, bound=4.0),
                                  lambda: Flow([MAF(2, 16), MAF(2, 16)], dim=2)])
def test_flow_density_integrates_to_one(make):
    torch.manual_seed(0)
    flow = perturbed(make(), scale=0.2).double().eval()
    h = 0.05
    ticks = torch.arange(-10 + h / 2, 10, h, dtype=torch.float64)
    xx, yy = torch.meshgrid(ticks, ticks, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum().item() * h * h
    assert abs(mass - 1) < 2e-3


def test_samples_and_log_prob_are_consistent():
    torch.manual_seed(0)
    flow = perturbed(RealNVP(3, n_layers=4, hidden=16), scale=0.2).double().eval()
    x = flow.sample(500)
    assert x.shape == (500, 3)
    z, log_det = flow(x)
    assert torch.allclose(flow.inverse(z)[0], x, atol=1e-9)
    assert torch.isfinite(flow.log_prob(x)).all()


def test_made_outputs_depend_only_on_earlier_inputs():
    torch.manual_seed(0)
    made = perturbed(MADE(6, hidden=20, n_out=3))
    jac = torch.autograd.functional.jacobian(lambda v: made(v[None])[0], torch.randn(6))  # (3, 6, 6)
    upper = torch.triu(torch.ones(6, 6), diagonal=0).bool()  # output i must not see inputs j >= i
    assert jac[:, upper].abs().max() == 0
    assert jac[:, ~upper].abs().max() > 0


def test_rq_spline_is_monotone_onto_and_identity_outside():
    g = torch.Generator().manual_seed(0)
    K, B = 6, 3.0
    w = torch.softmax(torch.randn(1, K, generator=g), -1).expand(400, K) * 2 * B
    h = torch.softmax(torch.randn(1, K, generator=g), -1).expand(400, K) * 2 * B
    d = (torch.rand(1, K + 1, generator=g) + 0.2).expand(400, K + 1)
    x = torch.linspace(-4, 4, 400)
    y, log_slope = rq_spline(x, w, h, d, B)
    assert (y.diff() > 0).all()
    outside = x.abs() >= B
    assert torch.equal(y[outside], x[outside]) and (log_slope[outside] == 0).all()
    x_back, _ = rq_spline(y, w, h, d, B, inverse=True)
    assert torch.allclose(x_back, x, atol=1e-4)


def test_realnvp_api_and_input_errors():
    flow = RealNVP(5, n_layers=2, hidden=8)
    assert flow.log_prob(torch.randn(7, 5)).shape == (7,)
    assert flow.sample(3).shape == (3, 5)
    for bad in [torch.randn(7, 4), torch.randn(5), torch.zeros(7, 5, dtype=torch.long)]:
        with pytest.raises(ValueError, match=r"\(n, 5\)"):
            flow.log_prob(bad)


def test_training_lowers_the_nll_toward_the_entropy():
    x = data.toy("8gaussians", 4000, seed=1)
    flow = RealNVP(2, n_layers=4, hidden=32)
    hist = fit(flow, lambda m, b: -m.log_prob(b).mean(), x, epochs=5, batch_size=200, lr=3e-3, progress=False)
    assert hist.train[-1] < hist.train[0] - 0.5
    with torch.no_grad():
        nll = -flow.log_prob(data.toy("8gaussians", 4000, seed=2)).mean().item()
    assert data.toy_entropy("8gaussians") - 0.05 < nll < hist.train[0]
