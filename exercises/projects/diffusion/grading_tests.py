"""The grading tests of project 3 (10 points). Each test grades one part, worth its `grades` mark.

How they work (`python -m dgm.grade exercises/projects/diffusion --submission my.py` runs them):

- A test's body runs in the grader's process, which never imports your file. It builds the
  inputs, calls `run(fn, ...)`, and checks what comes back against closed forms it computes
  itself (with the reference solution's schedule).
- `run(fn, ...)` executes the function `fn` below in a fresh process of your own. There `sub`
  is your file with every part *except the one graded* taken from the reference solution, so
  the test of `sample` runs your loop with the reference `p_sample_step`, the test of `train`
  your loop with the reference `eps_loss`, and a bug in one part costs only that part's points.
- The noise predictor of the loss, step and sampler tests is `ExactEps`, the exact
  E[eps | x_t] of Gaussian data N(m, s^2 I): everything about it is known in closed form.
"""

import math

import torch
from torch import nn

from dgm import data, metrics
from dgm.grade import expect_close, expect_tensor, grades, reference

ref = reference("diffusion")
T = 1000
DATA_MEAN, DATA_STD = (1.0, -2.0), 0.5  # the Gaussian data of the exact noise predictor
SE = 5.0  # statistical checks allow 5 standard errors (a correct submission fails one in a million)


def exact_eps(alpha_bar, xt, t, m=DATA_MEAN, s=DATA_STD):
    """E[eps | x_t] for x_0 ~ N(m, s^2 I): x_t ~ N(sqrt(ab) m, v I) with v = ab s^2 + 1 - ab, and
    eps = (x_t - sqrt(ab) x_0) / sqrt(1 - ab), so E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) m) / v."""
    ab = alpha_bar.double()[t - 1][:, None]
    m = torch.tensor(m, dtype=torch.float64)
    return ((1 - ab).sqrt() * (xt.double() - ab.sqrt() * m) / (ab * s**2 + 1 - ab)).to(xt.dtype)


class ExactEps(nn.Module):
    """The exact noise predictor of Gaussian data, recording how it is called: for each call the
    row (smallest t, largest t, number of t's, 1 if t is a torch.long tensor), and the x_t of the
    first call at each step listed in ``keep``."""

    def __init__(self, alpha_bar, keep=()):
        super().__init__()
        self.register_buffer("alpha_bar", alpha_bar.double().clone())
        self.unused = nn.Parameter(torch.zeros(0))  # so that next(model.parameters()) works
        self.keep, self.kept, self.calls = set(keep), {}, []

    def forward(self, xt, t):
        is_long = isinstance(t, torch.Tensor) and t.dtype == torch.long
        t = torch.as_tensor(t).reshape(-1).long()
        self.calls.append([int(t.min()), int(t.max()), t.numel(), int(is_long)] if t.numel() else [0, 0, 0, 0])
        if t.numel() == 1:
            t = t.expand(len(xt))
        if t.numel() and int(t.min()) == int(t.max()) and int(t[0]) in self.keep and int(t[0]) not in self.kept:
            self.kept[int(t[0])] = xt.detach().clone()
        return exact_eps(self.alpha_bar, xt, t)


class Predictor(nn.Module):
    """The models of the loss test: "zero" (predicts no noise), "exact" (ExactEps) or "linear" (a
    Linear(2, 2) layer, to check the gradient); each records the t's it is called with."""

    def __init__(self, kind, alpha_bar):
        super().__init__()
        self.kind, self.exact, self.ts = kind, ExactEps(alpha_bar), []
        self.linear = nn.Linear(2, 2)

    def forward(self, xt, t):
        self.ts.append(t.detach().clone() if isinstance(t, torch.Tensor) else f"<a {type(t).__name__}>")
        if self.kind == "zero":
            return torch.zeros_like(xt)
        if self.kind == "exact":
            return self.exact(xt, t)
        return self.linear(xt)


# ---- computed in your process: `sub` is your file, the reference for every other part


def schedule_calls(sub, cases):
    return [sub.make_schedule(*args) for args in cases]


def q_sample_calls(sub, cases, schedule):
    return [sub.q_sample(x0, t, schedule, eps) for x0, t, eps in cases]


