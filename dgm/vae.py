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


def discretized_logistic_log_prob(k, mean, log_scale, levels: int = LEVELS):
    """log P(x = k) under the discretized logistic of eq. (disc-logistic).

    k, mean, log_scale broadcast; k holds levels 0..levels-1 (any dtype); the end bins
    take the logistic's tails.
    Defined in book/03_vae.md, section "A likelihood for discrete pixels".
    """
    k = k.to(mean.dtype)
    inv_s = torch.exp(-log_scale)
    # lower and upper bin edge, standardized
    a = torch.where(k > 0, (k - 0.5 - mean) * inv_s, -math.inf)
    b = torch.where(k < levels - 1, (k + 0.5 - mean) * inv_s, math.inf)
    # eq. (disc-logistic-log)
    return F.logsigmoid(b) + F.logsigmoid(-a) + torch.log(-torch.expm1(a - b))


def mlp_with_dropout(n_in: int, hidden: int, n_out: int, depth: int = 2,
                     dropout: float = 0.0,
                     activation: type[nn.Module] = nn.GELU) -> nn.Sequential:
    """n_in -> hidden (activation, dropout) x depth -> n_out.

    Defined in book/03_vae.md, section "A likelihood for discrete pixels".
    """
    layers, width = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), activation(), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, n_out))


class VAE(nn.Module):
    """A variational autoencoder for the 8x8 digits.

    x has shape (n, 64), torch.long levels 0..16. q_phi(z | x) = N(mu, diag exp(logvar))
    from an MLP encoder; p(z) = N(0, I); p_theta(x | z) a product over pixels of a
    mixture of `components` discretized logistics (likelihood="logistic") or of 17-way
    categoricals (likelihood="categorical"), from an MLP decoder.
    Defined in book/03_vae.md, section "A likelihood for discrete pixels".
    """

    def __init__(self, z_dim: int = 16, hidden: int = 512, likelihood: str = "logistic",
                 components: int = 3, dropout: float = 0.1, dim: int = 64):
        super().__init__()
        if likelihood not in ("logistic", "categorical"):
            raise ValueError("likelihood must be 'logistic' or 'categorical', "
                             f"got {likelihood!r}")
        self.z_dim, self.dim, self.likelihood = z_dim, dim, likelihood
        self.components = components
        # decoder outputs per pixel
        self.n_out = 3 * components if likelihood == "logistic" else LEVELS
        self.encoder = mlp_with_dropout(dim, hidden, 2 * z_dim, dropout=dropout)
        self.decoder = mlp_with_dropout(z_dim, hidden, self.n_out * dim,
                                        dropout=dropout)

    def encode(self, x):
        """(mu, logvar) of q_phi(z | x), each of shape (n, z_dim)."""
        x = data.check_levels(x, LEVELS, self.dim)
        return self.encoder(x.float() / 8 - 1).chunk(2, dim=-1)

    def _decode(self, z):
        """The decoder's outputs for each pixel: shape (..., dim, n_out)."""
        return self.decoder(z).unflatten(-1, (self.n_out, self.dim)).transpose(-1, -2)

    def _mixture_log_prob(self, out, x):
        """log of each pixel's mixture of discretized logistics at levels x.

        x is broadcast against out[..., 0].
        """
        # each of shape (..., components)
        logits, mean, log_scale = out.unflatten(-1, (3, self.components)).unbind(-2)
        log_p = discretized_logistic_log_prob(x[..., None], 8 + mean,
                                              log_scale.clamp(min=-5))
        return torch.logsumexp(F.log_softmax(logits, -1) + log_p, dim=-1)

    def log_lik(self, x, z):
        """log p_theta(x | z), summed over pixels.

        x of shape (n, dim) and z of shape (..., n, z_dim) give shape (..., n).
        """
        out = self._decode(z)
        if self.likelihood == "categorical":
            log_p = (F.log_softmax(out, -1)
                     .gather(-1, x.expand(*out.shape[:-1])[..., None]).squeeze(-1))
        else:
            # only at the observed levels: 17 times cheaper
            log_p = self._mixture_log_prob(out, x)
        return log_p.sum(-1)

    def pixel_log_probs(self, z):
        """log p_theta(x_i = k | z) for every pixel i and level k.

        Shape (..., dim, 17) for z of shape (..., z_dim).
        """
        out = self._decode(z)
        if self.likelihood == "categorical":
            return F.log_softmax(out, -1)
        return self._mixture_log_prob(out[..., None, :],
                                      torch.arange(LEVELS, device=z.device))

    def elbo_terms(self, x, per_dim: bool = False):
        """The ELBO's two terms (eq. vae-elbo): reconstruction and KL.

        The reconstruction log p(x | z) at one sample z ~ q, shape (n,), and
        KL(q || p(z)), shape (n,), or (n, z_dim) per latent dimension with per_dim=True.
        """
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)
        zero = torch.zeros_like(mu)
        # KL of a diagonal Gaussian is a sum over dimensions; with per_dim=True each
        # dimension j is passed as its own 1-D Gaussian (a trailing axis of size 1),
        # so kl_diag_gaussians returns the summands KL(q_j || N(0, 1)), shape (n, z_dim)
        if per_dim:
            return self.log_lik(x, z), kl_diag_gaussians(
                mu[..., None], logvar[..., None], zero[..., None], zero[..., None])
        return self.log_lik(x, z), kl_diag_gaussians(mu, logvar, zero, zero)

    def elbo(self, x):
        """A one-sample estimate of the ELBO of each image in nats, shape (n,)."""
        reconstruction, kl = self.elbo_terms(x)
        return reconstruction - kl

    @torch.no_grad()
    def log_prob(self, x, k: int = 1000, chunk: int = 100):
        """Importance-sampled estimate of log p_theta(x) (eq. iwae), shape (n,).

        It uses k samples of q_phi(z | x), and the model as it is: call model.eval()
        first (fit does) so that dropout is off.
        """
        mu, logvar = self.encode(x)
        q = Normal(mu, (0.5 * logvar).exp())
        log_w = []
        for start in range(0, k, chunk):
            z = q.sample((min(chunk, k - start),))  # (chunk, n, z_dim)
            log_w.append(self.log_lik(x, z) + Normal(0.0, 1.0).log_prob(z).sum(-1)
                         - q.log_prob(z).sum(-1))
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)

    @torch.no_grad()
    def decode_mean(self, z):
        """The expected pixel values E[x | z], shape (n, dim).

        A picture of what z encodes (in eval mode, no dropout).
        """
        levels = torch.arange(LEVELS, dtype=z.dtype, device=z.device)
        return (self.pixel_log_probs(z).exp() * levels).sum(-1)

    @torch.no_grad()
    def sample(self, n: int):
        """n images x ~ p_theta(x | z), z ~ p(z) (in eval mode, no dropout).

        Shape (n, dim), torch.long levels 0..16.
        """
        z = torch.randn(n, self.z_dim, device=next(self.parameters()).device)
        return torch.distributions.Categorical(logits=self.pixel_log_probs(z)).sample()


