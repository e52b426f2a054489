"""Variational inference: the Gaussian KL, alpha-divergences, the linear Gaussian model, EM for Gaussian mixtures, CAVI, gradient estimators (Gumbel-softmax too), black-box and stochastic VI, HMC, encoders.

Generated from book/02_vi.md by tools/export.py: do not edit. Change the chapter's cells
marked #@save and run `make notebooks`.
"""

import math

import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal

from dgm import data


class LinearGaussian(nn.Module):
    """The linear Gaussian model: z ~ N(0, I_d), x | z ~ N(W z + mu, sigma^2 I_D).

    W has shape (D, d) and the offset mu shape (D,) (the symbol mu of the book's
    eq. (linear-gaussian)). log_prob(x) is the exact evidence log N(x; mu, W W^T +
    sigma^2 I) and encode(x) the exact posterior N(Lambda^{-1} W^T (x - mu) / sigma^2,
    Lambda^{-1}), Lambda = I + W^T W / sigma^2 (a batch of MultivariateNormal).
    Defined in book/02_vi.md, section "Latent variable models and their posteriors".
    """

    def __init__(self, W, mu, sigma: float):
        super().__init__()
        W = torch.as_tensor(W, dtype=torch.get_default_dtype())
        if W.ndim != 2:
            raise ValueError(f"W must be a matrix of shape (D, d), "
                             f"got shape {tuple(W.shape)}")
        mu = torch.as_tensor(mu, dtype=W.dtype)
        if mu.ndim > 1 or (mu.ndim == 1 and len(mu) not in (1, W.shape[0])):
            raise ValueError(f"the offset mu must be a scalar or of shape "
                             f"({W.shape[0]},), got shape {tuple(mu.shape)}")
        self.register_buffer("W", W)
        self.register_buffer("mu", mu.expand(W.shape[0]).clone())
        self.sigma = float(sigma)
        self.D, self.d = W.shape

    @classmethod
    def fit_ppca(cls, x, d: int):
        """Maximum-likelihood fit to x of shape (n, D), closed form (Tipping-Bishop)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 2:
            got = getattr(x, "dtype", type(x).__name__)
            raise ValueError(f"x must be a float tensor of shape (n, D), got {got} "
                             f"of shape {tuple(getattr(x, 'shape', ()))}")
        mu = x.mean(0)
        cov = (x - mu).T @ (x - mu) / len(x)  # the ML covariance (divides by n)
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0), evecs.flip(1)  # largest first
        sigma2 = evals[d:].mean()  # the discarded directions' average variance
        W = evecs[:, :d] * (evals[:d] - sigma2).clamp_min(0).sqrt()
        return cls(W, mu, sigma2.sqrt().item())

    def _x(self, x):
        return data.check_points(x, self.D)

    def log_lik(self, x, z):
        """log p(x | z), summed over the D coordinates; x (..., D), z (..., d)."""
        return Normal(z @ self.W.T + self.mu, self.sigma).log_prob(x).sum(-1)

    def log_joint(self, x, z):
        """log p(x, z) = log p(x | z) + log p(z)."""
        return self.log_lik(x, z) + Normal(0.0, 1.0).log_prob(z).sum(-1)

    def log_prob(self, x):
        """The exact log-evidence log p(x) in nats, shape (n,)."""
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.D, dtype=self.W.dtype)
        return MultivariateNormal(self.mu, cov).log_prob(self._x(x))

    def encode(self, x):
        """The exact posterior p(z | x) of each row of x, a batch MultivariateNormal."""
        Lam = torch.eye(self.d, dtype=self.W.dtype) + self.W.T @ self.W / self.sigma**2
        cov = torch.linalg.inv(Lam)
        mean = (self._x(x) - self.mu) @ self.W @ cov / self.sigma**2  # cov is symmetric
        return MultivariateNormal(mean, precision_matrix=Lam.expand(len(mean), -1, -1))

    @torch.no_grad()
    def sample(self, n: int):
        """n samples x, shape (n, D)."""
        z = torch.randn(n, self.d, dtype=self.W.dtype)
        noise = self.sigma * torch.randn(n, self.D, dtype=self.W.dtype)
        return z @ self.W.T + self.mu + noise


def kl_diag_gaussians(mu_q, logvar_q, mu_p, logvar_p):
    """KL(N(mu_q, diag exp(logvar_q)) || N(mu_p, diag exp(logvar_p))) in nats.

    Summed over the last dimension. Arguments broadcast against each other (e.g.
    mu_p = zeros for a standard normal prior); shapes (n, d) give a result of shape
    (n,).
    Defined in book/02_vi.md, section "The Kullback–Leibler divergence".
    """
    args = {"mu_q": mu_q, "logvar_q": logvar_q, "mu_p": mu_p, "logvar_p": logvar_p}
    for name, a in args.items():
        if not isinstance(a, torch.Tensor) or not a.is_floating_point():
            is_tensor = isinstance(a, torch.Tensor)
            got = f"{a.dtype} tensor" if is_tensor else type(a).__name__
            raise TypeError(f"{name} must be a float tensor, got {got}")
    try:
        shape = torch.broadcast_shapes(*(a.shape for a in args.values()))
    except RuntimeError:
        shapes = ", ".join(f"{k} {tuple(a.shape)}" for k, a in args.items())
        raise ValueError("the four arguments must broadcast to one shape, "
                         f"got {shapes}") from None
    if len(shape) == 0:
        raise ValueError("the arguments need a last dimension to sum over "
                         "(shape (..., d)), got scalars")
    var_ratio = (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp()
    return 0.5 * (logvar_p - logvar_q + var_ratio - 1).sum(-1)


def alpha_divergence(log_p, log_q, dz: float, alpha: float):
    """Amari's alpha-divergence D_alpha(p || q) of eq. (alpha-divergence), in nats.

    log_p, log_q: log-densities at grid points of spacing dz, shapes broadcasting to
    (..., G); the integral is a sum over the last dimension. alpha = 0 and alpha = 1
    give the limits KL(q || p) and KL(p || q), as int q log(q / p) - q + p and
    int p log(p / q) - p + q (the KLs if p and q are normalized).
    Defined in book/02_vi.md, section "α-divergences and expectation propagation".
    """
    for name, t in (("log_p", log_p), ("log_q", log_q)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim < 1:
            raise ValueError(
                f"{name} must be a float tensor of shape (..., G), got "
                f"{getattr(t, 'dtype', type(t).__name__)}"
            )
    p, q = log_p.exp(), log_q.exp()
    if alpha == 0:
        return (q * (log_q - log_p) - q + p).sum(-1) * dz
    if alpha == 1:
        return (p * (log_p - log_q) - p + q).sum(-1) * dz
    overlap = torch.logsumexp(alpha * log_p + (1 - alpha) * log_q, -1).exp() * dz
    return ((alpha * p + (1 - alpha) * q).sum(-1) * dz - overlap) / (
        alpha * (1 - alpha)
    )


def linear_gaussian_elbo(model, x, m, logvar):
    """The ELBO of eq. (lg-elbo), shape (n,), for q(z) = N(m, diag exp(logvar)).

    model is a LinearGaussian (offset model.mu); x has shape (n, D), m, logvar (n, d).
    Defined in book/02_vi.md, section "The evidence lower bound".
    """
    s2 = logvar.exp()  # s_j^2
    residual = x - m @ model.W.T - model.mu  # x - W m - mu
    squares = (residual**2).sum(-1) + (s2 * (model.W**2).sum(0)).sum(-1)
    reconstruction = (-0.5 * model.D * math.log(2 * math.pi * model.sigma**2)
                      - squares / (2 * model.sigma**2))
    zero = torch.zeros_like(m)
    return reconstruction - kl_diag_gaussians(m, logvar, zero, zero)


def _kind(x):  # what a wrong argument is, for error messages
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def _check_1d(x, what: str = "x"):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 1:
        raise ValueError(
            f"{what} must be a 1D float tensor of shape (n,), got {_kind(x)}")
    return x


def gmm_log_joint(x, pi, mu, sigma):
    """log pi_k + log N(x^(i); mu_k, sigma_k^2) for every point i and component k.

    Returns shape (n, K).

    x has shape (n,); pi, mu, sigma (weights, means, standard deviations) shape (K,).
    Defined in book/02_vi.md, section "EM as coordinate ascent on the ELBO".
    """
    x = _check_1d(x)
    if not pi.shape == mu.shape == sigma.shape or pi.ndim != 1:
        raise ValueError(
            f"pi, mu and sigma must share one shape (K,), got {tuple(pi.shape)}, "
            f"{tuple(mu.shape)} and {tuple(sigma.shape)}"
        )
    return pi.log() + Normal(mu, sigma).log_prob(x[:, None])


def gmm_log_lik(x, pi, mu, sigma) -> float:
    """log p_theta(x^(1), ..., x^(n)) = sum_i log sum_k pi_k N(x^(i); mu_k, sigma_k^2).

    Exact, in nats.
    Defined in book/02_vi.md, section "EM as coordinate ascent on the ELBO".
    """
    return torch.logsumexp(gmm_log_joint(x, pi, mu, sigma), 1).sum().item()


def gmm_elbo(x, r, pi, mu, sigma) -> float:
    """The ELBO of eq. (gmm-elbo) for q(z^(i) = k) = r_ik, r of shape (n, K), nats.

    Defined in book/02_vi.md, section "EM as coordinate ascent on the ELBO".
    """
    log_joint = gmm_log_joint(x, pi, mu, sigma)
    return (r * (log_joint - r.clamp_min(1e-300).log())).sum().item()


def em_gmm(x, pi, mu, sigma, iters: int = 10):
    """EM for a 1D Gaussian mixture from theta = (pi, mu, sigma), each of shape (K,).

    Returns (theta, trace): the final parameters and, after every half-step
    (E, M, E, M, ...), a tuple (step, ELBO L(q, theta), log p_theta(x)).
    Defined in book/02_vi.md, section "EM as coordinate ascent on the ELBO".
    """
    x = _check_1d(x)
    n, trace = len(x), []
    for _ in range(iters):
        r = torch.softmax(
            gmm_log_joint(x, pi, mu, sigma), 1
        )  # E-step: responsibilities r_ik
        trace.append(
            ("E", gmm_elbo(x, r, pi, mu, sigma), gmm_log_lik(x, pi, mu, sigma))
        )
        n_k = r.sum(0)  # M-step, eq. (gmm-mstep)
        pi = n_k / n
        mu = (r * x[:, None]).sum(0) / n_k
        sigma = ((r * (x[:, None] - mu) ** 2).sum(0) / n_k).sqrt()
        trace.append(
            ("M", gmm_elbo(x, r, pi, mu, sigma), gmm_log_lik(x, pi, mu, sigma))
        )
    return (pi, mu, sigma), trace


from typing import NamedTuple


class NormalGamma(NamedTuple):
    """A Normal-Gamma distribution: tau ~ Gamma(a, b), mu | tau ~ N(mu, 1 / (lam tau)).

    As the prior of eq. (normal-gamma) its fields are mu_0, lambda_0, a_0, b_0.
    Defined in book/02_vi.md, section "A Normal model with unknown mean and precision".
    """

    mu: float
    lam: float
    a: float
    b: float


class MeanFieldNormalGamma(NamedTuple):
    """The mean-field q(mu, tau) = N(mu; mu_n, 1 / lambda_n) Gamma(tau; a_n, b_n).

    Defined in book/02_vi.md, section "A Normal model with unknown mean and precision".
    """

    mu_n: float
    lambda_n: float
    a_n: float
    b_n: float


def normal_gamma_posterior(x, prior: NormalGamma) -> NormalGamma:
    """The exact posterior of (mu, tau) given observations x (1D tensor).

    Defined in book/02_vi.md, section "A Normal model with unknown mean and precision".
    """
    n, xbar = len(x), x.mean().item()
    squares = ((x - xbar) ** 2).sum().item()
    shrinkage = prior.lam * n * (xbar - prior.mu) ** 2 / (2 * (prior.lam + n))
    return NormalGamma(
        mu=(prior.lam * prior.mu + n * xbar) / (prior.lam + n),
        lam=prior.lam + n,
        a=prior.a + n / 2,
        b=prior.b + 0.5 * squares + shrinkage,
    )


def normal_gamma_log_evidence(x, prior: NormalGamma) -> float:
    """log p(x) in nats, exact, for the Normal model with the Normal-Gamma prior.

    Defined in book/02_vi.md, section "A Normal model with unknown mean and precision".
    """
    post = normal_gamma_posterior(x, prior)
    return (math.lgamma(post.a) - math.lgamma(prior.a)
            + prior.a * math.log(prior.b) - post.a * math.log(post.b)
            + 0.5 * math.log(prior.lam / post.lam)
            - 0.5 * len(x) * math.log(2 * math.pi))


def normal_gamma_elbo(x, prior: NormalGamma, q: MeanFieldNormalGamma) -> float:
    """The ELBO E_q[log p(x, mu, tau)] + H(q) in closed form.

    Defined in book/02_vi.md, section "A Normal model with unknown mean and precision".
    """
    n = len(x)
    digamma_a_n = torch.digamma(torch.tensor(q.a_n)).item()
    E_tau, E_log_tau = q.a_n / q.b_n, digamma_a_n - math.log(q.b_n)
    # E_q sum_i (x^(i) - mu)^2 and E_q (mu - mu_0)^2
    E_sq_data = ((x - q.mu_n) ** 2).sum().item() + n / q.lambda_n
    E_sq_prior = (q.mu_n - prior.mu) ** 2 + 1 / q.lambda_n
    log_2pi = math.log(2 * math.pi)
    log_lik = 0.5 * n * (E_log_tau - log_2pi) - 0.5 * E_tau * E_sq_data
    log_p_mu = (0.5 * (math.log(prior.lam) + E_log_tau - log_2pi)
                - 0.5 * prior.lam * E_tau * E_sq_prior)
    log_p_tau = (prior.a * math.log(prior.b) - math.lgamma(prior.a)
                 + (prior.a - 1) * E_log_tau - prior.b * E_tau)
    entropy = (0.5 * math.log(2 * math.pi * math.e / q.lambda_n)  # H(q(mu)), H(q(tau))
               + q.a_n - math.log(q.b_n) + math.lgamma(q.a_n)
               + (1 - q.a_n) * digamma_a_n)
    return log_lik + log_p_mu + log_p_tau + entropy


def cavi_normal_gamma(x, prior: NormalGamma, iters: int = 10, E_tau: float = 1.0):
    """Coordinate ascent on q(mu) q(tau): alternate eqs. (cavi-mu) and (cavi-tau).

    Starts from the guess E[tau] = E_tau. Returns the list of (q, ELBO) after every
    single update (two per iteration; the first q(tau) is the starting guess, with
    b_n = a_n / E_tau).
    Defined in book/02_vi.md, section "A Normal model with unknown mean and precision".
    """
    n, sum_x, sum_x2 = len(x), x.sum().item(), (x**2).sum().item()
    mu_n = (prior.lam * prior.mu + sum_x) / (prior.lam + n)  # does not change
    a_n = prior.a + (n + 1) / 2  # does not change
    b_n = a_n / E_tau
    trace = []
    for _ in range(iters):
        lambda_n = (prior.lam + n) * a_n / b_n  # eq. (cavi-mu), with E[tau] = a_n / b_n
        q = MeanFieldNormalGamma(mu_n, lambda_n, a_n, b_n)
        trace.append((q, normal_gamma_elbo(x, prior, q)))
        E_mu, E_mu2 = mu_n, mu_n**2 + 1 / lambda_n
        E_sq_data = sum_x2 - 2 * E_mu * sum_x + n * E_mu2  # E_mu sum_i (x^(i) - mu)^2
        E_sq_prior = E_mu2 - 2 * prior.mu * E_mu + prior.mu**2  # E_mu (mu - mu_0)^2
        b_n = prior.b + 0.5 * (E_sq_data + prior.lam * E_sq_prior)  # eq. (cavi-tau)
        q = MeanFieldNormalGamma(mu_n, lambda_n, a_n, b_n)
        trace.append((q, normal_gamma_elbo(x, prior, q)))
    return trace


def reparameterize(mu, logvar, generator=None):
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I).

    A sample of N(mu, diag exp(logvar)), differentiable in both mu and logvar.
    Defined in book/02_vi.md, section "Gradients of expectations".
    """
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + (0.5 * logvar).exp() * eps


