"""Project 1: a normalizing flow of your own. Fill in every TODO; do not rename anything.

Copy this file, fill it in, and run the grader on your copy from the repository root:

    .venv/bin/python -m dgm.grade exercises/projects/flows --submission my_flows.py

The conventions are those of the flows chapter: a layer's forward(x) returns (z, log|det dz/dx|)
per example, inverse(z) returns (x, log|det dx/dz|), and a flow has log_prob(x) and sample(n).
"""

import math

import torch
from torch import nn


class Coupling(nn.Module):
    """Affine coupling z_B = x_B * exp(s(x_A)) + t(x_A), z_A = x_A, for 2D data.

    `mask` is a float tensor of shape (2,): 1 for the coordinate A that conditions, 0 for B.
    `self.net` maps the masked input (n, 2) to (n, 4): the raw s and t for both coordinates.
    """

    def __init__(self, mask, hidden=64):
        super().__init__()
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 4))

    def s_t(self, x_a):
        """s and t (each (n, 2)) from the masked input, zero on the A coordinate. Given; do not change."""
        s, t = self.net(x_a).chunk(2, dim=1)
        return torch.tanh(s) * (1 - self.mask), t * (1 - self.mask)

    def forward(self, x):
        """Return z and log|det dz/dx| (shape (n,))."""
        # TODO (2 points): apply the coupling of the chapter: z_B = x_B * exp(s(x_A)) + t(x_A), z_A = x_A.
        raise NotImplementedError("apply the coupling of the chapter: z_B = x_B * exp(s(x_A)) + t(x_A), z_A = x_A.")

    def inverse(self, z):
        """Return x and log|det dx/dz| (shape (n,))."""
        # TODO (2 points): invert forward exactly, with the log-determinant of the inverse.
        raise NotImplementedError("invert forward exactly, with the log-determinant of the inverse.")


class CouplingFlow(nn.Module):
    """n_layers couplings with alternating masks [1, 0], [0, 1], ... on a standard normal base."""

    def __init__(self, n_layers=8, hidden=64):
        super().__init__()
        masks = [torch.tensor([1.0, 0.0]) if k % 2 == 0 else torch.tensor([0.0, 1.0]) for k in range(n_layers)]
        self.layers = nn.ModuleList(Coupling(m, hidden) for m in masks)

    def log_prob(self, x):
        """Exact log-density (nats) of x with shape (n, 2); returns shape (n,)."""
        # TODO (2 points): change of variables through all layers, standard normal base.
        raise NotImplementedError("change of variables through all layers, standard normal base.")

    @torch.no_grad()
    def sample(self, n):
        """n samples, shape (n, 2)."""
        # TODO (1 point): draw z ~ N(0, I) and run the layers' inverses in reverse order.
        raise NotImplementedError("draw z ~ N(0, I) and run the layers' inverses in reverse order.")


def train(flow, x, epochs=30, batch_size=256, lr=2e-3, seed=0):
    """Fit `flow` to the points x (n, 2) by maximum likelihood; return the list of epoch-mean losses.

    The grader trains CouplingFlow() on 10 000 points of the "moons" toy and expects a held-out
    NLL within 0.15 nats of the true entropy (the budget is yours, in epochs, not seconds).
    """
    # TODO (3 points): minibatch Adam on the mean negative log-likelihood; return the epoch-mean losses.
    raise NotImplementedError("minibatch Adam on the mean negative log-likelihood; return the epoch-mean losses.")
