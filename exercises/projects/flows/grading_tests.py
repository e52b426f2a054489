"""The grading tests of project 1 (10 points). Each test grades one part, worth its `grades` mark.

How they work (`python -m dgm.grade exercises/projects/flows --submission my.py` runs them):

- A test's body runs in the grader's process, which never imports your file. It builds the
  inputs, calls `run(fn, ...)`, and checks what comes back against the formulas, which it
  computes itself from the reference solution.
- `run(fn, ...)` executes the function `fn` below in a fresh process of your own. There `sub`
  is your file with every part *except the one graded* taken from the reference solution, so
  the test of `Coupling.inverse` runs your `inverse` with the reference `forward`, and a bug in
  one part costs only that part's points.
"""

import math

import torch

from dgm import data
from dgm.grade import expect_close, expect_tensor, grades, reference

ref = reference("flows")


def random_coupling(mask, seed):
    """A reference coupling in float64 with random weights (untrained ones are near the identity)."""
    torch.manual_seed(seed)
    layer = ref.Coupling(torch.tensor(mask), hidden=16).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return layer


def random_flow(seed, n_layers=4):
    torch.manual_seed(seed)
    flow = ref.CouplingFlow(n_layers=n_layers, hidden=16).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


# ---- computed in your process: `sub` is your file, the reference for every other part


def coupling_calls(sub, method, cases):
    out = []
    for mask, state, x in cases:
        layer = sub.Coupling(mask, hidden=16).double()
        layer.load_state_dict(state)
        out.append(getattr(layer, method)(x))
    return out


def flow_log_prob(sub, state, x):
    flow = sub.CouplingFlow(n_layers=4, hidden=16).double()
    flow.load_state_dict(state)
    x = x.clone().requires_grad_(True)
    log_p = flow.log_prob(x)
    grad = torch.autograd.grad(log_p.sum(), x)[0] if isinstance(log_p, torch.Tensor) and log_p.requires_grad else None
    return log_p, grad


def flow_sample(sub, state, n):
    flow = sub.CouplingFlow(n_layers=4, hidden=16).double()
    flow.load_state_dict(state)
    return flow.sample(n)


def train_on_moons(sub, x):
    flow = sub.CouplingFlow()
    losses = sub.train(flow, x)
    return flow.state_dict(), losses


# ---- the tests, decided in the grader's process


def coupling_cases():
    cases = []
    for k, mask in enumerate(([1.0, 0.0], [0.0, 1.0])):
        layer = random_coupling(mask, seed=k)
        cases.append((layer, torch.tensor(mask), 2 * torch.randn(300, 2, dtype=torch.float64)))
    return cases


@grades("Coupling.forward", points=2)
def test_coupling_forward(run):
    cases = coupling_cases()
    out = run(coupling_calls, method="forward", cases=[(m, layer.state_dict(), x) for layer, m, x in cases])
    for (layer, mask, x), got in zip(cases, out):
        assert isinstance(got, (tuple, list)) and len(got) == 2, "forward must return the pair (z, log_det)"
        with torch.no_grad():
            s, t = layer.s_t(x * layer.mask)
        what = f"with mask {mask.tolist()}, forward's"
        expect_close(got[0], x * torch.exp(s) + t, f"{what} z = x * exp(s(x_A)) + t(x_A), z_A = x_A,", atol=1e-8)
        expect_close(got[1], s.sum(1), f"{what} log|det dz/dx| = sum of s(x_A)", atol=1e-8)


@grades("Coupling.inverse", points=2)
def test_coupling_inverse(run):
    cases = coupling_cases()
    out = run(coupling_calls, method="inverse", cases=[(m, layer.state_dict(), z) for layer, m, z in cases])
    for (layer, mask, z), got in zip(cases, out):
        assert isinstance(got, (tuple, list)) and len(got) == 2, "inverse must return the pair (x, log_det)"
        with torch.no_grad():
            s, t = layer.s_t(z * layer.mask)
            x = (z - t) * torch.exp(-s)
        what = f"with mask {mask.tolist()}, inverse's"
        expect_close(got[0], x, f"{what} x = (z - t(z_A)) * exp(-s(z_A)), x_A = z_A,", atol=1e-8)
        expect_close(got[1], -s.sum(1), f"{what} log|det dx/dz| = -sum of s(z_A)", atol=1e-8)
        with torch.no_grad():
            back, _ = layer(got[0])
        expect_close(back, z, f"{what} forward(inverse(z))", atol=1e-8)


