"""dgm.diffusion: the schedule's closed forms, the samplers, the digits DDPM's bound and its errors."""

from __future__ import annotations

import math

import pytest
import torch

from dgm import data
from dgm.diffusion import (DDPM, Diffusion, GaussianDiffusion, Schedule, discretized_gaussian_log_prob, langevin,
                           train_diffusion)
from dgm.vi import kl_diag_gaussians

SCHEDULES = {"linear": lambda: Schedule.linear(200, 1e-3, 0.1), "cosine": lambda: Schedule.cosine(200),
             "rescaled": lambda: Schedule.cosine(200, sigma_1=0.02, var_T=0.9999)}


@pytest.mark.parametrize("name", SCHEDULES)
def test_chain_matches_the_closed_form_marginal(name):
    s = SCHEDULES[name]()
    torch.manual_seed(0)
    x0 = 2 + 0.5 * torch.randn(40_000)
    x = x0.clone()
    for t in range(1, s.T + 1):
        x = s.alpha[t - 1].sqrt() * x + s.beta[t - 1].sqrt() * torch.randn_like(x)
        if t in (1, 20, 100, 200):
            ab = s.alpha_bar[t - 1]
            assert abs(x.mean() - 2 * ab.sqrt()) < 0.02
            assert abs(x.var() - (0.25 * ab + 1 - ab)) < 0.02
    closed = s.q_sample(x0, torch.full((len(x0),), s.T))
    assert abs(closed.var() - x.var()) < 0.03


@pytest.mark.parametrize("name", SCHEDULES)
def test_posterior_is_gaussian_conditioning(name):
    s = SCHEDULES[name]()
    t = torch.arange(2, s.T + 1)
    x0, xt = torch.full((len(t), 1), 0.7), torch.full((len(t), 1), -0.3)
    mean, var = s.posterior(x0, xt, t)
    ab, prev, a = (v[t - 1].double() for v in (s.alpha_bar, s.alpha_bar_prev, s.alpha))
    v11, v12, v22 = 1 - prev, a.sqrt() * (1 - prev), 1 - ab
    # the schedule is stored in float32: compare at that precision
    torch.testing.assert_close(mean[:, 0].double(), prev.sqrt() * 0.7 + v12 / v22 * (-0.3 - ab.sqrt() * 0.7),
                               atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(var[:, 0].double(), v11 - v12**2 / v22, atol=1e-7, rtol=1e-3)


@pytest.mark.parametrize("name", SCHEDULES)
def test_kl_weight_forms_agree(name):
    """(SNR(t-1) - SNR(t)) / 2 = coef_x0^2 / (2 beta_tilde) = lambda_t alpha_bar_t / sigma_t^2, and the KL is kl_diag_gaussians."""
    s = SCHEDULES[name]()
    i = torch.arange(1, s.T)  # steps t = 2..T
    w = s.kl_weight[i]
    torch.testing.assert_close(w, s.coef_x0[i] ** 2 / (2 * s.beta_tilde[i]), rtol=1e-3, atol=1e-6)
    lam = s.beta[i] ** 2 / (2 * s.beta_tilde[i] * s.alpha[i] * s.sigma[i] ** 2)
    torch.testing.assert_close(w, lam * s.alpha_bar[i] / s.sigma[i] ** 2, rtol=1e-3, atol=1e-6)
    assert s.kl_weight[0] == 0
    x0, x0_hat, xt = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    t = torch.tensor([2, 50, 150])
    mq, var = s.posterior(x0, xt, t)
    mp, _ = s.posterior(x0_hat, xt, t)
    kl = kl_diag_gaussians(mq, var.log(), mp, var.log())
    torch.testing.assert_close(kl, (s.at("kl_weight", t, x0) * (x0 - x0_hat) ** 2).sum(1), rtol=1e-3, atol=1e-5)


def test_rescaled_cosine_hits_its_ends_and_errors_are_clear():
    s = Schedule.cosine(1000, sigma_1=0.02, var_T=0.9999)
    assert math.isclose(s.sigma[0].item(), 0.02, rel_tol=1e-4)
    assert math.isclose(1 - s.alpha_bar[-1].item(), 0.9999, rel_tol=1e-6)
    assert Schedule.linear(1000).sigma[0].item() == pytest.approx(0.01, rel=1e-3)
    with pytest.raises(ValueError, match="decrease"):
        Schedule(torch.tensor([0.5, 0.6, 0.1]))
    with pytest.raises(ValueError, match="1D"):
        Schedule(torch.tensor([[0.5, 0.4]]))


class _ExactGaussian(Diffusion):
    """x0_hat = E[x_0 | x_t] exactly, for data x_0 ~ N(m, s^2) in 1D: the samplers must return N(m, s^2)."""

    m, s = 1.5, 0.3

    def x0_hat(self, xt, t, y=None):
        ab = self.schedule.at("alpha_bar", t, xt)
        v = ab * self.s**2 + 1 - ab
        return self.m + ab.sqrt() * self.s**2 / v * (xt - ab.sqrt() * self.m)


@pytest.mark.parametrize("steps, eta", [(1000, 1.0), (100, 1.0), (100, 0.0), (50, 0.0)])
def test_samplers_recover_gaussian_data_with_the_exact_denoiser(steps, eta):
    model = _ExactGaussian(Schedule.cosine(1000))
    torch.manual_seed(0)
    x = model.sample_from(torch.randn(20_000, 1), steps=steps, eta=eta)
    assert abs(x.mean() - 1.5) < 0.02
    assert abs(x.std() - 0.3) / 0.3 < 0.06
    with pytest.raises(ValueError, match="steps"):
        model.sample_from(torch.randn(3, 1), steps=1)


def test_few_ddim_steps_shrink_samples_towards_the_mean():
    """Euler steps on the probability-flow ODE lose variance: the fewer, the more (the chapter's exercise)."""
    model = _ExactGaussian(Schedule.cosine(1000))
    xT = torch.randn(20_000, 1, generator=torch.Generator().manual_seed(0))
    stds = [model.sample_from(xT, steps=k, eta=0.0).std().item() for k in (10, 50, 1000)]
    assert stds[0] < stds[1] < stds[2] and abs(stds[2] - 0.3) < 0.01


def test_ddim_is_deterministic_and_ddpm_is_not():
    model = _ExactGaussian(Schedule.cosine(100))
    xT = torch.randn(5, 1)
    torch.testing.assert_close(model.sample_from(xT, steps=20, eta=0.0), model.sample_from(xT, steps=20, eta=0.0))
    assert not torch.equal(model.sample_from(xT, eta=1.0), model.sample_from(xT, eta=1.0))


def test_discretized_gaussian_is_a_distribution_over_levels():
    levels = torch.linspace(-1, 1, 17)
    mean = torch.tensor([[-3.0, -0.5, 0.06, 2.0]])
    logp = discretized_gaussian_log_prob(mean, 0.05, levels)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(1, 4))
    normal = torch.distributions.Normal(-0.5, 0.05)
    inner = normal.cdf(torch.tensor(-0.5 + 0.0625)) - normal.cdf(torch.tensor(-0.5 - 0.0625))
    assert logp[0, 1, 4].exp().item() == pytest.approx(inner.item(), rel=1e-4)
    assert logp[0, 0, 0].exp() > 0.999 and logp[0, 3, -1].exp() > 0.999  # outer bins are open


