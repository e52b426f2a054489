"""dgm.flow_matching: paths and their velocities, divergence estimators, ODE solvers and log-densities, the CFM loss."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from dgm import data
from dgm.diffusion import DigitsDenoiser, train_diffusion
from dgm.flow_matching import (SOLVERS, FlowMatching, GaussianPath, cnf_log_prob, digits_nll_bound, digits_to_unit,
                               divergence, hutchinson_divergence, mixture_velocity, ode_solve, ot_pairing,
                               standard_normal_log_prob, straightness, toy_net, unit_to_digits)

F64 = torch.float64
PATHS = {"linear": GaussianPath.linear, "vp": GaussianPath.vp}


class Field(nn.Module):
    """A network with a known velocity: net(x, cond) = fn(x), the condition (t, y) ignored."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, cond):
        return self.fn(x)


def log_normal(z):
    """log N(z; 0, I) per row, written out here (not the module's standard_normal_log_prob)."""
    return -0.5 * (z**2).sum(1) - z.shape[1] / 2 * math.log(2 * math.pi)


# ------------------------------------------------------------------ paths and the CFM loss
def test_linear_path_is_the_interpolant_with_velocity_x1_minus_x0():
    g = torch.Generator().manual_seed(0)
    x0, x1, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g), torch.rand(6, generator=g)
    xt, u = GaussianPath.linear().sample(x0, x1, t)
    torch.testing.assert_close(xt, (1 - t[:, None]) * x0 + t[:, None] * x1)
    torch.testing.assert_close(u, x1 - x0)


@pytest.mark.parametrize("name", PATHS)
def test_path_derivatives_are_those_of_a_and_sigma_and_the_ends_are_data_and_noise(name):
    """da, dsigma = autograd of a, sigma; a(0) = 1, sigma(0) = 0; at t = 1 (nearly) pure noise."""
    path = PATHS[name]()
    t = torch.linspace(0.02, 0.98, 25, dtype=F64).requires_grad_(True)
    da, ds = (torch.autograd.grad(f(t).sum(), t)[0] for f in (path.a, path.sigma))
    torch.testing.assert_close(path.da(t).detach(), da, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(path.dsigma(t).detach(), ds, rtol=1e-9, atol=1e-12)
    zero, one = torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64)
    assert path.a(zero).item() == 1 and path.sigma(zero).item() == 0
    assert path.a(one).item() < 0.01 and abs(path.sigma(one).item() - 1) < 1e-4
    if name == "vp":  # variance preserving: a^2 + sigma^2 = 1
        torch.testing.assert_close(path.a(t) ** 2 + path.sigma(t) ** 2, torch.ones_like(t))


@pytest.mark.parametrize("coupling", ["independent", "ot", "pairs"])
def test_cfm_loss_is_the_squared_error_to_the_conditional_velocity(coupling):
    """loss = ||v(x_t, t) - (x1 - x0)||^2 per row, recomputed from the same draws (x1, then t)."""
    torch.manual_seed(0)
    model = FlowMatching(toy_net(hidden=16, depth=1), 2, coupling=coupling).eval()
    x0 = data.toy("8gaussians", 8, seed=0)
    pairs = torch.randn(8, 2)
    torch.manual_seed(1)
    loss = model.loss(torch.cat([x0, pairs], 1) if coupling == "pairs" else x0)
    torch.manual_seed(1)
    if coupling == "pairs":
        x1 = pairs
    else:
        x1 = torch.randn_like(x0)
        x1 = ot_pairing(x0, x1) if coupling == "ot" else x1
    t = torch.rand(8)
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    with torch.no_grad():
        expected = ((model.velocity(xt, t) - (x1 - x0)) ** 2).sum(1)
    assert loss.shape == (8,)
    torch.testing.assert_close(loss.detach(), expected)


def test_bad_couplings_and_shapes_are_rejected_clearly():
    with pytest.raises(ValueError, match="coupling must be 'independent', 'ot' or 'pairs'.*'bogus'"):
        FlowMatching(toy_net(hidden=8, depth=1), 2, coupling="bogus")
    with pytest.raises(ValueError, match="width 4"):
        FlowMatching(toy_net(hidden=8, depth=1), 2, coupling="pairs").loss(torch.randn(5, 3))
    with pytest.raises(ValueError, match="shape"):
        FlowMatching(toy_net(hidden=8, depth=1), 2).loss(torch.randn(5, 3))
    with pytest.raises(ValueError, match="no labels"):
        FlowMatching(toy_net(hidden=8, depth=1), 2).velocity(torch.randn(5, 2), 0.5, torch.zeros(5, dtype=torch.long))