@grades("CouplingFlow.log_prob", points=2)
def test_flow_log_prob(run):
    flow = random_flow(seed=2)
    with torch.no_grad():
        x = torch.cat([2 * torch.randn(200, 2, dtype=torch.float64), flow.sample(200)])
    log_p, grad = run(flow_log_prob, state=flow.state_dict(), x=x)
    want = x.clone().requires_grad_(True)
    log_p_ref = flow.log_prob(want)  # log N(f(x); 0, I) + sum of the layers' log-dets, layer 1 first
    (score,) = torch.autograd.grad(log_p_ref.sum(), want)
    expect_close(log_p, log_p_ref.detach(), "log_prob(x) = log N(f_K(...f_1(x)); 0, I) + sum_k log|det J_k|",
                 atol=1e-7)
    assert grad is not None, "log_prob must be differentiable in x and the parameters (training needs its gradient)"
    expect_close(grad, score, "the gradient of log_prob(x) in x", atol=1e-6)


@grades("CouplingFlow.sample", points=1)
def test_flow_sample(run):
    flow = random_flow(seed=3)
    n = 20_000
    x = expect_tensor(run(flow_sample, state=flow.state_dict(), n=n), (n, 2), "sample(n)")
    with torch.no_grad():  # x ~ p_flow exactly when f(x) ~ N(0, I)
        z = x.double()
        for layer in flow.layers:
            z, _ = layer(z)
    assert z.std(0).min() > 0.5, f"f(samples) has standard deviations {z.std(0).tolist()}, not 1: are they random?"
    normal = torch.distributions.Normal(0.0, 1.0)
    checks = {"first coordinate of f(x)": normal.cdf(z[:, 0]), "second coordinate of f(x)": normal.cdf(z[:, 1]),
              "|f(x)|^2 (chi-square with 2 degrees of freedom)": 1 - torch.exp(-(z**2).sum(1) / 2)}
    for what, u in checks.items():  # Kolmogorov-Smirnov: u is uniform when the samples follow the flow
        u = u.sort().values
        grid = torch.arange(1, n + 1, dtype=u.dtype) / n
        d = torch.maximum(grid - u, u - (grid - 1 / n)).max().item()
        assert d < 1.95 / math.sqrt(n), (f"the {what} does not follow N(0, I): Kolmogorov-Smirnov distance {d:.4f} "
                                         f"(allowed {1.95 / math.sqrt(n):.4f}); are the layers inverted in reverse order?")


@grades("train", points=3)
def test_training_reaches_the_target_on_moons(run):
    state, losses = run(train_on_moons, x=data.toy("moons", 10_000, seed=1))
    assert isinstance(losses, list) and len(losses) >= 1 and all(isinstance(v, float) for v in losses), \
        "train must return the list of epoch-mean losses (floats)"
    assert losses[-1] < losses[0], f"the training loss must go down: first {losses[0]:.3f}, last {losses[-1]:.3f}"
    flow = ref.CouplingFlow()  # the trained weights, scored with the reference log_prob
    try:
        flow.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise AssertionError(f"the trained weights do not fit the given CouplingFlow: {str(exc).splitlines()[0]}")
    with torch.no_grad():
        log_p = flow.log_prob(data.toy("moons", 10_000, seed=2))
    assert torch.isfinite(log_p).all(), "the trained flow gives inf or nan log-densities on held-out points"
    gap = -log_p.mean().item() - data.toy_entropy("moons")
    se = log_p.std().item() / math.sqrt(len(log_p))
    assert gap > -0.05, f"held-out NLL {gap:.3f} nats below the entropy: impossible for a normalized density"
    assert gap < 0.15, f"held-out NLL is {gap:.3f} ± {se:.3f} nats above the entropy (target: < 0.15)"
