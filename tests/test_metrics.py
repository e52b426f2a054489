"""dgm.metrics: mode coverage on the mixture toys and the Fréchet distance between feature sets."""

from __future__ import annotations

import math

import pytest
import torch

from dgm import data, metrics


@pytest.mark.parametrize("name, k", [("8gaussians", 8), ("grid", 25)])
def test_true_samples_cover_every_component_with_high_quality(name, k):
    covered, quality = metrics.mode_coverage(data.toy(name, 20_000, seed=0), name)
    assert covered == k
    assert abs(quality - (1 - math.exp(-4.5))) < 0.005  # P(|z| <= 3) for a 2D standard normal


def test_collapsed_samples_cover_only_their_modes():
    x = data.toy("grid", 20_000, seed=1)
    centers, sigma = data.toy_components("grid")
    nearest = torch.cdist(x, centers).argmin(1)
    collapsed = x[nearest < 5]  # samples from 5 of the 25 components only
    covered, quality = metrics.mode_coverage(collapsed, "grid")
    assert covered == 5 and quality > 0.95
    spread = torch.rand(20_000, 2) * 10 - 5  # uniform over the window: few high-quality samples
    covered, quality = metrics.mode_coverage(spread, "grid")
    assert quality < 0.5


def test_mode_coverage_errors():
    with pytest.raises(ValueError, match="not a Gaussian mixture"):
        metrics.mode_coverage(torch.zeros(10, 2), "ring")
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        metrics.mode_coverage(torch.zeros(10, 3), "grid")


def test_frechet_distance_of_gaussians_in_closed_form():
    torch.manual_seed(0)
    n = 200_000
    a = torch.randn(n, 3, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([1.0, 0.0, -1.0])
    b = torch.randn(n, 3, dtype=torch.float64) * torch.tensor([1.5, 1.0, 0.5])
    # diagonal covariances: |mu_a - mu_b|^2 + sum (s_a - s_b)^2 = 2 + (0.25 + 1 + 0)
    assert abs(metrics.frechet_distance(a, b) - 3.25) < 0.05
    assert metrics.frechet_distance(a, a) < 1e-8


def test_frechet_distance_is_symmetric_and_rotation_invariant():
    torch.manual_seed(1)
    a = torch.randn(500, 4) @ torch.randn(4, 4)
    b = torch.randn(700, 4) @ torch.randn(4, 4) + 1
    q, _ = torch.linalg.qr(torch.randn(4, 4))
    d = metrics.frechet_distance(a, b)
    assert d > 0
    assert abs(metrics.frechet_distance(b, a) - d) < 1e-6 * d
    assert abs(metrics.frechet_distance(a @ q, b @ q) - d) < 1e-4 * d


def test_frechet_distance_handles_rank_deficient_features():
    torch.manual_seed(2)
    a = torch.randn(50, 2) @ torch.randn(2, 10)  # rank 2 in 10 dimensions
    b = torch.randn(60, 2) @ torch.randn(2, 10)
    d = metrics.frechet_distance(a, b)
    assert math.isfinite(d) and d >= 0


def test_frechet_distance_errors():
    with pytest.raises(ValueError, match="same dimension"):
        metrics.frechet_distance(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"feats_a must be a float tensor of shape \(n, d\)"):
        metrics.frechet_distance(torch.zeros(5, 3, dtype=torch.long), torch.randn(5, 3))


def test_digits_classifier_is_cached_accurate_frozen_and_leaves_the_rng_alone():
    state = torch.random.get_rng_state()
    net = metrics.digits_classifier()
    assert torch.equal(torch.random.get_rng_state(), state), "training the classifier must not move the global RNG"
    assert metrics.digits_classifier(0) is net and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    x, y = data.digits("val", labels=True)
    assert (net(x).argmax(1) == y).float().mean() > 0.9
    assert metrics.digits_features(x).shape == (len(x), 32)


def test_frechet_digits_distance_separates_digits_from_blobs():
    x_val, x_test = data.digits("val"), data.digits("test")
    assert metrics.frechet_digits_distance(x_test, x_test) == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(0)
    blobs = metrics.pixel_gaussian_digits(data.digits("train"), len(x_val))
    assert data.check_levels(blobs, dim=64) is blobs
    # a Gaussian with the pixels' mean and covariance: as close as real digits in pixel space, not in features
    assert metrics.frechet_distance(blobs.double(), x_test.double()) < 1.5 * metrics.frechet_distance(x_val.double(), x_test.double())
    assert metrics.frechet_digits_distance(blobs, x_test) > 2 * metrics.frechet_digits_distance(x_val, x_test)
    with pytest.raises(ValueError, match="torch.long"):
        metrics.frechet_digits_distance(x_val.float(), x_test)


# ------------------------------------------------------------------ KID, precision / recall, density / coverage
def _gauss(n, d=8, shift=0.0, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def test_kernel_distance_is_unbiased_where_the_frechet_distance_is_not():
    """Two samples of one distribution: KID's mean is zero within 4 standard errors at every n,
    the Fréchet distance is positive and falls with n (its bias)."""
    fid_means = []
    for n in (20, 80):
        kids = torch.tensor([metrics.kernel_distance(_gauss(n, seed=2 * r), _gauss(n, seed=2 * r + 1))
                             for r in range(40)])
        assert abs(kids.mean()) < 4 * kids.std() / math.sqrt(len(kids))
        assert (kids < 0).any()  # an unbiased estimate of zero must sometimes be negative
        fid_means.append(sum(metrics.frechet_distance(_gauss(n, seed=2 * r), _gauss(n, seed=2 * r + 1))
                             for r in range(10)) / 10)
    assert fid_means[0] > fid_means[1] > 0


def test_kernel_distance_is_positive_for_shifted_samples_and_exact_in_closed_form():
    kids = [metrics.kernel_distance(_gauss(100, seed=r), _gauss(100, shift=1.0, seed=50 + r)) for r in range(5)]
    assert min(kids) > 0
    # one point per set: the unbiased within-set terms need n >= 2, so check m = n = 2 by hand
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0], [2.0, 0.0]], dtype=torch.float64)
    k = lambda u, v: (u @ v / 2 + 1) ** 3  # noqa: E731
    expected = k(a[0], a[1]) + k(b[0], b[1]) - sum(k(u, v) for u in a for v in b) / 2
    assert metrics.kernel_distance(a, b) == pytest.approx(expected.item())


