"""Project 3: a denoising diffusion model of your own. Fill in every TODO; do not rename anything.

Copy this file, fill it in, and run the grader on your copy from the repository root:

    .venv/bin/python -m dgm.grade exercises/projects/diffusion --submission my_diffusion.py

The conventions are those of the diffusion chapter: steps t = 1..T, tensors indexed t - 1 for
step t, q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I), alpha_bar_t = prod_{s <= t} alpha_s,
and the data are points in R^2 (rows of a float tensor of shape (n, 2)).
"""

import math

import torch
from torch import nn


def make_schedule(T=1000, beta_1=1e-4, beta_T=0.02):
    """The linear schedule: a dict of float tensors of shape (T,) with keys "beta", "alpha", "alpha_bar"."""
    # TODO (1 point): betas linear from beta_1 to beta_T, alpha = 1 - beta, alpha_bar its cumulative product.
    raise NotImplementedError("betas linear from beta_1 to beta_T, alpha = 1 - beta, alpha_bar its cumulative product.")


def q_sample(x0, t, schedule, eps):
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps for each row; t is a long tensor (n,) of steps 1..T."""
    # TODO (1 point): the closed-form marginal q(x_t | x_0), with the given noise eps.
    raise NotImplementedError("the closed-form marginal q(x_t | x_0), with the given noise eps.")


class EpsNet(nn.Module):
    """The noise predictor eps_theta(x_t, t): an MLP on x_t and sinusoidal features of t/T. Given; do not change."""

    def __init__(self, T=1000, hidden=128, dim=2):
        super().__init__()
        self.T = T
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(200.0), 16)))
        self.net = nn.Sequential(nn.Linear(dim + 32, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, xt, t):
        arg = (t.float() / self.T)[:, None] * self.freqs
        return self.net(torch.cat([xt, torch.sin(arg), torch.cos(arg)], 1))


def eps_loss(model, x0, schedule):
    """The simple loss: the mean over the batch of ||eps - model(x_t, t)||^2, t uniform on 1..T, eps ~ N(0, I)."""
    # TODO (2 points): draw t and eps for every row, form x_t with q_sample, compare the prediction with eps.
    raise NotImplementedError("draw t and eps for every row, form x_t with q_sample, compare the prediction with eps.")


def p_sample_step(model, xt, t, schedule, z):
    """One ancestral step x_t -> x_{t-1} at the integer step t >= 1, with the standard normal noise z (shape of xt).

    mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_hat) / sqrt(alpha_t), variance beta_tilde_t =
    (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t (alpha_bar_0 = 1, so there is no noise at t = 1).
    """
    # TODO (2 points): the mean from the predicted noise, plus sqrt(beta_tilde_t) z.
    raise NotImplementedError("the mean from the predicted noise, plus sqrt(beta_tilde_t) z.")


@torch.no_grad()
def sample(model, n, schedule, dim=2):
    """n samples: x_T ~ N(0, I), then p_sample_step for t = T, ..., 1; returns x_0 of shape (n, dim)."""
    # TODO (1 point): the reverse loop.
    raise NotImplementedError("the reverse loop.")


def train(x, schedule, steps=3000, batch_size=256, lr=2e-3, seed=0):
    """Train an EpsNet on the points x (n, 2) with eps_loss; return the trained model and the list of losses.

    The grader trains on 8gaussians and expects samples that cover all 8 components with at least
    80 % of them within three standard deviations of a centre (the budget is yours, in steps).
    """
    # TODO (3 points): minibatch Adam on eps_loss (an average of the weights, or a decaying learning rate, helps).
    raise NotImplementedError("minibatch Adam on eps_loss (an average of the weights, or a decaying learning rate, helps).")
