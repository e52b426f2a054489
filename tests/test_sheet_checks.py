"""Every check of every exercise sheet rejects plausible wrong answers, not only the stub.

The sheets' own test (tests/test_exercises.py) runs each sheet with its solutions (every check
passes) and its stubs (no check passes); a check that accepts the identity map or ignores an
input would pass both. Here each coding exercise gets wrong implementations, each a mistake a
student could make, and its check must report FAILED for every one of them.
"""

from __future__ import annotations

import math

import jupytext
import pytest
import torch

from dgm.exercises import FAILED, PASSED, report
from tools import twins


def _checks(sheet: str) -> dict:
    """The sheet's namespace without its stubs, solutions and report calls: imports and checks."""
    nb = jupytext.read(twins.ROOT / "exercises" / sheet)
    ns: dict = {}
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type != "code" or "stub" in tags or "solution" in tags:
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("report("))
        exec(compile(source, f"{sheet}:cell", "exec"), ns)
    return ns


def _log_p_x_no_jacobian(x, a, c):
    inside = x > c
    z = torch.log(torch.where(inside, x - c, torch.ones_like(x)) / a)
    out = -0.5 * math.log(2 * math.pi) - 0.5 * z**2
    return torch.where(inside, out, torch.full_like(x, -math.inf))


def _log_p_x_no_support(x, a, c):
    d = (x - c).abs()
    return -0.5 * math.log(2 * math.pi) - 0.5 * torch.log(d / a) ** 2 - torch.log(d)


def _radial_wrong_h(z, z0, alpha, beta):
    """h = 1 / (alpha + r^2) with the log-det of that (wrong) map, self-consistent."""
    v = z - z0
    r = v.norm(dim=1, keepdim=True)
    h = 1 / (alpha + r**2)
    x = z + beta * h * v
    log_det = torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(
        lambda u: u + beta / (alpha + (u - z0).norm() ** 2) * (u - z0), zi))[1] for zi in z])
    return x, log_det


def _radial_missing_radial_term(z, z0, alpha, beta):
    v = z - z0
    r = v.norm(dim=1, keepdim=True)
    h = 1 / (alpha + r)
    return z + beta * h * v, (z.shape[1] * torch.log1p(beta * h))[:, 0]


def _kl_swapped(mu0, S0, mu1, S1):
    return torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(mu1, S1),
                                             torch.distributions.MultivariateNormal(mu0, S0))


def _kl_no_half(mu0, S0, mu1, S1):
    return 2 * torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(mu0, S0),
                                                 torch.distributions.MultivariateNormal(mu1, S1))


def _cavi_jacobi(m, Lam, mean0, sweeps):
    """Both coordinates updated from the old means at once: not coordinate ascent."""
    mean, history = mean0.clone(), []
    for _ in range(sweeps):
        new = mean.clone()
        new[0] = m[0] - Lam[0, 1] / Lam[0, 0] * (mean[1] - m[1])
        new[1] = m[1] - Lam[1, 0] / Lam[1, 1] * (mean[0] - m[0])
        mean = new
        history.append(mean.clone())
    return torch.stack(history), 1 / torch.diagonal(Lam)


def _cavi_marginal_variances(m, Lam, mean0, sweeps):
    means = torch.stack([m.clone() for _ in range(sweeps)])
    return means, torch.diagonal(torch.linalg.inv(Lam))


def _elbo_gmm(x, phi, m, s2, sigma0):
    """The closed-form ELBO of sheet 2 exercise 5 (correct), for the wrong CAVI updates below."""
    e_log_lik = -0.5 * math.log(2 * math.pi) - ((x[:, None] - m) ** 2 + s2) / 2
    kl_mu = torch.log(sigma0 / s2.sqrt()) + (s2 + m**2) / (2 * sigma0**2) - 0.5
    return (phi * (e_log_lik - math.log(len(m)))).sum() - torch.xlogy(phi, phi).sum() - kl_mu.sum()


