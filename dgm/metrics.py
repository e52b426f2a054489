"""Evaluating a model without a likelihood: mode coverage on the mixture toys, and the Fréchet
distance between two sets of features.

* :func:`mode_coverage` counts how many components of a Gaussian-mixture toy (``8gaussians``,
  ``grid``) a set of samples covers, and which fraction of the samples is of high quality;
* :func:`frechet_distance` is the Fréchet (2-Wasserstein) distance between the Gaussians fitted
  to two feature matrices, the quantity behind FID;
* :func:`frechet_digits_distance` is that distance in the feature space of a small digits
  classifier (:func:`digits_classifier`), trained on the train split in a few seconds: the
  book's stand-in for FID, whose Inception network it cannot download;
* :func:`kernel_distance` is the unbiased estimate of the squared maximum mean discrepancy with
  the cubic polynomial kernel, the quantity behind KID, and :func:`kernel_digits_distance` that
  estimate on the digits features;
* :func:`precision_recall` (k-nearest-neighbour manifold estimates) and
  :func:`density_coverage` separate the two ways a model can miss: samples off the data
  (precision, density) and data the samples miss (recall, coverage); :func:`digits_scores`
  returns all of them for two sets of digits;
* :func:`paired_estimate` is the mean of a per-example Monte Carlo estimate (a likelihood
  bound, say) from two independent draws, with its Monte Carlo standard error.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from . import data

__all__ = ["paired_estimate", "mode_coverage", "frechet_distance", "DigitsClassifier", "digits_classifier", "digits_features",
           "frechet_digits_distance", "pixel_gaussian_digits", "kernel_distance", "kernel_digits_distance",
           "precision_recall", "density_coverage", "digits_scores",
           "train_classifier", "image_scores"]


def paired_estimate(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """The mean over N examples of two independent draws a, b of a per-example estimate.

    Returns the mean of (a + b) / 2 and its Monte Carlo standard error sqrt(Var(a - b) / 4N):
    given the example, a and b are i.i.d., so Var(a_i - b_i) = 2 Var(a_i), and the mean of
    (a + b) / 2 has variance mean_i Var(a_i) / 2N. The error is that of the Monte Carlo draws
    at fixed examples, not the spread over examples (another test set).
    """
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape or a.dim() != 1 or len(a) < 2:
        raise ValueError("a and b must be two 1-D tensors of the same length N >= 2 "
                         f"(one estimate per example), got {tuple(a.shape)} and {tuple(b.shape)}")
    return ((a + b) / 2).mean().item(), ((a - b).var() / (4 * len(a))).sqrt().item()


def mode_coverage(x: torch.Tensor, toy_name: str, min_share: float = 0.25) -> tuple[int, float]:
    """(components covered, fraction of high-quality samples) of 2D samples x of a mixture toy.

    A sample is of **high quality** when it lies within 3 standard deviations (Euclidean
    distance <= 3 sigma) of its nearest component's center. A component is **covered** when it
    receives at least min_share * n / K high-quality samples, a share ``min_share`` of the n / K
    samples the true distribution would give it (K equally weighted components, n samples).
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


