"""Data of the book: 2D toy densities with exact log-densities, and the 8x8 digits.

Everything here is embedded (no download). Conventions (see the book's preface):

* a toy sample is a float tensor of shape ``(n, 2)``;
* log-densities are natural logarithms (nats);
* the digits are a ``torch.long`` tensor of shape ``(n, 64)`` with levels ``0..16``,
  split in order into 1000 train / 350 validation / 447 test images.

Every toy has an exact density. Three kinds cover them all:

* **Gaussian mixtures** (``8gaussians``, ``grid``): a finite sum of isotropic Gaussians;
* **noisy curves** (``ring``, ``moons``, ``spirals``): a point ``c(t)`` on a curve, with
  ``t`` uniform, plus isotropic Gaussian noise, so ``p(x) = E_t N(x; c(t), sigma^2 I)``,
  a one-dimensional integral that :func:`toy_log_prob` evaluates by Gauss-Legendre
  quadrature, 4 nodes on each panel of at most ``0.75 sigma`` of arc length (the tests check
  it against panels a third as long: the log-densities agree to 1e-6 nats where the toy has mass);
* the **checkerboard**: uniform on 8 of the 16 squares of side 2 tiling ``[-4, 4]^2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

__all__ = [
    "TOYS",
    "toy",
    "toy_log_prob",
    "toy_entropy",
    "toy_components",
    "check_points",
    "check_levels",
    "describe",
    "digits",
    "DIGITS_SPLITS",
    "DIGITS_LEVELS",
    "shift_digits",
    "dequantize",
    "discrete_nll_bound",
    "bits_per_dim",
]


# --------------------------------------------------------------------------- toys
@dataclass(frozen=True)
class _Mixture:
    """Equal-weight mixture of isotropic Gaussians N(mu_k, sigma^2 I)."""

    centers: tuple[tuple[float, float], ...]
    sigma: float


@dataclass(frozen=True)
class _Curve:
    """x = c(t) + sigma * eps with t ~ U(t0, t1) on each of its branches (equal weight)."""

    branches: tuple[Callable[[torch.Tensor], torch.Tensor], ...]
    t0: float
    t1: float
    sigma: float


@dataclass(frozen=True)
class _Checkerboard:
    """Uniform on the 8 dark squares of a 4x4 board of squares of side 2 over [-4, 4]^2."""

    side: float = 2.0


def _circle(radius: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: radius * torch.stack([torch.cos(t), torch.sin(t)], dim=-1)


def _moon(upper: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    # The two interleaving half circles of radius 1, centred and scaled by 2.
    def c(t: torch.Tensor) -> torch.Tensor:
        if upper:
            u = torch.stack([torch.cos(t), torch.sin(t)], dim=-1)
        else:
            u = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=-1)
        shift = torch.tensor([0.5, 0.25], dtype=u.dtype)
        return 2.0 * (u - shift)

    return c


def _spiral(sign: float) -> Callable[[torch.Tensor], torch.Tensor]:
    # Archimedean spiral r = t / pi (so r grows to 3 after 1.5 turns); second arm rotated by pi.
    def c(t: torch.Tensor) -> torch.Tensor:
        r = t / math.pi
        return sign * r.unsqueeze(-1) * torch.stack([torch.cos(t), torch.sin(t)], dim=-1)

    return c


_EIGHT = tuple(
    (2.0 * math.cos(2 * math.pi * k / 8), 2.0 * math.sin(2 * math.pi * k / 8)) for k in range(8)
)
_GRID = tuple((float(a), float(b)) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4))

_TOYS: dict[str, object] = {
    "8gaussians": _Mixture(_EIGHT, sigma=0.2),
    "grid": _Mixture(_GRID, sigma=0.2),
    "ring": _Curve((_circle(2.0),), 0.0, 2 * math.pi, sigma=0.1),
    "moons": _Curve((_moon(True), _moon(False)), 0.0, math.pi, sigma=0.15),
    "spirals": _Curve((_spiral(1.0), _spiral(-1.0)), 0.5 * math.pi, 3.0 * math.pi, sigma=0.15),
    "checkerboard": _Checkerboard(),
}

#: Names accepted by :func:`toy`, :func:`toy_log_prob` and :func:`toy_entropy`.
TOYS: tuple[str, ...] = tuple(_TOYS)

# Box that holds all but a negligible part of every toy's mass (used for quadrature).
_BOX = 6.0


def _spec(name: str):
    if not isinstance(name, str) or name not in _TOYS:
        raise ValueError(f"unknown toy {name!r}; valid names are: {', '.join(TOYS)}")
    return _TOYS[name]


def _check_count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int (the number of samples), got {n!r}")
    return n


def check_points(x, dim: int = 2, what: str = "x") -> torch.Tensor:
    """x itself if it is a float tensor of shape (n, dim); otherwise a ValueError (TypeError) that says what was expected."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (n, {dim}), got {type(x).__name__}")
    if not x.is_floating_point() or x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(
            f"expected {what} as a float tensor of shape (n, {dim}), "
            f"got {x.dtype} of shape {tuple(x.shape)}"
        )
    return x


