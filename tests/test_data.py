"""Properties of dgm.data: the toys are normalized densities that their samples follow,
the digits split is the documented one, and dequantization gives a true bound."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from scipy import stats

import dgm.data as D
from dgm.data import (
    DIGITS_LEVELS,
    DIGITS_SPLITS,
    TOYS,
    bits_per_dim,
    dequantize,
    digits,
    discrete_nll_bound,
    toy,
    toy_components,
    toy_entropy,
    toy_log_prob,
)

CURVES = ("ring", "moons", "spirals")
MIXTURES = ("8gaussians", "grid")
BOX = 6.0  # every toy puts all but a negligible part of its mass in [-6, 6]^2
# Riemann-sum spacing. By Poisson summation a midpoint sum of a Gaussian of scale s on a
# grid of spacing h errs by about 2 exp(-2 pi^2 s^2 / h^2) < 1e-30 for s >= 0.1, h = 0.05,
# so this grid (4x cheaper than toy_entropy's 0.025) is exact to float precision.
H = 0.05


@functools.lru_cache(maxsize=None)
def _grid(h: float = H) -> torch.Tensor:
    ticks = torch.arange(-BOX + h / 2, BOX, h, dtype=torch.float64)
    yy, xx = torch.meshgrid(ticks, ticks, indexing="ij")  # row = y, column = x
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


@functools.lru_cache(maxsize=None)
def _grid_log_prob(name: str) -> torch.Tensor:
    return toy_log_prob(name, _grid())


# ------------------------------------------------------------------ sampling contract
@pytest.mark.parametrize("name", TOYS)
def test_toy_returns_float32_points(name):
    x = toy(name, 257)
    assert x.dtype == torch.float32
    assert x.shape == (257, 2)
    assert torch.isfinite(x).all()
    assert toy(name, 0).shape == (0, 2)


@pytest.mark.parametrize("name", TOYS)
def test_toy_is_deterministic_per_seed_and_differs_across_seeds(name):
    assert torch.equal(toy(name, 500, seed=3), toy(name, 500, seed=3))
    assert not torch.equal(toy(name, 500, seed=3), toy(name, 500, seed=4))


@pytest.mark.parametrize("name", TOYS)
def test_toy_leaves_global_rng_untouched(name):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    toy(name, 100, seed=5)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("n", [-1, 2.0, True, "3"])
def test_toy_rejects_bad_counts(n):
    with pytest.raises(ValueError, match="non-negative int"):
        toy("ring", n)


def test_unknown_toy_name_raises_listing_valid_names():
    for fn in (lambda: toy("banana", 3), lambda: toy_log_prob("banana", torch.zeros(1, 2)),
               lambda: toy_entropy("banana"), lambda: toy_components("banana")):
        with pytest.raises(ValueError) as err:
            fn()
        assert "banana" in str(err.value)
        assert all(name in str(err.value) for name in TOYS)


@pytest.mark.parametrize(
    "x",
    [
        torch.zeros(5, 2, dtype=torch.long),  # integer points
        torch.zeros(5),  # shape (5,)
        torch.zeros(5, 3),  # shape (5, 3)
        np.zeros((5, 2)),  # not a tensor
    ],
    ids=["int", "1d", "3cols", "numpy"],
)
def test_log_prob_rejects_bad_points_naming_the_expected_shape(x):
    with pytest.raises((TypeError, ValueError), match=r"\(n, 2\)"):
        toy_log_prob("8gaussians", x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_prob_keeps_dtype_and_shape(dtype):
    x = torch.zeros(7, 2, dtype=dtype)
    out = toy_log_prob("moons", x)
    assert out.dtype == dtype and out.shape == (7,)


# ------------------------------------------------------------------ densities
@pytest.mark.parametrize("name", TOYS)
def test_density_integrates_to_one(name):
    p = _grid_log_prob(name).exp()
    total = float(p.sum()) * H * H
    # Checkerboard: 8 squares of area 4 at density 1/32, each holding exactly (2/H)^2 grid cells.
    assert total == pytest.approx(1.0, abs=1e-12 if name == "checkerboard" else 1e-8)


def _grid_entropy(name: str) -> float:
    logp = _grid_log_prob(name)
    p = logp.exp()
    return -float(torch.where(p > 0, p * logp, torch.zeros_like(p)).sum()) * H * H


# toy_entropy takes seconds per curve toy, and its code is the same for every smooth toy (a
# Riemann sum of the log-density tested above); one curve toy and the cheap ones cover it.
@pytest.mark.parametrize("name", [*MIXTURES, "moons", "checkerboard"])
def test_toy_entropy_equals_the_integral_on_a_coarser_grid(name):
    """toy_entropy's Riemann sum (spacing 0.025) is converged: spacing 0.05 gives the same -E log p."""
    assert toy_entropy(name) == pytest.approx(_grid_entropy(name), abs=1e-8)


