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
    """A normalizing flow: layers f_1..f_K applied to x in order, standard normal base p_Z.

    log_prob(x) = log p_Z(f(x)) + sum_k log|det df_k/dx_{k-1}|; sample(n) runs the layers'
    inverses, last to first, on z ~ N(0, I).
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
    """Compare a layer's log|det| with autograd's Jacobian and inverse(forward(x)) with x.

    Returns the largest absolute errors (log-det, inversion, log-det of the inverse); raises
    AssertionError when one exceeds atol. Use a small dimension: the Jacobian costs D passes.
    Defined in book/01_flows.md, section "The code conventions".
    """
    z, log_det = layer(x)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], xi) for xi in x])
    err_det = (torch.linalg.slogdet(jac)[1] - log_det).abs().max().item()
    x_back, log_det_inv = layer.inverse(z)
    err_inv = (x_back - x).abs().max().item()
    err_det_inv = (log_det_inv + log_det).abs().max().item()
    assert max(err_det, err_inv, err_det_inv) < atol, (err_det, err_inv, err_det_inv)
    return err_det, err_inv, err_det_inv


class Planar(nn.Module):
    """Planar flow g(z) = z + u_hat tanh(w^T z + b) (generative direction), invertible by construction.

    forward(x) solves g(z) = x by bisection on the scalar eta = w^T z; inverse(z) is the closed form.
    Defined in book/01_flows.md, section "Planar and radial flows".
    """

    def __init__(self, dim: int, u=None, w=None, b: float = 0.0):
        super().__init__()
        self.u = nn.Parameter(torch.randn(dim) * 0.1 if u is None else torch.as_tensor(u, dtype=torch.float32))
        self.w = nn.Parameter(torch.randn(dim) * 0.1 if w is None else torch.as_tensor(w, dtype=torch.float32))
        self.b = nn.Parameter(torch.tensor(float(b)))

    def u_hat(self):
        wu = self.w @ self.u
        m = -1 + 1e-4 + F.softplus(wu)  # m(w^T u) > -1, with a margin that survives float32 rounding
        return self.u + (m - wu) * self.w / (self.w @ self.w)

    def inverse(self, z):  # z -> x = g(z), log|det dg/dz|
        u, a = self.u_hat(), z @ self.w + self.b
        x = z + u * torch.tanh(a)[:, None]
        return x, torch.log((1 + (1 - torch.tanh(a) ** 2) * (self.w @ u)).abs())

    def forward(self, x, iters: int = 60):  # x -> z = g^{-1}(x), log|det dg^{-1}/dx|
        u = self.u_hat()
        wu, target = self.w @ u, x @ self.w
        lo, hi = target - wu.abs() - 1e-3, target + wu.abs() + 1e-3  # eta lies in between
        lo, hi = lo.detach(), hi.detach()
        for _ in range(iters):
            mid = (lo + hi) / 2
            too_big = mid + wu * torch.tanh(mid + self.b) > target
            lo, hi = torch.where(too_big, lo, mid), torch.where(too_big, mid, hi)
        # one Newton step from the (detached) root makes eta differentiable in x, u, w, b
        eta = ((lo + hi) / 2).detach()
        slope = 1 + wu * (1 - torch.tanh(eta + self.b) ** 2)
        eta = eta - (eta + wu * torch.tanh(eta + self.b) - target) / slope
        a = eta + self.b
        z = x - u * torch.tanh(a)[:, None]
        return z, -torch.log((1 + (1 - torch.tanh(a) ** 2) * wu).abs())


def mlp(n_in: int, n_out: int, hidden: int, depth: int = 2) -> nn.Sequential:
    """A ReLU network n_in -> hidden (x depth) -> n_out whose last layer starts at zero.

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
    """RealNVP coupling z_B = x_B * exp(s(x_A)) + t(x_A), z_A = x_A; NICE when affine=False (s = 0).

    mask: 1 for the coordinates A that condition, 0 for the coordinates B that are transformed.
    Defined in book/01_flows.md, section "Coupling flows".
    """

    def __init__(self, mask, hidden: int = 64, affine: bool = True):
        super().__init__()
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.float32))
        dim = len(self.mask)
        self.affine = affine
        self.net = mlp(dim, 2 * dim if affine else dim, hidden)
        self.scale = nn.Parameter(torch.ones(dim))  # s = scale * tanh(.) keeps exp(s) tame early on

    def _s_t(self, x_a):
        out = self.net(x_a)
        if not self.affine:
            return torch.zeros_like(out), out * (1 - self.mask)
        s, t = out.chunk(2, dim=1)
        return self.scale * torch.tanh(s) * (1 - self.mask), t * (1 - self.mask)

    def forward(self, x):
        s, t = self._s_t(x * self.mask)
        return x * torch.exp(s) + t, s.sum(1)

    def inverse(self, z):
        s, t = self._s_t(z * self.mask)
        return (z - t) * torch.exp(-s), -s.sum(1)


