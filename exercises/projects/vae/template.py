"""Project 2: a variational autoencoder of your own. Fill in every TODO; do not rename anything.

Copy this file, fill it in, and run the grader on your copy from the repository root:

    .venv/bin/python -m dgm.grade exercises/projects/vae --submission my_vae.py

The conventions are those of the VAE chapter: images x are torch.long tensors of shape (n, 64)
with levels 0..16; the encoder gives (mu, logvar) of q_phi(z | x) = N(mu, diag exp(logvar)); the
prior is N(0, I); the decoder gives 17 logits per pixel, a categorical p_theta(x_i | z).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

LEVELS, DIM = 17, 64


def reparameterize(mu, logvar):
    """A sample z ~ N(mu, diag exp(logvar)) that is differentiable in mu and logvar; same shape as mu."""
    # TODO (1 point): the reparameterization trick, z = mu + sigma * eps with eps ~ N(0, I).
    raise NotImplementedError("the reparameterization trick, z = mu + sigma * eps with eps ~ N(0, I).")


def kl_to_standard_normal(mu, logvar):
    """KL( N(mu, diag exp(logvar)) || N(0, I) ) in nats for each row: (n, d) -> (n,)."""
    # TODO (2 points): the closed form, summed over the latent dimensions.
    raise NotImplementedError("the closed form, summed over the latent dimensions.")


class VAE(nn.Module):
    """Encoder and decoder MLPs. Given; do not change."""

    def __init__(self, z_dim=16, hidden=256):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(nn.Linear(DIM, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, DIM * LEVELS))

    def encode(self, x):
        """(mu, logvar) of q_phi(z | x), each (n, z_dim)."""
        return self.encoder(x.to(self.encoder[0].weight.dtype) / 8 - 1).chunk(2, dim=-1)

    def log_lik(self, x, z):
        """log p_theta(x | z), summed over pixels: x (n, 64) and z (..., n, z_dim) give (..., n)."""
        logits = self.decoder(z).unflatten(-1, (DIM, LEVELS))
        return F.log_softmax(logits, -1).gather(-1, x.expand(*logits.shape[:-1])[..., None]).squeeze(-1).sum(-1)

    def elbo(self, x):
        """A one-sample estimate of the ELBO of each image, shape (n,): log p(x | z) - KL(q(z | x) || p(z))."""
        # TODO (2 points): encode, draw z with reparameterize, and combine the two terms.
        raise NotImplementedError("encode, draw z with reparameterize, and combine the two terms.")


def train(model, x_train, epochs=40, batch_size=100, lr=2e-3, seed=0):
    """Maximize the ELBO of x_train (torch.long, (n, 64)) with minibatch Adam; return the epoch-mean -ELBO.

    The grader trains VAE() on the 1000 training digits and expects a test -ELBO below 103 nats
    per image (the budget is yours, in epochs).
    """
    # TODO (3 points): minibatch Adam on the mean negative ELBO; return the list of epoch-mean losses.
    raise NotImplementedError("minibatch Adam on the mean negative ELBO; return the list of epoch-mean losses.")


@torch.no_grad()
def iwae_log_prob(model, x, k):
    """The importance-weighted estimate of log p_theta(x) with k samples of q_phi(z | x), shape (n,)."""
    # TODO (2 points): log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), computed stably in log space.
    raise NotImplementedError("log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), computed stably in log space.")