def test_checkerboard_entropy_is_log_32():
    assert toy_entropy("checkerboard") == pytest.approx(math.log(32), rel=1e-15)


@pytest.mark.parametrize("name", TOYS)
def test_samples_have_mean_negative_log_density_equal_to_entropy(name):
    """E_{x~p}[-log p(x)] = H(p): the sampler and the density describe the same distribution."""
    x = toy(name, 20_000, seed=11).double()
    nll = -toy_log_prob(name, x)
    assert torch.isfinite(nll).all()
    se = float(nll.std()) / math.sqrt(len(nll))
    assert float(nll.mean()) == pytest.approx(_grid_entropy(name), abs=4 * se + 1e-9)


@pytest.mark.parametrize("name", TOYS)
def test_samples_follow_the_density_chi_square(name):
    """Histogram of 20k samples on 0.5-wide bins against the bin masses of the density."""
    n, step = 20_000, 10  # bins of 10 x 10 grid cells = 0.5 x 0.5
    k = int(round(2 * BOX / H))
    p = _grid_log_prob(name).exp().reshape(k, k) * H * H  # [y, x]
    mass = p.reshape(k // step, step, k // step, step).sum(dim=(1, 3)).reshape(-1)
    x = toy(name, n, seed=12).double()
    inside = (x.abs() < BOX).all(dim=1)
    idx = ((x[inside] + BOX) / (step * H)).floor().long()
    counts = torch.bincount(idx[:, 1] * (k // step) + idx[:, 0], minlength=len(mass)).double()
    expected = n * mass
    big = expected >= 5
    obs, exp = counts[big], expected[big]
    obs_rest, exp_rest = float(counts[~big].sum() + (~inside).sum()), n - float(exp.sum())
    if exp_rest >= 5:  # pool the sparse bins and the outside of the box into one bin
        obs, exp = torch.cat([obs, torch.tensor([obs_rest])]), torch.cat([exp, torch.tensor([exp_rest])])
    else:  # too little mass there for a chi-square term: Poisson tail test instead
        assert stats.poisson.sf(obs_rest - 1, max(exp_rest, 1e-12)) > 1e-4, (obs_rest, exp_rest)
    stat = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    assert stats.chi2.sf(stat, dof) > 1e-4, (stat, dof)


def test_checkerboard_log_prob_is_minus_inf_off_support():
    on = torch.tensor([[-3.0, -3.0], [-1.0, -1.0], [1.0, 1.0], [3.0, 3.0], [-3.0, 1.0], [-1.0, 3.0]])
    off = torch.tensor([[-3.0, -1.0], [-1.0, -3.0], [1.0, -1.0], [3.0, 1.0],  # light squares
                        [4.5, 0.0], [0.0, -5.0], [-9.0, -9.0]])  # outside the board
    assert torch.allclose(toy_log_prob("checkerboard", on), torch.full((len(on),), -math.log(32)))
    assert torch.isneginf(toy_log_prob("checkerboard", off)).all()


def test_checkerboard_samples_are_on_its_support_uniformly():
    x = toy("checkerboard", 20_000, seed=2)
    assert torch.isfinite(toy_log_prob("checkerboard", x)).all()
    cells = torch.floor((x.double() + 4) / 2).long()
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    dark = (cells[:, 0] + cells[:, 1]) % 2 == 0
    assert dark.all()
    occupied = counts[counts > 0]
    assert len(occupied) == 8
    assert stats.chisquare(occupied.numpy()).pvalue > 1e-4


def test_checkerboard_samples_never_get_zero_density_even_in_large_draws():
    x = toy("checkerboard", 200_000, seed=7)  # this draw has a point rounded onto an edge
    assert torch.isfinite(toy_log_prob("checkerboard", x)).all()


# ------------------------------------------------------------------ curve quadrature
@pytest.mark.parametrize("name", CURVES)
def test_curve_quadrature_weights_are_a_probability_vector(name):
    points, log_w = D._nodes(D._TOYS[name])
    assert points.shape == (len(log_w), 2)
    assert abs(float(torch.logsumexp(log_w, 0))) < 1e-12


@pytest.mark.parametrize("name", CURVES)
def test_curve_panels_span_at_most_the_documented_arc_length(name):
    spec = D._TOYS[name]
    panel = 0.75
    points, _ = D._nodes(spec, panel)
    # consecutive Gauss-Legendre nodes of one branch lie within one panel or its neighbour
    for branch in points.chunk(len(spec.branches)):
        gaps = branch.diff(dim=0).norm(dim=1)
        assert float(gaps.max()) <= panel * spec.sigma


@functools.lru_cache(maxsize=None)
def _refinement_error(name: str) -> torch.Tensor:
    """toy_log_prob minus the same quadrature with panels a third as long, at 5000 of the toy's samples."""
    x = toy(name, 5_000, seed=7).double()
    return toy_log_prob(name, x) - D._log_prob64(name, x, panel=0.25)


@pytest.mark.parametrize("name", CURVES)
def test_curve_log_prob_is_converged_where_the_toy_has_mass(name):
    """toy_log_prob agrees with a much finer quadrature at the toy's own samples."""
    assert float(_refinement_error(name).abs().max()) < 1e-6


# ------------------------------------------------------------------ mixtures
@pytest.mark.parametrize("name", MIXTURES)
def test_toy_components_reproduce_the_density(name):
    centers, sigma = toy_components(name)
    assert centers.ndim == 2 and centers.shape[1] == 2 and sigma > 0
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(len(centers), dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(centers.double(), sigma), 1),
    )
    assert torch.allclose(toy_log_prob(name, x), mix.log_prob(x), atol=1e-10)


@pytest.mark.parametrize("name", [t for t in TOYS if t not in MIXTURES])
def test_toy_components_rejects_non_mixtures(name):
    with pytest.raises(ValueError, match="8gaussians"):
        toy_components(name)


# ------------------------------------------------------------------ digits
def test_digits_splits_have_documented_sizes_and_levels():
    sizes = {"train": 1000, "val": 350, "test": 447}
    for split, n in sizes.items():
        x = digits(split)
        assert x.dtype == torch.long
        assert x.shape == (n, 64)
        assert int(x.min()) >= 0 and int(x.max()) <= DIGITS_LEVELS - 1
        assert DIGITS_SPLITS[split][1] - DIGITS_SPLITS[split][0] == n


def test_digits_splits_are_disjoint_and_in_order():
    from sklearn.datasets import load_digits

    ref = load_digits()
    x = torch.cat([digits("train"), digits("val"), digits("test")])
    assert torch.equal(x, torch.as_tensor(ref.data).long())
    ranges = sorted(DIGITS_SPLITS.values())
    assert ranges[0][0] == 0 and ranges[-1][1] == len(ref.data)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_digits_labels_option():
    for split in DIGITS_SPLITS:
        x, y = digits(split, labels=True)
        assert torch.equal(x, digits(split))
        assert y.dtype == torch.long and y.shape == (len(x),)
        assert int(y.min()) >= 0 and int(y.max()) <= 9
    from sklearn.datasets import load_digits

    y_all = torch.cat([digits(s, labels=True)[1] for s in ("train", "val", "test")])
    assert torch.equal(y_all, torch.as_tensor(load_digits().target).long())


def test_digits_returns_a_copy():
    x = digits("train")
    x[:] = -1
    assert int(digits("train").min()) >= 0


def test_digits_unknown_split_raises():
    with pytest.raises(ValueError, match="train"):
        digits("validation")


# ------------------------------------------------------------------ dequantization
def test_dequantize_maps_levels_into_their_bins():
    x = digits("train")
    y = dequantize(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.is_floating_point()
    assert float(y.min()) >= 0 and float(y.max()) < 1
    # float32 y times 17 is exact in float64, so this checks y in [x/17, (x+1)/17) exactly
    assert torch.equal(torch.floor(y.double() * DIGITS_LEVELS).long(), x)


def test_dequantize_is_reproducible_with_a_generator():
    x = digits("val")
    a = dequantize(x, generator=torch.Generator().manual_seed(1))
    b = dequantize(x, generator=torch.Generator().manual_seed(1))
    c = dequantize(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_dequantize_stays_in_the_bin_for_extreme_noise(monkeypatch):
    real_rand = torch.rand

    def rand(*shape, generator=None, dtype=None, **kw):  # u = the largest value below 1 of its dtype
        dtype = dtype or torch.get_default_dtype()
        one = torch.ones((), dtype=dtype)
        return torch.nextafter(one, torch.zeros((), dtype=dtype)).expand(*shape).clone()

    monkeypatch.setattr(D.torch, "rand", rand)
    x = torch.arange(DIGITS_LEVELS).reshape(1, -1)
    y = dequantize(x)
    monkeypatch.setattr(D.torch, "rand", real_rand)
    assert float(y.max()) < 1
    assert torch.equal(torch.floor(y.double() * DIGITS_LEVELS).long(), x)


@pytest.mark.parametrize(
    "x",
    [
        torch.zeros(2, 64),  # float
        torch.full((2, 64), DIGITS_LEVELS, dtype=torch.long),  # level 17
        torch.full((2, 64), -1, dtype=torch.long),  # negative level
        torch.zeros(64, dtype=torch.long),  # 1-D
    ],
    ids=["float", "level17", "negative", "1d"],
)
def test_dequantize_rejects_bad_levels(x):
    with pytest.raises(ValueError):
        dequantize(x)


LEVELS, DIM = DIGITS_LEVELS, 3


def _categorical(seed: int) -> torch.Tensor:
    """Independent categoricals over 17 levels on each of DIM dims: probs of shape (DIM, 17)."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(DIM, LEVELS, generator=g, dtype=torch.float64), dim=1)


def _draw(probs: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.multinomial(p, n, replacement=True, generator=g) for p in probs], dim=1)


def _nll(probs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return -probs.log().gather(1, x.T).T.sum(dim=1)


def test_nll_bound_is_exact_for_a_density_constant_on_bins():
    """A histogram density p(y) = 17^D P(bin of y) attains the bound with equality."""
    probs = _categorical(0)
    x = _draw(probs, 2_000, seed=1)
    y = dequantize(x, levels=LEVELS, generator=torch.Generator().manual_seed(2))
    bins = torch.floor(y.double() * LEVELS).long()
    log_p_y = (probs.log().gather(1, bins.T).T + math.log(LEVELS)).sum(dim=1)
    bound = discrete_nll_bound(log_p_y, dim=DIM, levels=LEVELS)
    assert torch.allclose(bound, _nll(probs, x), rtol=0, atol=1e-12)


def test_nll_bound_is_an_upper_bound_for_a_smooth_density():
    """p(y) = prod_d Beta(2, 2)(y_d); its discretization P(x) = prod_d [F((x+1)/17) - F(x/17)]."""
    def log_pdf(y):
        return torch.log(6 * y * (1 - y))

    def cdf(y):
        return 3 * y**2 - 2 * y**3

    k = torch.arange(LEVELS, dtype=torch.float64)
    log_bin_mass = torch.log(cdf((k + 1) / LEVELS) - cdf(k / LEVELS))  # (17,), same every dim
    # E_u[bound] per level per dim by a 20000-node midpoint rule in u (deterministic)
    u = (torch.arange(20_000, dtype=torch.float64) + 0.5) / 20_000
    mean_bound = -log_pdf((k[:, None] + u) / LEVELS).mean(dim=1) + math.log(LEVELS)  # (17,)
    gap = mean_bound + log_bin_mass  # E_u bound - (-log P), per dim
    assert (gap > 0).all()  # Jensen, strict because log p is not constant on any bin

    # the same through the public functions, averaging over u draws of dequantize
    x = torch.randint(LEVELS, (500, DIM), generator=torch.Generator().manual_seed(3))
    exact = -log_bin_mass[x].sum(dim=1)
    g = torch.Generator().manual_seed(4)
    draws = torch.stack([
        discrete_nll_bound(log_pdf(dequantize(x, levels=LEVELS, generator=g).double()).sum(dim=1), DIM, LEVELS)
        for _ in range(200)
    ])  # (200, 500)
    avg = draws.mean(dim=0)
    se = draws.std(dim=0) / math.sqrt(len(draws))
    assert ((avg - mean_bound[x].sum(dim=1)).abs() <= 5 * se + 1e-9).all()
    assert (avg >= exact - 5 * se).all()
    assert float(avg.mean()) > float(exact.mean())


@pytest.mark.parametrize("k", [0.0, 1.0, 2.5])
def test_bits_per_dim_converts_nats(k):
    assert bits_per_dim(64 * math.log(2) * k, 64) == pytest.approx(k, rel=1e-12, abs=1e-15)
    t = bits_per_dim(torch.tensor([64 * math.log(2) * k], dtype=torch.float64), 64)
    assert torch.allclose(t, torch.tensor([k], dtype=torch.float64))


# ------------------------------------------------------------------ shift augmentation
def test_shift_digits_moves_whole_images_by_at_most_one_pixel():
    from dgm.data import shift_digits

    x = digits("train")[:200]
    y = shift_digits(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    img, out = x.view(-1, 8, 8), y.view(-1, 8, 8)
    seen = set()
    for a, b in zip(img, out):
        matches = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                shifted = torch.zeros_like(a)
                src = a[max(0, -dy) : 8 - max(0, dy), max(0, -dx) : 8 - max(0, dx)]
                shifted[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
                if torch.equal(shifted, b):
                    matches.append((dy, dx))
        assert matches, "an output is not a shifted copy of its input"
        seen.update(matches)
    assert len(seen) == 9  # all nine shifts occur
    assert torch.equal(shift_digits(x, max_shift=0), x)


def test_shift_digits_rejects_other_shapes():
    from dgm.data import shift_digits

    with pytest.raises(ValueError, match=r"\(n, 64\)"):
        shift_digits(torch.zeros(3, 8, 8))