def loss_calls(sub, x0, schedule):
    out = {}
    for kind in ("zero", "exact"):
        model = Predictor(kind, schedule["alpha_bar"])
        out[kind] = {"loss": sub.eps_loss(model, x0, schedule), "t": model.ts}
    torch.manual_seed(0)
    model = Predictor("linear", schedule["alpha_bar"])
    loss = sub.eps_loss(model, x0[:500], schedule)
    tracked = isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad
    if tracked:
        loss.reshape(()).backward()
    out["linear"] = {"requires_grad": tracked, "grads": [p.grad for p in model.linear.parameters()]}
    return out


def step_calls(sub, xt, z, ts, schedule):
    model = ExactEps(schedule["alpha_bar"])
    outs, seen = [], []
    for t in ts:
        before = len(model.calls)
        outs.append(sub.p_sample_step(model, xt, t, schedule, z))
        seen.append(model.calls[before:])
    return {"out": outs, "seen": seen}


#: The steps whose x_t the sampler test keeps: x_T, and pairs (x_t, x_{t-1}) that give the noise of step t.
KEEP = (T, T - 1, T - 2, 601, 600, 3, 2, 1)
NOISE_STEPS = (T, T - 1, 601, 3, 2)


def sample_calls(sub, n, schedule):
    model = ExactEps(schedule["alpha_bar"], keep=KEEP)
    x = sub.sample(model, n, schedule)
    return {"x": x, "calls": torch.tensor(model.calls, dtype=torch.long).reshape(-1, 4), "kept": model.kept}


def train_calls(sub, x, schedule):
    out = sub.train(x, schedule)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"train must return the pair (model, losses), got a {type(out).__name__}")
    model, losses = out
    if not isinstance(model, nn.Module):
        raise TypeError(f"train must return the trained EpsNet first, got a {type(model).__name__}")
    return {"state": model.state_dict(), "losses": losses}


# ---- the grader's closed forms


def closed_schedule(T, beta_1=1e-4, beta_T=0.02):
    """beta_t = beta_1 + (beta_T - beta_1) (t - 1) / (T - 1), alpha_t = 1 - beta_t and
    alpha_bar_t = prod_{s <= t} alpha_s, in float64."""
    t = torch.arange(1, T + 1, dtype=torch.float64)
    beta = beta_1 + (beta_T - beta_1) * (t - 1) / (T - 1)
    alpha = 1 - beta
    return {"beta": beta, "alpha": alpha, "alpha_bar": torch.cumprod(alpha, 0)}


def step_parts(schedule, t):
    """(beta_t, alpha_t, alpha_bar_t, beta_tilde_t) in float64, with alpha_bar_0 = 1."""
    beta, alpha, ab = (schedule[k].double()[t - 1] for k in ("beta", "alpha", "alpha_bar"))
    ab_prev = schedule["alpha_bar"].double()[t - 2] if t > 1 else torch.tensor(1.0, dtype=torch.float64)
    return beta, alpha, ab, (1 - ab_prev) / (1 - ab) * beta


def step_mean(schedule, xt, t):
    """The mean of p(x_{t-1} | x_t) with the exact predictor, in float64."""
    beta, alpha, ab, _ = step_parts(schedule, t)
    eps_hat = exact_eps(schedule["alpha_bar"], xt.double(), torch.full((len(xt),), t))
    return (xt.double() - beta / (1 - ab).sqrt() * eps_hat) / alpha.sqrt()