def _cavi_gmm(x, m, s2, sigma0, sweeps, variance_term=True, prior_precision=True, elbo=_elbo_gmm):
    elbos = []
    for _ in range(sweeps):
        phi = torch.softmax(x[:, None] * m - (m**2 + (s2 if variance_term else 0)) / 2, dim=1)
        precision = (1 / sigma0**2 if prior_precision else 0) + phi.sum(0)
        m, s2 = (phi * x[:, None]).sum(0) / precision, 1 / precision
        elbos.append(elbo(x, phi, m, s2, sigma0))
    return phi, m, s2, torch.stack(elbos)


def _gmm_phi_without_variance(x, m, s2, sigma0, sweeps):
    """E[mu_k^2] taken as m_k^2: the -s_k^2 / 2 term of the assignment update is forgotten."""
    return _cavi_gmm(x, m, s2, sigma0, sweeps, variance_term=False)


def _gmm_no_prior_precision(x, m, s2, sigma0, sweeps):
    """1 / s_k^2 = sum_i phi[i, k]: the prior's 1 / sigma0^2 is missing from the precision."""
    return _cavi_gmm(x, m, s2, sigma0, sweeps, prior_precision=False)


def _elbo_gmm_no_variance(x, phi, m, s2, sigma0):
    """E_q (x - mu_k)^2 taken as (x - m_k)^2: the s_k^2 / 2 of the expected log-likelihood is lost."""
    return _elbo_gmm(x, phi, m, s2, sigma0) + (phi * s2).sum() / 2


def _elbo_gmm_no_entropy(x, phi, m, s2, sigma0):
    """The entropy of q(z) is left out."""
    return _elbo_gmm(x, phi, m, s2, sigma0) + torch.xlogy(phi, phi).sum()


def _gmm(elbo):
    """The correct CAVI updates, recording a wrong ELBO."""
    def cavi(x, m, s2, sigma0, sweeps):
        return _cavi_gmm(x, m, s2, sigma0, sweeps, elbo=elbo)
    return cavi, elbo


def _kumaraswamy_ignores_u(a, b, u):
    return torch.distributions.Kumaraswamy(a, b).rsample(u.shape)


def _kumaraswamy_swapped(a, b, u):
    return (1 - (1 - u) ** (1 / a)) ** (1 / b)


def _reparam_score_function(mu, sigma, eps):
    z = mu + sigma * eps
    f = torch.sin(z)
    return (f * eps / sigma).mean().item(), (f * (eps**2 - 1) / sigma).mean().item()


def _reparam_no_chain_rule(mu, sigma, eps):
    z = mu + sigma * eps
    return torch.cos(z).mean().item(), torch.cos(z).mean().item()


def _vq(z_e, codebook, beta, straight_through=True, sg_commit=True, sg_codebook=True,
        reduce=torch.mean, swap_weights=False, nearest="euclidean"):
    """Vector quantization with one of the mistakes below switched on."""
    if nearest == "euclidean":
        c = torch.cdist(z_e, codebook).argmin(dim=1)
    else:  # the largest inner product, which is not the nearest code
        c = (z_e @ codebook.T).argmax(dim=1)
    z_q = codebook[c]
    codebook_loss = reduce(((z_e.detach() if sg_codebook else z_e) - z_q).pow(2).sum(1))
    commitment = reduce((z_e - (z_q.detach() if sg_commit else z_q)).pow(2).sum(1))
    w_codebook, w_commit = (beta, 1.0) if swap_weights else (1.0, beta)
    z_in = z_e + (z_q - z_e).detach() if straight_through else z_q
    return z_in, c, w_codebook * codebook_loss + w_commit * commitment


def _vq_no_straight_through(z_e, codebook, beta):
    """The decoder fed z_q itself: the encoder gets no reconstruction gradient."""
    return _vq(z_e, codebook, beta, straight_through=False)


def _vq_commitment_not_detached(z_e, codebook, beta):
    """The commitment term also pulls the code: beta (e_c - z_e) reaches the codebook."""
    return _vq(z_e, codebook, beta, sg_commit=False)


def _vq_codebook_not_detached(z_e, codebook, beta):
    """The codebook term also pulls the encoder."""
    return _vq(z_e, codebook, beta, sg_codebook=False)