def score_function_grad(f, mu, log_sigma, eps, baseline: bool = False):
    """Score-function (REINFORCE) estimate of the gradient of E_q[f(z)].

    q = N(mu, diag sigma^2), the gradient w.r.t. (mu, log sigma); eq. (score-function).
    eps: standard normal draws of shape (..., S, d), giving z_s = mu + sigma * eps_s;
    f maps (..., d) to (...). baseline=True subtracts the leave-one-out mean c_s of
    eq. (score-baseline) (needs S >= 2). Returns shape (..., 2 d).
    Defined in book/02_vi.md, section "Gradients of expectations".
    """
    sigma = log_sigma.exp()
    f_z = f(mu + sigma * eps).detach()  # (..., S): only values of f are used
    score = torch.cat([eps / sigma, eps**2 - 1], -1)  # grad of log q(z_s) w.r.t. phi
    if baseline:
        S = f_z.shape[-1]
        if S < 2:
            raise ValueError("the leave-one-out baseline needs at least S = 2 samples")
        c = (f_z.sum(-1, keepdim=True) - f_z) / (S - 1)  # c_s, the mean over s' != s
        f_z = f_z - c
    return (f_z[..., None] * score).mean(-2)


def reparameterization_grad(f, mu, log_sigma, eps):
    """Reparameterization estimate of the gradient of E_q[f(z)].

    q = N(mu, diag sigma^2), the gradient w.r.t. (mu, log sigma); eq.
    (reparameterization). Same arguments as score_function_grad; f must be
    differentiable and act on each z_s separately.
    Defined in book/02_vi.md, section "Gradients of expectations".
    """
    sigma = log_sigma.exp()
    z = (mu + sigma * eps).detach().requires_grad_()
    (grad_z,) = torch.autograd.grad(f(z).sum(), z)  # term s depends on z_s only
    grad = torch.cat([grad_z, grad_z * sigma * eps], -1)  # the chain rule through z
    return grad.mean(-2)


