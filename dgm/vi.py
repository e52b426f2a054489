"""Variational inference: the Gaussian KL, the linear Gaussian model, CAVI, gradient estimators, black-box VI, HMC, encoders.

Generated from book/02_vi.md by tools/export.py: do not edit. Change the chapter's cells
marked #@save and run `make notebooks`.
"""

import math

import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal

from dgm import data


class LinearGaussian(nn.Module):
    """The linear Gaussian latent variable model: z ~ N(0, I_d), x | z ~ N(W z + b, sigma^2 I_D).

    W has shape (D, d). log_prob(x) is the exact evidence log N(x; b, W W^T + sigma^2 I) and
    encode(x) the exact posterior N(Lambda^{-1} W^T (x - b) / sigma^2, Lambda^{-1}),
    Lambda = I + W^T W / sigma^2 (a batch of MultivariateNormal).
    Defined in book/02_vi.md, section "Latent variable models and their posteriors".
    """

    def __init__(self, W, b, sigma: float):
        super().__init__()
        W = torch.as_tensor(W, dtype=torch.get_default_dtype())
        if W.ndim != 2:
            raise ValueError(f"W must be a matrix of shape (D, d), got shape {tuple(W.shape)}")
        self.register_buffer("W", W)
        self.register_buffer("b", torch.as_tensor(b, dtype=W.dtype).expand(W.shape[0]).clone())
        self.sigma = float(sigma)
        self.D, self.d = W.shape

    @classmethod
    def fit_ppca(cls, x, d: int):
        """Maximum-likelihood fit to data x of shape (n, D) in closed form (Tipping and Bishop)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 2:
            raise ValueError(f"x must be a float tensor of shape (n, D), got {getattr(x, 'dtype', type(x).__name__)} "
                             f"of shape {tuple(getattr(x, 'shape', ()))}")
        b = x.mean(0)
        evals, evecs = torch.linalg.eigh((x - b).T @ (x - b) / len(x))  # the ML covariance (divides by n)
        evals, evecs = evals.flip(0), evecs.flip(1)  # largest first
        sigma2 = evals[d:].mean()  # the discarded directions' average variance
        return cls(evecs[:, :d] * (evals[:d] - sigma2).clamp_min(0).sqrt(), b, sigma2.sqrt().item())

    def _x(self, x):
        return data.check_points(x, self.D)

    def log_lik(self, x, z):
        """log p(x | z), summed over the D coordinates; x (..., D) and z (..., d) broadcast."""
        return Normal(z @ self.W.T + self.b, self.sigma).log_prob(x).sum(-1)

    def log_joint(self, x, z):
        """log p(x, z) = log p(x | z) + log p(z)."""
        return self.log_lik(x, z) + Normal(0.0, 1.0).log_prob(z).sum(-1)

    def log_prob(self, x):
        """The exact log-evidence log p(x) in nats, shape (n,)."""
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.D, dtype=self.W.dtype)
        return MultivariateNormal(self.b, cov).log_prob(self._x(x))

    def encode(self, x):
        """The exact posterior p(z | x) for each row of x, as a batch of MultivariateNormal."""
        Lam = torch.eye(self.d, dtype=self.W.dtype) + self.W.T @ self.W / self.sigma**2
        cov = torch.linalg.inv(Lam)
        mean = (self._x(x) - self.b) @ self.W @ cov / self.sigma**2  # cov is symmetric
        return MultivariateNormal(mean, precision_matrix=Lam.expand(len(mean), -1, -1))

    @torch.no_grad()
    def sample(self, n: int):
        """n samples x, shape (n, D)."""
        z = torch.randn(n, self.d, dtype=self.W.dtype)
        return z @ self.W.T + self.b + self.sigma * torch.randn(n, self.D, dtype=self.W.dtype)


def kl_diag_gaussians(mu_q, logvar_q, mu_p, logvar_p):
    """KL( N(mu_q, diag exp(logvar_q)) || N(mu_p, diag exp(logvar_p)) ) in nats, summed over the last dimension.

    Arguments broadcast against each other (e.g. mu_p = zeros for a standard normal prior);
    shapes (n, d) give a result of shape (n,).
    Defined in book/02_vi.md, section "The Kullback–Leibler divergence".
    """
    args = {"mu_q": mu_q, "logvar_q": logvar_q, "mu_p": mu_p, "logvar_p": logvar_p}
    for name, a in args.items():
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            got = f"{a.dtype} tensor" if isinstance(a, torch.Tensor) else type(a).__name__
            raise TypeError(f"{name} must be a float tensor, got {got}")
    try:
        shape = torch.broadcast_shapes(*(a.shape for a in args.values()))
    except RuntimeError:
        raise ValueError("the four arguments must broadcast to one shape, got "
                         + ", ".join(f"{k} {tuple(a.shape)}" for k, a in args.items())) from None
    if len(shape) == 0:
        raise ValueError("the arguments need a last dimension to sum over (shape (..., d)), got scalars")
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1).sum(-1)


def linear_gaussian_elbo(model, x, mu, logvar):
    """The ELBO of eq. (lg-elbo) for q(z) = N(mu, diag exp(logvar)) under a LinearGaussian model, shape (n,).

    Defined in book/02_vi.md, section "The evidence lower bound".
    """
    s2 = logvar.exp()
    residual = x - mu @ model.W.T - model.b
    reconstruction = (-0.5 * model.D * math.log(2 * math.pi * model.sigma**2)
                      - ((residual**2).sum(-1) + (s2 * (model.W**2).sum(0)).sum(-1)) / (2 * model.sigma**2))
    return reconstruction - kl_diag_gaussians(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar))


from typing import NamedTuple


class NormalGamma(NamedTuple):
    """Parameters of a Normal-Gamma distribution: tau ~ Gamma(a, b), mu | tau ~ N(mu, 1 / (lam tau)).

    Defined in book/02_vi.md, section "A Normal model with unknown mean and precision".
    """

    mu: float
    lam: float
    a: float
    b: float


class MeanFieldNormalGamma(NamedTuple):
    """Parameters of the mean-field q(mu, tau) = N(mu; m, 1 / lam) Gamma(tau; a, b).

    Defined in book/02_vi.md, section "A Normal model with unknown mean and precision".
    """

    m: float
    lam: float
    a: float
    b: float


def normal_gamma_posterior(x, prior: NormalGamma) -> NormalGamma:
    """The exact posterior of (mu, tau) given observations x (1D tensor) under the conjugate prior.

    Defined in book/02_vi.md, section "A Normal model with unknown mean and precision".
    """
    N, xbar = len(x), x.mean().item()
    return NormalGamma(
        mu=(prior.lam * prior.mu + N * xbar) / (prior.lam + N),
        lam=prior.lam + N,
        a=prior.a + N / 2,
        b=prior.b + 0.5 * ((x - xbar) ** 2).sum().item() + prior.lam * N * (xbar - prior.mu) ** 2 / (2 * (prior.lam + N)),
    )


def normal_gamma_log_evidence(x, prior: NormalGamma) -> float:
    """log p(x) in nats, exact, for the Normal model with the Normal-Gamma prior.

    Defined in book/02_vi.md, section "A Normal model with unknown mean and precision".
    """
    post = normal_gamma_posterior(x, prior)
    return (math.lgamma(post.a) - math.lgamma(prior.a) + prior.a * math.log(prior.b) - post.a * math.log(post.b)
            + 0.5 * math.log(prior.lam / post.lam) - 0.5 * len(x) * math.log(2 * math.pi))


def normal_gamma_elbo(x, prior: NormalGamma, q: MeanFieldNormalGamma) -> float:
    """The ELBO E_q[log p(x, mu, tau)] + H(q) in closed form.

    Defined in book/02_vi.md, section "A Normal model with unknown mean and precision".
    """
    N = len(x)
    E_tau, E_log_tau = q.a / q.b, torch.digamma(torch.tensor(q.a)).item() - math.log(q.b)
    E_sq_data = ((x - q.m) ** 2).sum().item() + N / q.lam  # E_q sum_i (x_i - mu)^2
    E_sq_prior = (q.m - prior.mu) ** 2 + 1 / q.lam  # E_q (mu - mu0)^2
    log_lik = 0.5 * N * (E_log_tau - math.log(2 * math.pi)) - 0.5 * E_tau * E_sq_data
    log_p_mu = 0.5 * (math.log(prior.lam) + E_log_tau - math.log(2 * math.pi)) - 0.5 * prior.lam * E_tau * E_sq_prior
    log_p_tau = prior.a * math.log(prior.b) - math.lgamma(prior.a) + (prior.a - 1) * E_log_tau - prior.b * E_tau
    entropy = (0.5 * math.log(2 * math.pi * math.e / q.lam)
               + q.a - math.log(q.b) + math.lgamma(q.a) + (1 - q.a) * torch.digamma(torch.tensor(q.a)).item())
    return log_lik + log_p_mu + log_p_tau + entropy


def cavi_normal_gamma(x, prior: NormalGamma, iters: int = 10, E_tau: float = 1.0):
    """Coordinate ascent on q(mu) q(tau): alternate the updates (cavi-mu) and (cavi-tau).

    Starts from the guess E[tau] = E_tau. Returns the list of (q, ELBO) after every single
    update (two per iteration; the first q(tau) is the starting guess, with b = a / E_tau).
    Defined in book/02_vi.md, section "A Normal model with unknown mean and precision".
    """
    N, sum_x, sum_x2 = len(x), x.sum().item(), (x**2).sum().item()
    m = (prior.lam * prior.mu + sum_x) / (prior.lam + N)  # mu_N does not change
    a = prior.a + (N + 1) / 2  # a_N does not change
    b = a / E_tau
    trace = []
    for _ in range(iters):
        lam = (prior.lam + N) * a / b  # q(mu) update, eq. (cavi-mu), with E[tau] = a / b
        q = MeanFieldNormalGamma(m, lam, a, b)
        trace.append((q, normal_gamma_elbo(x, prior, q)))
        E_mu, E_mu2 = m, m**2 + 1 / lam
        b = prior.b + 0.5 * (sum_x2 - 2 * E_mu * sum_x + N * E_mu2
                             + prior.lam * (E_mu2 - 2 * prior.mu * E_mu + prior.mu**2))  # eq. (cavi-tau)
        q = MeanFieldNormalGamma(m, lam, a, b)
        trace.append((q, normal_gamma_elbo(x, prior, q)))
    return trace


def reparameterize(mu, logvar, generator=None):
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I): a sample of N(mu, diag exp(logvar)), differentiable in both.

    Defined in book/02_vi.md, section "Gradients of expectations".
    """
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + (0.5 * logvar).exp() * eps