def _vq_weights_swapped(z_e, codebook, beta):
    """beta on the codebook term and 1 on the commitment: the same value, other gradients."""
    return _vq(z_e, codebook, beta, swap_weights=True)


def _vq_sum(z_e, codebook, beta):
    """The sum over the batch instead of the mean."""
    return _vq(z_e, codebook, beta, reduce=torch.sum)


def _vq_inner_product(z_e, codebook, beta):
    """The code with the largest inner product taken as the nearest."""
    return _vq(z_e, codebook, beta, nearest="inner product")


def _vq_straight_through(z_q, z_e):
    return z_q + (z_e - z_e.detach())


def _vq_straight_through_detached(z_q, z_e):
    return z_q.detach() + (z_e - z_e.detach())


def _vq_other_form(straight_through):
    """z_q + (z_e - sg[z_e]) as the decoder input (mse_loss for the two terms)."""
    def vq_quantize(z_e, codebook, beta):
        c = ((z_e[:, None] - codebook[None]) ** 2).sum(2).argmin(1)
        z_q = codebook[c]
        mse = torch.nn.functional.mse_loss
        loss = (mse(z_q, z_e.detach(), reduction="sum")
                + beta * mse(z_e, z_q.detach(), reduction="sum")) / len(z_e)
        return straight_through(z_q, z_e), c, loss
    vq_quantize.__name__ = f"_vq_other_form{straight_through.__name__}"
    return vq_quantize


# wrong: z_q keeps its graph, so the reconstruction gradient also reaches the codebook
_vq_reconstruction_moves_codes = _vq_other_form(_vq_straight_through)
# correct: the same forward value and straight-through copy, with sg[z_q]
_vq_other_straight_through = _vq_other_form(_vq_straight_through_detached)


def _kid(X, Y, diagonal=False, norm="unbiased", scale=True, cross=2.0, same_n=False):
    """The MMD^2 estimate with the cubic kernel, with one of the mistakes below switched on."""
    d_f = X.shape[1] if scale else 1.0
    kernel = lambda U, V: (U @ V.T / d_f + 1) ** 3
    terms = []
    for K in (kernel(X, X), kernel(Y, Y)):
        n = len(X) if same_n else len(K)
        total = K.sum() if diagonal else K.sum() - K.trace()
        terms.append(total / (n * (n - 1) if norm == "unbiased" else n * n))
    return (terms[0] + terms[1] - cross * kernel(X, Y).mean()).item()


def _kid_v_statistic(X, Y):
    """The plug-in estimate: diagonals kept, divided by n^2."""
    return _kid(X, Y, diagonal=True, norm="plug-in")


def _kid_diagonal_kept(X, Y):
    """The diagonals kept but divided by n(n - 1)."""
    return _kid(X, Y, diagonal=True)


def _kid_no_feature_scaling(X, Y):
    """The kernel (u.v + 1)^3, without the division by d_f."""
    return _kid(X, Y, scale=False)


def _kid_cross_once(X, Y):
    """The cross term without its factor 2."""
    return _kid(X, Y, cross=1.0)


def _kid_one_set_size(X, Y):
    """n_a used for both sets: wrong when the sizes differ."""
    return _kid(X, Y, same_n=True)


def _kid_masked(X, Y):
    """Correct: the off-diagonal entries selected with a mask."""
    d_f = X.shape[1]
    kernel = lambda U, V: (U @ V.T / d_f + 1) ** 3
    off = lambda K: K[~torch.eye(len(K), dtype=torch.bool)].mean()
    return (off(kernel(X, X)) + off(kernel(Y, Y)) - 2 * kernel(X, Y).mean()).item()


def _ns_naive(a):
    return -torch.log(torch.sigmoid(a)).mean()


def _ns_saturating(a):
    return torch.log1p(-torch.sigmoid(a)).mean()


def _frechet_no_sqrt(mu_a, S_a, mu_b, S_b):
    return (((mu_a - mu_b) ** 2).sum() + torch.trace(S_a + S_b - 2 * S_a @ S_b)).item()