def _check_logits(logits):
    if (
        not isinstance(logits, torch.Tensor)
        or not logits.is_floating_point()
        or logits.ndim < 1
    ):
        raise ValueError(
            f"logits must be a float tensor of shape (..., K), got {_kind(logits)}")
    return logits


def sample_gumbel(shape, generator=None, dtype=torch.float64):
    """Standard Gumbel noise g = -log(-log u), u ~ Uniform(0, 1), of the given shape.

    Defined in book/02_vi.md, section "Discrete latent variables: Gumbel-max, Gumbel-softmax and straight-through".
    """
    u = torch.rand(shape, generator=generator, dtype=dtype).clamp(1e-12, 1 - 1e-12)
    return -torch.log(-torch.log(u))


def gumbel_max(logits, g):
    """Eq. (gumbel-max): onehot(argmax_k (logits_k + g_k)), a Cat(softmax(logits)) draw.

    logits and the Gumbel noise g broadcast to shape (..., K), the shape of the result.
    Defined in book/02_vi.md, section "Discrete latent variables: Gumbel-max, Gumbel-softmax and straight-through".
    """
    logits = _check_logits(logits)
    return nn.functional.one_hot((logits + g).argmax(-1), logits.shape[-1]).to(
        logits.dtype
    )


def gumbel_softmax(logits, g, temperature: float, hard: bool = False):
    """Eq. (gumbel-softmax): the relaxed sample softmax((logits + g) / temperature).

    Shape (..., K), that of logits + g.

    hard=True is straight-through: the value is the one-hot gumbel_max(logits, g), the
    gradient that of the relaxation.
    Defined in book/02_vi.md, section "Discrete latent variables: Gumbel-max, Gumbel-softmax and straight-through".
    """
    logits = _check_logits(logits)
    if not temperature > 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    y = torch.softmax((logits + g) / temperature, -1)
    return gumbel_max(logits, g) - y.detach() + y if hard else y


