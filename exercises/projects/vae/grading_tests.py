"""The grading tests of project 2 (10 points). Each test grades one part, worth its `grades` mark.

How they work (`python -m dgm.grade exercises/projects/vae --submission my.py` runs them):

- A test's body runs in the grader's process, which never imports your file. It builds the
  inputs, calls `run(fn, ...)`, and checks what comes back against values it computes itself:
  closed forms, `torch.distributions`, and its own Monte Carlo estimates with many samples.
- `run(fn, ...)` executes the function `fn` below in a fresh process of your own. There `sub`
  is your file with every part *except the one graded* taken from the reference solution, so
  the test of `VAE.elbo` runs your `elbo` with the reference `reparameterize` and
  `kl_to_standard_normal`, and a bug in one part costs only that part's points.
- The random checks use fixed seeds, and their tolerances are 5 standard errors of the
  difference between your average and the grader's: a correct estimator passes, and the
  wrong ones the tests were tried on miss by 19 standard errors or more.
"""

import math

import torch
from torch.distributions import Normal, kl_divergence

from dgm import data
from dgm.grade import expect_close, expect_tensor, grades, reference

ref = reference("vae")

#: The tolerance of the statistical checks, in standard errors.
SE = 5.0


def random_vae(seed, z_dim, hidden, dtype=torch.float64):
    torch.manual_seed(seed)
    return ref.VAE(z_dim=z_dim, hidden=hidden).to(dtype)


def z_ignoring_vae(decoder_bias, mu=0.0, var=1.0, z_dim=3, hidden=16, dtype=torch.float64):
    """A reference VAE whose decoder ignores z (its logits are `decoder_bias`, (64, 17)) and whose
    encoder gives q(z | x) = N(mu, var I) for every x."""
    model = ref.VAE(z_dim=z_dim, hidden=hidden).to(dtype)
    with torch.no_grad():
        model.encoder[-1].weight.zero_()
        model.encoder[-1].bias[:z_dim].fill_(mu)
        model.encoder[-1].bias[z_dim:].fill_(math.log(var))
        model.decoder[-1].weight.zero_()
        model.decoder[-1].bias.copy_(decoder_bias.reshape(-1))
    return model


def relative_weight_variance(mu, var, z_dim=3):
    """Var(w) / E[w]^2 of the weights w = p(z) / q(z), z ~ q = N(mu, var I), p = N(0, I): the sampling
    standard deviation of an estimate with k samples of a decoder that ignores z is about sqrt(this / k)."""
    a, b, c = 1 - 1 / (2 * var), mu / var, mu**2 / (2 * var)
    per_dim = math.sqrt(var / (2 * math.pi)) * math.sqrt(math.pi / a) * math.exp(b**2 / (4 * a) + c)  # E_q[(p/q)^2]
    return per_dim**z_dim - 1


def exact_log_lik(decoder_bias, x):
    """log p(x) of a decoder that ignores z, from its logits: a sum over the pixels."""
    return torch.log_softmax(decoder_bias.double(), -1).gather(1, x.T).sum(0)


# ---- computed in your process: `sub` is your file, the reference for every other part


def reparameterize_draws(sub, mu, logvar, n):
    mu, logvar = mu.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
    z = sub.reparameterize(mu.expand(n, -1), logvar.expand(n, -1))
    grads = None
    if isinstance(z, torch.Tensor) and z.requires_grad:  # E|z|^2 = |mu|^2 + sum exp(logvar)
        grads = torch.autograd.grad((z**2).sum(-1).mean(), (mu, logvar), allow_unused=True)
    return z, grads


def kl_calls(sub, cases):
    out = []
    for mu, logvar in cases:
        mu, logvar = mu.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
        kl = sub.kl_to_standard_normal(mu, logvar)
        grads = None
        if isinstance(kl, torch.Tensor) and kl.requires_grad:
            grads = torch.autograd.grad(kl.sum(), (mu, logvar), allow_unused=True)
        out.append((kl, grads))
    return out


