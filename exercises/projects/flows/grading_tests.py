"""The grading tests of project 1 (10 points). Points per test are in its `points` mark.

They import the submission from the file named by DGM_SUBMISSION (default: template.py here);
`python -m dgm.grade exercises/projects/flows` runs them and adds up the points.
"""

import math
from pathlib import Path

import pytest
import torch

from dgm import data
from dgm.grade import load_submission

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sub():
    return load_submission(HERE)


def perturbed(module, scale):
    """module in float64 with random weights added (untrained layers are close to the identity)."""
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def random_coupling(sub, mask, seed=0):
    torch.manual_seed(seed)
    return perturbed(sub.Coupling(torch.tensor(mask), hidden=16), 0.5)


@pytest.mark.points(2)
def test_coupling_forward(sub):
    layer = random_coupling(sub, [1.0, 0.0])
    x = torch.randn(5, 2, dtype=torch.float64)
    z, log_det = layer(x)
    assert z.shape == (5, 2) and log_det.shape == (5,), "forward must return z (n, 2) and log_det (n,)"
    assert torch.equal(z[:, 0], x[:, 0]), "the conditioning coordinate (mask 1) must pass unchanged"
    for xi, ldi in zip(x, log_det):
        jac = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], xi)
        assert abs(torch.linalg.slogdet(jac)[1].item() - ldi.item()) < 1e-8, "log_det differs from the Jacobian's"


@pytest.mark.points(2)
def test_coupling_inverse(sub):
    layer = random_coupling(sub, [0.0, 1.0], seed=1)
    x = torch.randn(50, 2, dtype=torch.float64)
    z, log_det = layer(x)
    x_back, log_det_inv = layer.inverse(z)
    assert torch.allclose(x_back, x, atol=1e-10), "inverse(forward(x)) must give x back"
    assert torch.allclose(log_det_inv, -log_det, atol=1e-10), "the inverse's log_det must be minus the forward's"


def random_flow(sub, seed=2):
    torch.manual_seed(seed)
    return perturbed(sub.CouplingFlow(n_layers=4, hidden=16), 0.2)


@pytest.mark.points(2)
def test_flow_log_prob_is_a_normalized_density(sub):
    flow = random_flow(sub)
    h = 0.05
    ticks = torch.arange(-10 + h / 2, 10, h, dtype=torch.float64)
    xx, yy = torch.meshgrid(ticks, ticks, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    with torch.no_grad():
        log_p = flow.log_prob(grid)
    assert log_p.shape == (len(grid),), "log_prob must return shape (n,)"
    mass = log_p.exp().sum().item() * h * h
    assert abs(mass - 1) < 2e-3, f"the density integrates to {mass:.4f}, not 1"


@pytest.mark.points(1)
def test_flow_samples_map_to_a_standard_normal(sub):
    flow = random_flow(sub)
    torch.manual_seed(3)
    x = flow.sample(20_000)
    assert x.shape == (20_000, 2), "sample(n) must return shape (n, 2)"
    z = x
    with torch.no_grad():
        for layer in flow.layers:
            z, _ = layer(z)
    assert z.mean(0).abs().max() < 0.05 and (z.std(0) - 1).abs().max() < 0.05, "f(samples) is not N(0, I)"


@pytest.mark.points(3)
def test_training_reaches_the_target_on_moons(sub):
    torch.manual_seed(0)
    flow = sub.CouplingFlow()
    losses = sub.train(flow, data.toy("moons", 10_000, seed=1))
    assert len(losses) >= 1 and losses[-1] < losses[0], "the training loss must go down"
    with torch.no_grad():
        nll = -flow.log_prob(data.toy("moons", 10_000, seed=2)).mean().item()
    gap = nll - data.toy_entropy("moons")
    assert gap < 0.3, f"held-out NLL is {gap:.3f} nats above the entropy (target: < 0.3)"