def fit_mean_field(log_joint, dim: int, steps: int = 2000, samples: int = 16,
                   lr: float = 0.05, seed: int = 0):
    """Black-box VI: the diagonal Gaussian q = N(mu, diag sigma^2) maximizing the ELBO.

    log_joint maps weights of shape (S, dim) to log p(data, w) of shape (S,).
    Reparameterized gradients from `samples` draws per step, Adam with a cosine-decaying
    step size.
    Returns (mu, log_sigma, elbo) with elbo the per-step estimates.
    Defined in book/02_vi.md, section "Black-box variational inference".
    """
    g = torch.Generator().manual_seed(seed)
    mu = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.full((dim,), -2.0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 100)
    half_d_log_2pie = 0.5 * dim * math.log(2 * math.pi * math.e)  # H(q) - sum log sigma
    trace = []
    for _ in range(steps):
        eps = torch.randn(samples, dim, generator=g, dtype=torch.float64)
        w = mu + log_sigma.exp() * eps
        elbo = log_joint(w).mean() + log_sigma.sum() + half_d_log_2pie
        opt.zero_grad()
        (-elbo).backward()
        opt.step()
        schedule.step()
        trace.append(elbo.item())
    return mu.detach(), log_sigma.detach(), trace


def hmc(potential_and_grad, w0, samples: int = 1000, warmup: int = 500,
        leapfrog: int = 20, step_size: float = 0.05, target_accept: float = 0.8,
        seed: int = 0):
    """Hamiltonian Monte Carlo on len(w0) chains at once; w0 has shape (chains, dim).

    potential_and_grad(w) returns U(w) = -log p(w | data) + const, shape (chains,),
    and its gradient, shape (chains, dim). The step size adapts towards target_accept
    during warmup. The momentum is r, the Hamiltonian H(w, r) = U(w) + |r|^2 / 2.
    Returns (draws of shape (samples, chains, dim), mean acceptance rate after warmup).
    Defined in book/02_vi.md, section "Black-box variational inference".
    """
    g = torch.Generator().manual_seed(seed)
    w = w0.clone()
    U, grad = potential_and_grad(w)
    draws, accepted = [], []
    for it in range(warmup + samples):
        r = torch.randn(w.shape, generator=g, dtype=w.dtype)  # the momentum
        w_new, r_new = w, r - 0.5 * step_size * grad  # leapfrog: half step in r ...
        for k in range(leapfrog):
            w_new = w_new + step_size * r_new  # ... full steps in position ...
            U_new, grad_new = potential_and_grad(w_new)
            last = k == leapfrog - 1
            # ... full steps in momentum, the last one a half step
            r_new = r_new - (0.5 if last else 1.0) * step_size * grad_new
        # the Hamiltonian's decrease, H(w, r) - H(w', r')
        log_ratio = U - U_new + 0.5 * (r**2).sum(-1) - 0.5 * (r_new**2).sum(-1)
        accept = torch.rand(len(w), generator=g, dtype=w.dtype).log() < log_ratio
        w = torch.where(accept[:, None], w_new, w)
        U = torch.where(accept, U_new, U)
        grad = torch.where(accept[:, None], grad_new, grad)
        rate = accept.double().mean().item()
        if it < warmup:
            step_size *= math.exp(0.1 * (rate - target_accept))
        else:
            draws.append(w)
            accepted.append(rate)
    return torch.stack(draws), sum(accepted) / len(accepted)