def elbo_draws(sub, state, x, mu, logvar, draws):
    """`draws` one-sample ELBOs of each image, from one call: encode is replaced by fixed (mu,
    logvar), one leaf row per draw, so one backward gives every draw's gradient in (mu, logvar)."""
    model = sub.VAE(z_dim=mu.shape[1], hidden=32)
    model.load_state_dict(state)
    mu = mu.repeat(draws, 1).requires_grad_(True)  # row r * n + i: draw r of image i
    logvar = logvar.repeat(draws, 1).requires_grad_(True)
    calls = []

    def encode(images):
        calls.append(tuple(images.shape))
        return mu, logvar

    model.encode = encode
    elbo = model.elbo(x.repeat(draws, 1))
    grads = None
    if isinstance(elbo, torch.Tensor) and elbo.requires_grad and elbo.shape == mu.shape[:1]:
        grads = torch.autograd.grad(elbo.sum(), (mu, logvar), allow_unused=True)
    return elbo, grads, calls


def train_on_digits(sub):
    model = sub.VAE()
    losses = sub.train(model, data.digits("train"))
    return model.state_dict(), losses


def iwae_calls(sub, cases):
    """Each case: a VAE (its size, dtype and weights), images, k and how many repeated estimates."""
    out = []
    for z_dim, hidden, dtype, state, x, k, repeats in cases:
        model = sub.VAE(z_dim=z_dim, hidden=hidden).to(getattr(torch, dtype))
        model.load_state_dict(state)
        out.append([sub.iwae_log_prob(model, x, k) for _ in range(repeats)])
    return out


# ---- the tests, decided in the grader's process


def grads_or_fail(grads, what):
    assert grads is not None, f"{what} must be differentiable in mu and logvar (it came back without a gradient)"
    for g, name in zip(grads, ("mu", "logvar")):
        assert g is not None, f"{what} does not depend on {name} (no gradient reached it)"
    return grads


@grades("reparameterize", points=1)
def test_reparameterize(run):
    n = 100_000
    mu = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, math.log(0.25), math.log(3.0)]], dtype=torch.float64)
    z, grads = run(reparameterize_draws, mu=mu, logvar=logvar, n=n)
    z = expect_tensor(z, (n, 3), "reparameterize(mu, logvar), for mu and logvar of shape (100000, 3),")
    m, s2 = mu[0], logvar[0].exp()
    mean_se, var_se = (s2 / n).sqrt(), s2 * math.sqrt(2 / n)
    mean, var = z.mean(0), z.var(0)
    assert ((mean - m).abs() <= SE * mean_se).all(), \
        (f"the samples' mean must be mu = {m.tolist()}, got {[round(v, 4) for v in mean.tolist()]} "
         "(is eps ~ N(0, I) drawn afresh for every entry?)")
    assert ((var - s2).abs() <= SE * var_se).all(), \
        (f"the samples' variance must be exp(logvar) = {[round(v, 4) for v in s2.tolist()]}, got "
         f"{[round(v, 4) for v in var.tolist()]} (sigma = exp(logvar / 2), and eps ~ N(0, I) drawn afresh for "
         "every entry)")
    corr = torch.corrcoef(z.T)[torch.triu_indices(3, 3, 1).unbind()].abs().max().item()
    assert corr < SE / math.sqrt(n), f"the coordinates of z must be independent; they have correlation {corr:.3f}"
    d_mu, d_logvar = grads_or_fail(grads, "z")
    # E|z|^2 = |mu|^2 + sum exp(logvar): the gradients of the sample mean are 2 mu and exp(logvar), up to noise
    se_mu = 2 * (s2 / n).sqrt()                               # d|z|^2/d mu = 2 z
    se_logvar = (s2 * (m**2 + 2 * s2) / n).sqrt()             # d|z|^2/d logvar = z sigma eps
    assert ((d_mu[0] - 2 * m).abs() <= SE * se_mu).all(), \
        f"d mean|z|^2 / d mu should be 2 mu = {(2 * m).tolist()}, got {[round(v, 4) for v in d_mu[0].tolist()]}"
    assert ((d_logvar[0] - s2).abs() <= SE * se_logvar).all(), \
        (f"d mean|z|^2 / d logvar should be exp(logvar) = {[round(v, 4) for v in s2.tolist()]}, got "
         f"{[round(v, 4) for v in d_logvar[0].tolist()]}")