# ------------------------------------------------------------------ divergence estimators
D = 64


def tanh_field(seed=0):
    """v(x, t) = tanh(x W + t) in 64 dimensions (W with a diagonal part, so div v is far from 0)."""
    g = torch.Generator().manual_seed(seed)
    W = 0.5 * torch.eye(D, dtype=F64) + 0.5 * torch.randn(D, D, generator=g, dtype=F64) / math.sqrt(D)
    return W, lambda x, t: torch.tanh(x @ W + t[:, None])


def test_exact_divergence_matches_the_closed_form():
    W, v = tanh_field()
    x, t = torch.randn(5, D, dtype=F64, generator=torch.Generator().manual_seed(1)), 0.3
    out, div = divergence(v, x, t)
    h = torch.tanh(x @ W + t)
    torch.testing.assert_close(out, h)
    torch.testing.assert_close(div, ((1 - h**2) * W.diagonal()).sum(1))


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_within_its_standard_error(probe):
    """The mean of 4000 probes per point is within 4 standard errors of the exact divergence (64 dims)."""
    _, v = tanh_field()
    points = torch.randn(3, D, dtype=F64, generator=torch.Generator().manual_seed(1))
    n = 4000
    x = points.repeat_interleave(n, 0)
    out, est = hutchinson_divergence(v, x, 0.3, probe=probe, generator=torch.Generator().manual_seed(2))
    exact = divergence(v, points, 0.3)[1]
    torch.testing.assert_close(out, v(x, torch.full((len(x),), 0.3, dtype=F64)))
    est = est.reshape(3, n)
    se = est.std(1) / math.sqrt(n)
    assert (se > 0).all() and (se < 0.05 * exact.abs()).all()  # noisy per probe, yet a sharp test
    assert ((est.mean(1) - exact).abs() < 4 * se).all(), (est.mean(1), exact, se)


def test_rademacher_probe_is_exact_for_a_diagonal_jacobian():
    """For an elementwise field eps^T J eps = sum_i eps_i^2 J_ii = div v when eps_i = +-1; a Gaussian probe is not."""
    c = torch.linspace(-2, 2, D, dtype=F64)

    def v(x, t):
        return c * torch.tanh(x) + t[:, None] * x**2

    x = torch.randn(50, D, dtype=F64, generator=torch.Generator().manual_seed(0))
    exact = divergence(v, x, 0.7)[1]
    rad = hutchinson_divergence(v, x, 0.7, "rademacher", generator=torch.Generator().manual_seed(1))[1]
    gauss = hutchinson_divergence(v, x, 0.7, "gaussian", generator=torch.Generator().manual_seed(1))[1]
    torch.testing.assert_close(rad, exact, rtol=1e-12, atol=1e-12)
    assert (gauss - exact).abs().max() > 0.1
    with pytest.raises(ValueError, match="probe"):
        hutchinson_divergence(v, x, 0.7, probe="uniform")


# ------------------------------------------------------------------ ODE log-densities
A3 = torch.tensor([[-0.3, 0.8, 0.1], [-0.6, 0.2, 0.0], [0.2, -0.1, -0.5]], dtype=F64)


def linear_field(x, t):
    return x @ A3.T


def test_cnf_log_prob_of_a_linear_field_is_the_closed_form():
    """v = A x: x_1 = expm(A) x and log p_0(x) = log N(expm(A) x; 0, I) + tr A (RK4, 20 steps)."""
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    logp = cnf_log_prob(linear_field, x, steps=20, method="rk4", estimator="exact")
    expected = log_normal(x @ torch.linalg.matrix_exp(A3).T) + A3.trace()
    assert logp.shape == (6,)
    torch.testing.assert_close(logp, expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="estimator"):
        cnf_log_prob(linear_field, x, estimator="rademacher")


def test_cnf_log_prob_with_hutchinson_is_unbiased_for_a_linear_field():
    """Fresh probes at every evaluation: the mean over 4000 repeats is within 4 standard errors of the exact value."""
    point = torch.tensor([[0.5, -1.0, 0.3]], dtype=F64)
    exact = cnf_log_prob(linear_field, point, steps=10, estimator="exact")
    est = cnf_log_prob(linear_field, point.expand(4000, 3), steps=10, estimator="hutchinson",
                       generator=torch.Generator().manual_seed(0))
    se = est.std() / math.sqrt(len(est))
    assert 0 < se < 0.01
    assert abs(est.mean() - exact[0]) < 4 * se