def score_function_grad(f, mu, log_sigma, eps, baseline: bool = False):
    """Score-function (REINFORCE) estimate of the gradient of E_q[f(z)], q = N(mu, diag sigma^2), w.r.t. (mu, log sigma).

    eps: standard normal draws of shape (..., S, d), giving z_s = mu + sigma * eps_s; f maps (..., d) to (...).
    baseline=True subtracts the leave-one-out mean of f (needs S >= 2). Returns shape (..., 2 d).
    Defined in book/02_vi.md, section "Gradients of expectations".
    """
    sigma = log_sigma.exp()
    f_z = f(mu + sigma * eps).detach()  # (..., S): only values of f are used
    score = torch.cat([eps / sigma, eps**2 - 1], -1)  # grad of log q(z_s) w.r.t. (mu, log sigma)
    if baseline:
        S = f_z.shape[-1]
        if S < 2:
            raise ValueError("the leave-one-out baseline needs at least S = 2 samples")
        f_z = f_z - (f_z.sum(-1, keepdim=True) - f_z) / (S - 1)
    return (f_z[..., None] * score).mean(-2)


def reparameterization_grad(f, mu, log_sigma, eps):
    """Reparameterization estimate of the gradient of E_q[f(z)], q = N(mu, diag sigma^2), w.r.t. (mu, log sigma).

    Same arguments as score_function_grad; f must be differentiable and act on each z_s separately.
    Defined in book/02_vi.md, section "Gradients of expectations".
    """
    sigma = log_sigma.exp()
    z = (mu + sigma * eps).detach().requires_grad_()
    (grad_z,) = torch.autograd.grad(f(z).sum(), z)  # row s of the sum depends on z_s only
    return torch.cat([grad_z, grad_z * sigma * eps], -1).mean(-2)  # chain rule through z = mu + sigma * eps