def _frechet_means_only(mu_a, S_a, mu_b, S_b):
    return ((mu_a - mu_b) ** 2).sum().item()


def _reparam_sigma_detached(mu, sigma, eps):
    """sigma left a plain number: autograd gives no dF/dsigma (reported as 0)."""
    m = torch.tensor(float(mu), dtype=eps.dtype, requires_grad=True)
    (d_mu,) = torch.autograd.grad(torch.sin(m + sigma * eps).mean(), [m])
    return d_mu.item(), 0.0


def _reparam_sum(mu, sigma, eps):
    """The sum over the S samples instead of their mean."""
    m = torch.tensor(float(mu), dtype=eps.dtype, requires_grad=True)
    s = torch.tensor(float(sigma), dtype=eps.dtype, requires_grad=True)
    d_mu, d_sigma = torch.autograd.grad(torch.sin(m + s * eps).sum(), [m, s])
    return d_mu.item(), d_sigma.item()


def _reparam_by_hand(mu, sigma, eps):
    """Correct: the pathwise derivatives (cos z, eps cos z) written out, no autograd."""
    z = mu + sigma * eps
    return torch.cos(z).mean().item(), (eps * torch.cos(z)).mean().item()


def _ns_where_unclamped(a):
    """torch.where over unclamped branches: the unused exp(1000) makes the gradient NaN."""
    return torch.where(a >= 0, torch.log1p(torch.exp(-a)), -a + torch.log1p(torch.exp(a))).mean()


def _ns_max_detached(a):
    """The right value, but max(-a, 0) detached: rejected samples get no gradient."""
    return ((-a).clamp(min=0).detach() + torch.log1p(torch.exp(-a.abs()))).mean()


def _ns_sign_flipped(a):
    """max(a, 0) + log(1 + e^{-|a|}) = -log sigmoid(-a), the loss of the other class."""
    return (a.clamp(min=0) + torch.log1p(torch.exp(-a.abs()))).mean()


def _ns_sum(a):
    """The sum over the batch instead of the mean."""
    return (torch.relu(-a) + torch.log1p(torch.exp(-a.abs()))).sum()


def _ns_overflow(a):
    """log(1 + e^{-a}) as written: e^{1000} overflows to inf."""
    return torch.log1p(torch.exp(-a)).mean()


def _ns_kink(max_part):
    """Correct: max(-a, 0) + log(1 + e^{-|a|}) with max(-a, 0) coded by max_part."""
    def ns_loss(a):
        return (max_part(a) + torch.log1p(torch.exp(-a.abs()))).mean()
    ns_loss.__name__ = f"_ns_kink_{max_part.__name__}"
    return ns_loss


def relu(a):  # autograd gives d/da relu(-a) = 0 at a = 0
    return torch.relu(-a)


def clamp(a):  # -1 at a = 0
    return (-a).clamp(min=0)


def maximum(a):  # -1/2 at a = 0
    return torch.maximum(-a, torch.zeros_like(a))


def _ns_softplus(a):
    """Correct (the sheet asks not to use it, but the check cannot tell)."""
    return torch.nn.functional.softplus(-a).mean()


def _frechet_elementwise_sqrt(mu_a, S_a, mu_b, S_b):
    """torch.sqrt of the matrix entries taken as the matrix square root."""
    root_a = S_a.clamp(min=0).sqrt()
    cross = (root_a @ S_b @ root_a).clamp(min=0).sqrt()
    return (((mu_a - mu_b) ** 2).sum() + torch.trace(S_a + S_b - 2 * cross)).item()


def _sqrt_psd(S):
    evals, evecs = torch.linalg.eigh((S + S.T) / 2)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def _frechet_commuting_formula(mu_a, S_a, mu_b, S_b):
    """||S_a^1/2 - S_b^1/2||_F^2, right only when the covariances commute."""
    diff = _sqrt_psd(S_a) - _sqrt_psd(S_b)
    return (((mu_a - mu_b) ** 2).sum() + (diff**2).sum()).item()


