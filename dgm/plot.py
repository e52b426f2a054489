"""The book's figure style and the plots every chapter draws.

Importing this module sets the style once (:func:`use_style`). The same model keeps the same
colour across the book (:data:`COLORS`); the true density is drawn beside a model's wherever
it is known.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["COLORS", "use_style", "grid_points", "density", "samples", "image_grid", "curves"]

#: One colour per model family or reference, the same in every chapter.
COLORS: dict[str, str] = {
    "data": "#333333",
    "truth": "#333333",
    "gmm": "#8c564b",
    "flow": "#1f77b4",
    "vae": "#2ca02c",
    "gan": "#d62728",
    "diffusion": "#9467bd",
    "flow_matching": "#6b8e23",
    "autoregressive": "#ff7f0e",
    "independent": "#7f7f7f",
    "vi": "#17becf",          # a variational approximation q (reverse KL)
    "forward_kl": "#e377c2",  # a fit by forward KL (moment matching)
    "laplace": "#bcbd22",     # a Laplace approximation
}

#: Square window that shows every 2D toy of :mod:`dgm.data`.
TOY_EXTENT: tuple[float, float, float, float] = (-5.0, 5.0, -5.0, 5.0)


def use_style() -> None:
    """Set the book's matplotlib style (called on import)."""
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "figure.figsize": (6.4, 3.6),
            "figure.constrained_layout.use": True,
            "font.size": 10,
            "axes.titlesize": 10,
            "axes.labelsize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.frameon": False,
            "image.cmap": "viridis",
        }
    )


use_style()


def grid_points(extent=TOY_EXTENT, n: int = 200) -> tuple[torch.Tensor, tuple[int, int]]:
    """Centres of an ``n x n`` grid over ``extent`` as a float tensor ``(n*n, 2)``, and its shape."""
    x0, x1, y0, y1 = extent
    xs = torch.linspace(x0, x1, n + 1)
    ys = torch.linspace(y0, y1, n + 1)
    xc, yc = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    xx, yy = torch.meshgrid(xc, yc, indexing="xy")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1), (n, n)


def _axes(ax):
    return ax if ax is not None else plt.subplots(figsize=(3.2, 3.2))[1]


def density(log_prob: Callable[[torch.Tensor], torch.Tensor], ax=None, extent=TOY_EXTENT, n: int = 200,
            title: str | None = None, vmax: float | None = None):
    """Heat map of ``exp(log_prob(x))`` over a 2D window; ``log_prob`` maps ``(m, 2) -> (m,)``."""
    ax = _axes(ax)
    x, shape = grid_points(extent, n)
    with torch.no_grad():
        p = log_prob(x).exp().reshape(shape).cpu().numpy()
    ax.imshow(p, origin="lower", extent=extent, vmin=0, vmax=vmax, interpolation="nearest", aspect="equal")
    ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="$x_1$", ylabel="$x_2$")
    ax.grid(False)
    if title:
        ax.set_title(title)
    return ax


def samples(x: torch.Tensor, ax=None, extent=TOY_EXTENT, color: str = COLORS["data"], s: float = 2.0,
            alpha: float = 0.4, title: str | None = None, **kw):
    """Scatter plot of 2D points ``x`` of shape ``(n, 2)``."""
    ax = _axes(ax)
    x = torch.as_tensor(x).detach().cpu()
    ax.scatter(x[:, 0], x[:, 1], s=s, alpha=alpha, color=color, linewidths=0, **kw)
    ax.set(xlim=extent[:2], ylim=extent[2:], aspect="equal", xlabel="$x_1$", ylabel="$x_2$")
    if title:
        ax.set_title(title)
    return ax


def image_grid(images: torch.Tensor, ax=None, nrow: int = 10, levels: int = 17, side: int = 8,
               title: str | None = None):
    """Images of shape ``(n, side*side)`` or ``(n, side, side)`` tiled ``nrow`` per row, ink dark."""
    ax = _axes(ax)
    imgs = torch.as_tensor(images).detach().cpu().float().reshape(-1, side, side)
    n = len(imgs)
    rows = -(-n // nrow)
    canvas = np.full((rows * (side + 1) + 1, nrow * (side + 1) + 1), np.nan)
    for k, im in enumerate(imgs.numpy()):
        r, c = divmod(k, nrow)
        canvas[1 + r * (side + 1): 1 + r * (side + 1) + side, 1 + c * (side + 1): 1 + c * (side + 1) + side] = im
    cmap = plt.get_cmap("gray_r").with_extremes(bad="white")
    ax.imshow(canvas, cmap=cmap, vmin=0, vmax=levels - 1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def curves(series: Mapping[str, Sequence[float]], ax=None, xlabel: str = "epoch", ylabel: str = "loss (nats)",
           colors: Mapping[str, str] | None = None, title: str | None = None, logy: bool = False):
    """Line plot of named series (e.g. ``{"train": h.train, "validation": h.val}``)."""
    ax = _axes(ax)
    for name, ys in series.items():
        ax.plot(np.arange(1, len(ys) + 1), ys, label=name, color=(colors or {}).get(name))
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if logy:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend()
    if title:
        ax.set_title(title)
    return ax