def fit_mean_field(log_joint, dim: int, steps: int = 2000, samples: int = 16, lr: float = 0.05, seed: int = 0):
    """Black-box VI: the diagonal Gaussian q = N(mu, diag sigma^2) maximizing the ELBO of log_joint.

    log_joint maps weights of shape (S, dim) to log p(data, w) of shape (S,). Reparameterized
    gradients from `samples` draws per step, Adam with a cosine-decaying step size.
    Returns (mu, log_sigma, elbo) with elbo the per-step estimates.
    Defined in book/02_vi.md, section "Black-box variational inference".
    """
    g = torch.Generator().manual_seed(seed)
    mu = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.full((dim,), -2.0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 100)
    trace = []
    for _ in range(steps):
        w = mu + log_sigma.exp() * torch.randn(samples, dim, generator=g, dtype=torch.float64)
        elbo = log_joint(w).mean() + log_sigma.sum() + 0.5 * dim * math.log(2 * math.pi * math.e)
        opt.zero_grad()
        (-elbo).backward()
        opt.step()
        schedule.step()
        trace.append(elbo.item())
    return mu.detach(), log_sigma.detach(), trace


def hmc(potential_and_grad, w0, samples: int = 1000, warmup: int = 500, leapfrog: int = 20,
        step_size: float = 0.05, target_accept: float = 0.8, seed: int = 0):
    """Hamiltonian Monte Carlo on len(w0) chains at once; w0 has shape (chains, dim).

    potential_and_grad(w) returns U(w) = -log p(w | data) + const, shape (chains,), and its
    gradient, shape (chains, dim). The step size adapts towards target_accept during warmup.
    Returns (draws of shape (samples, chains, dim), mean acceptance rate after warmup).
    Defined in book/02_vi.md, section "Black-box variational inference".
    """
    g = torch.Generator().manual_seed(seed)
    w = w0.clone()
    U, grad = potential_and_grad(w)
    draws, accepted = [], []
    for it in range(warmup + samples):
        p = torch.randn(w.shape, generator=g, dtype=w.dtype)
        w_new, p_new = w, p - 0.5 * step_size * grad  # leapfrog: half step in momentum ...
        for k in range(leapfrog):
            w_new = w_new + step_size * p_new  # ... full steps in position ...
            U_new, grad_new = potential_and_grad(w_new)
            p_new = p_new - (step_size if k < leapfrog - 1 else 0.5 * step_size) * grad_new  # ... last one half
        log_ratio = U - U_new + 0.5 * (p**2).sum(-1) - 0.5 * (p_new**2).sum(-1)  # H(w, p) - H(w', p')
        accept = torch.rand(len(w), generator=g, dtype=w.dtype).log() < log_ratio
        w = torch.where(accept[:, None], w_new, w)
        U, grad = torch.where(accept, U_new, U), torch.where(accept[:, None], grad_new, grad)
        rate = accept.double().mean().item()
        if it < warmup:
            step_size *= math.exp(0.1 * (rate - target_accept))
        else:
            draws.append(w)
            accepted.append(rate)
    return torch.stack(draws), sum(accepted) / len(accepted)


class GaussianEncoder(nn.Module):
    """Inference network q_phi(z | x) = N(mu_phi(x), diag exp(logvar_phi(x))): an MLP with two heads.

    Defined in book/02_vi.md, section "Amortized inference".
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: int = 128):
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * z_dim))

    def forward(self, x):
        """(mu, logvar), each of shape (n, z_dim), for x of shape (n, x_dim)."""
        mu, logvar = self.net(data.check_points(x, self.x_dim)).chunk(2, dim=-1)
        return mu, logvar