def _frechet_no_clamp(mu_a, S_a, mu_b, S_b):
    """Eigenvalue roots without clamping: NaN for singular covariances."""
    evals, evecs = torch.linalg.eigh(S_a)
    root_a = (evecs * evals.sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(root_a @ S_b @ root_a).sqrt().sum()
    return (((mu_a - mu_b) ** 2).sum() + torch.trace(S_a) + torch.trace(S_b) - 2 * cross).item()


def _frechet_product_eigenvalues(mu_a, S_a, mu_b, S_b):
    """Correct: tr (S_a^1/2 S_b S_a^1/2)^1/2 = sum of the roots of the eigenvalues of S_a S_b."""
    cross = torch.linalg.eigvals(S_a @ S_b).real.clamp(min=0).sqrt().sum()
    return (((mu_a - mu_b) ** 2).sum() + torch.trace(S_a) + torch.trace(S_b) - 2 * cross).item()


def _posterior_beta_variance(betas, t, x0, xt):
    ab = torch.cumprod(1 - betas, 0)
    ab_t, ab_prev, beta = ab[t - 1], (ab[t - 2] if t > 1 else torch.ones((), dtype=betas.dtype)), betas[t - 1]
    mean = ab_prev.sqrt() * beta / (1 - ab_t) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t) * xt
    return mean, beta


def _posterior_off_by_one(betas, t, x0, xt):
    ab = torch.cumprod(1 - betas, 0)
    ab_t, ab_prev, beta = ab[t - 1], ab[t - 2], betas[t - 1]  # t = 1 reads alpha_bar_T
    mean = ab_prev.sqrt() * beta / (1 - ab_t) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t) * xt
    return mean, (1 - ab_prev) / (1 - ab_t) * beta


def _ddim_ancestral_mean(xt, eps_hat, ab_t, ab_prev):
    """The DDPM mean for one step of alpha = ab_t / ab_prev: not DDIM's deterministic jump."""
    alpha = ab_t / ab_prev
    return (xt - (1 - alpha) / math.sqrt(1 - ab_t) * eps_hat) / math.sqrt(alpha)


def _ddim_eps_at_old_level(xt, eps_hat, ab_t, ab_prev):
    x0_hat = (xt - math.sqrt(1 - ab_t) * eps_hat) / math.sqrt(ab_t)
    return math.sqrt(ab_prev) * x0_hat + math.sqrt(1 - ab_t) * eps_hat


def _gauss_velocity_point_mass(x, t, mu, s):
    """The velocity of a point mass at mu, (x - mu) / t: the data's spread s ignored."""
    return (x - mu) / t


def _gauss_velocity(x, t, mu, s, var, da=-1.0):
    a = 1 - t
    V = a**2 * var + t**2
    return da * mu + (a * da * var + t) / V * (x - a * mu)


def _gauss_velocity_std_for_variance(x, t, mu, s):
    """The standard deviation s where the variance s^2 belongs."""
    return _gauss_velocity(x, t, mu, s, var=s)


def _gauss_velocity_wrong_sign(x, t, mu, s):
    """a_t' = +1 instead of -1, in both places it appears."""
    return _gauss_velocity(x, t, mu, s, var=s**2, da=1.0)


