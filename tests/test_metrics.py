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