def test_cnf_density_of_a_nonlinear_field_integrates_to_one():
    """exp(log p_0) summed over a grid in 2D: the change of variables keeps the density normalized."""
    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(2, 2, generator=g, dtype=F64), torch.randn(2, generator=g, dtype=F64)

    def v(x, t):
        return torch.tanh(x @ W + b) * (1 + t[:, None]) - 0.3 * x

    side = torch.linspace(-7, 7, 71, dtype=F64)
    grid = torch.cartesian_prod(side, side)
    logp = cnf_log_prob(v, grid, steps=10, method="rk4")
    total = logp.exp().sum() * (side[1] - side[0]) ** 2
    assert abs(total.item() - 1) < 1e-3


def test_standard_normal_log_prob():
    x = torch.randn(4, 3, dtype=F64)
    expected = torch.distributions.Normal(torch.zeros((), dtype=F64), 1).log_prob(x).sum(1)
    torch.testing.assert_close(standard_normal_log_prob(x), expected)


# ------------------------------------------------------------------ the marginal velocity of a mixture
CENTERS, KAPPA = data.toy_components("8gaussians")
CENTERS = CENTERS.double()


@pytest.mark.parametrize("name, t", [("linear", 0.3), ("linear", 0.7), ("vp", 0.1), ("vp", 0.3), ("vp", 0.6)])
def test_mixture_velocity_agrees_with_monte_carlo(name, t):
    """E[u_t(x | x0) | x_t = x] by self-normalized weights p_t(x | x0_i) over draws x0_i from the mixture."""
    path = PATHS[name]()
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = CENTERS[torch.randint(len(CENTERS), (n,), generator=g)] + KAPPA * torch.randn(n, 2, generator=g, dtype=F64)
    tt = torch.tensor([t], dtype=F64)
    a, s, da, ds = (f(tt).item() for f in (path.a, path.sigma, path.da, path.dsigma))
    spread = math.sqrt(a**2 * KAPPA**2 + s**2)
    points = torch.stack([a * CENTERS[0] + spread * torch.tensor([0.5, -0.3], dtype=F64),
                          a * (CENTERS[0] + CENTERS[1]) / 2,
                          a * CENTERS[5] + spread * torch.tensor([-0.8, 0.4], dtype=F64)])
    exact = mixture_velocity(points, t, path, CENTERS, KAPPA)
    assert exact.shape == (3, 2) and exact.dtype == F64
    for x, u in zip(points, exact):
        w = torch.softmax(-((x - a * x0) ** 2).sum(1) / (2 * s**2), 0)[:, None]
        u_i = da * x0 + ds * (x - a * x0) / s  # u_t(x | x0_i)
        est = (w * u_i).sum(0)
        se = (w**2 * (u_i - est) ** 2).sum(0).sqrt()
        assert 1 / (w**2).sum() > 1000  # enough effective draws for the standard error to mean something
        assert ((est - u).abs() < 4 * se + 1e-9).all(), (name, t, x, est, u, se)


def test_vp_mixture_velocity_is_the_probability_flow_drift():
    """-beta(t)/2 (x + grad log p_t(x)), with the score by autograd of the noised mixture's log-density."""
    path = GaussianPath.vp(beta_min=0.1, beta_max=20.0)
    x = 2 * torch.randn(200, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    for t_val in (0.01, 0.1, 0.4, 0.9):
        t = torch.full((len(x),), t_val, dtype=F64)
        a, s = path.a(t)[:, None], path.sigma(t)[:, None]
        var = a**2 * KAPPA**2 + s**2
        xr = x.clone().requires_grad_(True)
        log_p = torch.logsumexp(-((xr[:, None] - a[:, :, None] * CENTERS) ** 2).sum(-1) / (2 * var), 1)
        score = torch.autograd.grad(log_p.sum(), xr)[0]
        beta = 0.1 + t_val * (20.0 - 0.1)
        torch.testing.assert_close(mixture_velocity(x, t, path, CENTERS, KAPPA), -beta / 2 * (x + score),
                                   rtol=1e-8, atol=1e-8)


# ------------------------------------------------------------------ ODE solvers
A2 = torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=F64)
X2 = torch.tensor([[1.0, -0.5], [0.3, 2.0]], dtype=F64)
ORDERS = {"euler": 1, "heun": 2, "rk4": 4}
PROBLEMS = {  # f, t_start, t_end, exact solution at t_end
    "linear": (lambda x, t: x @ A2.T, 0.0, 1.0, X2 @ torch.linalg.matrix_exp(A2).T),
    "time-dependent, backwards": (lambda x, t: math.cos(t) * x, 1.0, 0.0, X2 * math.exp(-math.sin(1.0))),
}


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("method", ORDERS)
def test_solvers_converge_at_their_order(method, problem):
    """The error at 8, 16, 32 steps falls as steps^-p with p = 1, 2, 4 (least-squares slope, +-0.3)."""
    f, t0, t1, exact = PROBLEMS[problem]
    steps = [8, 16, 32]
    errs = [(ode_solve(f, X2, t0, t1, k, method) - exact).abs().max().item() for k in steps]
    slope = np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(-slope - ORDERS[method]) < 0.3, (method, errs, slope)
    assert set(SOLVERS) == set(ORDERS)


