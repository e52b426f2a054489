"""The grading tests of project 3 (10 points). Points per test are in its `points` mark.

They import the submission from the file named by DGM_SUBMISSION (default: template.py here);
`python -m dgm.grade exercises/projects/diffusion` runs them and adds up the points.
"""

import math
import time
from pathlib import Path

import pytest
import torch

from dgm import data, metrics
from dgm.grade import load_submission

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sub():
    return load_submission(HERE)


def _reference_schedule(T):
    beta = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    return {"beta": beta.float(), "alpha": (1 - beta).float(), "alpha_bar": torch.cumprod(1 - beta, 0).float()}


class _ExactEps(torch.nn.Module):
    """The exact noise predictor E[eps | x_t] for data x_0 ~ N(m, s^2 I) in 2D."""

    def __init__(self, schedule, m=(1.0, -2.0), s=0.5):
        super().__init__()
        self.ab, self.m, self.s = schedule["alpha_bar"].double(), torch.tensor(m, dtype=torch.float64), s
        self.seen_t = []

    def forward(self, xt, t):
        self.seen_t.append(t.detach().clone())
        ab = self.ab[t - 1][:, None]
        v = ab * self.s**2 + 1 - ab
        return ((1 - ab).sqrt() * (xt.double() - ab.sqrt() * self.m) / v).to(xt.dtype)


@pytest.mark.points(1)
def test_make_schedule(sub):
    s = sub.make_schedule(1000)
    want = _reference_schedule(1000)
    for key in ("beta", "alpha", "alpha_bar"):
        assert key in s, f"the schedule needs the key {key!r}"
        assert s[key].shape == (1000,), f"schedule[{key!r}] must have shape (T,)"
        torch.testing.assert_close(s[key].float(), want[key], rtol=1e-4, atol=1e-7, msg=f"schedule[{key!r}] is wrong")
    assert len(sub.make_schedule(10, 0.1, 0.2)["beta"]) == 10


@pytest.mark.points(1)
def test_q_sample(sub):
    s = _reference_schedule(1000)
    x0, eps = torch.randn(5, 2), torch.randn(5, 2)
    t = torch.tensor([1, 2, 100, 500, 1000])
    ab = s["alpha_bar"][t - 1][:, None]
    torch.testing.assert_close(sub.q_sample(x0, t, s, eps), ab.sqrt() * x0 + (1 - ab).sqrt() * eps,
                               msg="x_t must be sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, alpha_bar_t at index t - 1")


@pytest.mark.points(2)
def test_eps_loss(sub):
    s = _reference_schedule(1000)
    torch.manual_seed(0)
    x0 = torch.tensor([1.0, -2.0]) + 0.5 * torch.randn(20_000, 2)
    zero = lambda xt, t: torch.zeros_like(xt)
    loss0 = sub.eps_loss(zero, x0, s)
    assert loss0.ndim == 0, "eps_loss must return the batch mean, a scalar"
    assert abs(loss0.item() - 2.0) < 0.08, f"a zero predictor must score E||eps||^2 = 2, got {loss0.item():.3f}"
    exact = _ExactEps(s)
    loss = sub.eps_loss(exact, x0, s).item()
    # the exact predictor leaves E Var(eps | x_t) = E_t[1 - (1 - ab) / v] per dimension, averaged over uniform t
    ab = s["alpha_bar"].double()
    want = 2 * (1 - (1 - ab) / (ab * 0.25 + 1 - ab)).mean().item()
    assert abs(loss - want) < 0.05, f"with the exact predictor the loss should be about {want:.3f}, got {loss:.3f}"
    t = torch.cat(exact.seen_t)
    assert t.dtype == torch.long and t.min() >= 1 and t.max() <= 1000, "t must be integer steps in 1..T"
    assert abs(t.float().mean().item() - 500.5) < 10, "t must be uniform on 1..T"
    grad_model = torch.nn.Linear(2, 2)
    sub.eps_loss(lambda xt, tt: grad_model(xt), x0[:100], s).backward()
    assert grad_model.weight.grad is not None, "the loss must be differentiable in the model's parameters"


@pytest.mark.points(2)
def test_p_sample_step(sub):
    s = _reference_schedule(1000)
    model = _ExactEps(s)
    torch.manual_seed(1)
    xt, z = torch.randn(6, 2), torch.randn(6, 2)
    for t in (1, 2, 300, 1000):
        got = sub.p_sample_step(model, xt, t, s, z)
        beta, alpha, ab = s["beta"][t - 1], s["alpha"][t - 1], s["alpha_bar"][t - 1]
        ab_prev = s["alpha_bar"][t - 2] if t > 1 else torch.tensor(1.0)
        eps_hat = model(xt, torch.full((6,), t))
        want = (xt - beta / (1 - ab).sqrt() * eps_hat) / alpha.sqrt() + ((1 - ab_prev) / (1 - ab) * beta).sqrt() * z
        assert got.shape == xt.shape, "the step must keep the shape of x_t"
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=f"step t = {t} is wrong")


@pytest.mark.points(1)
def test_sample_recovers_gaussian_data(sub):
    s = _reference_schedule(1000)
    torch.manual_seed(2)
    x = sub.sample(_ExactEps(s), 4000, s)
    assert x.shape == (4000, 2)
    assert (x.mean(0) - torch.tensor([1.0, -2.0])).abs().max() < 0.05, f"sample mean {x.mean(0).tolist()}, data mean [1, -2]"
    assert (x.std(0) / 0.5 - 1).abs().max() < 0.08, f"sample std {x.std(0).tolist()}, data std 0.5"


@pytest.mark.points(3)
def test_training_covers_8gaussians(sub):
    s = sub.make_schedule(1000)
    x = data.toy("8gaussians", 20_000, seed=0)
    start = time.perf_counter()
    model, losses = sub.train(x, s)
    seconds = time.perf_counter() - start
    assert losses[-1] < losses[0], "the training loss must go down"
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in sub.EpsNet().parameters()), \
        "train an EpsNet, the given network"
    torch.manual_seed(0)
    covered, quality = metrics.mode_coverage(sub.sample(model, 2000, s), "8gaussians")
    assert covered == 8 and quality >= 0.8, f"{covered}/8 components covered, {100 * quality:.1f} % high quality (target: 8 and >= 80 %)"
    assert seconds < 120, f"training took {seconds:.0f} s (limit: 120 s)"
