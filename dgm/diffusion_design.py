"""Diffusion in practice: classifier guidance with a noise-conditional classifier, EDM's preconditioning and samplers (Euler, Heun), latent diffusion on a VAE's codes, masked (absorbing-state) discrete diffusion.

Generated from book/06_diffusion_design.md by tools/export.py: do not edit. Change the chapter's cells
marked #@save and run `make notebooks`.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from dgm import data
from dgm.diffusion import (LEVELS, Diffusion, GaussianDiffusion, Schedule,
                           time_embedding, train_diffusion)
from dgm.vae import mlp_with_dropout


class NoisyClassifier(nn.Module):
    """A noise-conditional classifier p_phi(y | x_t, t) for the digits.

    An MLP on x_t (n, 64), on the scale of the DDPM's x_t, and the time embedding of
    the noise level's log-SNR -> num_classes logits.
    Defined in book/06_diffusion_design.md, section "A noise-conditional classifier for the digits".
    """

    def __init__(self, schedule: Schedule, num_classes: int = 10, hidden: int = 256,
                 depth: int = 2, dropout: float = 0.2, emb: int = 64, dim: int = 64):
        super().__init__()
        self.schedule, self.emb = schedule, emb
        self.net = mlp_with_dropout(dim + emb, hidden, num_classes, depth, dropout,
                                    nn.SiLU)

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Class logits (n, num_classes) of x_t at steps t (n,)."""
        h = time_embedding(self.schedule.logsnr[t - 1], self.emb)
        return self.net(torch.cat([xt, h], 1))