def test_ode_solve_path_backwards_solves_and_errors():
    f = PROBLEMS["linear"][0]
    path = ode_solve(f, X2, 0.0, 1.0, 16, "rk4", return_path=True)
    assert path.shape == (17, *X2.shape)
    assert torch.equal(path[0], X2)
    torch.testing.assert_close(path[-1], ode_solve(f, X2, 0.0, 1.0, 16, "rk4"))
    back = ode_solve(f, path[-1], 1.0, 0.0, 16, "rk4")  # t_start > t_end
    torch.testing.assert_close(back, X2, rtol=0, atol=1e-5)
    for bad in (0, -3, 2.0):
        with pytest.raises(ValueError, match="steps"):
            ode_solve(f, X2, 0.0, 1.0, bad)
    with pytest.raises(ValueError, match="method"):
        ode_solve(f, X2, 0.0, 1.0, 4, "midpoint")


# ------------------------------------------------------------------ couplings, sampling, guidance, training
def test_ot_pairing_is_a_permutation_of_minimal_cost():
    def cost(x0, x1):
        return ((x0 - x1) ** 2).sum().item()

    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    out = ot_pairing(x0, x1)
    perm = torch.cdist(out, x1).argmin(1)
    assert torch.equal(perm.sort().values, torch.arange(5)) and torch.equal(out, x1[perm])
    best = min(cost(x0, x1[list(p)]) for p in itertools.permutations(range(5)))
    assert cost(x0, out) == pytest.approx(best, rel=1e-6)
    x0, x1 = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    assert cost(x0, ot_pairing(x0, x1)) <= cost(x0, x1)


def test_sample_solves_from_noise_at_t1_to_data_at_t0():
    """A constant field c carries x_1 to x_0 = x_1 - c; the path has steps + 1 states, the first x_1."""
    c = torch.tensor([1.5, -0.5])
    model = FlowMatching(Field(lambda x: c + 0 * x), 2)
    x1 = torch.randn(7, 2)
    path = model.sample_from(x1, steps=4, return_path=True)
    assert path.shape == (5, 7, 2) and torch.equal(path[0], x1)
    torch.testing.assert_close(path[-1], x1 - c)
    assert model.sample(7, steps=4, return_path=True).shape == (5, 7, 2)
    assert model.sample(7, steps=4).shape == (7, 2)
    assert straightness(model, x1, steps=10) < 1e-10


def test_straightness_of_a_straight_but_accelerating_flow():
    """v = -x: x_t = x_1 e^(1 - t) is straight but not at constant speed; the deviation has a closed form."""
    model = FlowMatching(Field(lambda x: -x), 2)
    x1 = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    s = torch.linspace(0, 1, 101, dtype=F64)  # 1 - t on the Riemann sum's grid
    expected = ((s.exp() - (math.e - 1)) ** 2).mean() * (x1.double() ** 2).sum(1).mean()
    assert straightness(model, x1, steps=100) == pytest.approx(expected.item(), rel=1e-3)


