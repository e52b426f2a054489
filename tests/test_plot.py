"""Properties of dgm.plot: each helper draws what it is given on an Axes and returns it."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from dgm import plot  # noqa: E402
from dgm.data import toy, toy_log_prob  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _image(ax) -> AxesImage:
    images = [c for c in ax.get_children() if isinstance(c, AxesImage)]
    assert len(images) == 1
    return images[0]


def test_colors_cover_every_model_family():
    for key in ("data", "flow", "vae", "gan", "diffusion"):
        assert matplotlib.colors.is_color_like(plot.COLORS[key])
    families = [plot.COLORS[k] for k in ("flow", "vae", "gan", "diffusion")]
    assert len(set(families)) == len(families)  # distinguishable


def test_grid_points_are_cell_centres_of_the_window():
    extent = (-2.0, 4.0, -1.0, 1.0)
    x, shape = plot.grid_points(extent, n=6)
    assert shape == (6, 6) and x.shape == (36, 2)
    assert torch.allclose(x[:, 0].unique(), torch.tensor([-1.5, -0.5, 0.5, 1.5, 2.5, 3.5]))
    assert torch.allclose(x[:, 1].unique(), torch.linspace(-1 + 1 / 6, 1 - 1 / 6, 6), atol=1e-6)
    # reshaped to the image, row index is y and column index is x (imshow with origin="lower")
    img_x, img_y = x[:, 0].reshape(shape), x[:, 1].reshape(shape)
    assert (img_x.diff(dim=1) > 0).all() and (img_y.diff(dim=0) > 0).all()


def test_density_draws_the_density_on_the_window():
    ax = plot.density(lambda x: toy_log_prob("8gaussians", x), n=20, title="truth")
    assert isinstance(ax, Axes)
    img = _image(ax)
    arr = np.asarray(img.get_array())
    assert arr.shape == (20, 20)
    x, _ = plot.grid_points(n=20)
    assert np.allclose(arr, toy_log_prob("8gaussians", x).exp().reshape(20, 20).numpy())
    assert tuple(img.get_extent()) == plot.TOY_EXTENT
    assert ax.get_title() == "truth"


def test_density_draws_an_asymmetric_density_the_right_way_up():
    # mass only where x2 > 0: the upper half of the image (origin="lower") must carry it
    def log_prob(x):
        return torch.where(x[:, 1] > 0, 0.0, -math.inf)

    arr = np.asarray(_image(plot.density(log_prob, n=10)).get_array())
    assert (arr[5:] == 1).all() and (arr[:5] == 0).all()


def test_density_uses_a_given_axes():
    fig, axes = plt.subplots(1, 2)
    assert plot.density(lambda x: toy_log_prob("ring", x), ax=axes[1], n=8) is axes[1]


def test_samples_scatters_every_point():
    x = toy("moons", 57)
    ax = plot.samples(x, title="data")
    assert isinstance(ax, Axes)
    (coll,) = ax.collections
    assert np.allclose(coll.get_offsets(), x.numpy())
    assert ax.get_xlim() == plot.TOY_EXTENT[:2]


def test_samples_accepts_tensors_that_require_grad():
    x = torch.randn(10, 2, requires_grad=True)
    assert isinstance(plot.samples(x * 1.0), Axes)


@pytest.mark.parametrize("n, nrow", [(1, 10), (10, 10), (23, 10), (7, 3), (12, 4)])
def test_image_grid_tiles_n_images_in_ceil_n_over_nrow_rows(n, nrow):
    side = 8
    imgs = torch.randint(17, (n, side * side))
    ax = plot.image_grid(imgs, nrow=nrow)
    assert isinstance(ax, Axes)
    arr = np.ma.asarray(_image(ax).get_array())
    rows = math.ceil(n / nrow)
    assert arr.shape == (rows * (side + 1) + 1, nrow * (side + 1) + 1)
    for k in range(n):  # image k sits in row k // nrow, column k % nrow, one pixel of gap
        r, c = divmod(k, nrow)
        tile = arr[1 + r * (side + 1): 1 + r * (side + 1) + side, 1 + c * (side + 1): 1 + c * (side + 1) + side]
        assert np.array_equal(np.asarray(tile), imgs[k].reshape(side, side).numpy())
    assert np.isnan(np.asarray(arr, dtype=float)).sum() == arr.size - n * side * side  # the rest is blank


def test_image_grid_accepts_square_images_and_custom_sides():
    imgs = torch.rand(5, 4, 4)
    arr = np.asarray(_image(plot.image_grid(imgs, nrow=5, side=4, levels=2)).get_array())
    assert arr.shape == (4 + 2, 5 * 5 + 1)


def test_curves_plot_each_series():
    series = {"train": [3.0, 2.0, 1.5], "validation": [3.2, 2.5, 2.4, 2.6]}
    ax = plot.curves(series, colors={"train": plot.COLORS["flow"]}, title="loss", logy=True)
    assert isinstance(ax, Axes)
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == list(series)
    for ln, ys in zip(lines, series.values()):
        assert list(ln.get_xdata()) == list(range(1, len(ys) + 1))  # epochs count from 1
        assert list(ln.get_ydata()) == ys
    assert matplotlib.colors.same_color(lines[0].get_color(), plot.COLORS["flow"])
    assert ax.get_legend() is not None
    assert ax.get_yscale() == "log"


def test_curves_with_one_series_has_no_legend():
    ax = plot.curves({"train": [1.0, 0.5]})
    assert ax.get_legend() is None and ax.get_yscale() == "linear"