def vae_loss(beta: float = 1.0, warmup_steps: int = 0, free_bits: float = 0.0,
             shift: bool = True, record=None):
    """The training loss for `fit`: the batch average of -[reconstruction - beta_t KL].

    beta_t = beta * min(1, t / warmup_steps) (KL warm-up). With free_bits > 0 each
    latent dimension's batch-average KL counts as at least free_bits nats. While
    training, images are shifted by up to one pixel (data.shift_digits), and `record` (a
    dict of lists), if given, receives the batch means of both terms. In evaluation the
    loss is the plain negative ELBO.
    Defined in book/03_vae.md, section "A likelihood for discrete pixels".
    """
    step = 0

    def loss(model, x):
        nonlocal step
        if not model.training:
            return -model.elbo(x).mean()
        step += 1
        beta_t = beta * (min(1.0, step / warmup_steps) if warmup_steps else 1.0)
        reconstruction, kl = model.elbo_terms(data.shift_digits(x) if shift else x,
                                              per_dim=True)
        kl_term = (kl.mean(0).clamp(min=free_bits).sum() if free_bits
                   else kl.sum(-1).mean())
        if record is not None:
            record.setdefault("reconstruction", []).append(reconstruction.mean().item())
            record.setdefault("KL", []).append(kl.sum(-1).mean().item())
        return -(reconstruction.mean() - beta_t * kl_term)

    return loss
