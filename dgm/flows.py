"""Normalizing flows: layers with forward/inverse and log-determinants, and flow models.

Generated from book/01_flows.md by tools/export.py: do not edit. Change the chapter's cells
marked #@save and run `make notebooks`.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from dgm import data


class Flow(nn.Module):
    """A normalizing flow: layers f_1..f_K applied to x in order, standard normal base.

    log_prob(x) = log p_Z(f(x)) + sum_k log|det df_k/dx^[k-1]|; sample(n) runs the
    layers' inverses, last to first, on z ~ N(0, I).
    Defined in book/01_flows.md, section "The code conventions".
    """

    def __init__(self, layers, dim: int):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.dim = dim

    def forward(self, x):
        log_det = x.new_zeros(len(x))
        for layer in self.layers:
            x, ld = layer(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z):
        log_det = z.new_zeros(len(z))
        for layer in reversed(self.layers):
            z, ld = layer.inverse(z)
            log_det = log_det + ld
        return z, log_det

    def log_prob(self, x):
        """Exact log-density in nats, shape (n,), of x with shape (n, dim)."""
        z, log_det = self(data.check_points(x, self.dim))
        log_pz = -0.5 * (z**2).sum(1) - 0.5 * self.dim * math.log(2 * math.pi)
        return log_pz + log_det

    @torch.no_grad()
    def sample(self, n: int):
        """n samples, shape (n, dim), by x = f^{-1}(z) with z ~ N(0, I)."""
        p = next(self.parameters(), None)
        z = torch.randn(n, self.dim, device=p.device if p is not None else "cpu")
        return self.inverse(z)[0]


def check_layer(layer, x, atol: float = 1e-4):
    """Compare a layer's log|det| with autograd's Jacobian, inverse(forward(x)) with x.

    Returns the largest absolute errors (log-det, inversion, log-det of the inverse);
    raises AssertionError when one exceeds atol. Use a small dimension: the Jacobian
    costs D passes.
    Defined in book/01_flows.md, section "The code conventions".
    """
    z, log_det = layer(x)
    one = lambda v: layer(v[None])[0][0]  # noqa: E731 - the layer on a single point
    jac = torch.stack([torch.autograd.functional.jacobian(one, xi) for xi in x])
    err_det = (torch.linalg.slogdet(jac)[1] - log_det).abs().max().item()
    x_back, log_det_inv = layer.inverse(z)
    err_inv = (x_back - x).abs().max().item()
    err_det_inv = (log_det_inv + log_det).abs().max().item()
    assert max(err_det, err_inv, err_det_inv) < atol, (err_det, err_inv, err_det_inv)
    return err_det, err_inv, err_det_inv


class Planar(nn.Module):
    """Planar flow g(z) = z + u_hat tanh(w^T z + b), invertible by construction.

    forward(x) solves g(z) = x by bisection on the scalar eta = w^T z; inverse(z) is the
    closed form.
    Defined in book/01_flows.md, section "Planar and radial flows".
    """

    def __init__(self, dim: int, u=None, w=None, b: float = 0.0):
        super().__init__()
        def start(v):  # a small random vector, or the given one
            if v is None:
                return torch.randn(dim) * 0.1
            return torch.as_tensor(v, dtype=torch.float32)

        self.u, self.w = nn.Parameter(start(u)), nn.Parameter(start(w))
        self.b = nn.Parameter(torch.tensor(float(b)))

    def u_hat(self):
        wu = self.w @ self.u
        # m(w^T u) > -1, with a margin that survives float32 rounding
        m = -1 + 1e-4 + F.softplus(wu)
        return self.u + (m - wu) * self.w / (self.w @ self.w)

    def inverse(self, z):  # z -> x = g(z), log|det dg/dz|
        u, a = self.u_hat(), z @ self.w + self.b
        x = z + u * torch.tanh(a)[:, None]
        return x, torch.log((1 + (1 - torch.tanh(a) ** 2) * (self.w @ u)).abs())

    def forward(self, x, iters: int = 60):  # x -> z = g^{-1}(x), log|det dg^{-1}/dx|
        u = self.u_hat()
        wu, target = self.w @ u, x @ self.w
        # eta lies in between
        lo, hi = target - wu.abs() - 1e-3, target + wu.abs() + 1e-3
        lo, hi = lo.detach(), hi.detach()
        for _ in range(iters):
            mid = (lo + hi) / 2
            too_big = mid + wu * torch.tanh(mid + self.b) > target
            lo, hi = torch.where(too_big, lo, mid), torch.where(too_big, mid, hi)
        # a Newton step from the detached root makes eta differentiable in x, u, w, b
        eta = ((lo + hi) / 2).detach()
        slope = 1 + wu * (1 - torch.tanh(eta + self.b) ** 2)
        eta = eta - (eta + wu * torch.tanh(eta + self.b) - target) / slope
        a = eta + self.b
        z = x - u * torch.tanh(a)[:, None]
        return z, -torch.log((1 + (1 - torch.tanh(a) ** 2) * wu).abs())


def mlp(n_in: int, n_out: int, hidden: int, depth: int = 2) -> nn.Sequential:
    """A ReLU network n_in -> hidden (x depth) -> n_out; the last layer starts at 0.

    Defined in book/01_flows.md, section "Coupling flows".
    """
    sizes = [n_in] + [hidden] * depth
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    last = nn.Linear(sizes[-1], n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class AffineCoupling(nn.Module):
    """Affine coupling z_B = x_B * exp(s(x_A)) + t(x_A), z_A = x_A (NICE: affine=False).

    mask: 1 for the coordinates A that condition, 0 for the coordinates B that are
    transformed. s = scale * tanh(s_raw) from the network's raw output; NICE has s = 0.
    Defined in book/01_flows.md, section "Coupling flows".
    """

    def __init__(self, mask, hidden: int = 64, affine: bool = True):
        super().__init__()
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.float32))
        dim = len(self.mask)
        self.affine = affine
        self.net = mlp(dim, 2 * dim if affine else dim, hidden)
        self.scale = nn.Parameter(torch.ones(dim))  # keeps exp(s) tame early on

    def _s_t(self, x_a):
        out = self.net(x_a)
        if not self.affine:
            return torch.zeros_like(out), out * (1 - self.mask)
        s_raw, t = out.chunk(2, dim=1)
        s = self.scale * torch.tanh(s_raw)
        return s * (1 - self.mask), t * (1 - self.mask)

    def forward(self, x):
        s, t = self._s_t(x * self.mask)
        return x * torch.exp(s) + t, s.sum(1)

    def inverse(self, z):
        s, t = self._s_t(z * self.mask)
        return (z - t) * torch.exp(-s), -s.sum(1)


class ActNorm(nn.Module):
    """Elementwise affine z = x * exp(a) + c.

    a and c are set from the first training batch to give zero mean, unit variance.
    Defined in book/01_flows.md, section "Coupling flows".
    """

    def __init__(self, dim: int):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(dim))
        self.c = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x):
        if self.training and not self.initialized:
            with torch.no_grad():
                self.a.copy_(-torch.log(x.std(0) + 1e-6))
                self.c.copy_(-x.mean(0) * torch.exp(self.a))
                self.initialized.fill_(True)
        return x * torch.exp(self.a) + self.c, self.a.sum().expand(len(x))

    def inverse(self, z):
        return (z - self.c) * torch.exp(-self.a), -self.a.sum().expand(len(z))


def coupling_masks(dim: int, n: int) -> list[torch.Tensor]:
    """n alternating masks: even/odd coordinates, then first/second half.

    Each mask is followed by its complement.
    Defined in book/01_flows.md, section "Coupling flows".
    """
    i = torch.arange(dim)
    patterns = [(i % 2 == 0), (i < dim // 2)]
    masks = []
    for k in range(n):
        m = patterns[(k // 2) % 2]
        masks.append((m if k % 2 == 0 else ~m).float())
    return masks


class RealNVP(Flow):
    """RealNVP: n_layers of ActNorm, each followed by an affine coupling.

    Defined in book/01_flows.md, section "Coupling flows".
    """

    def __init__(self, dim: int, n_layers: int = 8, hidden: int = 64,
                 affine: bool = True):
        layers = []
        for mask in coupling_masks(dim, n_layers):
            layers += [ActNorm(dim), AffineCoupling(mask, hidden, affine)]
        super().__init__(layers, dim)


class Permutation(nn.Module):
    """z = x[:, perm]: reorders the coordinates; |det| = 1, so log|det| = 0.

    Defined in book/01_flows.md, section "Mixing coordinates: permutations and invertible linear layers".
    """

    def __init__(self, perm):
        super().__init__()
        self.register_buffer("perm", torch.as_tensor(perm, dtype=torch.long))
        self.register_buffer("inv_perm", torch.argsort(self.perm))

    def forward(self, x):
        return x[:, self.perm], x.new_zeros(len(x))

    def inverse(self, z):
        return z[:, self.inv_perm], z.new_zeros(len(z))


class LULinear(nn.Module):
    """Invertible linear layer z = W x with W = P L (U + diag(s)) (Glow's LU form).

    P is a fixed permutation, L unit lower triangular, U strictly upper triangular; then
    log|det W| = sum_i log|s_i| in O(D), and the inverse is two triangular solves.
    W starts as a random rotation (Glow), or as the identity with init="identity".
    Defined in book/01_flows.md, section "Mixing coordinates: permutations and invertible linear layers".
    """

    def __init__(self, dim: int, seed: int = 0, init: str = "rotation"):
        super().__init__()
        if init not in ("rotation", "identity"):
            raise ValueError(f"init must be 'rotation' or 'identity', got {init!r}")
        g = torch.Generator().manual_seed(seed)
        q = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]  # a random rotation
        P, L, U = torch.linalg.lu(q if init == "rotation" else torch.eye(dim))
        s = torch.diagonal(U)
        self.register_buffer("P", P)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower", torch.tril(torch.ones(dim, dim), -1))
        self.L_entries = nn.Parameter(L * self.lower)
        self.U_entries = nn.Parameter(torch.triu(U, 1))
        self.log_abs_s = nn.Parameter(torch.log(s.abs()))

    def weight(self):
        eye = torch.eye(len(self.P), device=self.P.device, dtype=self.P.dtype)
        L = self.L_entries * self.lower + eye
        U = self.U_entries * self.lower.T
        s = self.sign_s * torch.exp(self.log_abs_s)
        return self.P, L, U + torch.diag(s)

    def forward(self, x):  # z = W x for each row x
        P, L, U_s = self.weight()
        z = x @ (P @ L @ U_s).T
        return z, self.log_abs_s.sum().expand(len(x))

    def inverse(self, z):  # solve P L (U + diag s) x = z: two triangular solves
        P, L, U_s = self.weight()
        y = torch.linalg.solve_triangular(L, (z @ P).T, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(U_s, y, upper=True).T
        return x, -self.log_abs_s.sum().expand(len(z))


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is masked by a fixed 0/1 mask shape (out, in).

    Defined in book/01_flows.md, section "Autoregressive flows".
    """

    def __init__(self, n_in: int, n_out: int, mask):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.float32))

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder: n_out values per input coordinate; output i sees inputs < i.

    forward(x) has shape (n, n_out, dim); degrees follow the coordinate order 1..dim.
    Defined in book/01_flows.md, section "Autoregressive flows".
    """

    def __init__(self, dim: int, hidden: int = 64, n_out: int = 2, depth: int = 2):
        super().__init__()
        self.dim, self.n_out = dim, n_out
        d_in = torch.arange(1, dim + 1)
        d_hidden = torch.arange(hidden) % max(dim - 1, 1) + 1
        degrees = [d_in] + [d_hidden] * depth
        layers = []
        for a, b in zip(degrees[:-1], degrees[1:]):
            mask = b[:, None] >= a[None, :]  # hidden degree d sees degrees <= d
            layers += [MaskedLinear(len(a), len(b), mask), nn.ReLU()]
        d_out = d_in.repeat(n_out)
        mask = d_out[:, None] > degrees[-1][None, :]  # output i sees degrees < i
        last = MaskedLinear(len(degrees[-1]), n_out * dim, mask)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, x):
        return self.net(x).view(len(x), self.n_out, self.dim)


class MAF(nn.Module):
    """Masked autoregressive flow layer: z_i = (x_i - mu_i(x_<i)) exp(-alpha_i(x_<i)).

    The density takes one pass, sampling (inverse) D passes.
    Defined in book/01_flows.md, section "Autoregressive flows".
    """

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.made = MADE(dim, hidden, n_out=2)

    def forward(self, x):
        mu, alpha = self.made(x).unbind(1)
        return (x - mu) * torch.exp(-alpha), -alpha.sum(1)

    def inverse(self, z):  # D sequential passes: x_i needs x_<i
        x = torch.zeros_like(z)
        for i in range(z.shape[1]):
            mu, alpha = self.made(x).unbind(1)
            x = x.clone()
            x[:, i] = z[:, i] * torch.exp(alpha[:, i]) + mu[:, i]
        return x, alpha.sum(1)


class IAF(nn.Module):
    """Inverse autoregressive flow layer: x_i = z_i exp(alpha_i(z_<i)) + mu_i(z_<i).

    Sampling (inverse) takes one pass, the density of a given x D passes.
    Defined in book/01_flows.md, section "Autoregressive flows".
    """

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.made = MADE(dim, hidden, n_out=2)

    def inverse(self, z):
        mu, alpha = self.made(z).unbind(1)
        return z * torch.exp(alpha) + mu, alpha.sum(1)

    def forward(self, x):  # D sequential passes: z_i needs z_<i
        z = torch.zeros_like(x)
        for i in range(x.shape[1]):
            mu, alpha = self.made(z).unbind(1)
            z = z.clone()
            z[:, i] = (x[:, i] - mu[:, i]) * torch.exp(-alpha[:, i])
        return z, -alpha.sum(1)


def rq_spline(x, widths, heights, slopes, bound: float, inverse: bool = False):
    """Monotone rational-quadratic spline on [-M, M], M = bound; identity outside.

    widths, heights: (..., J) positive, each summing to 2 M (the bin widths Delta xi_k
    and heights Delta eta_k); slopes: (..., J + 1) positive knot derivatives delta_k.
    Returns y and log|dy/dx| (inverse=True: x from y, and log|dx/dy|), shaped like x.
    Defined in book/01_flows.md, section "Spline flows".
    """
    M = bound
    inside = (x > -M) & (x < M)
    xi = F.pad(torch.cumsum(widths, -1), (1, 0)) - M  # knots xi_k, eta_k: (..., J + 1)
    eta = F.pad(torch.cumsum(heights, -1), (1, 0)) - M
    knots = eta if inverse else xi
    k = torch.searchsorted(knots[..., 1:-1].contiguous(), x.clamp(-M, M)[..., None])
    k = k.clamp(max=widths.shape[-1] - 1)
    pick = lambda t: t.gather(-1, k)[..., 0]  # noqa: E731 - the value of bin k
    xi_k, eta_k, d_xi, d_eta = pick(xi), pick(eta), pick(widths), pick(heights)
    delta_k, delta_k1 = pick(slopes[..., :-1]), pick(slopes[..., 1:])
    rho = d_eta / d_xi  # bin slope rho_k
    kappa = delta_k1 + delta_k - 2 * rho
    if inverse:  # solve q2 omega^2 + q1 omega + q0 = 0 (eq. rqs-inverse)
        dy = x - eta_k
        q2 = d_eta * (rho - delta_k) + dy * kappa
        q1 = d_eta * delta_k - dy * kappa
        q0 = -rho * dy
        root = torch.sqrt((q1 * q1 - 4 * q2 * q0).clamp(min=0))
        omega = (2 * q0 / (-q1 - root)).clamp(0, 1)
        out = xi_k + omega * d_xi
    else:
        omega = ((x - xi_k) / d_xi).clamp(0, 1)
        w1 = omega * (1 - omega)
        out = eta_k + d_eta * (rho * omega**2 + delta_k * w1) / (rho + kappa * w1)
    w1 = omega * (1 - omega)
    numer = delta_k1 * omega**2 + 2 * rho * w1 + delta_k * (1 - omega) ** 2
    log_slope = 2 * torch.log(rho) + torch.log(numer) - 2 * torch.log(rho + kappa * w1)
    log_slope = -log_slope if inverse else log_slope
    log_slope = torch.where(inside, log_slope, torch.zeros_like(x))
    return torch.where(inside, out, x), log_slope

class SplineCoupling(nn.Module):
    """Coupling layer: each coordinate in B goes through a rational-quadratic spline.

    The spline has `bins` = J bins on [-M, M], M = bound; the network sees x_A only.
    Defined in book/01_flows.md, section "Spline flows".
    """

    def __init__(self, mask, hidden: int = 64, bins: int = 8, bound: float = 4.0):
        super().__init__()
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.float32))
        self.dim, self.bins, self.bound = len(self.mask), bins, bound
        self.net = mlp(self.dim, self.dim * (3 * bins - 1), hidden)

    def _params(self, x_a):
        raw = self.net(x_a).view(len(x_a), self.dim, 3 * self.bins - 1)
        rw, rh, rd = raw.split([self.bins, self.bins, self.bins - 1], dim=-1)
        min_bin = 1e-3
        share = lambda r: min_bin + (1 - min_bin * self.bins) * F.softmax(r, -1)  # noqa
        widths, heights = share(rw) * 2 * self.bound, share(rh) * 2 * self.bound
        # about 1 when rd = 0: the layer starts near the identity
        inner = 1e-3 + F.softplus(rd + math.log(math.e - 1))
        ones = torch.ones_like(inner[..., :1])
        return widths, heights, torch.cat([ones, inner, ones], -1)

    def _transform(self, v, inverse):
        y, log_slope = rq_spline(v, *self._params(v * self.mask), self.bound, inverse)
        keep = self.mask.bool()
        return torch.where(keep, v, y), (log_slope * (1 - self.mask)).sum(1)

    def forward(self, x):
        return self._transform(x, inverse=False)

    def inverse(self, z):
        return self._transform(z, inverse=True)


class NeuralSpline(Flow):
    """Neural spline flow: n_layers of ActNorm, each followed by a spline coupling.

    Defined in book/01_flows.md, section "Spline flows".
    """

    def __init__(self, dim: int, n_layers: int = 4, hidden: int = 64, bins: int = 8,
                 bound: float = 4.0):
        layers = []
        for mask in coupling_masks(dim, n_layers):
            layers += [ActNorm(dim), SplineCoupling(mask, hidden, bins, bound)]
        super().__init__(layers, dim)


@torch.no_grad()
def toy_kl(model, name: str, x):
    """KL(p_data || p_model) in nats for the 2D toy `name`, estimated on its samples x.

    x: fresh samples of the toy, shape (n, 2). Returns (estimate, standard error): the
    mean of log p_data(x) - log p_model(x) over the rows (eq. kl-mc) and its Monte Carlo
    standard error.
    Defined in book/01_flows.md, section "Fitting 2D densities by maximum likelihood".
    """
    x = data.check_points(x, 2)
    gap = data.toy_log_prob(name, x) - model.log_prob(x)
    return gap.mean().item(), (gap.std() / math.sqrt(len(gap))).item()


class Logit(nn.Module):
    """v = logit(lam + (1 - 2 lam) y): maps the unit cube of dequantized data to R^D.

    lam is the lambda of the text; forward returns v and log|dv/dy| summed over the
    coordinates.
    Defined in book/01_flows.md, section "Discrete data: dequantization and bits per dimension".
    """

    def __init__(self, lam: float = 0.05):
        super().__init__()
        self.lam = lam

    def _log_abs_det(self, p):  # log|dv/dy| at p = lam + (1 - 2 lam) y
        return (math.log(1 - 2 * self.lam) - torch.log(p) - torch.log1p(-p)).sum(1)

    def forward(self, y):
        p = self.lam + (1 - 2 * self.lam) * y
        v = torch.log(p) - torch.log1p(-p)
        return v, self._log_abs_det(p)

    def inverse(self, v):
        p = torch.sigmoid(v)
        y = (p - self.lam) / (1 - 2 * self.lam)
        return y, -self._log_abs_det(p)


def dequantized_nll(model, x, levels: int = data.DIGITS_LEVELS,
                    shift: bool = True):
    """The loss: -log p_Y(y) per image on a fresh dequantization y of the integers x.

    x holds levels 0..levels-1 (17 on the digits, 256 on MNIST). While training (with
    shift=True), each image is also shifted by up to one pixel: 1000 images are few.
    Defined in book/01_flows.md, section "Discrete data: dequantization and bits per dimension".
    """
    if model.training and shift:
        x = data.shift_digits(x)
    return -model.log_prob(data.dequantize(x, levels)).mean()


@torch.no_grad()
def dequantization_bound(model, x, draws: int = 20, per_image: bool = False,
                         k: int = 1, levels: int = data.DIGITS_LEVELS):
    """Upper bound on the discrete NLL (nats per image) of integer images x, per draw.

    Returns a tensor of shape (draws,): the mean over images of
    -log (1/k) sum_j p_Y(y_j) + D log L for k dequantizations y_j per draw (L = levels,
    17 on the digits), draw s with seed s; k = 1 is the Jensen bound (eq.
    dequant-bound), k > 1 the importance-weighted bound (eq. dequant-iw), tighter as k
    grows. With per_image=True: shape (draws, n).
    Defined in book/01_flows.md, section "Discrete data: dequantization and bits per dimension".
    """
    if k < 1 or draws < 1:
        raise ValueError(f"k and draws must be >= 1, got k={k}, draws={draws}")
    per_draw = []
    for s in range(draws):
        g = torch.Generator().manual_seed(s)
        log_p = torch.stack([model.log_prob(data.dequantize(x, levels, generator=g))
                             for _ in range(k)])  # (k, n)
        log_mean_p = torch.logsumexp(log_p, 0) - math.log(k)
        per_draw.append(data.discrete_nll_bound(log_mean_p, x.shape[1], levels))
    bound = torch.stack(per_draw)
    return bound if per_image else bound.mean(1)


def rezende_energy(name: str, z):
    """U(z) of the 2D target p(z) = exp(-U(z)) / Z named "U1", "U2" or "U3", shape (n,).

    The energies of Rezende and Mohamed (2015, table 1); U2 and U3 get z_1^2 / 8 added,
    without which exp(-U) is periodic in z_1 and not integrable. Defined in the section
    "Flows as variational families" of the flows chapter (eq. rezende-energies).
    Defined in book/01_flows.md, section "Flows as variational families".
    """
    z = data.check_points(z, 2)
    z1, z2 = z[:, 0], z[:, 1]
    w1 = torch.sin(2 * math.pi * z1 / 4)
    if name == "U1":
        bumps = torch.logaddexp(-0.5 * ((z1 - 2) / 0.6) ** 2,
                                -0.5 * ((z1 + 2) / 0.6) ** 2)
        return 0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2 - bumps
    if name == "U2":
        return 0.5 * ((z2 - w1) / 0.4) ** 2 + z1**2 / 8
    if name == "U3":
        w2 = 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
        waves = torch.logaddexp(-0.5 * ((z2 - w1) / 0.35) ** 2,
                                -0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
        return -waves + z1**2 / 8
    raise ValueError(f"unknown energy {name!r}: expected 'U1', 'U2' or 'U3'")


def log_Z_quadrature(energy, lim: float = 8.0, n: int = 800) -> float:
    """log of the integral of exp(-U(z)) over [-lim, lim]^2 by the midpoint rule.

    Defined in book/01_flows.md, section "Flows as variational families".
    """
    edges = torch.linspace(-lim, lim, n + 1, dtype=torch.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    z1, z2 = torch.meshgrid(centres, centres, indexing="xy")
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], 1)
    return (torch.logsumexp(-energy(z), 0) + 2 * math.log(2 * lim / n)).item()


def reverse_kl_terms(flow, energy, n_samples: int):
    """Samples z = g(eps) of the flow q and log q(z) + U(z) for each, (S, D) and (S,).

    The mean of the second estimates KL(q || p) - log Z for p(z) = exp(-U(z)) / Z (eq.
    flow-reverse-kl). Only the generative direction g (the layers' inverse) runs.
    Defined in book/01_flows.md, section "Flows as variational families".
    """
    if not (isinstance(n_samples, int) and n_samples > 0):
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    p = next(flow.parameters(), None)
    eps = torch.randn(n_samples, flow.dim, device=p.device if p is not None else "cpu")
    z, log_det = flow.inverse(eps)  # z = g(eps) and log|det dg/deps|
    log_q0 = -0.5 * (eps**2).sum(1) - 0.5 * flow.dim * math.log(2 * math.pi)
    u = energy(z)
    if u.shape != (n_samples,):
        raise ValueError(f"energy(z) must have shape ({n_samples},), "
                         f"got {tuple(u.shape)}")
    return z, log_q0 - log_det + u


def fit_reverse_kl(flow, energy, steps: int = 1000, n_samples: int = 256,
                   lr: float = 1e-2, seed: int = 0) -> list[float]:
    """Fit the flow q to p = exp(-U) / Z by minimizing KL(q || p) - log Z with Adam.

    Each step draws n_samples fresh samples (reparameterized: the gradient flows through
    z = g(eps)); returns the loss of each step in nats.
    Defined in book/01_flows.md, section "Flows as variational families".
    """
    torch.manual_seed(seed)
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = reverse_kl_terms(flow, energy, n_samples)[1].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def vi_flow(family: str, K: int, dim: int = 2, hidden: int = 32) -> Flow:
    """K planar layers, or K IAF layers each followed by reversing the coordinates.

    Defined in book/01_flows.md, section "Flows as variational families".
    """
    if family == "planar":
        return Flow([Planar(dim) for _ in range(K)], dim)
    if family == "iaf":
        reverse = list(range(dim))[::-1]
        layers = [m for _ in range(K) for m in (IAF(dim, hidden), Permutation(reverse))]
        return Flow(layers, dim)
    raise ValueError(f"unknown family {family!r}: expected 'planar' or 'iaf'")


class ResidualBlock(nn.Module):
    """Residual flow layer z = x + g(x), Lip(g) <= c^2 < 1 (i-ResNet), direction x -> z.

    g = W_2 elu(W_1 x + b_1) + b_2, each W_l rescaled to spectral norm c (elu is
    1-Lipschitz). forward(x) returns z and an *estimate* of log|det(I + J_g(x))|: the
    power series cut after `terms` terms, each trace by Hutchinson's estimator with one
    Gaussian probe per example. inverse(z) iterates x <- z - g(x) (Banach fixed point).
    Section "Residual flows" of the flows chapter (eq. residual-series).
    Defined in book/01_flows.md, section "Residual flows".
    """

    def __init__(self, dim: int, hidden: int = 32, c: float = 0.9, terms: int = 8):
        super().__init__()
        if not 0 < c < 1:
            raise ValueError(f"c must lie in (0, 1) for an invertible block, got {c}")
        self.dim, self.c, self.terms = dim, c, terms
        self.linears = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, dim)])

    def g(self, x):
        for l, linear in enumerate(self.linears):
            W = self.c * linear.weight / torch.linalg.matrix_norm(linear.weight, ord=2)
            x = F.linear(x, W, linear.bias)
            x = F.elu(x) if l == 0 else x
        return x

    def log_abs_det(self, x, terms: int | None = None, v=None):
        """g(x) and sum over k <= terms of (-1)^(k+1) v^T J_g^k v / k, (n, D) and (n,).

        v: probes of shape (n, D), standard normal by default; term k takes k
        vector-Jacobian products v^T J_g^k and never forms J_g.
        """
        x = data.check_points(x, self.dim)
        terms = self.terms if terms is None else terms
        v = torch.randn_like(x) if v is None else v
        if v.shape != x.shape:
            raise ValueError(f"probes v must have the shape of x, {tuple(x.shape)}, "
                             f"got {tuple(v.shape)}")
        with torch.enable_grad():
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            gx = self.g(x)
            vJk, log_det = v, x.new_zeros(len(x))
            for k in range(1, terms + 1):
                vJk = torch.autograd.grad(gx, x, vJk, create_graph=True)[0]  # v^T J_g^k
                log_det = log_det + (-1) ** (k + 1) * (vJk * v).sum(1) / k
        return gx, log_det

    def forward(self, x):
        gx, log_det = self.log_abs_det(x)
        return x + gx, log_det

    def inverse(self, z, iters: int = 100):
        x = z
        with torch.no_grad():
            for _ in range(iters):
                x = z - self.g(x)  # the fixed-point iteration x <- T(x)
        return x, -self.log_abs_det(x)[1]