def minibatch_log_joint(log_lik_batch, log_prior, n: int):
    """Eq. (minibatch-elbo): log p(w) + (n / |B|) sum_{i in B} log p(x^(i) | w), (S,).

    log_lik_batch: the batch's log-likelihood terms for S draws of w, shape (S, |B|);
    log_prior: log p(w), shape (S,). Unbiased for log p(data, w) when B is uniform.
    Defined in book/02_vi.md, section "Stochastic VI: minibatches".
    """
    ok = (
        isinstance(log_lik_batch, torch.Tensor)
        and log_lik_batch.ndim == 2
        and isinstance(log_prior, torch.Tensor)
        and log_prior.shape == log_lik_batch.shape[:1]
    )
    if not ok:
        raise ValueError(
            "expected log_lik_batch of shape (S, |B|) and log_prior of shape (S,), got "
            f"{tuple(getattr(log_lik_batch, 'shape', ()))} and "
            f"{tuple(getattr(log_prior, 'shape', ()))}"
        )
    if not 1 <= log_lik_batch.shape[1] <= n:
        raise ValueError(
            f"a batch has between 1 and n = {n} points, got {log_lik_batch.shape[1]}"
        )
    return log_prior + n / log_lik_batch.shape[1] * log_lik_batch.sum(1)