def _ode_log_density(v, x0, n_steps=100, sign=1.0, div="trace", frozen_time=False):
    """RK4 for (x, integral of the divergence), with one of the mistakes below switched on."""
    def field(x, t):
        x = x.detach().requires_grad_(True)
        out = v(x, 0.0 if frozen_time else t)
        rows = [torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)[0]
                for i in range(x.shape[1])]
        d = (sum(r[:, i] for i, r in enumerate(rows)) if div == "trace"
             else sum(r.sum(1) for r in rows))  # every entry of the Jacobian
        return out.detach(), d.detach()

    x, ell, h = x0.detach().clone(), torch.zeros(len(x0), dtype=x0.dtype), 1 / n_steps
    for k in range(n_steps):
        t = k * h
        k1, d1 = field(x, t)
        k2, d2 = field(x + h / 2 * k1, t + h / 2)
        k3, d3 = field(x + h / 2 * k2, t + h / 2)
        k4, d4 = field(x + h * k3, t + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        ell = ell + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    log_p1 = -0.5 * x.shape[1] * math.log(2 * math.pi) - 0.5 * (x**2).sum(1)
    return log_p1 + sign * ell


def _ode_log_density_minus(v, x0, n_steps=100):
    """log p_1(x_1) minus the integrated divergence (the sign of d log p / dt kept)."""
    return _ode_log_density(v, x0, n_steps, sign=-1.0)


def _ode_log_density_jacobian_sum(v, x0, n_steps=100):
    """The sum of all entries of the Jacobian taken as its trace."""
    return _ode_log_density(v, x0, n_steps, div="sum")


def _ode_log_density_frozen_time(v, x0, n_steps=100):
    """The field always evaluated at t = 0."""
    return _ode_log_density(v, x0, n_steps, frozen_time=True)


def _hutchinson(f, x, n_probes, probe, sum_first=False):
    x = x.detach().requires_grad_(True)
    out = f(x)
    estimates = []
    for _ in range(n_probes):
        eps = probe(x)
        grad_outputs = torch.ones_like(out) if sum_first else eps
        (row,) = torch.autograd.grad(out, x, grad_outputs=grad_outputs, retain_graph=True)
        estimates.append((row * eps).sum(1))
    return torch.stack(estimates)


def _rademacher(x):
    return torch.randint(0, 2, x.shape, dtype=x.dtype) * 2 - 1


def _hutchinson_gaussian(f, x, n_probes):
    """Gaussian probes: unbiased, but not the Rademacher estimator the task asks for."""
    return _hutchinson(f, x, n_probes, torch.randn_like)


def _hutchinson_bernoulli(f, x, n_probes):
    """Probes with entries 0 or 1 (randint(0, 2) without the 2 e - 1): E[eps eps^T] is not I."""
    return _hutchinson(f, x, n_probes, lambda y: torch.randint(0, 2, y.shape, dtype=y.dtype))


def _hutchinson_sum_first(f, x, n_probes):
    """(1^T J) eps: the gradient of f(x).sum() dotted with the probe."""
    return _hutchinson(f, x, n_probes, _rademacher, sum_first=True)


WRONG = {
    ("sheet01_flows.md", "check_log_p_x"): [_log_p_x_no_jacobian, _log_p_x_no_support],
    ("sheet01_flows.md", "check_radial"): [
        lambda z, z0, alpha, beta: (z.clone(), z.new_zeros(len(z))),  # the identity, log-det 0
        _radial_wrong_h, _radial_missing_radial_term],
    ("sheet02_vi.md", "check_kl_gaussians"): [_kl_swapped, _kl_no_half],
    ("sheet02_vi.md", "check_cavi_gaussian"): [_cavi_jacobi, _cavi_marginal_variances],
    ("sheet02_vi.md", "check_cavi_gmm"): [  # (cavi_gmm, elbo_gmm) pairs
        (_gmm_phi_without_variance, _elbo_gmm), (_gmm_no_prior_precision, _elbo_gmm),
        _gmm(_elbo_gmm_no_variance), _gmm(_elbo_gmm_no_entropy)],
    ("sheet02_vi.md", "check_sample_kumaraswamy"): [_kumaraswamy_ignores_u, _kumaraswamy_swapped],
    ("sheet03_vae_gans.md", "check_reparam_grad"): [
        _reparam_score_function, _reparam_no_chain_rule, _reparam_sigma_detached, _reparam_sum],
    ("sheet03_vae_gans.md", "check_vq_quantize"): [
        _vq_no_straight_through, _vq_commitment_not_detached, _vq_codebook_not_detached,
        _vq_weights_swapped, _vq_sum, _vq_inner_product, _vq_reconstruction_moves_codes],
    ("sheet03_vae_gans.md", "check_ns_loss"): [
        _ns_naive, _ns_saturating, _ns_where_unclamped, _ns_max_detached, _ns_sign_flipped,
        _ns_sum, _ns_overflow],
    ("sheet03_vae_gans.md", "check_frechet_gaussians"): [
        _frechet_no_sqrt, _frechet_means_only, _frechet_elementwise_sqrt,
        _frechet_commuting_formula, _frechet_no_clamp],
    ("sheet03_vae_gans.md", "check_kid"): [
        _kid_v_statistic, _kid_diagonal_kept, _kid_no_feature_scaling, _kid_cross_once,
        _kid_one_set_size],
    ("sheet04_diffusion.md", "check_forward_posterior"): [_posterior_beta_variance, _posterior_off_by_one],
    ("sheet04_diffusion.md", "check_ddim_step"): [_ddim_ancestral_mean, _ddim_eps_at_old_level],
    ("sheet05_flow_matching.md", "check_gaussian_velocity"): [
        _gauss_velocity_point_mass, _gauss_velocity_std_for_variance, _gauss_velocity_wrong_sign],
    ("sheet05_flow_matching.md", "check_ode_log_density"): [
        _ode_log_density_minus, _ode_log_density_jacobian_sum, _ode_log_density_frozen_time],
    ("sheet05_flow_matching.md", "check_hutchinson"): [
        _hutchinson_gaussian, _hutchinson_bernoulli, _hutchinson_sum_first],
}


# Correct implementations other than the sheet's own, which the check must accept: a check
# that demands one convention (autograd's value at a kink) would fail a right answer.
RIGHT = {
    ("sheet03_vae_gans.md", "check_reparam_grad"): [_reparam_by_hand],
    ("sheet03_vae_gans.md", "check_vq_quantize"): [_vq_other_straight_through],
    ("sheet03_vae_gans.md", "check_kid"): [_kid_masked],
    ("sheet03_vae_gans.md", "check_ns_loss"): [
        _ns_kink(relu), _ns_kink(clamp), _ns_kink(maximum), _ns_softplus],
    ("sheet03_vae_gans.md", "check_frechet_gaussians"): [_frechet_product_eigenvalues],
}


@pytest.mark.parametrize("sheet, check", sorted(RIGHT), ids=lambda v: str(v))
def test_check_accepts_other_correct_answers(sheet, check, capsys):
    ns = _checks(sheet)
    for right in RIGHT[sheet, check]:
        args = right if isinstance(right, tuple) else (right,)
        names = ", ".join(a.__name__ for a in args)
        assert report(check, ns[check], *args) == PASSED, f"{check} rejects {names}: {capsys.readouterr().out}"
    capsys.readouterr()


def test_every_coding_exercise_has_wrong_answers():
    # The sheets only: the mock exams are pen and paper, their checks are in tests/test_exams.py.
    checks = {(sheet.name, name) for sheet in twins.sources()
              if sheet.parts[0] == "exercises" and sheet.name.startswith("sheet")
              for name in _checks(sheet.name) if name.startswith("check_")}
    assert checks == set(WRONG), f"coding exercises without wrong answers here: {sorted(checks - set(WRONG))}"


@pytest.mark.parametrize("sheet, check", sorted(WRONG), ids=lambda v: str(v))
def test_check_rejects_wrong_answers(sheet, check, capsys):
    ns = _checks(sheet)
    for wrong in WRONG[sheet, check]:
        args = wrong if isinstance(wrong, tuple) else (wrong,)  # a check of several functions
        names = ", ".join(a.__name__ for a in args)
        assert report(check, ns[check], *args) == FAILED, f"{check} accepts {names}"
    capsys.readouterr()


@pytest.mark.parametrize("sheet", sorted({sheet for sheet, _ in WRONG}))
def test_reference_solutions_pass(sheet, capsys):
    """The checks are not too strict: with the sheet's own solutions every report says PASSED."""
    nb = jupytext.read(twins.ROOT / "exercises" / sheet)
    ns: dict = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and "stub" not in cell.metadata.get("tags", []):
            exec(compile(cell.source, f"{sheet}:cell", "exec"), ns)
    reports = [line for line in capsys.readouterr().out.splitlines() if line.split(":")[0] in
               ("PASSED", "NOT YET", "FAILED")]
    checks = [name for name in ns if name.startswith("check_")]
    assert len(reports) == len(checks) and all(line.startswith("PASSED: ") for line in reports), reports
