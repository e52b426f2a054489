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


# --- invertible linear layers, the KL helper, per-image bounds (helper F1) ---


def test_lu_linear_and_permutation_log_dets_match_autograd():
    from dgm.flows import LULinear, Permutation

    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64)
    check_layer(perturbed(LULinear(5, seed=3)).double(), x, atol=1e-8)
    check_layer(Permutation([3, 0, 4, 1, 2]).double(), x, atol=1e-12)


def test_lu_linear_is_the_matrix_it_factorizes():
    from dgm.flows import LULinear

    layer = perturbed(LULinear(6, seed=1), seed=2).double()
    W = torch.linalg.multi_dot(layer.weight())
    x = torch.randn(4, 6, dtype=torch.float64)
    z, log_det = layer(x)
    assert torch.allclose(z, x @ W.T, atol=1e-12)
    # O(D) log-det = the O(D^3) one of the assembled matrix
    assert torch.allclose(log_det, torch.linalg.slogdet(W)[1].expand(4), atol=1e-10)
    assert torch.linalg.slogdet(W)[0] != 0


def test_lu_linear_starts_as_a_rotation_and_trains():
    from dgm.flows import LULinear

    layer = LULinear(4, seed=0)
    W = torch.linalg.multi_dot(layer.weight()).detach()
    assert torch.allclose(W @ W.T, torch.eye(4), atol=1e-5)  # orthogonal: log|det| = 0
    # maximum likelihood of a correlated Gaussian pulls log|det W| away from 0
    x = torch.randn(2000, 4) @ torch.tensor([[2.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0],
                                             [0, 0, 0.5, 0.5]]).T
    flow = Flow([layer], dim=4)
    hist = fit(flow, lambda m, b: -m.log_prob(b).mean(), x, epochs=20, batch_size=200,
               lr=1e-2, progress=False)
    assert hist.train[-1] < hist.train[0] - 0.3


def test_toy_kl_is_zero_for_the_truth_and_matches_nll_minus_entropy():
    from dgm.flows import toy_kl

    class Truth(torch.nn.Module):
        def log_prob(self, x):
            return data.toy_log_prob("8gaussians", x)

    x = data.toy("8gaussians", 5000, seed=4)
    assert toy_kl(Truth(), "8gaussians", x) == (0.0, 0.0)
    flow = perturbed(RealNVP(2, n_layers=2, hidden=8), scale=0.1).eval()
    kl, se = toy_kl(flow, "8gaussians", x)
    with torch.no_grad():
        nll = -flow.log_prob(x).mean().item()
    assert kl > 0 and se > 0
    # the sample mean of log p_data estimates minus the entropy (within 5 standard errors)
    assert abs(kl - (nll - data.toy_entropy("8gaussians"))) < 5 * se + 0.05
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        toy_kl(flow, "8gaussians", torch.randn(5, 3))


def test_dequantization_bound_per_image_averages_to_the_per_draw_bound():
    from dgm.flows import dequantization_bound

    flow = Flow([Logit()] + list(NeuralSpline(64, n_layers=2, hidden=8).layers), dim=64).eval()
    x = data.digits("test")[:20]
    per_image = dequantization_bound(flow, x, draws=3, per_image=True)
    assert per_image.shape == (3, 20)
    assert torch.allclose(per_image.mean(1), dequantization_bound(flow, x, draws=3))
    # an untrained flow is still a valid model: its bound is at least the exact NLL, > 0
    assert (per_image > 0).all()


def test_importance_weighted_dequantization_is_jensen_at_k1_and_tightens_with_k():
    from dgm.flows import dequantization_bound

    torch.manual_seed(0)
    flow = Flow([Logit()] + list(NeuralSpline(64, n_layers=2, hidden=8).layers), dim=64).eval()
    with torch.no_grad():  # a flow whose density varies within the bins, so the gap is visible
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = data.digits("test")[:30]
    # k = 1 is the Jensen bound, draw s with seed s
    y = data.dequantize(x, generator=torch.Generator().manual_seed(0))
    jensen = data.discrete_nll_bound(flow.log_prob(y), 64).detach()
    assert torch.allclose(dequantization_bound(flow, x, draws=1, per_image=True, k=1)[0], jensen)
    # E[L_k] rises with k: the NLL bound falls, beyond its Monte Carlo error
    bounds = [dequantization_bound(flow, x, draws=4, per_image=True, k=k).mean(0) for k in (1, 8, 64)]
    for loose, tight in zip(bounds, bounds[1:]):
        diff = loose - tight
        assert diff.mean() > 3 * diff.std() / len(diff) ** 0.5
    with pytest.raises(ValueError, match="k and draws"):
        dequantization_bound(flow, x, k=0)


# Flows as variational families and residual flows (sections "Flows as variational
# families" and "Residual flows" of the flows chapter).


