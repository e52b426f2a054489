"""Variational autoencoders: discretized logistic likelihood, the VAE for the digits, its training loss.

Generated from book/03_vae.md by tools/export.py: do not edit. Change the chapter's cells
marked #@save and run `make notebooks`.
"""

import math

import torch
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

from dgm import data
from dgm.vi import kl_diag_gaussians, reparameterize

LEVELS = data.DIGITS_LEVELS  # pixel values 0..16


def discretized_logistic_log_probs(mean, log_scale, levels: int = LEVELS):
    """log P(x = k) for every level k = 0..levels-1 under eq. (disc-logistic): shape (..., levels).

    mean and log_scale have any shape (...); the end bins take the logistic's tails.
    Defined in book/03_vae.md, section "A likelihood for discrete pixels".
    """
    k = torch.arange(levels, dtype=mean.dtype, device=mean.device)
    inv_s = torch.exp(-log_scale)[..., None]
    a = torch.where(k > 0, (k - 0.5 - mean[..., None]) * inv_s, -math.inf)  # lower bin edge, standardized
    b = torch.where(k < levels - 1, (k + 0.5 - mean[..., None]) * inv_s, math.inf)  # upper bin edge
    return F.logsigmoid(b) + F.logsigmoid(-a) + torch.log(-torch.expm1(a - b))  # eq. (disc-logistic-log)


def mlp_with_dropout(n_in: int, hidden: int, n_out: int, depth: int = 2, dropout: float = 0.0) -> nn.Sequential:
    """n_in -> hidden (GELU, dropout) x depth -> n_out.

    Defined in book/03_vae.md, section "A likelihood for discrete pixels".
    """
    layers, width = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, n_out))


class VAE(nn.Module):
    """A variational autoencoder for the 8x8 digits: x of shape (n, 64), torch.long levels 0..16.

    q_phi(z | x) = N(mu, diag exp(logvar)) from an MLP encoder; p(z) = N(0, I); p_theta(x | z) a
    product over pixels of a mixture of `components` discretized logistics (likelihood="logistic")
    or of 17-way categoricals (likelihood="categorical"), from an MLP decoder.
    Defined in book/03_vae.md, section "A likelihood for discrete pixels".
    """

    def __init__(self, z_dim: int = 16, hidden: int = 512, likelihood: str = "logistic", components: int = 3,
                 dropout: float = 0.1, dim: int = 64):
        super().__init__()
        if likelihood not in ("logistic", "categorical"):
            raise ValueError(f"likelihood must be 'logistic' or 'categorical', got {likelihood!r}")
        self.z_dim, self.dim, self.likelihood, self.components = z_dim, dim, likelihood, components
        self.n_out = 3 * components if likelihood == "logistic" else LEVELS  # decoder outputs per pixel
        self.encoder = mlp_with_dropout(dim, hidden, 2 * z_dim, dropout=dropout)
        self.decoder = mlp_with_dropout(z_dim, hidden, self.n_out * dim, dropout=dropout)

    def encode(self, x):
        """(mu, logvar) of q_phi(z | x), each of shape (n, z_dim)."""
        x = data.check_levels(x, LEVELS, self.dim)
        return self.encoder(x.float() / 8 - 1).chunk(2, dim=-1)

    def pixel_log_probs(self, z):
        """log p_theta(x_i = k | z) for every pixel i and level k: shape (..., dim, 17) for z of shape (..., z_dim)."""
        out = self.decoder(z).unflatten(-1, (self.n_out, self.dim)).transpose(-1, -2)  # (..., dim, n_out)
        if self.likelihood == "categorical":
            return F.log_softmax(out, dim=-1)
        logits, mean, log_scale = out.unflatten(-1, (3, self.components)).unbind(-2)  # each (..., dim, components)
        log_p = discretized_logistic_log_probs(8 + mean, log_scale.clamp(min=-5))  # (..., dim, components, 17)
        return torch.logsumexp(F.log_softmax(logits, -1)[..., None] + log_p, dim=-2)

    def log_lik(self, x, z):
        """log p_theta(x | z), summed over pixels; x (n, dim) and z (..., n, z_dim) give shape (..., n)."""
        log_p = self.pixel_log_probs(z)
        return log_p.gather(-1, x.expand(*log_p.shape[:-1])[..., None]).squeeze(-1).sum(-1)

    def elbo_terms(self, x):
        """The ELBO's two terms (eq. vae-elbo), each of shape (n,): reconstruction E_q log p(x|z), one sample, and KL(q || p(z))."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)
        return self.log_lik(x, z), kl_diag_gaussians(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar))

    def elbo(self, x):
        """A one-sample estimate of the ELBO of each image in nats, shape (n,)."""
        reconstruction, kl = self.elbo_terms(x)
        return reconstruction - kl

    @torch.no_grad()
    def log_prob(self, x, k: int = 1000, chunk: int = 100):
        """Importance-sampled estimate of log p_theta(x) with k samples of q_phi(z | x) (eq. iwae), shape (n,)."""
        mu, logvar = self.encode(x)
        q = Normal(mu, (0.5 * logvar).exp())
        log_w = []
        for start in range(0, k, chunk):
            z = q.sample((min(chunk, k - start),))  # (chunk, n, z_dim)
            log_w.append(self.log_lik(x, z) + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1))
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)

    @torch.no_grad()
    def decode_mean(self, z):
        """The expected pixel values E[x | z], shape (n, dim): a picture of what z encodes."""
        levels = torch.arange(LEVELS, dtype=z.dtype, device=z.device)
        return (self.pixel_log_probs(z).exp() * levels).sum(-1)

    @torch.no_grad()
    def sample(self, n: int):
        """n images x ~ p_theta(x | z), z ~ p(z): shape (n, dim), torch.long levels 0..16."""
        z = torch.randn(n, self.z_dim, device=next(self.parameters()).device)
        return torch.distributions.Categorical(logits=self.pixel_log_probs(z)).sample()


def vae_loss(warmup_steps: int = 0, shift: bool = True):
    """The training loss -[reconstruction - beta_t KL] (batch mean) for `fit`, with KL warm-up beta_t = min(1, t / warmup_steps).

    While training, each image is shifted by up to one pixel (data.shift_digits); in evaluation
    the loss is the plain negative ELBO (beta = 1).
    Defined in book/03_vae.md, section "A likelihood for discrete pixels".
    """
    step = 0

    def loss(model, x):
        nonlocal step
        if not model.training:
            return -model.elbo(x).mean()
        step += 1
        beta = min(1.0, step / warmup_steps) if warmup_steps else 1.0
        reconstruction, kl = model.elbo_terms(data.shift_digits(x) if shift else x)
        return -(reconstruction - beta * kl).mean()

    return loss
