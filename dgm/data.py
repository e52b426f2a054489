"""Data of the book: 2D toy densities with exact log-densities, the 8x8 digits, MNIST and Fashion-MNIST.

The toys and the digits are embedded (no download). Conventions (see the book's preface):

* a toy sample is a float tensor of shape ``(n, 2)``;
* log-densities are natural logarithms (nats);
* the digits are a ``torch.long`` tensor of shape ``(n, 64)`` with levels ``0..16``,
  split in order into 1000 train / 350 validation / 447 test images;
* MNIST and Fashion-MNIST (:func:`mnist`, :func:`fashion_mnist`) are ``torch.long`` tensors of
  shape ``(n, 784)`` (28x28 images, row by row) with levels ``0..255``: 50 000 train and 10 000
  validation images (the first and the last block of the training file, in order, as the digits'
  validation block follows their training block) and the 10 000 test images of the t10k file.

MNIST and Fashion-MNIST are not shipped: they are read from the standard gzipped IDX files
(``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz``) in ``<cache>/mnist/`` and ``<cache>/fashion_mnist/``, where the
cache folder is the ``root`` argument if given, else the environment variable ``DGM_DATA`` if
set, else ``~/.cache/dgm``. Each file is checked against its SHA-256 (:data:`MNIST_SHA256`).
Nothing downloads unless asked: ``download=True``, or once from a shell::

    python -m dgm.data download mnist fashion_mnist      # --root DIR for another cache folder

:func:`digits28` is the digits upscaled to MNIST's format (28x28, 256 levels): not MNIST, an
embedded stand-in of its shape, so that the 28x28 code paths run in tests without a download.

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

import argparse
import gzip
import hashlib
import http.client
import math
import os
import shutil
import sys
import urllib.request
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
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
    "digits28",
    "DIGITS_SPLITS",
    "DIGITS_LEVELS",
    "mnist",
    "fashion_mnist",
    "download_mnist",
    "data_home",
    "MNIST_DATASETS",
    "MNIST_SPLITS",
    "MNIST_LEVELS",
    "MNIST_SIDE",
    "MNIST_SHA256",
    "MNIST_MIRRORS",
    "MissingDataError",
    "DataFileError",
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


def digits28(split: str, labels: bool = False):
    """The digits of :func:`digits` upscaled to MNIST's format: ``torch.long`` ``(n, 784)``, levels 0..255.

    Each 8x8 image (levels scaled to [0, 1]) is resized to 28x28 by bilinear interpolation and
    rounded to the 256 levels. Not MNIST: a stand-in of the same shape and levels, embedded like
    the digits, so that every 28x28 code path (models, benchmarks' ``--data digits28``, tests)
    runs without a download. Same splits and labels as :func:`digits`.
    """
    x, y = digits(split, labels=True)
    img = x.reshape(-1, 1, 8, 8).float() / (DIGITS_LEVELS - 1)
    big = torch.nn.functional.interpolate(img, size=(MNIST_SIDE, MNIST_SIDE), mode="bilinear",
                                          align_corners=False)
    x28 = (big * (MNIST_LEVELS - 1)).round().clamp(0, MNIST_LEVELS - 1).long().reshape(len(x), -1)
    return (x28, y) if labels else x28


def describe(x) -> str:
    """What an argument is, for error messages: 'torch.int64 of shape (3, 64)' or its type's name."""
    return f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def shift_digits(x: torch.Tensor, max_shift: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each square image by a random whole number of pixels in -max_shift..max_shift, both ways.

    Data augmentation for the small digits training split: x is (n, side * side) (any dtype;
    (n, 64) for the 8x8 digits, (n, 784) for MNIST); pixels that move in from outside the image
    are 0 (background). Returns a new tensor like x.
    """
    side = math.isqrt(x.shape[1]) if isinstance(x, torch.Tensor) and x.ndim == 2 else 0
    if side < 2 or side * side != x.shape[1]:
        raise ValueError("expected square images flattened row by row, a tensor of shape (n, 64) "
                         f"for the digits or (n, 784) for MNIST, got {describe(x)}")
    n, m = len(x), max_shift
    padded = torch.nn.functional.pad(x.reshape(n, side, side), (m, m, m, m))
    dy, dx = torch.randint(-m, m + 1, (2, n), generator=generator).to(x.device)
    grid = torch.arange(side, device=x.device)[None, :] + m
    rows, cols = grid - dy[:, None], grid - dx[:, None]  # (n, side)
    out = padded[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.reshape(n, side * side)


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
    u = torch.rand(x.shape, generator=generator).to(x.device)  # drawn on the CPU: same numbers
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


# ------------------------------------------------------------- MNIST and Fashion-MNIST
#: The MNIST-format datasets that :func:`mnist`, :func:`fashion_mnist` and
#: ``python -m dgm.data download`` know; each lives in its own folder ``<cache>/<dataset>/``.
MNIST_DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist")
#: Images in each split: "train" is the first 50 000 images of the training file, "val" the
#: 10 000 after them (its last block, as the digits' validation block follows their training
#: block), "test" the 10 000 images of the t10k file.
MNIST_SPLITS: dict[str, int] = {"train": 50_000, "val": 10_000, "test": 10_000}
#: Intensity levels of an MNIST or Fashion-MNIST pixel: 0, 1, ..., 255.
MNIST_LEVELS: int = 256
#: Side of an MNIST or Fashion-MNIST image in pixels (28x28 = 784 values per image).
MNIST_SIDE: int = 28

# The gzipped IDX files of each part: (images, labels).
_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_MNIST_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}

#: SHA-256 of each gzipped file, copied from TensorFlow Datasets (github.com/tensorflow/datasets,
#: files tensorflow_datasets/url_checksums/mnist.txt and fashion_mnist.txt), which also give their
#: sizes in bytes: MNIST 9912422, 28881, 1648877 and 4542, Fashion-MNIST 26421880, 29515, 4422102
#: and 5148 (in the order below).
MNIST_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

#: Where :func:`download_mnist` fetches ``<url><file name>``, tried in order. MNIST: the CVDF
#: mirror that TensorFlow Datasets downloads (yann.lecun.com, the original home, often refuses
#: scripts), then the PyTorch mirror that torchvision uses. Fashion-MNIST: its authors' GitHub
#: repository, then their S3 site that TensorFlow Datasets downloads (plain http; the SHA-256
#: check is what makes any mirror safe).
MNIST_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ),
    "fashion_mnist": (
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
}


class MissingDataError(FileNotFoundError):
    """Files of a dataset are not in its cache folder (and were not, or could not be, downloaded).

    The message lists each missing file, the folder to put it in, its URLs and the command that
    downloads it.
    """


class DataFileError(ValueError):
    """A data file is not what it should be: a wrong SHA-256, a truncated or foreign file."""


def data_home(root: str | os.PathLike | None = None) -> Path:
    """The cache folder of downloaded data: ``root`` if given, else ``$DGM_DATA``, else ``~/.cache/dgm``.

    Each dataset has its own folder in it: ``data_home() / "mnist"``, ``data_home() / "fashion_mnist"``.
    An empty ``DGM_DATA`` counts as unset.
    """
    if root is not None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a folder (str or path), got {type(root).__name__}")
        return Path(root).expanduser()
    env = os.environ.get("DGM_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "dgm"


def _check_dataset(dataset) -> str:
    if dataset not in MNIST_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets are: {', '.join(MNIST_DATASETS)}")
    return dataset


def _download_command(dataset: str, root) -> str:
    command = f"python -m dgm.data download {dataset}"
    return command + (f" --root {root}" if root is not None else "")


def _how_to_get(dataset: str, folder: Path, names: list[str], root, offer_download: bool = True) -> str:
    """The part of an error message that says how to put the missing files ``names`` into ``folder``."""
    one = len(names) == 1
    lines = [("Download " if offer_download else "Try again later with a network: download ")
             + f"{'it' if one else 'them'} with\n    {_download_command(dataset, root)}\n"
             + ("(or call with download=True), " if offer_download else "")
             + f"or fetch {'it' if one else 'each file'} by hand from one of its URLs:"]
    for name in names:
        lines.append(f"    {name}")
        lines += [f"        {url}{name}" for url in MNIST_MIRRORS[dataset]]
    lines.append(f"and put {'it' if one else 'them'}, keeping the name, into the folder\n"
                 f"    {folder}{os.sep}\n"
                 f"(the cache folder is root if given, else $DGM_DATA if set, else ~/.cache/dgm; "
                 f"each file is checked against its SHA-256).")
    return "\n".join(lines)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, expected: str) -> None:
    got = _sha256(path)
    if got != expected:
        raise DataFileError(
            f"{path.name} in {path.parent} has the wrong SHA-256 "
            f"(a damaged, partial or different file):\n"
            f"    expected {expected}\n    got      {got} ({path.stat().st_size} bytes)\n"
            f"Delete it and download again: rm {path}")


def download_mnist(dataset: str = "mnist", root: str | os.PathLike | None = None) -> Path:
    """Download the files of ``dataset`` (``"mnist"``, ``"fashion_mnist"``) missing from its cache folder.

    The folder is ``data_home(root) / dataset`` (see :func:`data_home`). Each missing file is
    fetched with urllib from the mirrors of :data:`MNIST_MIRRORS` in turn, checked against
    :data:`MNIST_SHA256`, and only then moved into place, so an interrupted or wrong download
    never leaves a file there. Files already present are kept (and checked when read).
    Returns the folder; if some file cannot be fetched from any mirror, the others are still
    fetched, then a :class:`MissingDataError` lists what failed and the manual steps.
    ``python -m dgm.data download mnist`` calls this.
    """
    dataset = _check_dataset(dataset)
    folder = data_home(root) / dataset
    failed, failures = [], []
    for name, expected in MNIST_SHA256[dataset].items():
        target = folder / name
        if target.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        for base in MNIST_MIRRORS[dataset]:
            url = base + name
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as f:
                    shutil.copyfileobj(response, f)
                got = _sha256(partial)
                if got != expected:
                    raise DataFileError(f"wrong SHA-256 {got} (expected {expected})")
            except (OSError, http.client.HTTPException, ValueError) as e:
                failures.append(f"    {url}: {e}")
                partial.unlink(missing_ok=True)
                continue
            os.replace(partial, target)
            break
        else:
            failed.append(name)
    if failed:
        raise MissingDataError(
            f"could not download {', '.join(failed)} of {_MNIST_NAMES[dataset]} (no network?):\n"
            + "\n".join(failures) + "\n" + _how_to_get(dataset, folder, failed, root, offer_download=False))
    return folder


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of a gzipped IDX file with ``ndim`` dimensions (3 for images, 1 for labels).

    The IDX format (yann.lecun.com/exdb/mnist): a big-endian magic number ``0x000008nn`` (two
    zero bytes, the type 0x08 for unsigned bytes, the number of dimensions nn), then each
    dimension as a big-endian uint32, then the values. Magic, dimensions and length are checked.
    """
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError, zlib.error) as e:  # EOFError: cut short; BadGzipFile (OSError): not gzip
        raise DataFileError(f"{path} is not a complete gzip file ({e}); "
                            f"delete it and download again") from e
    kind = "images" if ndim == 3 else "labels"
    header = 4 + 4 * ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic is not None and magic != 0x800 + ndim:
        raise DataFileError(f"{path} is not an IDX file of {kind}: its magic number is 0x{magic:08x}, "
                            f"expected 0x{0x800 + ndim:08x} (unsigned bytes, {ndim} dimension"
                            f"{'s' * (ndim > 1)}); is it the right file?")
    if len(data) < header:
        raise DataFileError(f"{path} is truncated: {len(data)} bytes, shorter than the {header}-byte "
                            f"IDX header of a file of {kind}; delete it and download again")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (MNIST_SIDE, MNIST_SIDE):
        raise DataFileError(f"{path} holds images of {dims[1]}x{dims[2]} pixels, expected "
                            f"{MNIST_SIDE}x{MNIST_SIDE}")
    size = header + math.prod(dims)
    if len(data) != size:
        what = "truncated" if len(data) < size else "trailing data"
        raise DataFileError(f"{path} has {len(data)} bytes once unzipped, but its header "
                            f"({'x'.join(map(str, dims))}) needs {size}: {what}; "
                            f"delete it and download again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


@lru_cache(maxsize=8)
def _load_idx(path: str, stamp: tuple[int, int], sha256: str, ndim: int) -> torch.Tensor:
    # Cached on the file's (mtime, size) and expected checksum, so mnist("train") then
    # mnist("val") reads and verifies the training file once.
    _verify(Path(path), sha256)
    return torch.from_numpy(_read_idx(Path(path), ndim))


def _read_part(dataset: str, folder: Path, part: str, labels: bool):
    """Images ``(n, 28, 28)`` uint8 (and labels ``(n,)``) of the ``"train"`` or ``"t10k"`` files."""
    out = []
    for name, ndim in zip(_MNIST_FILES[part][: 2 if labels else 1], (3, 1)):
        path = folder / name
        st = path.stat()
        out.append(_load_idx(str(path), (st.st_mtime_ns, st.st_size), MNIST_SHA256[dataset][name], ndim))
    if labels and len(out[1]) != len(out[0]):
        raise DataFileError(f"{folder / _MNIST_FILES[part][1]} has {len(out[1])} labels but "
                            f"{_MNIST_FILES[part][0]} has {len(out[0])} images: they do not belong together")
    return out


def _mnist_format(dataset: str, split: str, root, download: bool, labels: bool):
    dataset = _check_dataset(dataset)
    if split not in MNIST_SPLITS:
        raise ValueError(f"unknown {_MNIST_NAMES[dataset]} split {split!r}; "
                         f"valid splits are: {', '.join(MNIST_SPLITS)}")
    folder = data_home(root) / dataset
    missing = [name for name in MNIST_SHA256[dataset] if not (folder / name).exists()]
    if missing and download:
        download_mnist(dataset, root)
    elif missing:
        raise MissingDataError(
            f"{_MNIST_NAMES[dataset]} is not downloaded: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing from {folder}\n"
            + _how_to_get(dataset, folder, missing, root))
    part = "t10k" if split == "test" else "train"
    expected = MNIST_SPLITS["test"] if part == "t10k" else MNIST_SPLITS["train"] + MNIST_SPLITS["val"]
    out = _read_part(dataset, folder, part, labels)
    if len(out[0]) != expected:
        raise DataFileError(f"{folder / _MNIST_FILES[part][0]} holds {len(out[0])} images, "
                            f"expected {expected} (see MNIST_SPLITS)")
    a = MNIST_SPLITS["train"] if split == "val" else 0
    b = a + MNIST_SPLITS[split]
    x = out[0][a:b].reshape(-1, MNIST_SIDE * MNIST_SIDE).long()
    return (x, out[1][a:b].long()) if labels else x


def mnist(split: str, root: str | os.PathLike | None = None, download: bool = False, labels: bool = False):
    """The MNIST handwritten digits of one split: ``torch.long`` of shape ``(n, 784)``, levels 0..255.

    ``split`` is ``"train"`` (50 000 images), ``"val"`` (10 000) or ``"test"`` (10 000): train and
    val are the first and the last block of the 60 000-image training file, in order (like
    :func:`digits`, the validation block follows the training block), test is the t10k file.
    Each row is a 28x28 image read row by row (``x.reshape(-1, 28, 28)`` gives the images back).
    With ``labels=True`` returns ``(x, y)`` with the digit classes ``y`` (0..9) of shape ``(n,)``.

    The four gzipped IDX files are read from ``<cache>/mnist/``, where ``<cache>`` is ``root`` if
    given, else ``$DGM_DATA`` if set, else ``~/.cache/dgm`` (:func:`data_home`), and checked
    against their SHA-256 (:data:`MNIST_SHA256`). If they are missing, ``download=True`` fetches
    them (:func:`download_mnist`, as does ``python -m dgm.data download mnist``); otherwise a
    :class:`MissingDataError` says which files to put where. Nothing is downloaded unless asked.
    """
    return _mnist_format("mnist", split, root, download, labels)


def fashion_mnist(split: str, root: str | os.PathLike | None = None, download: bool = False,
                  labels: bool = False):
    """Fashion-MNIST (Zalando's article images) of one split: ``torch.long`` ``(n, 784)``, levels 0..255.

    The same format, splits and conventions as :func:`mnist` (50 000 train / 10 000 val, the last
    block of the training file / 10 000 test), read from ``<cache>/fashion_mnist/`` (``root``,
    else ``$DGM_DATA``, else ``~/.cache/dgm``); the labels (``labels=True``) are the classes 0..9:
    T-shirt/top, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot.
    ``download=True`` or ``python -m dgm.data download fashion_mnist`` fetches the files.
    """
    return _mnist_format("fashion_mnist", split, root, download, labels)


def main(argv: list[str] | None = None) -> int:
    """``python -m dgm.data download mnist [fashion_mnist] [--root DIR]``: fetch them into the cache."""
    parser = argparse.ArgumentParser(prog="python -m dgm.data", description="Data of dgm-book.")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("download", help="download MNIST-format datasets into the cache folder",
                                description="Download the gzipped IDX files of each dataset into "
                                            "<cache>/<dataset>/ and check their SHA-256.")
    fetch.add_argument("datasets", nargs="+", choices=MNIST_DATASETS, metavar="dataset",
                       help=f"one or more of: {', '.join(MNIST_DATASETS)}")
    fetch.add_argument("--root", default=None,
                       help="cache folder (default: $DGM_DATA if set, else ~/.cache/dgm)")
    args = parser.parse_args(argv)
    for dataset in args.datasets:
        try:
            folder = download_mnist(dataset, args.root)
        except MissingDataError as e:
            print(e, file=sys.stderr)
            return 1
        print(f"{_MNIST_NAMES[dataset]}: {', '.join(MNIST_SHA256[dataset])} in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
