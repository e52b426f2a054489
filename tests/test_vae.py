"""dgm.vae (exported from book/03_vae.md): the discretized logistic, the VAE's verbs, its loss."""

from __future__ import annotations

import math

import pytest
import torch

from dgm import data, vae


def test_discretized_logistic_is_a_distribution_over_the_levels():
    torch.manual_seed(0)
    mean = torch.cat([torch.randn(50) * 10 + 8, torch.tensor([-40.0, 60.0, 0.0, 16.0])]).double()
    log_scale = torch.cat([torch.randn(50), torch.tensor([-5.0, 3.0, -5.0, -5.0])]).double()
    log_p = vae.discretized_logistic_log_prob(torch.arange(17), mean[:, None], log_scale[:, None])
    assert log_p.shape == (54, 17) and torch.isfinite(log_p).all()
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(54, dtype=torch.float64), rtol=0, atol=1e-12)


def test_discretized_logistic_matches_differences_of_the_cdf():
    mean, s = torch.tensor(5.3, dtype=torch.float64), 1.7
    k = torch.arange(17)
    cdf = lambda v: torch.sigmoid((v - mean) / s)  # noqa: E731
    kf = k.double()
    want = cdf(kf + 0.5) - cdf(kf - 0.5)
    want[0], want[-1] = cdf(torch.tensor(0.5, dtype=torch.float64)), 1 - cdf(torch.tensor(15.5, dtype=torch.float64))
    log_scale = torch.tensor(math.log(s), dtype=torch.float64)
    torch.testing.assert_close(vae.discretized_logistic_log_prob(k, mean, log_scale).exp(), want)


@pytest.mark.parametrize("likelihood", ["logistic", "categorical"])
def test_vae_verbs_and_shapes(likelihood):
    torch.manual_seed(0)
    model = vae.VAE(likelihood=likelihood).eval()
    x = data.digits("test")[:6]
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (6, 16)
    assert model.elbo(x).shape == (6,) and model.log_prob(x, k=5).shape == (6,)
    s = model.sample(7)
    assert s.shape == (7, 64) and s.dtype == torch.long and 0 <= s.min() and s.max() <= 16
    z = torch.randn(3, 6, 16)
    log_p = model.pixel_log_probs(z)
    assert log_p.shape == (3, 6, 64, 17)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(3, 6, 64))
    gathered = log_p.gather(-1, x.expand(3, 6, 64)[..., None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(model.log_lik(x, z), gathered)  # the cheap path equals the full table
    means = model.decode_mean(z[0])
    assert means.shape == (6, 64) and (means >= 0).all() and (means <= 16).all()


def test_importance_weighting_tightens_the_bound():
    torch.manual_seed(1)
    model = vae.VAE(z_dim=4, hidden=64).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = data.digits("test")[:30]
    with torch.no_grad():
        elbo = torch.stack([model.elbo(x) for _ in range(400)])  # (draws, images)
    l1 = torch.stack([model.log_prob(x, k=1) for _ in range(400)])
    l100 = torch.stack([model.log_prob(x, k=100) for _ in range(5)]).mean(0)
    diff = (l1 - elbo).mean(1)  # per draw, averaged over the images
    assert diff.mean().abs() < 4 * diff.std() / math.sqrt(len(diff))  # L_1 is the ELBO, within Monte Carlo error
    assert (l100 > elbo.mean(0)).all()


def test_encode_rejects_continuous_or_misshaped_images():
    model = vae.VAE()
    with pytest.raises(ValueError, match="torch.long"):
        model.encode(torch.rand(3, 64))
    with pytest.raises(ValueError, match=r"shape \(n, 64\)"):
        model.encode(torch.zeros(3, 63, dtype=torch.long))
    with pytest.raises(ValueError, match="0..16"):
        model.encode(torch.full((3, 64), 17))
    with pytest.raises(ValueError, match="likelihood"):
        vae.VAE(likelihood="gaussian")


def test_loss_is_the_negative_elbo_in_evaluation_and_records_terms():
    torch.manual_seed(2)
    model = vae.VAE(hidden=64)
    x = data.digits("train")[:50]
    record = {}
    loss = vae.vae_loss(warmup_steps=10, free_bits=0.2, record=record)
    value = loss(model, x)
    assert value.ndim == 0 and record["reconstruction"] and record["KL"]
    model.eval()
    torch.manual_seed(3)
    evaluation = loss(model, x)
    torch.manual_seed(3)
    torch.testing.assert_close(evaluation, -model.elbo(x).mean())


def test_free_bits_floor_the_kl_of_each_dimension():
    torch.manual_seed(4)
    model = vae.VAE(hidden=64)
    x = data.digits("train")[:50]
    torch.manual_seed(5)
    plain = vae.vae_loss(shift=False)(model, x)
    torch.manual_seed(5)
    floored = vae.vae_loss(shift=False, free_bits=1.0)(model, x)
    torch.manual_seed(5)
    reconstruction, kl = model.elbo_terms(x, per_dim=True)
    torch.testing.assert_close(floored, -(reconstruction.mean() - kl.mean(0).clamp(min=1.0).sum()))
    assert floored > plain  # at initialization every dimension's KL is below 1 nat


def test_per_dimension_kl_sums_to_the_kl_of_the_diagonal_gaussian():
    torch.manual_seed(6)
    model = vae.VAE(hidden=32, z_dim=5)
    x = data.digits("train")[:20]
    torch.manual_seed(7)
    _, per_dim = model.elbo_terms(x, per_dim=True)
    torch.manual_seed(7)
    _, total = model.elbo_terms(x)
    assert per_dim.shape == (20, 5) and (per_dim >= 0).all()
    torch.testing.assert_close(per_dim.sum(-1), total)


def test_kl_warm_up_is_linear_and_reaches_the_full_beta():
    """beta_t = beta * t / warmup_steps up to step warmup_steps, then beta (in steps)."""
    torch.manual_seed(8)
    model = vae.VAE(hidden=32)
    x = data.digits("train")[:20]
    loss = vae.vae_loss(beta=2.0, warmup_steps=4, shift=False)

    def expected(beta_t):
        reconstruction, kl = model.elbo_terms(x, per_dim=True)
        return -(reconstruction.mean() - beta_t * kl.sum(-1).mean())

    for step, beta_t in [(1, 0.5), (2, 1.0), (3, 1.5), (4, 2.0), (5, 2.0), (6, 2.0)]:
        torch.manual_seed(step)
        value = loss(model, x)
        torch.manual_seed(step)
        torch.testing.assert_close(value, expected(beta_t), msg=f"step {step}")
