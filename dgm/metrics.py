"""Evaluating a model without a likelihood: mode coverage on the mixture toys, and the Fréchet
distance between two sets of features.

* :func:`mode_coverage` counts how many components of a Gaussian-mixture toy (``8gaussians``,
  ``grid``) a set of samples covers, and which fraction of the samples is of high quality;
* :func:`frechet_distance` is the Fréchet (2-Wasserstein) distance between the Gaussians fitted
  to two feature matrices, the quantity behind FID.
"""

from __future__ import annotations

import torch

from . import data

__all__ = ["mode_coverage", "frechet_distance"]


def mode_coverage(x: torch.Tensor, toy_name: str, min_share: float = 0.25) -> tuple[int, float]:
    """(components covered, fraction of high-quality samples) of 2D samples x of a mixture toy.

    A sample is of **high quality** when it lies within 3 standard deviations (Euclidean
    distance <= 3 sigma) of its nearest component's center. A component is **covered** when it
    receives at least ``min_share`` of the high-quality samples the true distribution would give
    it: with K equally weighted components and n samples, at least min_share * n / K of them.
    Samples of the true distribution cover every component, with about 98.9 % of high quality
    (P(|z| <= 3) for a 2D standard normal is 1 - exp(-4.5)).
    """
    x = data.check_points(x, 2)
    if not 0 < min_share <= 1:
        raise ValueError(f"min_share must lie in (0, 1], got {min_share}")
    centers, sigma = data.toy_components(toy_name)
    dist = torch.cdist(x.detach().to(centers.dtype).cpu(), centers)  # (n, K)
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist <= 3 * sigma
    counts = torch.bincount(nearest[good], minlength=len(centers))
    covered = int((counts >= min_share * len(x) / len(centers)).sum())
    return covered, good.float().mean().item() if len(x) else 0.0


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix, by eigendecomposition."""
    evals, evecs = torch.linalg.eigh((a + a.T) / 2)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between N(mu_a, S_a) and N(mu_b, S_b) fitted to feature matrices (n_a, d) and (n_b, d).

    d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2}), computed in float64. The
    symmetric form S_a^{1/2} S_b S_a^{1/2} has real, non-negative eigenvalues, so the matrix square root is
    an eigendecomposition with tiny negative eigenvalues (rounding) clamped to zero, not a general sqrtm.
    """
    for name, f in (("feats_a", feats_a), ("feats_b", feats_b)):
        if not isinstance(f, torch.Tensor) or f.ndim != 2 or not f.is_floating_point() or len(f) < 2:
            got = f"{f.dtype} of shape {tuple(f.shape)}" if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"{name} must be a float tensor of shape (n, d) with n >= 2, got {got}")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"the two feature sets need the same dimension, got {feats_a.shape[1]} and {feats_b.shape[1]}")
    a, b = feats_a.detach().double().cpu(), feats_b.detach().double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrtm_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()  # tr (S_a^1/2 S_b S_a^1/2)^1/2
    d2 = ((mu_a - mu_b) ** 2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross
    return max(d2.item(), 0.0)
