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


def test_dreg_and_iwae_encoder_gradients_have_the_same_mean():
    torch.manual_seed(6)
    model = vae.VAE(z_dim=2, hidden=16, dropout=0.0).eval()
    x = data.digits("train")[:1]
    g_iwae = vae.iwae_encoder_grads(model, x, k=8, replicates=4000)
    g_dreg = vae.iwae_encoder_grads(model, x, k=8, replicates=4000, estimator="dreg")
    assert g_iwae.shape == g_dreg.shape == (4000, 1, 4)
    # both are unbiased for the gradient of L_k: the means agree within Monte Carlo error
    se = ((g_iwae.var(0) + g_dreg.var(0)) / 4000).sqrt()
    assert ((g_iwae.mean(0) - g_dreg.mean(0)).abs() < 4 * se).all()
    with pytest.raises(ValueError, match="estimator"):
        vae.iwae_encoder_grads(model, x, k=2, replicates=4, estimator="vimco")


def test_iwae_gradient_with_one_sample_is_the_elbo_gradient_in_the_mean():
    torch.manual_seed(7)
    model = vae.VAE(z_dim=2, hidden=16, dropout=0.0).eval()
    x = data.digits("train")[:1]
    g = vae.iwae_encoder_grads(model, x, k=1, replicates=4000)
    # the ELBO of a diagonal Gaussian: E log p(x | z) - KL; its gradient by autograd
    mu, logvar = (t.detach().requires_grad_() for t in model.encode(x))
    eps = torch.randn(20000, 1, 2)
    z = mu + (0.5 * logvar).exp() * eps
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)
    elbo = model.log_lik(x, z).mean(0) - kl
    exact = torch.cat(torch.autograd.grad(elbo.sum(), [mu, logvar]), -1)
    se = (g.var(0) / 4000 + g.var(0) / 20000).sqrt()
    assert ((g.mean(0) - exact).abs() < 4 * se).all()


def test_cvae_conditions_on_the_label_and_checks_it():
    torch.manual_seed(8)
    model = vae.CVAE(hidden=32).eval()
    x, y = data.digits("train", labels=True)
    x, y = x[:5], y[:5]
    assert model.elbo(x, y).shape == (5,)
    z = torch.randn(5, model.z_dim)
    assert not torch.allclose(model.decode_mean(z, y), model.decode_mean(z, (y + 1) % 10))
    with pytest.raises(ValueError, match="torch.long of shape"):
        model.encode(x, y[:4])
    with pytest.raises(ValueError, match="torch.long"):
        model.encode(x, y.float())
    samples = model.sample(5, y)
    assert samples.shape == (5, 64) and samples.dtype == torch.long
    assert 0 <= samples.min() and samples.max() <= 16
    with pytest.raises(NotImplementedError, match="elbo\\(x, y\\)"):
        model.log_prob(x)


def test_vq_quantizes_to_the_nearest_code_and_routes_gradients():
    torch.manual_seed(9)
    model = vae.VQVAE(positions=4, codes=8, code_dim=3, hidden=32)
    x = data.digits("train")[:6]
    z_e = model.encode(x)
    c, e = model.quantize(z_e)
    distances = ((z_e[..., None, :] - model.codebook) ** 2).sum(-1)  # (6, 4, 8)
    assert torch.equal(c, distances.argmin(-1))
    torch.testing.assert_close(e, model.codebook[c])
    reconstruction, codebook_loss, commitment_loss, _ = model.loss_terms(x)
    # straight-through: the reconstruction's gradient reaches the encoder, not the codes
    reconstruction.sum().backward(retain_graph=True)
    assert model.codebook.grad is None or model.codebook.grad.abs().sum() == 0
    assert model.encoder[0].weight.grad.abs().sum() > 0
    model.zero_grad()
    codebook_loss.sum().backward(retain_graph=True)  # moves only the codes
    assert model.encoder[0].weight.grad is None or model.encoder[0].weight.grad.abs().sum() == 0
    assert model.codebook.grad.abs().sum() > 0
    model.zero_grad()
    commitment_loss.sum().backward()  # moves only the encoder
    assert model.codebook.grad is None or model.codebook.grad.abs().sum() == 0


def test_code_prior_is_normalized_and_autoregressive():
    torch.manual_seed(10)
    prior = vae.CodePrior(positions=3, codes=4, hidden=8)
    grids = torch.cartesian_prod(*[torch.arange(4)] * 3)  # all 4^3 code grids
    total = prior.log_prob(grids).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0))
    # the logits of position p do not depend on the codes at p and after
    changed = grids.clone()
    changed[:, 1:] = (changed[:, 1:] + 1) % 4
    torch.testing.assert_close(prior.logits(grids)[:, :2], prior.logits(changed)[:, :2])
    assert prior.sample(5).shape == (5, 3)
    with pytest.raises(ValueError, match="shape"):
        prior.log_prob(grids[:, :2])


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


def test_hvae_bound_terms_and_importance_sampling_tighten_the_elbo():
    torch.manual_seed(11)
    model = vae.HVAE(z_dim=3, z2_dim=2, hidden=32, hidden2=16).eval()
    x = data.digits("train")[:8]
    reconstruction, rate1, rate2 = model.elbo_terms(x)
    assert reconstruction.shape == rate1.shape == rate2.shape == (8,)
    assert (rate2 >= 0).all()  # a KL divergence in closed form
    _, rate1_d, rate2_d = model.elbo_terms(x, per_dim=True)
    assert rate1_d.shape == (8, 3) and rate2_d.shape == (8, 2)
    with torch.no_grad():
        elbo = torch.stack([model.elbo(x) for _ in range(200)]).mean(0)
        # L_k >= L_1 in expectation; k = 200 is far tighter than the sampling error here
        assert (model.log_prob(x, k=200) > elbo).all()
    loss = vae.hvae_loss(warmup_steps=5, free_bits=0.1)
    model.train()
    assert loss(model, x).ndim == 0
    assert model.sample(4).shape == (4, 64)