def toy(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """Draw ``n`` points from the named 2D toy density.

    Returns a ``torch.float32`` tensor of shape ``(n, 2)``. The same ``seed`` gives the same
    points on every machine (a private ``torch.Generator`` is used; global RNG untouched).

    >>> toy("8gaussians", 3).shape
    torch.Size([3, 2])
    """
    spec = _spec(name)
    n = _check_count(n)
    g = torch.Generator().manual_seed(int(seed))
    if isinstance(spec, _Mixture):
        centers = torch.tensor(spec.centers, dtype=torch.float64)
        k = torch.randint(len(centers), (n,), generator=g)
        x = centers[k] + spec.sigma * torch.randn(n, 2, generator=g, dtype=torch.float64)
    elif isinstance(spec, _Curve):
        branch = torch.randint(len(spec.branches), (n,), generator=g)
        t = spec.t0 + (spec.t1 - spec.t0) * torch.rand(n, generator=g, dtype=torch.float64)
        x = torch.empty(n, 2, dtype=torch.float64)
        for b, c in enumerate(spec.branches):
            x[branch == b] = c(t[branch == b])
        x = x + spec.sigma * torch.randn(n, 2, generator=g, dtype=torch.float64)
    else:  # checkerboard: a uniform column, then a row of the right colour in it
        s = spec.side
        col = torch.randint(4, (n,), generator=g)
        row = 2 * torch.randint(2, (n,), generator=g) + (col % 2)
        u = torch.rand(n, 2, generator=g, dtype=torch.float64)
        lo = torch.stack([col, row], dim=1) * s - 2 * s  # lower-left corner of the square
        x = lo + u * s
        # rounding to float32 must not push a point onto the square's upper edge (zero density there)
        return torch.minimum(x.float(), torch.nextafter((lo + s).float(), lo.float()))
    return x.float()


def _nodes(spec: _Curve, panel: float = 0.75) -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature nodes c(t_j) and log-weights for E_t N(x; c(t), sigma^2 I) over all branches.

    [t0, t1] is cut into equal panels, so many that no panel spans more than ``panel * sigma``
    of arc length on any branch (the curve's largest speed |c'(t)| sets the count); each
    panel gets the 4 Gauss-Legendre nodes. The weights sum to 1 (each branch 1 / branches).
    """
    fine = torch.linspace(spec.t0, spec.t1, 20001, dtype=torch.float64)
    dt = (spec.t1 - spec.t0) / 20000
    speed = max(float((c(fine).diff(dim=0).norm(dim=1) / dt).max()) for c in spec.branches)
    m = int(math.ceil(speed * (spec.t1 - spec.t0) / (panel * spec.sigma)))
    gl_t, gl_w = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(4))  # on [-1, 1]
    h = (spec.t1 - spec.t0) / m
    mids = spec.t0 + h * (torch.arange(m, dtype=torch.float64) + 0.5)
    t = (mids[:, None] + 0.5 * h * gl_t[None, :]).reshape(-1)
    w = (gl_w / 2).repeat(m) / m  # sums to 1 over one branch
    points = torch.cat([c(t) for c in spec.branches])
    log_w = (w.log() - math.log(len(spec.branches))).repeat(len(spec.branches))
    return points, log_w


@lru_cache(maxsize=None)
def _cached_nodes(name: str, panel: float = 0.75) -> tuple[torch.Tensor, torch.Tensor]:
    return _nodes(_TOYS[name], panel)


def _log_prob64(name: str, x: torch.Tensor, panel: float = 0.75) -> torch.Tensor:
    spec = _spec(name)
    if isinstance(spec, _Checkerboard):
        s = spec.side
        inside = (x.abs() < 2 * s).all(dim=1)
        cell = torch.floor((x + 2 * s) / s).long()
        dark = (cell.sum(dim=1) % 2) == 0  # toy() puts column c at rows 2j + c % 2
        out = torch.full((len(x),), -math.inf, dtype=torch.float64)
        out[inside & dark] = -math.log(8 * s * s)
        return out
    if isinstance(spec, _Mixture):
        mu = torch.tensor(spec.centers, dtype=torch.float64)
        log_w = torch.full((len(mu),), -math.log(len(mu)), dtype=torch.float64)
    else:
        mu, log_w = _cached_nodes(name, panel)
    var = spec.sigma**2
    out = torch.empty(len(x), dtype=torch.float64)
    for i in range(0, len(x), 2048):  # chunks keep memory flat for curve toys
        d2 = torch.cdist(x[i : i + 2048], mu).square()
        out[i : i + 2048] = torch.logsumexp(log_w - 0.5 * d2 / var, dim=1)
    return out - math.log(2 * math.pi * var)


def toy_log_prob(name: str, x: torch.Tensor) -> torch.Tensor:
    """Exact log-density (nats) of the named toy at the points ``x`` of shape ``(n, 2)``.

    Returns a tensor of shape ``(n,)`` in the dtype of ``x``; ``-inf`` where the density is 0
    (outside the checkerboard's dark squares).
    """
    _spec(name)
    x = check_points(x)
    return _log_prob64(name, x.detach().to(torch.float64)).to(x.dtype)


@lru_cache(maxsize=None)
def toy_entropy(name: str) -> float:
    """Differential entropy ``H = -E log p(x)`` of the named toy, in nats.

    The best possible expected negative log-likelihood of any model of this toy: a fitted
    model's held-out NLL minus this number is its KL divergence from the truth (up to
    sampling error). Exact for the checkerboard (``log 32``); for the smooth toys a Riemann
    sum on a grid of spacing 0.05 over ``[-6, 6]^2`` (half the smallest noise scale sigma = 0.1:
    for such smooth integrands the sum's error is of order exp(-2 pi^2 sigma^2 / h^2), far
    below float precision).
    """
    spec = _spec(name)
    if isinstance(spec, _Checkerboard):
        return math.log(8 * spec.side**2)
    h = 0.05
    ticks = torch.arange(-_BOX + h / 2, _BOX, h, dtype=torch.float64)
    xx, yy = torch.meshgrid(ticks, ticks, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    logp = _log_prob64(name, grid)
    p = logp.exp()
    return float(-(p * logp).sum() * h * h)


def toy_components(name: str) -> tuple[torch.Tensor, float]:
    """Centers ``(K, 2)`` and common standard deviation of a Gaussian-mixture toy.

    Only the mixtures ``8gaussians`` and ``grid`` have components; other names raise ValueError.
    """
    spec = _spec(name)
    if not isinstance(spec, _Mixture):
        mixtures = [k for k, v in _TOYS.items() if isinstance(v, _Mixture)]
        raise ValueError(f"toy {name!r} is not a Gaussian mixture; mixtures are: {', '.join(mixtures)}")
    return torch.tensor(spec.centers, dtype=torch.float32), spec.sigma


# ------------------------------------------------------------------------- digits
#: Number of images in each split of the digits, taken in order from scikit-learn's load_digits.
DIGITS_SPLITS: dict[str, tuple[int, int]] = {"train": (0, 1000), "val": (1000, 1350), "test": (1350, 1797)}
#: Intensity levels of a digits pixel: 0, 1, ..., 16.
DIGITS_LEVELS: int = 17


@lru_cache(maxsize=1)
def _load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.as_tensor(d.data).long(), torch.as_tensor(d.target).long()


def digits(split: str, labels: bool = False):
    """The 8x8 digits of one split as a ``torch.long`` tensor of shape ``(n, 64)``, levels 0..16.

    ``split`` is ``"train"`` (1000 images), ``"val"`` (350) or ``"test"`` (447), taken in this
    order from scikit-learn's ``load_digits`` (1797 images, shipped with the package, no download).
    With ``labels=True`` returns ``(x, y)`` with the digit classes ``y`` of shape ``(n,)``.
    """
    if split not in DIGITS_SPLITS:
        raise ValueError(f"unknown digits split {split!r}; valid splits are: {', '.join(DIGITS_SPLITS)}")
    x, y = _load_digits()
    a, b = DIGITS_SPLITS[split]
    return (x[a:b].clone(), y[a:b].clone()) if labels else x[a:b].clone()


def describe(x) -> str:
    """What an argument is, for error messages: 'torch.int64 of shape (3, 64)' or its type's name."""
    return f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def shift_digits(x: torch.Tensor, max_shift: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each 8x8 digit by a random whole number of pixels in -max_shift..max_shift, both ways.

    Data augmentation for the small digits training split: x is (n, 64) (any dtype); pixels that
    move in from outside the image are 0 (background). Returns a new tensor like x.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 64:
        raise ValueError(f"expected digits as a tensor of shape (n, 64), got {describe(x)}")
    n, m = len(x), max_shift
    padded = torch.nn.functional.pad(x.reshape(n, 8, 8), (m, m, m, m))
    dy, dx = torch.randint(-m, m + 1, (2, n), generator=generator)
    rows = torch.arange(8)[None, :] + m - dy[:, None]  # (n, 8)
    cols = torch.arange(8)[None, :] + m - dx[:, None]
    out = padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.reshape(n, 64)


def check_levels(x, levels: int = DIGITS_LEVELS, dim: int | None = None) -> torch.Tensor:
    """x itself if it holds integer levels 0..levels-1 as a torch.long tensor of shape (n, D) (D = dim if given); else a ValueError saying what was expected."""
    if (not isinstance(x, torch.Tensor) or x.dtype != torch.long or x.ndim != 2
            or (dim is not None and x.shape[1] != dim)):
        raise ValueError(f"expected integer levels as a torch.long tensor of shape (n, {dim or 'D'}), "
                         f"got {describe(x)}")
    if len(x) and (int(x.min()) < 0 or int(x.max()) >= levels):
        raise ValueError(f"levels must lie in 0..{levels - 1}, got values in {int(x.min())}..{int(x.max())}")
    return x


def dequantize(x: torch.Tensor, levels: int = DIGITS_LEVELS, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization: ``y = (x + u) / levels`` with ``u ~ U[0, 1)^D``.

    Maps integer levels ``x`` (``torch.long``, shape ``(n, D)``) to continuous ``y`` in
    ``[0, 1)^D``. A density ``p(y)`` on this cube gives a valid bound on the discrete data
    (see :func:`discrete_nll_bound`).
    """
    x = check_levels(x, levels)
    u = torch.rand(x.shape, generator=generator)
    y = (x.float() + u) / levels
    # float32 rounding of x + u (u just below 1) must not carry y into the next bin
    top = ((x + 1).float() / levels)
    return torch.minimum(y, torch.nextafter(top, torch.zeros_like(top)))


def discrete_nll_bound(log_p_y: torch.Tensor, dim: int, levels: int = DIGITS_LEVELS) -> torch.Tensor:
    """Upper bound on the discrete NLL (nats) from ``log p(y)`` at dequantized ``y`` (:func:`dequantize`).

    With ``v = x + u`` and ``y = v / levels``, ``log P(x) >= E_u[log p_V(x + u)]`` (Jensen) and
    ``log p_V(v) = log p_Y(v / levels) - dim * log(levels)``, so
    ``-log P(x) <= -E_u[log p_Y(y)] + dim * log(levels)``. Average the result over ``u`` draws.
    """
    return -log_p_y + dim * math.log(levels)


def bits_per_dim(nats: torch.Tensor | float, dim: int) -> torch.Tensor | float:
    """Convert a negative log-likelihood in nats per example into bits per dimension."""
    return nats / (dim * math.log(2))