def train_noisy_classifier(classifier: NoisyClassifier, x: torch.Tensor,
                           y: torch.Tensor, steps: int = 600, batch_size: int = 100,
                           lr: float = 2e-3, t: int | None = None,
                           seed: int = 0) -> list[float]:
    """Cross-entropy of p_phi(y | x_t, t) on x_t ~ q(x_t | x_0), t uniform on 1..T.

    x are digits (levels 0..16), scaled to c_k in [-1, 1] like the DDPM's x_0; a fresh
    t and noise per example and step. With t fixed (t=1: clean images) the classifier
    sees that step only. Adam; returns the per-step losses, leaves it in eval mode.
    Defined in book/06_diffusion_design.md, section "A noise-conditional classifier for the digits".
    """
    x0 = torch.linspace(-1, 1, LEVELS)[data.check_levels(x, LEVELS, dim=64)]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(classifier.parameters(), lr=lr)
    T, losses = classifier.schedule.T, []
    classifier.train()
    for _ in range(steps):
        idx = torch.randint(len(x0), (batch_size,), generator=gen)
        ts = (torch.randint(1, T + 1, (batch_size,), generator=gen) if t is None
              else torch.full((batch_size,), t))
        eps = torch.randn(batch_size, x0.shape[1], generator=gen)
        xt = classifier.schedule.q_sample(x0[idx], ts, eps)
        loss = F.cross_entropy(classifier(xt, ts), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    classifier.eval()
    return losses


class ClassifierGuided(Diffusion):
    """Classifier guidance of a diffusion model by a noise-conditional classifier.

    A sampler with the Diffusion verbs (sample, sample_from), whose prediction is
    x0_tilde = x0_hat(x_t, y) + w sigma_t^2 / sqrt(alpha_bar_t) grad log p_phi(y | x_t),
    i.e. eps_tilde = eps_hat(x_t, y) - w sigma_t grad log p_phi(y | x_t, t). With
    conditional=False the model is used without its label: x0_hat(x_t, no label) and
    scale w, Dhariwal and Nichol's original form. The last step, x_1 -> x_0, is the
    model's own decoder, unguided (at sigma_1 the shift is negligible).
    Defined in book/06_diffusion_design.md, section "Classifier guidance as a sampler".
    """

    def __init__(self, model: Diffusion, classifier: nn.Module,
                 conditional: bool = True):
        super().__init__(model.schedule)
        self.model, self.classifier, self.dim = model, classifier, model.dim
        self.conditional = conditional

    def grad_log_p(self, xt: torch.Tensor, t: torch.Tensor,
                   y: torch.Tensor) -> torch.Tensor:
        """grad_{x_t} log p_phi(y | x_t, t), shape of x_t."""
        with torch.enable_grad():
            x = xt.detach().requires_grad_(True)
            log_p = F.log_softmax(self.classifier(x, t), 1).gather(1, y[:, None]).sum()
            return torch.autograd.grad(log_p, x)[0]

    def guided_x0(self, xt, t, y=None, w: float = 0.0):
        """x0_tilde: the model's x0_hat shifted along the classifier's gradient."""
        x0 = self.model.x0_hat(xt, t, y if self.conditional else None)
        if y is None or w == 0:
            return x0
        ab = self.schedule.at("alpha_bar", t, xt)
        return x0 + w * (1 - ab) / ab.sqrt() * self.grad_log_p(xt, t, y)

    def decode(self, x1, t1, y=None, w: float = 0.0):
        """The model's last step x_1 -> x_0, without guidance."""
        return self.model.decode(x1, t1, y if self.conditional else None)


def edm_coefficients(sigma, sigma_data: float):
    """EDM's preconditioning (c_skip, c_out, c_in, c_noise) at the noise levels sigma.

    D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), with unit-variance input and
    effective target for data of standard deviation sigma_data (Karras et al. 2022).
    Defined in book/06_diffusion_design.md, section "The noise level as the coordinate".
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    c_in = 1 / (sigma**2 + sigma_data**2).sqrt()
    return c_skip, c_out, c_in, sigma.log() / 4


def edm_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
               r: float = 7.0) -> torch.Tensor:
    """The n noise levels of EDM's sampler, sigma_max down to sigma_min, then a final 0.

    tau_i = (sigma_max^(1/r) + i / (n - 1) (sigma_min^(1/r) - sigma_max^(1/r)))^r
    (r is Karras et al.'s rho). float64, shape (n + 1,).
    Defined in book/06_diffusion_design.md, section "The noise level as the coordinate".
    """
    if n < 1:
        raise ValueError(f"need n >= 1 noise levels, got {n}")
    i = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    lo, hi = sigma_min ** (1 / r), sigma_max ** (1 / r)
    return torch.cat([(hi + i * (lo - hi)) ** r, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def edm_sample(denoiser, x: torch.Tensor, sigmas: torch.Tensor,
               heun: bool = True) -> torch.Tensor:
    """Integrate dx/dsigma = (x - D(x; sigma)) / sigma along sigmas (decreasing to 0).

    denoiser(x, sigma) -> D, an estimate of E[x_0 | x]; x starts at sigmas[0]. Euler
    (heun=False, one evaluation per step: DDIM) or Heun's method (two per step, except
    the last step to sigma = 0, which is Euler's).
    Defined in book/06_diffusion_design.md, section "The noise level as the coordinate".
    """
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        slope = (x - denoiser(x, s)) / s
        x_next = x + (s_next - s) * slope
        if heun and s_next > 0:
            slope_next = (x_next - denoiser(x_next, s_next)) / s_next
            x_next = x + (s_next - s) * (slope + slope_next) / 2
        x = x_next
    return x


class LatentDiffusion(nn.Module):
    """Latent diffusion: a Gaussian diffusion prior on the codes of a trained VAE.

    The VAE is frozen. The diffusion models u = (z - m) / s for z ~ q_phi(z | x), the
    aggregate posterior, with m and s its per-coordinate mean and standard deviation;
    sampling draws u_0 by reverse diffusion, sets z_0 = m + s u_0 and decodes
    x ~ p_theta(x | z_0). Extra keyword arguments go to GaussianDiffusion.
    Defined in book/06_diffusion_design.md, section "Latent diffusion on the digits".
    """

    def __init__(self, vae: nn.Module, hidden: int = 256, **kwargs):
        super().__init__()
        self.vae = vae.eval().requires_grad_(False)
        self.prior = GaussianDiffusion(dim=vae.z_dim, hidden=hidden, **kwargs)
        self.register_buffer("m", torch.zeros(vae.z_dim))
        self.register_buffer("s", torch.ones(vae.z_dim))

    @torch.no_grad()
    def posteriors(self, x: torch.Tensor) -> torch.Tensor:
        """(mu, logvar) of q_phi(z | x) side by side, shape (n, 2 z_dim)."""
        self.vae.eval()
        return torch.cat(self.vae.encode(x), 1)

    def draw_codes(self, post: torch.Tensor) -> torch.Tensor:
        """Standardized codes u = (z - m) / s, one z ~ q_phi(z | x) per row of post."""
        mu, logvar = post.chunk(2, 1)
        return (mu + (0.5 * logvar).exp() * torch.randn_like(mu) - self.m) / self.s

    def fit(self, x: torch.Tensor, draws: int = 20, **kwargs) -> dict:
        """Set m and s from `draws` codes per image, then train the diffusion prior.

        train_diffusion(prior, ..., **kwargs) sees fresh codes z ~ q_phi(z | x) in every
        minibatch; returns its history.
        """
        post = self.posteriors(x)
        mu, logvar = post.chunk(2, 1)
        z = mu + (0.5 * logvar).exp() * torch.randn(draws, *mu.shape)
        self.m, self.s = z.mean((0, 1)), z.std((0, 1))
        return train_diffusion(self.prior, post, augment=self.draw_codes, **kwargs)

    def sample_codes(self, n: int, steps: int | None = None,
                     eta: float = 1.0) -> torch.Tensor:
        """n codes z_0 = m + s u_0, u_0 from the reverse process; shape (n, z_dim)."""
        return self.m + self.s * self.prior.sample(n, steps, eta)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x ~ p_theta(x | z), pixels drawn independently; torch.long levels 0..16."""
        self.vae.eval()
        logits = self.vae.pixel_log_probs(z)
        return torch.distributions.Categorical(logits=logits).sample()

    def sample(self, n: int, steps: int | None = None,
               eta: float = 1.0) -> torch.Tensor:
        """n images: codes from the diffusion prior, then x ~ p_theta(x | z_0)."""
        return self.decode(self.sample_codes(n, steps, eta))


MASK = LEVELS  # the index of the mask symbol m, after the digits' levels 0..16


class MaskedDiffusion(nn.Module):
    """Absorbing-state ("masked") diffusion on the digits: x (n, 64), levels 0..16.

    A pixel of x_t is its level x_0^i or the mask symbol MASK. The network embeds each
    pixel's symbol (emb dimensions), flattens, and an MLP gives logits of
    p_theta(x_0^i | x_t) over the 17 levels at every pixel. It has no time input:
    q(x_0 | x_t) depends only on the unmasked pixels. Schedule alpha_bar(s) = 1 - s
    (continuous time) and alpha_bar_t = 1 - t / T (T steps). bound_estimate and
    nll_bound give unbiased estimates of the bound on -log P(x_0) in nats.
    Defined in book/06_diffusion_design.md, section "Estimating the bound without infinite variance".
    """

    def __init__(self, hidden: int = 512, depth: int = 2, dropout: float = 0.1,
                 emb: int = 8, dim: int = 64):
        super().__init__()
        self.dim = dim
        self.embed = nn.Embedding(LEVELS + 1, emb)
        self.net = mlp_with_dropout(dim * emb, hidden, dim * LEVELS, depth, dropout,
                                    nn.SiLU)

    def log_p_x0(self, xt: torch.Tensor) -> torch.Tensor:
        """log p_theta(x_0^i = k | x_t), shape (n, 64, 17), with carry-over.

        At an unmasked pixel all mass is on its level (log 0 = -inf elsewhere).
        """
        logits = self.net(self.embed(xt).flatten(1)).reshape(len(xt), self.dim, LEVELS)
        copy = torch.full_like(logits, -math.inf).scatter(
            2, xt.clamp(max=LEVELS - 1)[..., None], 0.0)
        return torch.where((xt == MASK)[..., None], F.log_softmax(logits, -1), copy)

    def masked_nll(self, x0: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """Per example, the sum over masked pixels of -log p_theta(x_0^i | x_t)."""
        nll = -self.log_p_x0(xt).gather(2, x0[..., None]).squeeze(2)
        return torch.where(xt == MASK, nll, 0.0).sum(1)

    @staticmethod
    def q_sample(x0: torch.Tensor, mask_prob: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0): each pixel masked with probability mask_prob (n,)."""
        return torch.where(torch.rand(x0.shape) < mask_prob[:, None], MASK, x0)

    @staticmethod
    def mask_random_subset(x0: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """x0 with a uniformly random set of k[j] pixels of row j masked."""
        ranks = torch.rand(x0.shape).argsort(1).argsort(1)
        return torch.where(ranks < k[:, None], MASK, x0)

    def bound_estimate(self, x0: torch.Tensor, estimator: str = "count",
                       T: int | None = None) -> torch.Tensor:
        """Per example, a one-draw unbiased estimate of the bound (nats).

        "count": k ~ U{1..D} masked pixels, weight D / k (finite variance). "time":
        s ~ U(0, 1), mask probability s, weight 1 / s (infinite variance). With T, the
        T-step bound: t ~ U{1..T}, mask probability t / T, weight T / t.
        """
        x0 = data.check_levels(x0, LEVELS, dim=self.dim)
        n, D = x0.shape
        if T is not None:
            t = torch.randint(1, T + 1, (n,))
            return T / t * self.masked_nll(x0, self.q_sample(x0, t / T))
        if estimator == "count":
            k = torch.randint(1, D + 1, (n,))
            return D / k * self.masked_nll(x0, self.mask_random_subset(x0, k))
        if estimator == "time":
            s = torch.rand(n)
            return self.masked_nll(x0, self.q_sample(x0, s)) / s
        raise ValueError(f"estimator must be 'count' or 'time', got {estimator!r}")

    def loss(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """Per example, the training loss: the "count" estimate of the bound."""
        return self.bound_estimate(x, "count")

    @torch.no_grad()
    def nll_bound(self, x: torch.Tensor, draws: int = 1, estimator: str = "count",
                  T: int | None = None) -> torch.Tensor:
        """Estimates of the bound, shape (n, draws): independent draws per example."""
        was_training = self.training
        self.eval()
        b = torch.stack([self.bound_estimate(x, estimator, T) for _ in range(draws)], 1)
        self.train(was_training)
        return b

    @torch.no_grad()
    def sample(self, n: int, steps: int = 64, return_path: bool = False):
        """n digits by ancestral sampling of the chain with T = steps steps.

        alpha_bar_t = 1 - t / T. From x_T = all masks, each masked pixel is unmasked
        with probability (alpha_bar_{t-1} - alpha_bar_t) / (1 - alpha_bar_t) = 1 / t,
        to a level drawn from p_theta(x_0^i | x_t). Returns x_0, shape (n, 64); with
        return_path also x_T .. x_0, shape (steps + 1, n, 64).
        """
        was_training = self.training
        self.eval()
        x = torch.full((n, self.dim), MASK)
        path = [x]
        for t in range(steps, 0, -1):
            unmask = (x == MASK) & (torch.rand(x.shape) < 1 / t)
            if unmask.any():
                x0 = torch.distributions.Categorical(logits=self.log_p_x0(x)).sample()
                x = torch.where(unmask, x0, x)
            path.append(x)
        self.train(was_training)
        return (x, torch.stack(path)) if return_path else x