def _check_feats(feats_a: torch.Tensor, feats_b: torch.Tensor, min_n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Both feature matrices as float64 CPU tensors, after checking shapes (n, d) with n >= min_n and equal d."""
    for name, f in (("feats_a", feats_a), ("feats_b", feats_b)):
        if not isinstance(f, torch.Tensor) or f.ndim != 2 or not f.is_floating_point() or len(f) < min_n:
            raise ValueError(f"{name} must be a float tensor of shape (n, d) with n >= {min_n}, got {data.describe(f)}"
                             " (pass features, e.g. digits_features(x), not raw digits)")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"the two feature sets need the same dimension, got {feats_a.shape[1]} and {feats_b.shape[1]}")
    return feats_a.detach().double().cpu(), feats_b.detach().double().cpu()


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between N(mu_a, S_a) and N(mu_b, S_b) fitted to feature matrices (n_a, d) and (n_b, d).

    d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2}), computed in float64. The
    symmetric form S_a^{1/2} S_b S_a^{1/2} has real, non-negative eigenvalues, so the matrix square root is
    an eigendecomposition with tiny negative eigenvalues (rounding) clamped to zero, not a general sqrtm.
    """
    a, b = _check_feats(feats_a, feats_b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrtm_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()  # tr (S_a^1/2 S_b S_a^1/2)^1/2
    d2 = ((mu_a - mu_b) ** 2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross
    return max(d2.item(), 0.0)


# ------------------------------------------------------------------ Fréchet digits distance
class DigitsClassifier(nn.Module):
    """An MLP 64 -> 256 -> ``features`` -> 10 on digits scaled to [0, 1]; ``features(x)`` is its last hidden layer.

    ``dim`` and ``levels`` are the images' (64 and 17 for the digits, 784 and 256 for MNIST).
    """

    def __init__(self, features: int = 32, hidden: int = 256, dim: int = 64, levels: int = data.DIGITS_LEVELS):
        super().__init__()
        self.dim, self.levels = dim, levels
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, features), nn.ReLU())
        self.head = nn.Linear(features, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = data.check_levels(x, self.levels, dim=self.dim)
        p = next(self.parameters())
        return self.body(x.to(p.device).float() / (self.levels - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (n, 10)."""
        return self.head(self.features(x))


def digits_classifier(seed: int = 0, epochs: int = 150) -> DigitsClassifier:
    """The feature network of the Fréchet digits distance, trained once per process and cached.

    Cross-entropy on the train split with ±1-pixel shifts (so that a digit moved by a pixel keeps
    its features), Adam with weight decay, ``epochs`` passes in minibatches of 100: a few seconds
    on a CPU, the global random state untouched. The returned network is frozen and in eval mode
    (the GAN chapter reports its accuracy on the validation and test splits).
    """
    return _digits_classifier(int(seed), int(epochs))


@lru_cache(maxsize=4)
def _digits_classifier(seed: int, epochs: int) -> DigitsClassifier:
    return train_classifier(*data.digits("train", labels=True), seed=seed, epochs=epochs)


def train_classifier(x: torch.Tensor, y: torch.Tensor, levels: int = data.DIGITS_LEVELS, seed: int = 0,
                     epochs: int = 150, batch_size: int = 100, device="cpu") -> DigitsClassifier:
    """A :class:`DigitsClassifier` for images x (torch.long (n, D), square) with labels y, trained as
    :func:`digits_classifier` is (its feature network for other images, MNIST say); frozen, in eval mode.

    ``device`` is where it trains and stays (``"auto"``: CUDA, else MPS, else the CPU); the global
    random state is untouched.
    """
    from .train import default_device

    device = default_device(device)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(), torch.enable_grad():
        torch.manual_seed(seed)
        net = DigitsClassifier(dim=x.shape[1], levels=levels).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-3)
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            for idx in perm.split(batch_size):
                xb = data.shift_digits(x[idx], generator=g)
                loss = nn.functional.cross_entropy(net(xb), y[idx].to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval().requires_grad_(False)
    return net


def digits_features(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Features (n, 32) of digits x (torch.long, shape (n, 64), levels 0..16) under :func:`digits_classifier`."""
    with torch.no_grad():
        return digits_classifier(seed).features(x)


def frechet_digits_distance(x_a: torch.Tensor, x_b: torch.Tensor, seed: int = 0) -> float:
    """The Fréchet distance between two sets of digits (levels 0..16) in the classifier's feature space.

    The estimate is biased upwards by the finite number of images, by an amount that grows with the
    feature dimension and shrinks with n: compare models with sets of the same sizes, against the
    same reference set, and report two real sets of those sizes as the floor.
    """
    return frechet_distance(digits_features(x_a, seed), digits_features(x_b, seed))


def pixel_gaussian_digits(x: torch.Tensor, n: int) -> torch.Tensor:
    """n digits from the Gaussian with the pixel mean and covariance of x, rounded to levels 0..16.

    The baseline that a Fréchet distance in pixel space cannot tell from real digits: it has (up to
    rounding) their first two moments and draws blobs. Uses torch's global random state.
    """
    pixels = data.check_levels(x, dim=64).double()
    gauss = torch.distributions.MultivariateNormal(pixels.mean(0), torch.cov(pixels.T) + 1e-6 * torch.eye(64))
    return gauss.sample((n,)).round().clamp(0, data.DIGITS_LEVELS - 1).long()


# ------------------------------------------------------------------ KID, precision / recall, density / coverage
def kernel_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Unbiased estimate of MMD^2 between the distributions of feature matrices a (m, d) and b (n, d).

    With the cubic polynomial kernel k(u, v) = (u^T v / d + 1)^3 of KID (Binkowski et al. 2018),

        MMD^2_u = 1/(m(m-1)) sum_{i != j} k(a_i, a_j) + 1/(n(n-1)) sum_{i != j} k(b_i, b_j)
                  - 2/(mn) sum_{i, j} k(a_i, b_j),

    computed in float64. Its expectation is the population MMD^2, which is zero when the two
    distributions agree, and also whenever their moments up to order three agree (the cubic
    kernel is not characteristic): unlike the Fréchet distance, the
    estimate is not biased upwards at small n, and it can be negative. Not clamped.
    """
    a, b = _check_feats(feats_a, feats_b)
    m, n, d = len(a), len(b), a.shape[1]
    k_aa, k_bb, k_ab = ((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
    return (within_a + within_b - 2 * k_ab.mean()).item()


def kernel_digits_distance(x_a: torch.Tensor, x_b: torch.Tensor, seed: int = 0) -> float:
    """:func:`kernel_distance` (KID's estimate) between two sets of digits in the classifier's feature space."""
    return kernel_distance(digits_features(x_a, seed), digits_features(x_b, seed))


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of x to its k-th nearest other row (the row itself excluded)."""
    if not 1 <= k < len(x):
        raise ValueError(f"k must lie in 1..{len(x) - 1} for a set of {len(x)} points, got {k}")
    return _dist(x, x).kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself (0)


def _dist(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Euclidean distances without the matrix-product shortcut: d(u_i, v_j) == d(v_j, u_i) bit for bit."""
    return torch.cdist(u, v, compute_mode="donot_use_mm_for_euclid_dist")


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of fake features (m, d) against real (n, d).

    The manifold of a set is the union of balls B(u, r_k(u)) around its points, r_k(u) the
    distance from u to its k-th nearest neighbour in the same set. Then

        precision = 1/m sum_j 1[fake_j in manifold(real)]   (share of samples that look real),
        recall    = 1/n sum_i 1[real_i in manifold(fake)]   (share of the data the samples reach).

    Identical sets give 1 and 1; a model that drops modes loses recall, one whose samples lie
    off the data (blurry averages) loses precision.
    """
    r, f = _check_feats(real, fake, min_n=k + 1)
    dist = _dist(f, r)  # (m, n)
    precision = (dist <= _knn_radii(r, k)[None, :]).any(dim=1).double().mean().item()
    recall = (dist <= _knn_radii(f, k)[:, None]).any(dim=0).double().mean().item()
    return precision, recall


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) of fake features (m, d) against real (n, d).

    With the real k-NN balls B(real_i, r_k(real_i)) only (the fake set's outliers cannot inflate
    them),

        density  = 1/(k m) sum_j sum_i 1[fake_j in B(real_i, r_k(real_i))],
        coverage = 1/n sum_i 1[some fake_j in B(real_i, r_k(real_i))].

    Density has expectation 1 when fake and real are independent samples of one distribution
    (it is (k + 1)/k for identical sets: each ball holds its centre and its k neighbours) and is
    not bounded by 1; coverage lies in [0, 1].
    """
    r, f = _check_feats(real, fake, min_n=k + 1)
    inside = _dist(f, r) <= _knn_radii(r, k)[None, :]  # (m, n)
    density = inside.double().sum().item() / (k * len(f))
    coverage = inside.any(dim=0).double().mean().item()
    return density, coverage


def digits_scores(samples: torch.Tensor, reference: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """FDD, KID, precision, recall, density and coverage of digits samples against reference digits.

    All on the features of :func:`digits_classifier`; precision/recall with k = 3, density/coverage
    with k = 5, the defaults of their papers. Both sets are digits (torch.long, (n, 64), 0..16).
    """
    return image_scores(samples, reference, digits_classifier(seed))


def image_scores(samples: torch.Tensor, reference: torch.Tensor, classifier: DigitsClassifier) -> dict[str, float]:
    """The scores of :func:`digits_scores` in the features of any :class:`DigitsClassifier` (for MNIST:
    one from :func:`train_classifier` on its training split): FD, KID, precision/recall, density/coverage."""
    with torch.no_grad():
        fs, fr = classifier.features(samples).cpu(), classifier.features(reference).cpu()
    precision, recall = precision_recall(fr, fs)
    density, coverage = density_coverage(fr, fs)
    return {"fdd": frechet_distance(fs, fr), "kid": kernel_distance(fs, fr), "precision": precision,
            "recall": recall, "density": density, "coverage": coverage}