def sampler_law(schedule):
    """The exact law of the ancestral sampler with the exact predictor of N(m, s^2 I): each step is
    affine in x_t plus Gaussian noise, x_{t-1} = A_t x_t + b_t + sqrt(beta_tilde_t) z, so from
    x_T ~ N(0, I) the output is N(mean, std^2 I) with mean and std computed here. It differs from the
    data's N(m, s^2 I) by the (small) error of Gaussian reverse steps of finite size."""
    m = torch.tensor(DATA_MEAN, dtype=torch.float64)
    mean, var = torch.zeros(2, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    for t in range(T, 0, -1):
        beta, alpha, ab, beta_tilde = step_parts(schedule, t)
        c = beta / (ab * DATA_STD**2 + 1 - ab)  # eps_hat's coefficient of x_t times beta_t / sqrt(1 - ab)
        mean = ((1 - c) * mean + c * ab.sqrt() * m) / alpha.sqrt()
        var = (1 - c) ** 2 / alpha * var + beta_tilde
    return mean, var.sqrt()


def _steps(values) -> str:
    values = [int(v) for v in values]
    if not values:
        return "none (never called)"
    if len(values) <= 8:
        return ", ".join(map(str, values))
    return ", ".join(map(str, values[:3])) + ", ..., " + ", ".join(map(str, values[-3:]))


# ---- the tests, decided in the grader's process


@grades("make_schedule", points=1)
def test_make_schedule(run):
    cases = [(1000,), (1000, 1e-4, 0.02), (50, 1e-3, 0.05), (7, 0.1, 0.4)]
    out = run(schedule_calls, cases=cases)
    for args, got in zip(cases, out):
        want = closed_schedule(*args)
        call = f"make_schedule({', '.join(f'{a:g}' for a in args)})"
        assert isinstance(got, dict), f"{call} must return a dict with keys 'beta', 'alpha', 'alpha_bar', got {got!r:.80}"
        for key, form in (("beta", "linear from beta_1 to beta_T"), ("alpha", "1 - beta"),
                          ("alpha_bar", "the cumulative product of alpha")):
            assert key in got, f"{call} has no key {key!r} (keys: {sorted(got)})"
            value = expect_tensor(got[key], (args[0],), f"{call}[{key!r}]")
            assert value.is_floating_point(), f"{call}[{key!r}] must be a float tensor, got {value.dtype}"
            expect_close(value, want[key], f"{call}[{key!r}] ({form})", atol=1e-7, rtol=1e-4)


@grades("q_sample", points=1)
def test_q_sample(run):
    s = ref.make_schedule(T)
    t_fixed = torch.tensor([1, 2, 3, 10, 100, 300, 500, 750, 999, 1000])
    t_random = torch.randint(1, T + 1, (256,))
    cases = [(2 * torch.randn(len(t), 2), t, torch.randn(len(t), 2)) for t in (t_fixed, t_random)]
    out = run(q_sample_calls, cases=cases, schedule=s)
    for (x0, t, eps), got in zip(cases, out):
        ab = s["alpha_bar"].double()[t - 1][:, None]
        want = ab.sqrt() * x0.double() + (1 - ab).sqrt() * eps.double()
        what = ("q_sample at t = " + _steps(t.tolist()) if len(t) <= 10 else f"q_sample at {len(t)} random steps") + \
            ", x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps with alpha_bar_t at index t - 1,"
        expect_close(got, want, what, atol=1e-6, rtol=1e-5)


def _check_steps(ts, n):
    assert ts, "eps_loss must call the model on (x_t, t): it was never called"
    assert all(isinstance(t, torch.Tensor) for t in ts), \
        f"eps_loss must call the model with t a tensor of steps, got {[t for t in ts if isinstance(t, str)][:3]}"
    assert all(t.dtype == torch.long for t in ts), \
        f"t must be a torch.long tensor of integer steps, got {sorted({str(t.dtype) for t in ts})}"
    t = torch.cat([t.reshape(-1) for t in ts])
    assert len(t) == n, (f"eps_loss must draw one step t per row: the model saw {len(t)} t's for a batch of {n} rows "
                         f"(shapes {[tuple(t.shape) for t in ts][:3]})")
    lo, hi, distinct = int(t.min()), int(t.max()), len(torch.unique(t))
    assert lo >= 1 and hi <= T, f"t must be a step in 1..T = 1..{T}, got values from {lo} to {hi}"
    assert distinct > 900, (f"t must be drawn for each row: {n} rows got only {distinct} distinct steps "
                            f"(about {T} expected); is one t drawn for the whole batch?")
    assert lo == 1 and hi == T, f"t must be uniform on 1..{T}, both ends included: the {n} draws range from {lo} to {hi}"
    mean, se = t.double().mean().item(), math.sqrt((T**2 - 1) / 12 / n)
    assert abs(mean - (T + 1) / 2) < SE * se, \
        f"t must be uniform on 1..{T}: mean {mean:.1f}, expected {(T + 1) / 2} ± {SE * se:.1f}"
    counts = torch.bincount((t - 1) * 10 // T, minlength=10).double()
    chi2 = ((counts - n / 10) ** 2 / (n / 10)).sum().item()
    assert chi2 < 40, (f"t must be uniform on 1..{T}: the counts in ten bins of steps are {counts.long().tolist()} "
                       f"(chi-square {chi2:.0f} with 9 degrees of freedom, allowed 40)")


@grades("eps_loss", points=2)
def test_eps_loss(run):
    n = 20_000
    x0 = torch.tensor(DATA_MEAN) + DATA_STD * torch.randn(n, 2)
    s = ref.make_schedule(T)
    out = run(loss_calls, x0=x0, schedule=s)
    losses = {}
    for kind in ("zero", "exact"):
        loss = out[kind]["loss"]
        assert isinstance(loss, torch.Tensor) and loss.numel() == 1 and torch.isfinite(loss).all(), \
            f"eps_loss must return the batch mean, a finite scalar tensor; got {loss!r:.80}"
        losses[kind] = loss.item()
    _check_steps(out["zero"]["t"], n)
    # the zero predictor leaves ||eps||^2 ~ chi-square(2): mean 2, variance 4 per row; the mean over
    # the two coordinates halves the loss (and its standard error): the same minimizer, also accepted
    scales = {"the sum over coordinates": 1.0, "the mean over coordinates": 0.5}
    se0 = 2 / math.sqrt(n)
    scale = [(name, c) for name, c in scales.items() if abs(losses["zero"] - 2 * c) < SE * c * se0]
    assert scale, (f"with a zero predictor the loss must be E||eps||^2 = 2 ± {SE * se0:.3f} (sum over coordinates) "
                   f"or 1 ± {SE * se0 / 2:.3f} (mean over coordinates); got {losses['zero']:.4f}")
    (name, c), = scale
    # the exact predictor leaves E Var(eps | x_t) = 2 r_t with r_t = 1 - (1 - ab_t) / v_t per
    # coordinate, averaged over t uniform on 1..T; per row the loss is r_t chi-square(2)
    ab = s["alpha_bar"].double()
    r = 1 - (1 - ab) / (ab * DATA_STD**2 + 1 - ab)
    want = 2 * r.mean().item()
    se = math.sqrt((4 * r**2).mean().item() + (2 * r).var(unbiased=False).item()) / math.sqrt(n)
    assert abs(losses["exact"] - c * want) < SE * c * se, (
        f"with the exact noise predictor of Gaussian data the loss must be E_t E Var(eps | x_t) = {c * want:.4f} "
        f"± {SE * c * se:.4f} ({name}, as the zero predictor's {losses['zero']:.3f} says); got {losses['exact']:.4f}")
    linear = out["linear"]
    assert linear["requires_grad"], "the loss must be differentiable in the model's parameters (it has no gradient)"
    grads = linear["grads"]
    assert all(isinstance(g, torch.Tensor) for g in grads), \
        "the loss must be differentiable in the model's parameters: a layer's weights got no gradient"
    assert all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0, \
        f"the loss's gradient in the model's parameters must be finite and not zero, got {[g.tolist() for g in grads]}"


@grades("p_sample_step", points=2)
def test_p_sample_step(run):
    s = ref.make_schedule(T)
    n, ts = 64, [1, 2, 300, 1000]
    xt, z = 1.5 * torch.randn(n, 2), torch.randn(n, 2)
    out = run(step_calls, xt=xt, z=z, ts=ts, schedule=s)
    for t, got, seen in zip(ts, out["out"], out["seen"]):
        *_, beta_tilde = step_parts(s, t)
        want = step_mean(s, xt, t) + beta_tilde.sqrt() * z.double()
        seen_t = sorted({v for call in seen for v in call[:2]})
        note = "" if seen_t == [t] else f"; the model was called with t = {seen_t}"
        expect_close(got, want, f"the step at t = {t}, mean (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / "
                     f"sqrt(alpha_t) plus sqrt(beta_tilde_t) z (beta_tilde_1 = 0){note},", atol=1e-5, rtol=1e-5)


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return ((a * b).mean() / (a.std(unbiased=False) * b.std(unbiased=False))).item()


def _standard_normal(v, what, n):
    mean, std = v.mean(0), v.std(0)
    assert (mean.abs() < SE / math.sqrt(n)).all() and ((std - 1).abs() < SE / math.sqrt(2 * n)).all(), (
        f"{what} must be standard normal: mean {[round(m, 3) for m in mean.tolist()]} and standard deviation "
        f"{[round(v, 3) for v in std.tolist()]} over {n} rows (expected 0 ± {SE / math.sqrt(n):.3f} and "
        f"1 ± {SE / math.sqrt(2 * n):.3f})")
    assert abs(_corr(v[:, 0], v[:, 1])) < SE / math.sqrt(n), \
        f"{what} must have independent coordinates: correlation {_corr(v[:, 0], v[:, 1]):.3f}"


@grades("sample", points=1)
def test_sample(run):
    s = ref.make_schedule(T)
    n = 20_000
    out = run(sample_calls, n=n, schedule=s)
    x = expect_tensor(out["x"], (n, 2), f"sample(model, {n}, schedule)")
    calls = out["calls"]
    seen = calls[:, 0].tolist()
    assert len(calls) == T and seen == list(range(T, 0, -1)), (
        f"the reverse loop must call the model once per step, at t = {T}, {T - 1}, ..., 1; it was called "
        f"{len(calls)} times, at t = {_steps(seen)}")
    assert (calls[:, 1] == calls[:, 0]).all() and (calls[:, 2] == n).all() and (calls[:, 3] == 1).all(), (
        f"each step must call the model on the whole batch with t a torch.long tensor of {n} equal steps; "
        f"got {int((calls[:, 2] != n).sum())} calls on another number of rows, "
        f"{int((calls[:, 1] != calls[:, 0]).sum())} with mixed steps, {int((calls[:, 3] == 0).sum())} with t not long")
    kept = out["kept"]
    _standard_normal(kept[str(T)].double(), f"x_T (what the model sees at t = {T})", n)
    for t in NOISE_STEPS:  # the noise of step t: z = (x_{t-1} - mean(x_t)) / sqrt(beta_tilde_t)
        *_, beta_tilde = step_parts(s, t)
        z = (kept[str(t - 1)].double() - step_mean(s, kept[str(t)], t)) / beta_tilde.sqrt()
        _standard_normal(z, f"the noise z of step {t} (recovered from x_{t} and x_{t - 1})", n)
        kept[f"z{t}"] = z
    for a, b in ((T, T - 1), (T - 1, 601), (601, 3), (3, 2), (T, 2)):
        c = _corr(kept[f"z{a}"].reshape(-1), kept[f"z{b}"].reshape(-1))
        assert abs(c) < SE / math.sqrt(2 * n), (
            f"each step needs fresh noise: the noises of steps {a} and {b} have correlation {c:.3f} "
            f"(expected 0 ± {SE / math.sqrt(2 * n):.3f}); is one z drawn for all steps?")
    mean, std = sampler_law(s)  # the sampler's exact law, from x_T ~ N(0, I)
    got_mean, got_std = x.double().mean(0), x.double().std(0)
    tol_mean, tol_std = SE * std.item() / math.sqrt(n), SE * std.item() / math.sqrt(2 * n)
    assert ((got_mean - mean).abs() < tol_mean).all() and ((got_std - std).abs() < tol_std).all(), (
        f"with the exact noise predictor of N({list(DATA_MEAN)}, {DATA_STD}^2 I) the samples must follow "
        f"N([{mean[0]:.3f}, {mean[1]:.3f}], {std:.4f}^2 I) (the data's law up to the error of Gaussian reverse steps); "
        f"got mean {[round(v, 3) for v in got_mean.tolist()]} (± {tol_mean:.3f} allowed) and standard deviation "
        f"{[round(v, 4) for v in got_std.tolist()]} (± {tol_std:.4f} allowed)")


@grades("train", points=3)
def test_training_covers_8gaussians(run):
    s = ref.make_schedule(T)
    out = run(train_calls, x=data.toy("8gaussians", 20_000, seed=0), schedule=s)
    losses = out["losses"]
    try:
        losses = [float(v) for v in losses]
    except (TypeError, ValueError):
        raise AssertionError(f"train must return the list of its losses (numbers), got {losses!r:.80}") from None
    bad = sum(not math.isfinite(v) for v in losses)
    assert losses and not bad, f"train must return a non-empty list of finite losses, got {len(losses)} with {bad} inf or nan"
    k = max(1, len(losses) // 10)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    assert last < first, f"the training loss must go down: mean of the first tenth {first:.3f}, of the last tenth {last:.3f}"
    model = ref.EpsNet(T=T)  # the trained weights, sampled with the reference sampler
    try:
        model.load_state_dict(out["state"])
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        raise AssertionError(f"the trained weights do not fit the given EpsNet(T={T}): {str(exc).splitlines()[0]}") from None
    torch.manual_seed(0)
    x = ref.sample(model, 2000, s)
    assert torch.isfinite(x).all(), "the trained model's samples (reference sampler) have inf or nan entries"
    covered, quality = metrics.mode_coverage(x, "8gaussians")
    assert covered == 8 and quality >= 0.8, (
        f"2000 samples of the trained model (reference sampler) cover {covered} of 8 components with "
        f"{100 * quality:.1f} % of high quality (target: 8 and >= 80 %)")
