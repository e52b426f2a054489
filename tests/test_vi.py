"""dgm.vi (exported from book/02_vi.md): properties of the math, on small budgets."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from dgm import vi

f64 = torch.float64


# ----------------------------------------------------------------------------- the Gaussian KL
def test_kl_diag_gaussians_matches_torch_and_sums_the_last_dimension():
    g = torch.Generator().manual_seed(0)
    mu_q, logvar_q, mu_p, logvar_p = torch.randn(4, 7, 5, generator=g, dtype=f64).unbind(0)
    got = vi.kl_diag_gaussians(mu_q, logvar_q, mu_p, logvar_p)
    want = kl_divergence(Normal(mu_q, (0.5 * logvar_q).exp()), Normal(mu_p, (0.5 * logvar_p).exp())).sum(-1)
    assert got.shape == (7,)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert (got > 0).all()
    torch.testing.assert_close(vi.kl_diag_gaussians(mu_q, logvar_q, mu_q, logvar_q), torch.zeros(7, dtype=f64))


def test_kl_diag_gaussians_broadcasts_a_standard_normal_prior():
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4)
    zero = torch.zeros(4)
    full = vi.kl_diag_gaussians(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar))
    torch.testing.assert_close(vi.kl_diag_gaussians(mu, logvar, zero, zero), full)
    # closed form against the prior: 0.5 * sum(exp(logvar) + mu^2 - 1 - logvar)
    torch.testing.assert_close(full, 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(-1))


def test_kl_diag_gaussians_errors_say_what_is_wrong():
    x = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="mu_q must be a float tensor, got torch.int64 tensor"):
        vi.kl_diag_gaussians(torch.zeros(2, 3, dtype=torch.long), x, x, x)
    with pytest.raises(TypeError, match="logvar_p must be a float tensor, got float"):
        vi.kl_diag_gaussians(x, x, x, 0.0)
    with pytest.raises(ValueError, match="must broadcast"):
        vi.kl_diag_gaussians(x, x, torch.zeros(4), x)
    with pytest.raises(ValueError, match="last dimension"):
        s = torch.tensor(0.0)
        vi.kl_diag_gaussians(s, s, s, s)


# ----------------------------------------------------------------------------- linear Gaussian model
@pytest.fixture(scope="module")
def model():
    g = torch.Generator().manual_seed(1)
    return vi.LinearGaussian(torch.randn(6, 3, generator=g), torch.randn(6, generator=g), sigma=0.4).double()


def test_evidence_and_posterior_satisfy_bayes_rule(model):
    """log p(x) = log p(x, z) - log p(z | x) for every z: checks log_prob and encode together."""
    x = model.sample(5)
    z = torch.randn(11, 5, 3, dtype=f64)
    identity = model.log_joint(x, z) - model.encode(x).log_prob(z)
    torch.testing.assert_close(identity, model.log_prob(x).expand(11, 5), rtol=0, atol=1e-9)


def test_samples_have_the_model_covariance(model):
    torch.manual_seed(0)
    x = model.sample(200_000)
    cov = model.W @ model.W.T + model.sigma**2 * torch.eye(6, dtype=f64)
    torch.testing.assert_close(x.mean(0), model.mu, rtol=0, atol=0.02)
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0, atol=0.05)


def test_linear_gaussian_elbo_is_the_decomposition(model):
    """ELBO + KL(q || posterior) = log p(x), and the closed form agrees with a Monte Carlo estimate."""
    torch.manual_seed(0)
    x = model.sample(4)
    mu, logvar = torch.randn(4, 3, dtype=f64), torch.randn(4, 3, dtype=f64) - 1
    elbo = vi.linear_gaussian_elbo(model, x, mu, logvar)
    q = MultivariateNormal(mu, torch.diag_embed(logvar.exp()))
    torch.testing.assert_close(elbo + kl_divergence(q, model.encode(x)), model.log_prob(x), rtol=0, atol=1e-9)
    z = q.sample((100_000,))
    terms = model.log_joint(x, z) - q.log_prob(z)
    se = terms.std(0) / math.sqrt(len(terms))
    assert ((terms.mean(0) - elbo).abs() < 5 * se).all()


def test_fit_ppca_is_a_maximum_of_the_likelihood():
    torch.manual_seed(0)
    truth = vi.LinearGaussian(torch.randn(8, 2), torch.randn(8), sigma=0.3)
    x = truth.sample(3000)
    fitted = vi.LinearGaussian.fit_ppca(x, d=2)
    best = fitted.log_prob(x).mean()
    for scale_w, scale_s in [(1.05, 1.0), (0.95, 1.0), (1.0, 1.1), (1.0, 0.9)]:
        other = vi.LinearGaussian(fitted.W * scale_w, fitted.mu, fitted.sigma * scale_s)
        assert other.log_prob(x).mean() < best
    assert best >= truth.log_prob(x).mean() - 1e-4  # the maximum likelihood beats the true parameters on their own data
    with pytest.raises(ValueError, match=r"shape \(n, D\)"):
        vi.LinearGaussian.fit_ppca(torch.zeros(5, dtype=torch.long), d=1)


def test_linear_gaussian_rejects_bad_points(model):
    with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
        model.log_prob(torch.zeros(3, 5, dtype=f64))


# ----------------------------------------------------------------------------- CAVI, Normal-Gamma model
@pytest.fixture(scope="module")
def normal_data():
    g = torch.Generator().manual_seed(3)
    return 2.0 + 0.7 * torch.randn(12, generator=g, dtype=f64), vi.NormalGamma(mu=0.5, lam=2.0, a=2.0, b=1.5)


def test_normal_gamma_evidence_matches_quadrature(normal_data):
    x, prior = normal_data
    mu = torch.linspace(-3, 6, 1201, dtype=f64)[:, None]
    tau = torch.linspace(1e-4, 8, 1601, dtype=f64)[None, :]
    log_joint = (Normal(mu[..., None], tau[..., None] ** -0.5).log_prob(x).sum(-1)
                 + Normal(prior.mu, (prior.lam * tau) ** -0.5).log_prob(mu)
                 + torch.distributions.Gamma(prior.a, prior.b).log_prob(tau))
    cell = (mu[1, 0] - mu[0, 0]) * (tau[0, 1] - tau[0, 0])
    quadrature = (torch.logsumexp(log_joint.flatten(), 0) + torch.log(cell)).item()
    assert abs(vi.normal_gamma_log_evidence(x, prior) - quadrature) < 1e-3


def test_cavi_raises_the_elbo_monotonically_below_the_evidence(normal_data):
    x, prior = normal_data
    trace = vi.cavi_normal_gamma(x, prior, iters=12, E_tau=0.05)
    elbos = torch.tensor([e for _, e in trace])
    assert len(trace) == 24
    assert (elbos.diff() >= -1e-10).all(), "CAVI decreased the ELBO"
    log_ev = vi.normal_gamma_log_evidence(x, prior)
    assert (elbos < log_ev).all()
    assert 0 < log_ev - elbos[-1] < 0.5  # a positive gap: the factorized q cannot be the posterior
    q = trace[-1][0]
    post = vi.normal_gamma_posterior(x, prior)
    assert abs(q.mu_n - post.mu) < 1e-12  # the mean of mu is exact
    assert 1 / q.lambda_n < post.b / ((post.a - 1) * post.lam)  # its variance is underestimated


def test_normal_gamma_elbo_matches_monte_carlo(normal_data):
    x, prior = normal_data
    q = vi.MeanFieldNormalGamma(mu_n=1.8, lambda_n=20.0, a_n=8.0, b_n=4.0)
    torch.manual_seed(0)
    mu = Normal(torch.tensor(q.mu_n, dtype=f64), q.lambda_n**-0.5).sample((200_000,))
    tau = torch.distributions.Gamma(torch.tensor(q.a_n, dtype=f64), q.b_n).sample((200_000,))
    log_joint = (Normal(mu[:, None], tau[:, None] ** -0.5).log_prob(x).sum(-1)
                 + Normal(prior.mu, (prior.lam * tau) ** -0.5).log_prob(mu)
                 + torch.distributions.Gamma(prior.a, prior.b).log_prob(tau))
    log_q = Normal(q.mu_n, q.lambda_n**-0.5).log_prob(mu) + torch.distributions.Gamma(q.a_n, q.b_n).log_prob(tau)
    terms = log_joint - log_q
    se = terms.std().item() / math.sqrt(len(terms))
    assert abs(terms.mean().item() - vi.normal_gamma_elbo(x, prior, q)) < 5 * se


# ----------------------------------------------------------------------------- gradient estimators
def quadratic_setting():
    """f(z) = -|z - c|^2 / 2: E_q f = -(|mu - c|^2 + sum sigma^2) / 2, gradient (-(mu - c), -sigma^2)."""
    c = torch.tensor([1.0, -2.0, 0.5], dtype=f64)
    mu, log_sigma = torch.tensor([0.3, 0.1, -0.4], dtype=f64), torch.tensor([-0.5, 0.2, 0.0], dtype=f64)
    exact = torch.cat([-(mu - c), -(2 * log_sigma).exp()])
    return (lambda z: -0.5 * ((z - c) ** 2).sum(-1)), mu, log_sigma, exact


@pytest.mark.parametrize("estimator", ["score", "score+baseline", "reparameterization"])
def test_gradient_estimators_are_unbiased(estimator):
    f, mu, log_sigma, exact = quadratic_setting()
    eps = torch.randn(20_000, 4, 3, generator=torch.Generator().manual_seed(0), dtype=f64)
    if estimator == "reparameterization":
        g = vi.reparameterization_grad(f, mu, log_sigma, eps)
    else:
        g = vi.score_function_grad(f, mu, log_sigma, eps, baseline=estimator == "score+baseline")
    assert g.shape == (20_000, 6)
    z_scores = (g.mean(0) - exact).abs() / (g.std(0) / math.sqrt(len(g)))
    assert z_scores.max() < 4.5, z_scores


def test_variance_ordering_and_one_over_s():
    f, mu, log_sigma, _ = quadratic_setting()
    gen = torch.Generator().manual_seed(1)
    variance = {}
    for S in (4, 64):
        eps = torch.randn(4000, S, 3, generator=gen, dtype=f64)
        variance["score", S] = vi.score_function_grad(f, mu, log_sigma, eps).var(0).sum().item()
        variance["baseline", S] = vi.score_function_grad(f, mu, log_sigma, eps, baseline=True).var(0).sum().item()
        variance["reparam", S] = vi.reparameterization_grad(f, mu, log_sigma, eps).var(0).sum().item()
    for S in (4, 64):
        assert variance["reparam", S] < variance["baseline", S] < variance["score", S]
    for name in ("score", "baseline", "reparam"):
        assert 8 < variance[name, 4] / variance[name, 64] < 32  # 1/S: a factor of 16


def test_baseline_needs_two_samples():
    f, mu, log_sigma, _ = quadratic_setting()
    with pytest.raises(ValueError, match="at least S = 2"):
        vi.score_function_grad(f, mu, log_sigma, torch.randn(5, 1, 3, dtype=f64), baseline=True)


def test_reparameterize_samples_the_gaussian_and_carries_gradients():
    mu = torch.tensor([1.0, -1.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(4.0)], requires_grad=True)
    z = vi.reparameterize(mu.expand(100_000, 2), logvar.expand(100_000, 2), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), mu.detach(), rtol=0, atol=0.03)
    torch.testing.assert_close(z.var(0), logvar.detach().exp(), rtol=0.03, atol=0)
    (z**2).mean().backward()  # d/dmu E z^2 / 2 = mu ; d/dlogvar = exp(logvar) / 2
    torch.testing.assert_close(mu.grad, mu.detach(), rtol=0, atol=0.02)
    torch.testing.assert_close(logvar.grad, logvar.detach().exp() / 2, rtol=0.05, atol=0)


# ----------------------------------------------------------------------------- black-box VI and HMC
@pytest.fixture(scope="module")
def gaussian_target():
    m = torch.tensor([1.0, -1.0], dtype=f64)
    Sigma = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=f64)
    return m, Sigma, MultivariateNormal(m, Sigma)


def test_fit_mean_field_finds_the_mean_field_optimum(gaussian_target):
    """For a Gaussian target the best diagonal Gaussian has the true mean and variances 1 / Lambda_jj."""
    m, Sigma, target = gaussian_target
    mu, log_sigma, trace = vi.fit_mean_field(target.log_prob, 2, steps=1500, samples=32, lr=0.05)
    torch.testing.assert_close(mu, m, rtol=0, atol=0.05)
    torch.testing.assert_close((2 * log_sigma).exp(), 1 / torch.linalg.inv(Sigma).diagonal(), rtol=0.1, atol=0)
    assert len(trace) == 1500 and sum(trace[-100:]) / 100 > sum(trace[:100]) / 100


def test_hmc_samples_a_correlated_gaussian(gaussian_target):
    m, Sigma, target = gaussian_target
    Lam = torch.linalg.inv(Sigma)

    def potential_and_grad(w):
        return -target.log_prob(w), (w - m) @ Lam

    draws, rate = vi.hmc(potential_and_grad, torch.zeros(8, 2, dtype=f64), samples=400, warmup=200, leapfrog=10)
    assert draws.shape == (400, 8, 2)
    assert 0.6 < rate < 0.95
    w = draws.reshape(-1, 2)
    torch.testing.assert_close(w.mean(0), m, rtol=0, atol=0.08)
    torch.testing.assert_close(torch.cov(w.T), Sigma, rtol=0, atol=0.1)


def test_gaussian_encoder_shapes_and_errors():
    enc = vi.GaussianEncoder(64, 3, hidden=16)
    mu, logvar = enc(torch.randn(5, 64))
    assert mu.shape == logvar.shape == (5, 3)
    with pytest.raises(ValueError, match=r"shape \(n, 64\)"):
        enc(torch.randn(5, 63))


# ----------------------------------------------------------------------------- EM, a Gaussian mixture
def test_em_never_decreases_the_log_likelihood_and_closes_the_gap():
    g = torch.Generator().manual_seed(5)
    x = torch.cat([torch.randn(40, generator=g, dtype=f64) - 2, 0.5 * torch.randn(30, generator=g, dtype=f64) + 1.5])
    theta_0 = (torch.tensor([0.2, 0.3, 0.5], dtype=f64), torch.tensor([-0.5, 0.0, 0.5], dtype=f64),
               torch.tensor([3.0, 1.0, 0.3], dtype=f64))
    _, trace = vi.em_gmm(x, *theta_0, iters=25)
    assert [s for s, _, _ in trace] == ["E", "M"] * 25
    log_lik = torch.tensor([vi.gmm_log_lik(x, *theta_0)] + [ll for s, _, ll in trace if s == "M"])
    assert (log_lik.diff() >= -1e-9).all(), "EM decreased the log-likelihood"
    assert log_lik[-1] - log_lik[0] > 1.0
    for step, elbo, ll in trace:
        if step == "E":
            assert abs(ll - elbo) < 1e-9  # q is the exact posterior: the gap is closed
        else:
            assert elbo <= ll + 1e-9  # the ELBO is a lower bound for every q


def test_gmm_elbo_is_the_log_likelihood_minus_a_kl():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(9, generator=g, dtype=f64)
    theta = (torch.tensor([0.4, 0.6], dtype=f64), torch.tensor([-1.0, 1.0], dtype=f64), torch.tensor([1.0, 0.5], dtype=f64))
    r = torch.softmax(torch.randn(9, 2, generator=g, dtype=f64), 1)  # any q
    posterior = torch.softmax(vi.gmm_log_joint(x, *theta), 1)
    kl = (r * (r.log() - posterior.log())).sum().item()
    assert abs(vi.gmm_log_lik(x, *theta) - vi.gmm_elbo(x, r, *theta) - kl) < 1e-10
    with pytest.raises(ValueError, match=r"1D float tensor of shape \(n,\)"):
        vi.gmm_log_lik(x[:, None], *theta)


# ----------------------------------------------------------------------------- discrete latent variables
def test_gumbel_max_frequencies_match_pi():
    g = torch.Generator().manual_seed(7)
    logits = torch.tensor([2.0, 0.0, -1.0, 0.5], dtype=f64)
    pi, M = torch.softmax(logits, 0), 40_000
    z = vi.gumbel_max(logits, vi.sample_gumbel((M, 4), g))
    assert z.shape == (M, 4) and (z.sum(-1) == 1).all()
    freq = z.mean(0)
    assert ((freq - pi).abs() / (pi * (1 - pi) / M).sqrt()).max() < 5


def test_gumbel_softmax_limits_and_straight_through():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(50, 6, generator=g, dtype=f64)
    noise = vi.sample_gumbel((50, 6), g)
    hard = vi.gumbel_max(logits, noise)
    torch.testing.assert_close(vi.gumbel_softmax(logits, noise, 1e-4), hard, rtol=0, atol=1e-6)
    torch.testing.assert_close(vi.gumbel_softmax(logits, noise, 1e6), torch.full_like(hard, 1 / 6), rtol=0, atol=1e-5)
    phi = logits.clone().requires_grad_()
    c = torch.randn(6, dtype=f64)
    st = vi.gumbel_softmax(phi, noise, 0.5, hard=True)
    torch.testing.assert_close(st.detach(), hard)  # straight-through: the forward value is the category ...
    (grad_st,) = torch.autograd.grad((st * c).sum(), phi)
    (grad_soft,) = torch.autograd.grad((vi.gumbel_softmax(phi, noise, 0.5) * c).sum(), phi)
    torch.testing.assert_close(grad_st, grad_soft)  # ... the gradient is the relaxation's
    with pytest.raises(ValueError, match="temperature must be positive"):
        vi.gumbel_softmax(logits, noise, 0.0)


# ----------------------------------------------------------------------------- stochastic VI
def test_minibatch_log_joint_is_unbiased():
    import itertools

    g = torch.Generator().manual_seed(9)
    n, S = 7, 3
    log_lik, log_prior = torch.randn(S, n, generator=g, dtype=f64), torch.randn(S, generator=g, dtype=f64)
    full = log_prior + log_lik.sum(1)
    batches = list(itertools.combinations(range(n), 3))  # every batch of 3, each equally likely
    mean = torch.stack([vi.minibatch_log_joint(log_lik[:, list(b)], log_prior, n) for b in batches]).mean(0)
    torch.testing.assert_close(mean, full, rtol=0, atol=1e-12)  # exactly unbiased
    estimates = torch.stack([vi.minibatch_log_joint(log_lik[:, torch.randperm(n, generator=g)[:2]], log_prior, n)
                             for _ in range(2000)])  # random batches of 2: within 5 standard errors
    assert ((estimates.mean(0) - full).abs() < 5 * estimates.std(0) / math.sqrt(2000)).all()
    with pytest.raises(ValueError, match=r"shape \(S, \|B\|\)"):
        vi.minibatch_log_joint(log_lik[0], log_prior, n)


def test_svi_with_full_batches_and_unit_steps_is_cavi(normal_data):
    x, prior = normal_data
    svi = vi.svi_normal_gamma(x, prior, steps=6, batch_size=len(x), kappa=0.0, E_tau=0.05)
    cavi = vi.cavi_normal_gamma(x, prior, iters=6, E_tau=0.05)
    for q_svi, (q_cavi, _) in zip(svi, cavi[1::2]):  # CAVI's state after both updates
        torch.testing.assert_close(torch.tensor(q_svi), torch.tensor(q_cavi), rtol=1e-12, atol=0)


def test_svi_converges_to_the_cavi_fixed_point():
    g = torch.Generator().manual_seed(10)
    x = 1.0 + 0.5 * torch.randn(400, generator=g, dtype=f64)
    prior = vi.NormalGamma(mu=0.0, lam=1.0, a=1.0, b=1.0)
    q_fixed = vi.cavi_normal_gamma(x, prior, iters=50)[-1][0]
    q = vi.svi_normal_gamma(x, prior, steps=1500, batch_size=10, E_tau=0.1)[-1]
    assert abs(q.mu_n - q_fixed.mu_n) * math.sqrt(q_fixed.lambda_n) < 1.0  # within a posterior sd
    # a batch of 10 estimates the sum of squares to about 45 %; steps rho_t ~ 0.006 average that
    # down to a stationary relative noise of about 2.5 % in E[tau]: allow four times that
    assert abs(q.a_n / q.b_n / (q_fixed.a_n / q_fixed.b_n) - 1) < 0.1
    assert 0 <= vi.normal_gamma_elbo(x, prior, q_fixed) - vi.normal_gamma_elbo(x, prior, q) < 0.5
    start = vi.svi_normal_gamma(x, prior, steps=1, batch_size=10, E_tau=0.1)[-1]
    assert vi.normal_gamma_elbo(x, prior, start) < vi.normal_gamma_elbo(x, prior, q) - 1  # it moved


# ----------------------------------------------------------------------------- alpha-divergences
def test_alpha_divergence_limits_are_the_two_kls():
    z = torch.linspace(-20, 20, 8001, dtype=f64)
    dz = (z[1] - z[0]).item()
    p, q = Normal(0.3, 1.2), Normal(-0.5, 0.8)
    log_p, log_q = p.log_prob(z), q.log_prob(z)
    kl_qp, kl_pq = kl_divergence(q, p).item(), kl_divergence(p, q).item()
    assert abs(vi.alpha_divergence(log_p, log_q, dz, 0.0).item() - kl_qp) < 1e-6  # quadrature error
    assert abs(vi.alpha_divergence(log_p, log_q, dz, 1.0).item() - kl_pq) < 1e-6
    assert abs(vi.alpha_divergence(log_p, log_q, dz, 1e-5).item() - kl_qp) < 1e-4
    assert abs(vi.alpha_divergence(log_p, log_q, dz, 1 - 1e-5).item() - kl_pq) < 1e-4
    hellinger = 2 * ((log_p.exp().sqrt() - log_q.exp().sqrt()) ** 2).sum().item() * dz
    assert abs(vi.alpha_divergence(log_p, log_q, dz, 0.5).item() - hellinger) < 1e-6
    for alpha in (-1.0, 0.25, 2.0):
        assert vi.alpha_divergence(log_p, log_q, dz, alpha) > 0
        assert abs(vi.alpha_divergence(log_p, log_p, dz, alpha).item()) < 1e-8