def test_reverse_kl_is_zero_for_the_base_itself_and_log_Z_quadrature_is_exact():
    from dgm.flows import log_Z_quadrature, reverse_kl_terms

    def energy(z):  # p = N(0, I): Z = 2 pi
        return 0.5 * (z**2).sum(1)

    log_Z = log_Z_quadrature(energy, lim=8.0, n=400)
    assert abs(log_Z - math.log(2 * math.pi)) < 1e-6
    torch.manual_seed(0)
    _, terms = reverse_kl_terms(Flow([], 2), energy, 64)  # q = q_0 = p: every term is -log Z
    assert torch.allclose(terms + log_Z, torch.zeros(64), atol=1e-5)


def test_reverse_kl_fit_lowers_the_kl_and_the_kl_stays_nonnegative():
    from dgm.flows import fit_reverse_kl, log_Z_quadrature, reverse_kl_terms, rezende_energy, vi_flow

    def energy(z):
        return rezende_energy("U1", z)

    log_Z = log_Z_quadrature(energy, n=400)

    def kl(flow):
        torch.manual_seed(1)
        with torch.no_grad():
            terms = reverse_kl_terms(flow, energy, 2000)[1] + log_Z
        return terms.mean().item(), terms.std().item() / math.sqrt(2000)

    for family in ("planar", "iaf"):
        torch.manual_seed(0)
        flow = vi_flow(family, 2)
        before, _ = kl(flow)
        fit_reverse_kl(flow, energy, steps=60, n_samples=64)
        after, se = kl(flow)
        assert after < before - 0.1, (family, before, after)
        assert after > -5 * se  # KL(q || p) >= 0


def test_rezende_energy_and_reverse_kl_check_their_inputs():
    from dgm.flows import reverse_kl_terms, rezende_energy

    with pytest.raises(ValueError, match="U1"):
        rezende_energy("U9", torch.zeros(3, 2))
    with pytest.raises(ValueError):
        rezende_energy("U1", torch.zeros(3, 5))
    with pytest.raises(ValueError, match="shape"):
        reverse_kl_terms(Flow([], 2), lambda z: z, 8)  # energy returns (8, 2), not (8,)


def _residual_block(dim=5, c=0.9):
    from dgm.flows import ResidualBlock

    torch.manual_seed(0)
    return ResidualBlock(dim, hidden=16, c=c).double()


def _exact_series(block, x, terms):
    """The truncated series with exact traces: the probes e_1..e_D give tr(J^k) = sum_i e_i^T J^k e_i."""
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    return sum(block.log_abs_det(x, terms, v=eye[i].expand_as(x))[1] for i in range(x.shape[1]))


def test_residual_block_is_a_contraction_and_its_fixed_point_inverse_recovers_x():
    block = _residual_block()
    x = torch.randn(32, 5, dtype=torch.float64)
    jac = torch.stack([torch.autograd.functional.jacobian(block.g, xi[None])[0, :, 0] for xi in x])
    assert torch.linalg.matrix_norm(jac, ord=2).max() <= block.c**2 + 1e-9  # Lip(g) <= c^2
    z, _ = block(x)
    x_back, _ = block.inverse(z.detach(), iters=100)
    assert torch.allclose(x_back, x, atol=1e-10)


def test_residual_log_det_series_matches_the_exact_log_det():
    block = _residual_block(c=0.95)
    x = torch.randn(16, 5, dtype=torch.float64)
    jac = torch.stack([torch.autograd.functional.jacobian(block.g, xi[None])[0, :, 0] for xi in x])
    exact = torch.linalg.slogdet(torch.eye(5, dtype=x.dtype) + jac)[1]
    assert torch.allclose(_exact_series(block, x, terms=40).detach(), exact, atol=1e-8)
    one_term = _exact_series(block, x, terms=1).detach()  # tr(J_g): not yet the log-det
    assert (one_term - exact).abs().max() > 1e-4


def test_hutchinson_estimate_is_unbiased_within_five_standard_errors():
    block = _residual_block()
    x = torch.randn(1, 5, dtype=torch.float64)
    target = _exact_series(block, x, terms=6).item()
    torch.manual_seed(0)
    S = 4000
    _, estimates = block.log_abs_det(x.expand(S, 5), terms=6)
    mean, se = estimates.mean().item(), estimates.std().item() / math.sqrt(S)
    assert abs(mean - target) < 5 * se, (mean, target, se)


def test_lu_linear_identity_start_is_the_identity():
    from dgm.flows import LULinear

    layer = LULinear(5, init="identity")
    x = torch.randn(3, 5)
    z, log_det = layer(x)
    assert torch.equal(z, x) and torch.equal(log_det, torch.zeros(3))
    with pytest.raises(ValueError, match="init"):
        LULinear(5, init="random")