def test_classifier_free_guidance_combines_the_two_velocities():
    torch.manual_seed(0)
    model = FlowMatching(toy_net(hidden=16, depth=1, num_classes=3), 2, num_classes=3, p_uncond=1.0).eval()
    x, t, y = torch.randn(5, 2), torch.rand(5), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        c, u = model.velocity(x, t, y), model.velocity(x, t, None)
        assert (c - u).abs().max() > 1e-3  # the label matters
        torch.testing.assert_close(model.velocity(x, t, y, w=1.5), 2.5 * c - 1.5 * u)
        torch.testing.assert_close(model.velocity(x, t, y, w=0.0), c)
        model.train()  # p_uncond = 1: every label replaced by the null label in training
        torch.testing.assert_close(model.velocity(x, t, y), u)
        model.eval()
        assert model.sample(5, steps=3, y=y, w=1.0).shape == (5, 2)


def test_a_few_epochs_lower_the_toy_loss():
    """32 AdamW steps (no EMA) lower the epoch loss and the loss at fixed draws of (x1, t)."""
    x = data.toy("8gaussians", 512, seed=0)

    def fixed_draw_loss(m):
        torch.manual_seed(5)
        with torch.no_grad():
            return m.loss(x.repeat(4, 1)).mean().item()

    torch.manual_seed(0)
    model = FlowMatching(toy_net(hidden=32, depth=2), 2)
    before = fixed_draw_loss(model)
    history = train_diffusion(model, x, epochs=2, batch_size=32, lr=1e-2, ema=0.0)
    assert len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    assert not model.training
    assert fixed_draw_loss(model) < 0.95 * before


# ------------------------------------------------------------------ the digits
def all_levels(n=200, seed=0):
    x = torch.randint(0, data.DIGITS_LEVELS, (n, 64), generator=torch.Generator().manual_seed(seed))
    x[0, :17] = torch.arange(17)
    return x


def test_digits_to_unit_lands_in_the_right_bins_and_inverts():
    """Level k goes to [2k/17 - 1, 2(k+1)/17 - 1), and unit_to_digits gives k back."""
    x = all_levels()
    z = digits_to_unit(x, generator=torch.Generator().manual_seed(1))
    assert z.shape == x.shape and z.is_floating_point()
    lo, hi = 2 * x.double() / 17 - 1, 2 * (x.double() + 1) / 17 - 1
    assert ((z.double() >= lo) & (z.double() < hi)).all()
    assert z.min() >= -1 and z.max() < 1
    assert torch.equal(unit_to_digits(z), x)
    assert unit_to_digits(z).dtype == torch.long
    assert torch.equal(unit_to_digits(torch.tensor([[-3.0, 1.0, 5.0]])), torch.tensor([[0, 16, 16]]))


def test_digits_round_trip_at_the_top_of_each_bin(monkeypatch):
    """u just below 1 (the largest value torch.rand returns) still maps back to its level."""
    x = torch.arange(17)[None]
    monkeypatch.setattr(torch, "rand", lambda shape, generator=None: torch.full(shape, 1 - 2.0**-24))
    assert torch.equal(unit_to_digits(digits_to_unit(x)), x)


def test_digits_round_trip_at_the_bottom_of_each_bin(monkeypatch):
    """u = 0 (a value torch.rand can return) maps back to its level."""
    x = torch.arange(17)[None]
    monkeypatch.setattr(torch, "rand", lambda shape, generator=None: torch.zeros(shape))
    assert torch.equal(unit_to_digits(digits_to_unit(x)), x)


def test_digits_nll_bound_for_a_zero_field_is_the_gaussian_bound():
    """v = 0: p_z = N(0, I), so the bound is -log N(z; 0, I) + 64 log(17/2) at the same dequantization."""
    x = all_levels(4)
    model = FlowMatching(Field(lambda z: 0 * z), 64)
    bound = digits_nll_bound(model, x, steps=2, generator=torch.Generator().manual_seed(0))
    z = digits_to_unit(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bound, -log_normal(z) + 64 * math.log(17 / 2))


def test_digits_nll_bound_of_an_untrained_model_and_its_errors():
    torch.manual_seed(0)
    net = DigitsDenoiser(32, 64, channels=0, hidden=16, depth=1, dropout=0.0)
    model = FlowMatching(net, 64).eval()
    bound = digits_nll_bound(model, all_levels(3), steps=2, generator=torch.Generator().manual_seed(0))
    assert bound.shape == (3,) and torch.isfinite(bound).all()
    with pytest.raises(ValueError, match="torch.long"):
        digits_nll_bound(model, all_levels(3).float())
    with pytest.raises(ValueError, match="0..16"):
        digits_nll_bound(model, torch.full((2, 64), 17))
