"""The grading tests of project 2 (10 points). Points per test are in its `points` mark.

They import the submission from the file named by DGM_SUBMISSION (default: template.py here);
`python -m dgm.grade exercises/projects/vae` runs them and adds up the points.
"""

import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from dgm import data
from dgm.grade import load_submission

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sub():
    return load_submission(HERE)


@pytest.mark.points(1)
def test_reparameterize(sub):
    torch.manual_seed(0)
    mu = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(0.25)], requires_grad=True)
    z = sub.reparameterize(mu.expand(100_000, 2), logvar.expand(100_000, 2))
    assert z.shape == (100_000, 2), "z must have the shape of mu"
    assert (z.mean(0) - mu.detach()).abs().max() < 0.02, "the samples' mean must be mu"
    assert ((z.var(0) / logvar.detach().exp()) - 1).abs().max() < 0.03, "the samples' variance must be exp(logvar)"
    (z**2).sum(1).mean().backward()  # E |z|^2 = |mu|^2 + sum exp(logvar): gradients 2 mu and exp(logvar)
    assert mu.grad is not None and logvar.grad is not None, "z must be differentiable in mu and logvar"
    assert torch.allclose(mu.grad, 2 * mu.detach(), atol=0.05), "d E|z|^2 / d mu should be 2 mu"
    assert torch.allclose(logvar.grad, logvar.detach().exp(), rtol=0.05), "d E|z|^2 / d logvar should be exp(logvar)"


@pytest.mark.points(2)
def test_kl_to_standard_normal(sub):
    torch.manual_seed(1)
    mu, logvar = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    got = sub.kl_to_standard_normal(mu, logvar)
    want = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    assert got.shape == (7,), f"expected shape (7,), got {tuple(got.shape)}"
    assert torch.allclose(got, want, atol=1e-10), "the KL differs from the closed form"


def nearly_deterministic_encoder(model):
    """Set the encoder's log-variances to about -40, so that z = mu up to 1e-9."""
    with torch.no_grad():
        last = model.encoder[-1]
        last.weight[model.z_dim:].zero_()
        last.bias[model.z_dim:].fill_(-40.0)
    return model


@pytest.mark.points(2)
def test_elbo(sub, monkeypatch):
    calls = []
    reparameterize = sub.reparameterize
    monkeypatch.setattr(sub, "reparameterize", lambda mu, logvar: calls.append(1) or reparameterize(mu, logvar))
    torch.manual_seed(2)
    model = nearly_deterministic_encoder(sub.VAE(z_dim=4, hidden=32).double())
    x = data.digits("test")[:10]
    elbo = model.elbo(x)
    assert elbo.shape == (10,), f"elbo must have shape (n,), got {tuple(elbo.shape)}"
    mu, logvar = model.encode(x)
    want = model.log_lik(x, mu) - kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    assert calls, "elbo must draw z with reparameterize (the reconstruction term is an expectation over q)"
    assert torch.allclose(elbo, want, atol=1e-6), "with a near-zero posterior variance the ELBO is log p(x | mu) - KL"
    elbo.sum().backward()
    grad = model.encoder[-1].weight.grad
    assert grad is not None and grad[: model.z_dim].abs().sum() > 0, "the ELBO must be differentiable in the encoder's mean"


@pytest.mark.points(3)
def test_training_reaches_the_target_on_digits(sub):
    torch.manual_seed(0)
    model = sub.VAE()
    losses = sub.train(model, data.digits("train"))
    assert len(losses) >= 1 and losses[-1] < losses[0], "the training loss must go down"
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in sub.VAE().parameters()) == 440_416, \
        "the given VAE class must stay as it is"
    x = data.digits("test")
    torch.manual_seed(0)
    with torch.no_grad():  # the grader's own one-sample ELBO, from the given encode and log_lik
        mu, logvar = model.encode(x)
        q = Normal(mu, (0.5 * logvar).exp())
        kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
        neg_elbo = -torch.stack([model.log_lik(x, q.sample()) - kl for _ in range(5)]).mean().item()
    assert neg_elbo < 115, f"the test -ELBO is {neg_elbo:.1f} nats per image (target: < 115)"


@pytest.mark.points(2)
def test_iwae_log_prob(sub):
    torch.manual_seed(3)
    x = data.digits("test")[:20]
    # a decoder that ignores z and q = p(z): every weight equals p(x), so the estimate is exact for any k
    model = sub.VAE(z_dim=3, hidden=16).double()
    with torch.no_grad():
        model.encoder[-1].weight.zero_()
        model.encoder[-1].bias.zero_()
        model.decoder[-1].weight.zero_()
        model.decoder[-1].bias.normal_()
    exact = model.log_lik(x, torch.zeros(len(x), 3, dtype=torch.float64))
    for k in (1, 7):
        got = sub.iwae_log_prob(model, x, k)
        assert got.shape == (20,), f"expected shape (n,), got {tuple(got.shape)}"
        assert torch.allclose(got, exact, atol=1e-5), \
            f"with q = p(z) and a decoder ignoring z every weight is p(x): the estimate must be log p(x) (k = {k})"
    # q != p(z), decoder still ignoring z: E[L_1] = log p(x) - KL(q || p), and L_k -> log p(x)
    with torch.no_grad():
        model.encoder[-1].bias[:3].fill_(0.5)
        model.encoder[-1].bias[3:].fill_(math.log(0.8))
    kl = kl_divergence(Normal(torch.full((3,), 0.5, dtype=torch.float64), math.sqrt(0.8)), Normal(0.0, 1.0)).sum().item()
    torch.manual_seed(4)
    l1 = torch.stack([sub.iwae_log_prob(model, x, 1) - exact for _ in range(2000)])  # (draws, images)
    assert abs(l1.mean().item() + kl) < 4 * l1.mean(1).std().item() / math.sqrt(2000) + 1e-6, \
        f"with k = 1 the estimate is the ELBO: its mean should be log p(x) - KL(q || p) = log p(x) - {kl:.4f}, " \
        f"got log p(x) - {-l1.mean().item():.4f}"
    gap = (sub.iwae_log_prob(model, x, 2000) - exact).abs().max().item()
    assert gap < 0.05, f"with k = 2000 the estimate should be within 0.05 of log p(x), got {gap:.3f} away"
    # in general the bound tightens with k
    torch.manual_seed(5)
    model = sub.VAE(z_dim=3, hidden=16).double()
    estimate = {k: torch.stack([sub.iwae_log_prob(model, x, k).mean() for _ in range(20)]).mean().item() for k in (1, 100)}
    assert estimate[100] > estimate[1], f"the bound must grow with k: L_1 = {estimate[1]:.3f}, L_100 = {estimate[100]:.3f}"
