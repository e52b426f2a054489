"""Flow matching: continuous normalizing flows (exact and Hutchinson divergences, ODE solvers, log-densities), Gaussian probability paths, conditional flow matching with independent, optimal-transport or fixed couplings, the digits bound.

Generated from book/07_flow_matching.md by tools/export.py: do not edit. Change the chapter's cells
marked #@save and run `make notebooks`.
"""

import math

import torch
from torch import nn

from dgm import data
from dgm.diffusion import DigitsDenoiser, time_embedding, with_label


def _as_time(t, x: torch.Tensor) -> torch.Tensor:
    """t as a tensor of shape (n,) for the n rows of x (t: a number or a tensor)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(len(x)) if t.dim() == 0 else t


def _with_grad(x: torch.Tensor, create_graph: bool) -> torch.Tensor:
    return (x if create_graph and x.requires_grad else x.detach()).requires_grad_(True)


def divergence(v, x: torch.Tensor, t, create_graph: bool = False):
    """v(x, t) and its exact divergence sum_i dv_i/dx_i: a backward pass per dimension.

    v maps x (n, D) and t (n,) to velocities (n, D); returns them and the divergence
    (n,).
    create_graph=True keeps both differentiable (maximum-likelihood training).
    Defined in book/07_flow_matching.md, section "Continuous normalizing flows".
    """
    with torch.enable_grad():
        x = _with_grad(x, create_graph)
        out = v(x, _as_time(t, x))
        div = sum(torch.autograd.grad(out[:, i].sum(), x, create_graph=create_graph,
                                      retain_graph=True)[0][:, i]
                  for i in range(x.shape[1]))
    return (out, div) if create_graph else (out.detach(), div.detach())


def hutchinson_divergence(v, x: torch.Tensor, t, probe: str = "rademacher",
                          create_graph: bool = False, generator=None):
    """v(x, t) and Hutchinson's estimate xi^T (dv/dx) xi of its divergence.

    One probe xi per row, E[xi xi^T] = I ("rademacher": entries +-1, "gaussian":
    N(0, 1)), so the estimate is unbiased; it costs one vector-Jacobian product.
    Defined in book/07_flow_matching.md, section "Continuous normalizing flows".
    """
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    xi = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    if probe == "rademacher":
        xi = torch.where(xi < 0, -1.0, 1.0).to(x.dtype)
    with torch.enable_grad():
        x = _with_grad(x, create_graph)
        out = v(x, _as_time(t, x))
        (vjp,) = torch.autograd.grad(out, x, xi, create_graph=create_graph)
    est = (vjp * xi).sum(1)
    return (out, est) if create_graph else (out.detach(), est.detach())


#: function evaluations per step of each solver
SOLVERS = {"euler": 1, "heun": 2, "rk4": 4}


def ode_step(f, x: torch.Tensor, t: float, h: float,
             method: str = "heun") -> torch.Tensor:
    """One step of size h (negative: backwards) of dx/dt = f(x, t) from x at time t.

    Defined in book/07_flow_matching.md, section "Solving the ODE".
    """
    if method == "euler":
        return x + h * f(x, t)
    if method == "heun":
        k1 = f(x, t)
        k2 = f(x + h * k1, t + h)
        return x + h / 2 * (k1 + k2)
    if method == "rk4":
        k1 = f(x, t)
        k2 = f(x + h / 2 * k1, t + h / 2)
        k3 = f(x + h / 2 * k2, t + h / 2)
        k4 = f(x + h * k3, t + h)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    raise ValueError(f"method must be one of {', '.join(SOLVERS)}, got {method!r}")


def ode_solve(f, x: torch.Tensor, t_start: float, t_end: float, steps: int,
              method: str = "heun", return_path: bool = False):
    """Solve dx/dt = f(x, t) from x at t_start to t_end in `steps` equal steps.

    Returns x at t_end, or with return_path=True the states at all steps + 1 times,
    shape (steps + 1, *x.shape).
    Defined in book/07_flow_matching.md, section "Solving the ODE".
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    h = (t_end - t_start) / steps
    path = [x]
    for i in range(steps):
        x = ode_step(f, x, t_start + i * h, h, method)
        if return_path:
            path.append(x)
    return torch.stack(path) if return_path else x


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I) per row of x (n, D).

    Defined in book/07_flow_matching.md, section "Solving the ODE".
    """
    return -0.5 * (x**2).sum(1) - x.shape[1] / 2 * math.log(2 * math.pi)


def cnf_log_prob(v, x: torch.Tensor, steps: int = 20, method: str = "rk4",
                 estimator: str = "exact", generator=None) -> torch.Tensor:
    """log p_0(x) of the flow dx/dt = v(x, t) with p_1 = N(0, I), by eq-fm-icov.

    The state (x_t, l_t) solves dx/dt = v, dl/dt = div v from (x, 0) at t = 0 to t = 1,
    and log p_0(x) = log N(x_1; 0, I) + l_1. estimator: "exact" (D backward passes per
    evaluation) or "hutchinson" (one, a fresh Rademacher probe per evaluation:
    unbiased for the solver's value).
    Defined in book/07_flow_matching.md, section "Solving the ODE".
    """
    if estimator not in ("exact", "hutchinson"):
        raise ValueError("estimator must be 'exact' or 'hutchinson', "
                         f"got {estimator!r}")
    d = x.shape[1]

    def f(state, t):
        if estimator == "exact":
            vel, div = divergence(v, state[:, :d], t)
        else:
            vel, div = hutchinson_divergence(v, state[:, :d], t, generator=generator)
        return torch.cat([vel, div[:, None]], 1)

    zero = torch.zeros(len(x), 1, dtype=x.dtype, device=x.device)
    start = torch.cat([x.detach(), zero], 1)
    state = ode_solve(f, start, 0.0, 1.0, steps, method)
    return standard_normal_log_prob(state[:, :d]) + state[:, d]


def toy_net(hidden: int = 128, depth: int = 3, emb: int = 32,
            num_classes: int = 0) -> nn.Module:
    """The diffusion chapter's network, MLP branch: (x (n, 2), features) -> (n, 2).

    Defined in book/07_flow_matching.md, section "Training by maximum likelihood is expensive".
    """
    return DigitsDenoiser(emb * (2 if num_classes else 1), 2, channels=0, hidden=hidden,
                          depth=depth, dropout=0.0, dim=2)


class GaussianPath:
    """The conditional path x_t = a(t) x_0 + sigma(t) x_1: x_0 data, x_1 ~ N(0, I).

    a, sigma and their derivatives da, dsigma are functions of a tensor t, with
    a(0) = 1, sigma(0) = 0 (data) and a(1) = 0, sigma(1) = 1 (noise; the VP path stops
    at a small a(1)). The conditional velocity is da x_0 + dsigma x_1
    (eq-fm-gaussian-path).
    Defined in book/07_flow_matching.md, section "Gaussian paths".
    """

    def __init__(self, a, sigma, da, dsigma, name: str = "custom"):
        self.a, self.sigma, self.da, self.dsigma, self.name = a, sigma, da, dsigma, name

    @classmethod
    def linear(cls):
        """a = 1 - t, sigma = t: straight lines at constant speed, u = x_1 - x_0."""
        return cls(lambda t: 1 - t, lambda t: t, lambda t: -torch.ones_like(t),
                   lambda t: torch.ones_like(t), "linear")

    @classmethod
    def vp(cls, beta_min: float = 0.1, beta_max: float = 20.0):
        """The diffusion chapter's VP SDE: a = sqrt(alpha_bar), sigma = sqrt(1 - a^2).

        alpha_bar(t) = exp(-int_0^t beta), beta linear from beta_min to beta_max.
        """
        def beta(t):
            return beta_min + t * (beta_max - beta_min)

        def log_alpha_bar(t):
            return -(beta_min * t + (beta_max - beta_min) * t**2 / 2)

        def a(t):
            return (log_alpha_bar(t) / 2).exp()

        def sigma(t):
            return (-torch.expm1(log_alpha_bar(t))).sqrt()

        return cls(a, sigma, lambda t: -beta(t) / 2 * a(t),
                   lambda t: beta(t) * a(t) ** 2 / (2 * sigma(t)), "vp")

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor):
        """x_t and the conditional velocity u_t(x_t | x_0, x_1), both (n, D); t (n,)."""
        t = t[:, None]
        return (self.a(t) * x0 + self.sigma(t) * x1,
                self.da(t) * x0 + self.dsigma(t) * x1)


def mixture_velocity(x: torch.Tensor, t, path: GaussianPath, centers: torch.Tensor,
                     kappa: float) -> torch.Tensor:
    """The exact marginal velocity u_t(x) (eq-fm-gaussian-velocity) for mixture data.

    The data: an equal mixture of N(mu_k, kappa^2 I), centers mu_k of shape (K, D).
    Given component k, x_t ~ N(a mu_k, (a^2 kappa^2 + sigma^2) I), and E[x_0 | x_t, k]
    and E[x_1 | x_t, k] are linear in x_t; they are weighted by the posterior of k.
    Defined in book/07_flow_matching.md, section "Gaussian paths".
    """
    t = _as_time(t, x)[:, None]
    a, sig, da, dsig = path.a(t), path.sigma(t), path.da(t), path.dsigma(t)
    var = a**2 * kappa**2 + sig**2                           # (n, 1)
    diff = x[:, None, :] - a[:, :, None] * centers           # (n, K, D)
    w = torch.softmax(-(diff**2).sum(-1) / (2 * var), 1)[:, :, None]
    x0_k = centers + (a * kappa**2 / var)[:, :, None] * diff  # E[x_0 | x_t, k]
    x1_k = (sig / var)[:, :, None] * diff                      # E[x_1 | x_t, k]
    return (w * (da[:, :, None] * x0_k + dsig[:, :, None] * x1_k)).sum(1)


class FlowMatching(nn.Module):
    """A velocity field v_theta(x, t, y) trained by conditional flow matching.

    net(x, cond) -> (n, dim) is the network; cond holds sinusoidal features of t (and of
    a label y, replaced by a null label with probability p_uncond in training).
    coupling: "independent" (x_1 ~ N(0, I) drawn afresh), "ot" (the batch's x_1 paired
    with its x_0 by minibatch optimal transport, ot_pairing) or "pairs" (loss receives
    rows [x_0, x_1] of a fixed coupling, for reflow). Sampling solves dx/dt = v from
    t = 1 to t = 0; log_prob is the exact log-density of that ODE (up to the solver's
    error).
    Defined in book/07_flow_matching.md, section "Training on 2D data".
    """

    def __init__(self, net: nn.Module, dim: int, path: GaussianPath | None = None,
                 coupling: str = "independent", num_classes: int = 0,
                 p_uncond: float = 0.0, emb: int = 32):
        super().__init__()
        if coupling not in ("independent", "ot", "pairs"):
            raise ValueError("coupling must be 'independent', 'ot' or 'pairs', "
                             f"got {coupling!r}")
        self.net, self.dim, self.path = net, dim, path or GaussianPath.linear()
        self.coupling, self.num_classes = coupling, num_classes
        self.p_uncond, self.emb = p_uncond, emb
        # index num_classes: "no label"
        self.label = nn.Embedding(num_classes + 1, emb) if num_classes else None

    def condition(self, t: torch.Tensor, y=None) -> torch.Tensor:
        """Features (n, emb or 2 emb) of the times t in [0, 1] (n,) and labels y."""
        h = time_embedding(2 * t, self.emb)     # frequencies 0.1 to 100 per unit of t
        return with_label(h, self.label, y, self.p_uncond, self.training)

    def velocity(self, x: torch.Tensor, t, y=None, w: float = 0.0) -> torch.Tensor:
        """v_theta(x, t, y); with guidance weight w, (1 + w) v(x, t, y) - w v(x, t)."""
        t = _as_time(t, x)
        v = self.net(x, self.condition(t, y))
        if w == 0 or y is None:
            return v
        return (1 + w) * v - w * self.net(x, self.condition(t, None))

    def loss(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """||v_theta(x_t, t) - u_t(x_t | x_0, x_1)||^2 per example, with t ~ U(0, 1)."""
        if self.coupling == "pairs":
            if x.ndim != 2 or x.shape[1] != 2 * self.dim:
                raise ValueError(f"coupling='pairs' needs rows [x_0, x_1] of width "
                                 f"{2 * self.dim}, got {data.describe(x)}")
            x0, x1 = x[:, :self.dim], x[:, self.dim:]
        else:
            x0 = data.check_points(x, self.dim)
            x1 = torch.randn_like(x0)
            if self.coupling == "ot":
                x1 = ot_pairing(x0, x1)
        t = torch.rand(len(x0), device=x0.device)
        xt, target = self.path.sample(x0, x1, t)
        return ((self.velocity(xt, t, y) - target) ** 2).sum(1)

    @torch.no_grad()
    def sample_from(self, x1: torch.Tensor, steps: int = 50, method: str = "heun",
                    y=None, w: float = 0.0, return_path: bool = False):
        """Solve the ODE from x_1 at t = 1 to t = 0 (all states with return_path)."""
        return ode_solve(lambda x, t: self.velocity(x, t, y, w), x1, 1.0, 0.0, steps,
                         method, return_path)

    def sample(self, n: int, steps: int = 50, method: str = "heun", y=None,
               w: float = 0.0, return_path: bool = False):
        """n samples: x_1 ~ N(0, I) carried to t = 0 by `steps` steps of the solver."""
        p = next(self.parameters(), None)  # the model's device (the CPU without any)
        x1 = torch.randn(n, self.dim, device=p.device if p is not None else "cpu")
        return self.sample_from(x1, steps, method, y, w, return_path)

    def log_prob(self, x: torch.Tensor, steps: int = 20, method: str = "rk4",
                 estimator: str = "exact", generator=None) -> torch.Tensor:
        """log p_0(x) of the model's ODE without a label (cnf_log_prob)."""
        return cnf_log_prob(lambda z, t: self.velocity(z, t), x, steps, method,
                            estimator, generator)


def ot_pairing(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """x1 reordered to minimize sum_i ||x0_i - x1_i||^2: an exact assignment.

    Defined in book/07_flow_matching.md, section "Couplings and straight paths".
    """
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(x0.detach().double(), x1.detach().double()) ** 2
    _, cols = linear_sum_assignment(cost.cpu().numpy())
    return x1[torch.as_tensor(cols, device=x1.device)]


def straightness(model: FlowMatching, x1: torch.Tensor, steps: int = 100) -> float:
    """E int_0^1 ||v(x_t, t) - (x_1 - x_0)||^2 dt along the model's own trajectories.

    Zero exactly when every trajectory is a straight line at constant speed (Liu et
    al.); x_0 is the endpoint of `steps` Heun steps from x_1, the integral a Riemann
    sum.
    Defined in book/07_flow_matching.md, section "Couplings and straight paths".
    """
    path = model.sample_from(x1, steps=steps, method="heun", return_path=True)
    chord = path[0] - path[-1]                                 # x_1 - x_0
    ts = torch.linspace(1, 0, steps + 1, device=x1.device)
    with torch.no_grad():
        dev = [((model.velocity(p, t) - chord) ** 2).sum(1).mean()
               for p, t in zip(path, ts)]
    return torch.stack(dev).mean().item()


def digits_to_unit(x: torch.Tensor, generator=None,
                   levels: int = data.DIGITS_LEVELS) -> torch.Tensor:
    """Dequantized digits on [-1, 1): x_tilde = 2 (x + u) / 17 - 1, u ~ U[0, 1)^64.

    (levels=256, D = 784 for MNIST: 2 (x + u) / 256 - 1.)
    Defined in book/07_flow_matching.md, section "Flow matching on the digits".
    """
    x_tilde = 2 * data.dequantize(x, levels, generator=generator) - 1
    for _ in range(4):   # float32 rounding must not move x_tilde into the bin below x's
        low = unit_to_digits(x_tilde, levels) < x
        if not low.any():
            break
        x_tilde = torch.where(low, torch.nextafter(x_tilde, torch.ones_like(x_tilde)),
                              x_tilde)
    return x_tilde


def unit_to_digits(x_tilde: torch.Tensor,
                   levels: int = data.DIGITS_LEVELS) -> torch.Tensor:
    """The levels 0..levels-1 (torch.long) whose bins hold x_tilde (clamped).

    Defined in book/07_flow_matching.md, section "Flow matching on the digits".
    """
    return ((x_tilde + 1) / 2 * levels).floor().clamp(0, levels - 1).long()


def digits_nll_bound(model: FlowMatching, x: torch.Tensor, steps: int = 20,
                     method: str = "rk4", generator=None, probe_generator=None,
                     levels: int = data.DIGITS_LEVELS) -> torch.Tensor:
    """One draw of the bound eq-fm-digits-bound on -log P(x), in nats per image (n,).

    Dequantize (one draw per image, from generator), scale to [-1, 1) (the Jacobian
    2^D, D = 64), and evaluate the ODE's log-density with Hutchinson's estimator
    (probes from probe_generator, default generator): unbiased for the solver's value
    of the bound. Average over draws and report their Monte Carlo error. The images'
    dimension D is the model's (784 for MNIST, with levels=256).
    Defined in book/07_flow_matching.md, section "Flow matching on the digits".
    """
    D = model.dim
    x = data.check_levels(x, levels, dim=D)
    x_tilde = digits_to_unit(x, generator, levels)
    log_p = model.log_prob(x_tilde, steps, method, "hutchinson",
                           probe_generator or generator)
    return data.discrete_nll_bound(log_p + D * math.log(2), D, levels)