class ActNorm(nn.Module):
    """Elementwise affine z = x * exp(a) + c, initialized from the first training batch to zero mean, unit variance.

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
    """n alternating masks: odd/even coordinates, then first/second half, each followed by its complement.

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
    """RealNVP: n_layers of ActNorm followed by an affine coupling with alternating masks.

    Defined in book/01_flows.md, section "Coupling flows".
    """

    def __init__(self, dim: int, n_layers: int = 8, hidden: int = 64, affine: bool = True):
        layers = []
        for mask in coupling_masks(dim, n_layers):
            layers += [ActNorm(dim), AffineCoupling(mask, hidden, affine)]
        super().__init__(layers, dim)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask of shape (out, in).

    Defined in book/01_flows.md, section "Autoregressive flows".
    """

    def __init__(self, n_in: int, n_out: int, mask):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.float32))

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder: outputs n_out values per input coordinate, output i sees only inputs < i.

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
            layers += [MaskedLinear(len(a), len(b), b[:, None] >= a[None, :]), nn.ReLU()]
        d_out = d_in.repeat(n_out)
        last = MaskedLinear(len(degrees[-1]), n_out * dim, d_out[:, None] > degrees[-1][None, :])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, x):
        return self.net(x).view(len(x), self.n_out, self.dim)


class MAF(nn.Module):
    """Masked autoregressive flow layer: z_i = (x_i - mu_i(x_<i)) exp(-alpha_i(x_<i)). Density in one pass.

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
    """Inverse autoregressive flow layer: x_i = z_i exp(alpha_i(z_<i)) + mu_i(z_<i). Sampling in one pass.

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
    """Elementwise monotone rational-quadratic spline on [-bound, bound], identity outside.

    widths, heights: (..., J) positive, each summing to 2 * bound; slopes: (..., J + 1) positive.
    Returns y and log|dy/dx| (for inverse=True: x from y, and log|dx/dy|), both shaped like x.
    Defined in book/01_flows.md, section "Spline flows".
    """
    inside = (x > -bound) & (x < bound)
    xk = F.pad(torch.cumsum(widths, -1), (1, 0)) - bound  # knots, (..., J + 1)
    yk = F.pad(torch.cumsum(heights, -1), (1, 0)) - bound
    knots = yk if inverse else xk
    k = torch.searchsorted(knots[..., 1:-1].contiguous(), x.clamp(-bound, bound)[..., None]).clamp(max=widths.shape[-1] - 1)
    pick = lambda t: t.gather(-1, k)[..., 0]  # noqa: E731 - the value of bin k
    x0, y0, w, h = pick(xk), pick(yk), pick(widths), pick(heights)
    d0, d1 = pick(slopes[..., :-1]), pick(slopes[..., 1:])
    s = h / w
    if inverse:
        dy = x - y0
        a = h * (s - d0) + dy * (d1 + d0 - 2 * s)
        b = h * d0 - dy * (d1 + d0 - 2 * s)
        c = -s * dy
        xi = (2 * c / (-b - torch.sqrt((b * b - 4 * a * c).clamp(min=0)))).clamp(0, 1)
        out = x0 + xi * w
    else:
        xi = ((x - x0) / w).clamp(0, 1)
        out = y0 + h * (s * xi**2 + d0 * xi * (1 - xi)) / (s + (d1 + d0 - 2 * s) * xi * (1 - xi))
    denom = s + (d1 + d0 - 2 * s) * xi * (1 - xi)
    log_slope = 2 * torch.log(s) + torch.log(d1 * xi**2 + 2 * s * xi * (1 - xi) + d0 * (1 - xi) ** 2) - 2 * torch.log(denom)
    log_slope = -log_slope if inverse else log_slope
    return torch.where(inside, out, x), torch.where(inside, log_slope, torch.zeros_like(x))


class SplineCoupling(nn.Module):
    """Coupling layer whose transform of each coordinate in B is a rational-quadratic spline with J bins.

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
        widths = (min_bin + (1 - min_bin * self.bins) * F.softmax(rw, -1)) * 2 * self.bound
        heights = (min_bin + (1 - min_bin * self.bins) * F.softmax(rh, -1)) * 2 * self.bound
        inner = 1e-3 + F.softplus(rd + math.log(math.e - 1))  # about 1 when rd = 0: the layer starts near the identity
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
    """Neural spline flow: n_layers of ActNorm followed by a rational-quadratic spline coupling.

    Defined in book/01_flows.md, section "Spline flows".
    """

    def __init__(self, dim: int, n_layers: int = 4, hidden: int = 64, bins: int = 8, bound: float = 4.0):
        layers = []
        for mask in coupling_masks(dim, n_layers):
            layers += [ActNorm(dim), SplineCoupling(mask, hidden, bins, bound)]
        super().__init__(layers, dim)