def test_ddpm_verbs_shapes_and_dtypes():
    torch.manual_seed(0)
    model = DDPM(Schedule.cosine(50, sigma_1=0.02, var_T=0.9999))
    x = data.digits("train")[:6]
    assert model.loss(x).shape == (6,)
    bound = model.nll_bound(x)
    assert bound.shape == (6,) and torch.isfinite(bound).all() and (bound > 0).all()
    xs = model.sample(4, steps=10)
    assert xs.shape == (4, 64) and xs.dtype == torch.long and xs.min() >= 0 and xs.max() <= 16
    assert DDPM().schedule.T == 1000  # constructible without arguments, defaults for the digits


def test_ddpm_errors_are_actionable():
    model = DDPM(Schedule.cosine(20), channels=0, hidden=32)
    with pytest.raises(ValueError, match="levels|0..16|range"):
        model.nll_bound(torch.full((2, 64), 17))
    with pytest.raises(ValueError):
        model.loss(torch.zeros(2, 63, dtype=torch.long))
    with pytest.raises(ValueError, match="no labels"):
        model.loss(torch.zeros(2, 64, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="denoiser"):
        DDPM(denoiser="x0")
    with pytest.raises(ValueError, match="branch"):
        DDPM(channels=0, hidden=0)


def test_bound_estimate_is_unbiased_and_small_t_is_nearly_free():
    torch.manual_seed(0)
    model = DDPM(Schedule.cosine(60, sigma_1=0.02, var_T=0.9999), channels=0, hidden=64)
    x = data.digits("val")[:40]
    full = torch.stack([model.nll_bound(x) for _ in range(5)]).mean()
    est = torch.stack([model.nll_bound(x, t_samples=6) for _ in range(60)]).mean()
    assert abs(est - full) / full < 0.03
    # categorical denoiser + Gaussian likelihood: at sigma_1 = 0.02 the decoder knows the level
    decoder = model.terms(x, torch.ones(len(x), dtype=torch.long)).mean() / 64
    assert decoder < 0.05


def test_loss_is_an_unbiased_estimate_of_the_terms():
    torch.manual_seed(0)
    model = DDPM(Schedule.cosine(40, sigma_1=0.05, var_T=0.999), channels=0, hidden=32).eval()
    model.bin_sq.uniform_(0.5, 2.0)  # a non-uniform proposal p(t)
    x = data.digits("val")[:1].expand(20_000, 64)
    with torch.no_grad():
        sum_terms = torch.stack([model.terms(x[:2000], torch.full((2000,), t)).mean() for t in range(1, 41)]).sum()
        est = model.loss(x).mean()
    assert abs(est - sum_terms) / sum_terms < 0.05


def test_t_proposal_is_nichol_and_dhariwals_rule_pooled_in_bins():
    torch.manual_seed(0)
    model = DDPM(Schedule.cosine(1000), channels=0, hidden=32)
    model.bin_sq.uniform_(0.5, 2.0)
    p = model.t_probs()
    assert p.shape == (1000,) and abs(p.sum().item() - 1) < 1e-5
    # p(t) proportional to sqrt(E L^2) of t's bin, not divided by the bin's size
    b = torch.bucketize(torch.arange(1, 1001), model.bin_edges, right=True) - 1
    ratio = p / model.bin_sq.sqrt()[b]
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0].item()))
    t, inv_p, bins = model.draw_t(200_000)
    torch.testing.assert_close(inv_p, 1 / p[t - 1])
    torch.testing.assert_close(bins, b[t - 1])
    freq = torch.bincount(bins, minlength=len(model.bin_sq)).float() / len(t)
    expected = torch.zeros(len(model.bin_sq)).index_add_(0, b, p)
    assert (freq - expected).abs().max() < 0.01