def _modes(n, modes, seed):
    """n points of a mixture of 10 Gaussians N(10 e_c, I) in 10D (far apart), drawn from the listed modes only."""
    g = torch.Generator().manual_seed(seed)
    which = torch.tensor(modes)[torch.randint(len(modes), (n,), generator=g)]
    return 10 * torch.eye(10, dtype=torch.float64)[which] + torch.randn(n, 10, generator=g, dtype=torch.float64)


def test_identical_sets_have_full_precision_recall_coverage():
    x = _modes(300, list(range(10)), seed=0)
    assert metrics.precision_recall(x, x) == (1.0, 1.0)
    density, coverage = metrics.density_coverage(x, x, k=5)
    assert coverage == 1.0 and density == pytest.approx(6 / 5)  # each ball: its centre and 5 neighbours


def test_independent_samples_of_one_distribution_have_density_near_one():
    density, coverage = metrics.density_coverage(_modes(1000, list(range(10)), 0), _modes(1000, list(range(10)), 1))
    assert abs(density - 1) < 0.1 and coverage > 0.95


def test_dropped_modes_lower_recall_and_blur_lowers_precision():
    real = _modes(1000, list(range(10)), seed=0)
    half = _modes(1000, list(range(5)), seed=1)  # mode dropping: 5 of the 10 modes
    precision, recall = metrics.precision_recall(real, half)
    density, coverage = metrics.density_coverage(real, half)
    full_precision, full_recall = metrics.precision_recall(real, _modes(1000, list(range(10)), seed=3))
    assert precision > full_precision - 0.05 and density > 0.9  # what it draws looks real
    assert recall < 0.6 * full_recall and abs(coverage - 0.5) < 0.05  # but it reaches half the data
    other = _modes(1000, list(range(10)), seed=2)
    blurry = (other + other.roll(1, 0)) / 2  # averages of two data points: between the modes
    precision, recall = metrics.precision_recall(real, blurry)
    density, coverage = metrics.density_coverage(real, blurry)
    assert precision < 0.2 and density < 0.3


def test_digits_scores_separate_digits_from_blobs():
    test = data.digits("test")
    real = metrics.digits_scores(data.digits("train")[:350], test)
    blobs = metrics.digits_scores(metrics.pixel_gaussian_digits(data.digits("train"), 350), test)
    assert set(real) == {"fdd", "kid", "precision", "recall", "density", "coverage"}
    assert blobs["fdd"] > real["fdd"] and blobs["kid"] > real["kid"]
    assert blobs["precision"] < real["precision"] and blobs["density"] < real["density"]


def test_sample_metric_errors():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="same dimension"):
        metrics.kernel_distance(x, torch.randn(10, 5))
    with pytest.raises(ValueError, match="features"):
        metrics.precision_recall(torch.arange(40).reshape(10, 4), x)
    with pytest.raises(ValueError, match="n >= 6"):
        metrics.density_coverage(x[:5], x, k=5)
    with pytest.raises(ValueError, match="n >= 2"):
        metrics.kernel_distance(x[:1], x)


def test_paired_estimate_mean_and_monte_carlo_error():
    torch.manual_seed(0)
    # per-example true values plus i.i.d. Monte Carlo noise of standard deviation 0.5
    truth = 10 * torch.randn(400)
    a, b = truth + 0.5 * torch.randn(400), truth + 0.5 * torch.randn(400)
    mean, se = metrics.paired_estimate(a, b)
    assert abs(mean - ((a + b) / 2).mean().item()) < 1e-5
    # the error of the Monte Carlo draws only: 0.5 / sqrt(2 * 400), not the spread of truth
    assert 0.8 * 0.5 / 800**0.5 < se < 1.2 * 0.5 / 800**0.5
    with pytest.raises(ValueError, match="same length"):
        metrics.paired_estimate(a, b[:10])