@grades("kl_to_standard_normal", points=2)
def test_kl_to_standard_normal(run):
    torch.manual_seed(1)
    mu, logvar = 2 * torch.randn(7, 5, dtype=torch.float64), 2 * torch.randn(7, 5, dtype=torch.float64)
    extreme_mu = torch.tensor([[0.0, 30.0, -200.0, 1e-3, 5.0], [-1e3, 0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    extreme_logvar = torch.tensor([[-40.0, 40.0, -15.0, 1e-6, 25.0], [0.0, -30.0, 30.0, 0.0, -1e-3]],
                                  dtype=torch.float64)
    cases = [(torch.cat([mu, extreme_mu]), torch.cat([logvar, extreme_logvar])),  # (9, 5), float64
             (torch.randn(3, 1, dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)),  # one latent dimension
             (3 * torch.randn(6, 4), torch.cat([4 * torch.randn(5, 4), torch.tensor([[-20.0, 20.0, -8.0, 8.0]])]))]
    out = run(kl_calls, cases=cases)
    for (m, lv), (got, grads) in zip(cases, out):
        n, d = m.shape
        what = f"kl_to_standard_normal of {n} rows of {d} latent dimensions ({str(m.dtype).removeprefix('torch.')})"
        got = expect_tensor(got, (n,), what)
        m64, lv64 = m.double(), lv.double()
        want = kl_divergence(Normal(m64, (0.5 * lv64).exp()), Normal(0.0, 1.0)).sum(-1)
        closed = 0.5 * (lv64.exp() + m64**2 - 1 - lv64).sum(-1)
        assert torch.allclose(want, closed, rtol=1e-9, atol=1e-9), "the grader's two KLs disagree"
        # float64 to 1e-9 relative; float32 to its rounding of the terms of the sum
        scale = 0.5 * (lv64.exp() + m64**2 + 1 + lv64.abs()).sum(-1)
        tol = (1e-9 if m.dtype == torch.float64 else 1e-5) * scale
        err = (got.double() - want).abs()
        i = int((err / tol).argmax())
        assert (err <= tol).all(), \
            (f"{what}: the KL of row {i} (mu = {[float(f'{v:.4g}') for v in m[i].tolist()]}, logvar = "
             f"{[float(f'{v:.4g}') for v in lv[i].tolist()]}) should be {want[i].item():.10g} = "
             f"1/2 sum(exp(logvar) + mu^2 - 1 - logvar), got {got[i].item():.10g}")
        if m.dtype == torch.float64:
            d_mu, d_logvar = grads_or_fail(grads, what)
            expect_close(d_mu, m64, f"{what}: d KL / d mu = mu;", atol=1e-9, rtol=1e-9)
            expect_close(d_logvar, 0.5 * (lv64.exp() - 1), f"{what}: d KL / d logvar = (exp(logvar) - 1) / 2;",
                         atol=1e-9, rtol=1e-9)


def exact_elbo(model, x, mu, logvar, samples, chunk=2000):
    """The grader's ELBO E_q[log p(x | z)] - KL(q || p) of each row and its gradients in (mu, logvar),
    by its own Monte Carlo (z = mu + sigma eps, `samples` draws) with the KL in closed form; returns the
    means and variances over the draws of the per-draw values and gradients."""
    torch.manual_seed(11)
    values, g_mu, g_logvar = [], [], []
    for _ in range(samples // chunk):
        m = mu.detach().repeat(chunk, 1).requires_grad_(True)
        lv = logvar.detach().repeat(chunk, 1).requires_grad_(True)
        q = Normal(m, (0.5 * lv).exp())
        v = model.log_lik(x.repeat(chunk, 1), q.rsample()) - kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
        dm, dlv = torch.autograd.grad(v.sum(), (m, lv))
        values.append(v.detach().view(chunk, *x.shape[:1]))
        g_mu.append(dm.view(chunk, *mu.shape))
        g_logvar.append(dlv.view(chunk, *mu.shape))
    return [(t.mean(0), t.var(0)) for t in (torch.cat(values), torch.cat(g_mu), torch.cat(g_logvar))]


def check_mean(got, want, samples, what, hint=""):
    """got: (draws, ...) per-draw values of the submission; want: the grader's (mean, variance) over
    `samples` draws. The means must agree within SE standard errors of their difference."""
    mean, var = got.mean(0), got.var(0)
    se = (var / len(got) + want[1] / samples).sqrt()
    z = (mean - want[0]).abs() / se
    if not (z <= SE).all():
        i = int(z.argmax())
        idx = list(divmod(i, mean.shape[1])) if mean.ndim == 2 else [i]
        where = f"image {idx[0]}" + (f", latent coordinate {idx[1]}" if len(idx) == 2 else "")
        raise AssertionError(
            f"{what}, {where}: the average of {len(got)} estimates is {mean.reshape(-1)[i].item():.4f}, the exact "
            f"value is {want[0].reshape(-1)[i].item():.4f}, {z.reshape(-1)[i].item():.1f} standard errors away "
            f"(allowed {SE:g}){hint}")


@grades("VAE.elbo", points=2)
def test_elbo_and_its_gradients_are_unbiased(run):
    """The one-sample ELBO and its gradient in the encoder's outputs must be unbiased for the exact
    ELBO E_q[log p(x | z)] - KL and its gradient. (mu, logvar) are fixed, with posterior standard
    deviations from 0.5 to 2, so that an ELBO at z = mu, a z without a gradient, a missing or
    misplaced KL and sigma = exp(logvar) each miss by many standard errors."""
    model = random_vae(seed=0, z_dim=2, hidden=32, dtype=torch.float32)
    x = data.digits("test")[:4]
    mu = torch.tensor([[0.8, -0.6], [-1.0, 0.3], [0.2, 1.2], [-0.4, -1.0]])
    logvar = torch.tensor([[-1.2, 0.9], [1.0, -0.8], [-0.6, 1.3], [0.7, -1.4]])
    draws, samples = 2000, 16_000
    elbo, grads, calls = run(elbo_draws, state=model.state_dict(), x=x, mu=mu, logvar=logvar, draws=draws)
    assert calls, "elbo must get (mu, logvar) from self.encode(x); it never called encode"
    elbo = expect_tensor(elbo, (draws * len(x),), f"elbo(x) of {draws * len(x)} images").double().view(draws, len(x))
    d_mu, d_logvar = (g.double().view(draws, *mu.shape) for g in grads_or_fail(grads, "the ELBO"))
    value, grad_mu, grad_logvar = exact_elbo(model.double(), x, mu.double(), logvar.double(), samples)
    check_mean(elbo, value, samples, "the one-sample ELBO", "; the reconstruction term is E_q[log p(x | z)] "
               "with z ~ N(mu, exp(logvar)), and the KL to N(0, I) is subtracted")
    check_mean(d_mu, grad_mu, samples, "the gradient of the ELBO in mu",
               "; does the gradient flow through z = mu + sigma * eps?")
    check_mean(d_logvar, grad_logvar, samples, "the gradient of the ELBO in logvar",
               "; does the gradient flow through z = mu + exp(logvar / 2) * eps?")


@grades("train", points=3)
def test_training_reaches_the_target_on_digits(run):
    state, losses = run(train_on_digits)
    assert isinstance(losses, list) and len(losses) >= 2 and all(isinstance(v, float) for v in losses), \
        f"train must return the list of epoch-mean losses (floats, one per epoch), got {_describe(losses)}"
    assert all(math.isfinite(v) for v in losses), f"the training losses must be finite, got {losses}"
    assert losses[-1] < losses[0], f"the training loss must go down: first {losses[0]:.3f}, last {losses[-1]:.3f}"
    model = ref.VAE()  # the trained weights, scored with the grader's own ELBO
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise AssertionError(f"the trained weights do not fit the given VAE: {str(exc).splitlines()[0]}") from None
    x = data.digits("test")
    torch.manual_seed(0)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        q = Normal(mu, (0.5 * logvar).exp())
        kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
        elbo = torch.stack([model.log_lik(x, q.sample()) - kl for _ in range(10)]).mean(0)
    assert torch.isfinite(elbo).all(), "the trained VAE gives inf or nan ELBOs on the test digits"
    neg_elbo, se = -elbo.mean().item(), elbo.std().item() / math.sqrt(len(elbo))
    assert neg_elbo < 103, (f"the test -ELBO is {neg_elbo:.4g} ± {se:.2g} nats per image (target: < 103; a decoder "
                            "that ignores z and predicts each pixel's frequencies reaches about 106)")


def _describe(value):
    if isinstance(value, list):
        return f"a list of {len(value)} " + ", ".join(sorted({type(v).__name__ for v in value}) or ["items"])
    return f"a {type(value).__name__}"


def _dtype(model):
    return str(model.encoder[0].weight.dtype).removeprefix("torch.")


def grader_iwae(model, x, k, repeats, chunk=20):
    """The grader's own importance-weighted bound: `repeats` estimates with k samples each, (repeats, n)."""
    torch.manual_seed(12)
    out = []
    with torch.no_grad():
        mu, logvar = model.encode(x)
        q, p = Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)
        for _ in range(repeats // chunk):
            z = q.sample((chunk, k))
            log_w = model.log_lik(x, z) + (p.log_prob(z) - q.log_prob(z)).sum(-1)
            out.append(torch.logsumexp(log_w, 1) - math.log(k))
    return torch.cat(out)


@grades("iwae_log_prob", points=2)
def test_iwae_log_prob(run):
    torch.manual_seed(3)
    x = data.digits("test")[:20]
    logits = torch.randn(64, 17, dtype=torch.float64)
    exact = exact_log_lik(logits, x)
    same = z_ignoring_vae(logits)                 # q = p(z), decoder ignoring z: every weight is p(x)
    wide = z_ignoring_vae(logits, mu=0.5, var=0.8)  # q != p(z): E[L_1] = log p(x) - KL(q || p)
    kl = kl_divergence(Normal(torch.full((3,), 0.5), math.sqrt(0.8)), Normal(0.0, 1.0)).sum().item()
    # float32 with realistic log-weights: an overconfident decoder, log p(x) from -107 to -212 nats,
    # where exp(log w) underflows to 0 (float32 ends at about exp(-103))
    train = data.digits("train")
    counts = torch.stack([torch.bincount(train[:, i], minlength=17) for i in range(64)]).double() + 1
    sharp = 3 * (counts / counts.sum(1, keepdim=True)).log()
    exact32 = exact_log_lik(sharp, x)
    same32 = z_ignoring_vae(sharp.float(), dtype=torch.float32)
    wide32 = z_ignoring_vae(sharp.float(), mu=0.5, var=0.8, dtype=torch.float32)
    general = random_vae(seed=4, z_dim=3, hidden=16)  # a decoder that depends on z
    with torch.no_grad():
        for p in general.decoder.parameters():
            p.mul_(2.0)
    xg = x[:5]
    cases = {"same k=1": (same, x, 1, 1), "same k=7": (same, x, 7, 1), "wide k=1": (wide, x, 1, 2000),
             "wide k=2000": (wide, x, 2000, 1), "same32 k=1": (same32, x, 1, 1), "same32 k=50": (same32, x, 50, 1),
             "wide32 k=1000": (wide32, x, 1000, 1), "general k=1": (general, xg, 1, 1000),
             "general k=100": (general, xg, 100, 40)}
    out = run(iwae_calls, cases=[(m.z_dim, m.encoder[0].out_features, _dtype(m), m.state_dict(), xs, k, r)
                                 for m, xs, k, r in cases.values()])
    got = {}
    for (name, (m, xs, k, r)), estimates in zip(cases.items(), out):
        what = f"iwae_log_prob(model, x, k={k}) of {len(xs)} images ({_dtype(m)})"
        got[name] = torch.stack([expect_tensor(e, (len(xs),), what).double() for e in estimates])
    for name in ("same k=1", "same k=7"):
        expect_close(got[name][0], exact, "with q = p(z) and a decoder that ignores z every weight "
                     "p(x, z) / q(z | x) is p(x), so the estimate must be log p(x) for any k; with "
                     f"k = {name.split('=')[1]} the estimate", atol=1e-6)
    l1 = got["wide k=1"] - exact
    se = l1.mean(1).std().item() / math.sqrt(len(l1))
    assert abs(l1.mean().item() + kl) < SE * se + 1e-6, \
        (f"with k = 1 the estimate is the one-sample ELBO: for a decoder that ignores z its mean should be "
         f"log p(x) - KL(q || p) = log p(x) - {kl:.4f}, got log p(x) - {-l1.mean().item():.4f} (± {se:.4f})")
    tol = SE * math.sqrt(relative_weight_variance(0.5, 0.8) / 2000)  # 5 standard deviations of L_2000
    gap = (got["wide k=2000"][0] - exact).abs().max().item()
    assert gap < tol, (f"with k = 2000 the estimate should be within {tol:.2f} nats of log p(x) "
                       f"(KL(q || p) = {kl:.2f}), got {gap:.3f} away")
    for name in ("same32 k=1", "same32 k=50"):
        expect_close(got[name][0], exact32, "in float32, with log-weights of -107 to -212 nats (q = p(z), a decoder "
                     f"that ignores z), the estimate with k = {name.split('=')[1]} must be log p(x): compute "
                     "log mean exp(log w) stably with torch.logsumexp;", atol=1e-3, rtol=1e-5)
    tol = SE * math.sqrt(relative_weight_variance(0.5, 0.8) / 1000)
    gap = (got["wide32 k=1000"][0] - exact32).abs().max().item()
    assert gap < tol, (f"in float32, with log-weights of about -107 to -212 nats and k = 1000, the estimate "
                       f"should be within {tol:.2f} nats of log p(x), got {gap:.3f} away")
    # a decoder that depends on z: E[L_1] is the ELBO, E[L_100] the grader's own 100-sample bound
    value = exact_elbo(general, xg, *general.encode(xg), samples=8000)[0]
    check_mean(got["general k=1"], value, 8000, "with k = 1 (a decoder that depends on z) the estimate is the "
               "one-sample ELBO log p(x | z) + log p(z) - log q(z | x), z ~ q(z | x), whose mean is the ELBO")
    bound = grader_iwae(general, xg, 100, 200)
    check_mean(got["general k=100"], (bound.mean(0), bound.var(0)), len(bound),
               "with k = 100 (a decoder that depends on z) the estimate of the bound L_100")
    tighter = got["general k=100"].mean().item() - got["general k=1"].mean().item()
    assert tighter > 0, f"the bound must tighten with k: L_100 - L_1 = {tighter:.3f} nats on average"