def svi_normal_gamma(
    x,
    prior: NormalGamma,
    steps: int = 1000,
    batch_size: int = 10,
    kappa: float = 0.7,
    delay: float = 1.0,
    E_tau: float = 1.0,
    seed: int = 0,
):
    """SVI with natural gradients for the mean-field q(mu) q(tau) of the Normal-Gamma
    model.

    Each step draws a batch B of batch_size points without replacement, forms the
    updates (cavi-mu) and (cavi-tau) with the data sums replaced by n / |B| times the
    batch's, and moves the natural parameters (lambda_n mu_n, lambda_n) of q(mu), then
    b_n of q(tau), a fraction rho_t = (t + delay)^(-kappa) of the way there. Returns the
    list of q after each step.
    Defined in book/02_vi.md, section "Stochastic VI: minibatches".
    """
    x = _check_1d(x)
    n = len(x)
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be between 1 and n = {n}, got {batch_size}")
    g = torch.Generator().manual_seed(seed)
    a_n = prior.a + (n + 1) / 2  # the same in every update
    b_n = a_n / E_tau
    lambda_n = (prior.lam + n) * E_tau
    eta_mu = (
        lambda_n * prior.mu
    )  # the natural parameter lambda_n mu_n, starting at the prior mean
    trace = []
    for t in range(1, steps + 1):
        rho = (t + delay) ** -kappa
        x_b = x[torch.randperm(n, generator=g)[:batch_size]]
        sum_x, sum_x2 = (
            n / batch_size * x_b.sum().item(),
            n / batch_size * (x_b**2).sum().item(),
        )
        E_tau_q = a_n / b_n
        lambda_hat = (prior.lam + n) * E_tau_q  # eq. (cavi-mu) in natural parameters
        eta_mu_hat = E_tau_q * (prior.lam * prior.mu + sum_x)
        eta_mu = (1 - rho) * eta_mu + rho * eta_mu_hat
        lambda_n = (1 - rho) * lambda_n + rho * lambda_hat
        mu_n = eta_mu / lambda_n
        E_mu, E_mu2 = mu_n, mu_n**2 + 1 / lambda_n
        E_sq_data = (
            sum_x2 - 2 * E_mu * sum_x + n * E_mu2
        )  # batch estimate of E sum_i (x^(i) - mu)^2
        E_sq_prior = E_mu2 - 2 * prior.mu * E_mu + prior.mu**2
        b_hat = prior.b + 0.5 * (E_sq_data + prior.lam * E_sq_prior)  # eq. (cavi-tau)
        b_n = (
            1 - rho
        ) * b_n + rho * b_hat  # q(tau) has natural parameter (a_n - 1, -b_n)
        trace.append(MeanFieldNormalGamma(mu_n, lambda_n, a_n, b_n))
    return trace


class GaussianEncoder(nn.Module):
    """Inference network q_phi(z | x) = N(mu_phi(x), diag exp(logvar_phi(x))).

    An MLP with two heads, mu_phi and logvar_phi.
    Defined in book/02_vi.md, section "Amortized inference".
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: int = 128):
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * z_dim))

    def forward(self, x):
        """(mu, logvar), each of shape (n, z_dim), for x of shape (n, x_dim)."""
        mu, logvar = self.net(data.check_points(x, self.x_dim)).chunk(2, dim=-1)
        return mu, logvar