def test_guidance_and_labels():
    torch.manual_seed(0)
    model = DDPM(Schedule.cosine(20), channels=0, hidden=32, num_classes=10).eval()
    xt, t, y = torch.randn(4, 64), torch.full((4,), 10), torch.arange(4)
    c, u = model.x0_hat(xt, t, y), model.x0_hat(xt, t, None)
    torch.testing.assert_close(model.guided_x0(xt, t, y, w=2.0), c + 2 * (c - u))
    torch.testing.assert_close(model.guided_x0(xt, t, y, w=0.0), c)
    xs = model.sample(4, steps=5, y=y, w=1.0)
    assert xs.shape == (4, 64)
    with pytest.raises(ValueError, match="one label per sample"):
        model.sample(4, steps=5, y=torch.arange(3))


def test_training_lowers_the_toy_loss_and_keeps_the_best_ema():
    torch.manual_seed(0)
    x = data.toy("8gaussians", 2000, seed=0)
    model = GaussianDiffusion(dim=2, schedule=Schedule.cosine(100), hidden=64, depth=2)
    before = torch.stack([model.loss(x).mean() for _ in range(5)]).mean()
    history = train_diffusion(model, x, epochs=6, batch_size=100, lr=2e-3,
                              val=lambda m: torch.stack([m.loss(x[:500]).mean() for _ in range(3)]).mean(), eval_every=2)
    assert history["val_epoch"] == [2, 4, 6] and len(history["loss"]) == 6
    assert not model.training
    with torch.no_grad():
        after = torch.stack([model.loss(x).mean() for _ in range(5)]).mean()
    assert after < 0.8 * before
    with pytest.raises(ValueError, match="same length"):
        train_diffusion(model, x, torch.zeros(3, dtype=torch.long))


def test_langevin_samples_a_gaussian():
    torch.manual_seed(0)
    x = langevin(lambda x: -(x - 1.0) / 4.0, torch.zeros(20_000, 1), n_steps=400, step_size=0.1)
    assert abs(x.mean() - 1.0) < 0.06 and abs(x.var() - 4.0) < 0.3


def test_gaussian_diffusion_score_is_minus_eps_over_sigma():
    model = GaussianDiffusion(dim=2, schedule=Schedule.cosine(50))
    xt, t = torch.randn(3, 2), torch.tensor([1, 10, 50])
    torch.testing.assert_close(model.score(xt, t), -model.eps_hat(xt, t) / model.schedule.sigma[t - 1][:, None])
    with pytest.raises(ValueError):
        model.loss(torch.randn(3, 3))