class Logit(nn.Module):
    """w = logit(lam + (1 - 2 lam) y): maps the unit cube, where dequantized data live, onto R^D.

    Defined in book/01_flows.md, section "Discrete data: dequantization and bits per dimension".
    """

    def __init__(self, lam: float = 0.05):
        super().__init__()
        self.lam = lam

    def forward(self, y):
        v = self.lam + (1 - 2 * self.lam) * y
        w = torch.log(v) - torch.log1p(-v)
        return w, (math.log(1 - 2 * self.lam) - torch.log(v) - torch.log1p(-v)).sum(1)

    def inverse(self, w):
        v = torch.sigmoid(w)
        y = (v - self.lam) / (1 - 2 * self.lam)
        return y, -(math.log(1 - 2 * self.lam) - torch.log(v) - torch.log1p(-v)).sum(1)


def dequantized_nll(model, x):
    """The loss: -log p_Y(y) per image on a fresh dequantization y of the integer batch x.

    While training, each image is also shifted by up to one pixel: 1000 images are few.
    Defined in book/01_flows.md, section "Discrete data: dequantization and bits per dimension".
    """
    if model.training:
        x = data.shift_digits(x)
    return -model.log_prob(data.dequantize(x)).mean()


@torch.no_grad()
def dequantization_bound(model, x, draws: int = 20):
    """Upper bound on the discrete NLL (nats per image) of integer images x, once per noise draw.

    Returns a tensor of shape (draws,): the mean over images of -log p_Y(y) + D log 17 for the
    dequantizations y drawn with seeds 0..draws-1; its mean estimates the bound (eq. dequant-bound).
    Defined in book/01_flows.md, section "Discrete data: dequantization and bits per dimension".
    """
    return torch.stack([
        data.discrete_nll_bound(model.log_prob(data.dequantize(x, generator=torch.Generator().manual_seed(s))), x.shape[1]).mean()
        for s in range(draws)
    ])
