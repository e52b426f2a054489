"""The code of the chapter "Diffusion models: guidance, design choices, fast and discrete
sampling" (dgm.diffusion_design), checked on cases with known answers; tiny budgets."""

import math

import pytest
import torch

from dgm import data
from dgm import diffusion_design as dd
from dgm.diffusion import DDPM, LEVELS


def test_edm_preconditioning_gives_unit_variance_input_and_target():
    sigma_data = 0.5
    for sigma in [0.01, 0.3, 2.0, 40.0]:
        c_skip, c_out, c_in, _ = dd.edm_coefficients(sigma, sigma_data)
        # x = x0 + sigma eps with Var x0 = sigma_data^2: Var(c_in x) = 1
        assert c_in**2 * (sigma_data**2 + sigma**2) == pytest.approx(1.0)
        # the network's target (x0 - c_skip x) / c_out has unit variance too
        var_target = ((1 - c_skip) ** 2 * sigma_data**2 + c_skip**2 * sigma**2) / c_out**2
        assert var_target == pytest.approx(1.0)


def test_edm_sigmas_run_from_sigma_max_down_to_zero():
    s = dd.edm_sigmas(10, sigma_min=0.002, sigma_max=80.0)
    assert s.shape == (11,) and s[0] == pytest.approx(80.0) and s[-2] == pytest.approx(0.002)
    assert s[-1] == 0 and bool((s[1:] < s[:-1]).all())
    with pytest.raises(ValueError, match="n >= 1"):
        dd.edm_sigmas(0)


def test_heun_is_second_order_and_euler_first_order_on_gaussian_data():
    # x0 ~ N(0, 1): the exact denoiser is x / (1 + sigma^2), and the ODE maps x(sigma_max)
    # to x * sqrt(1 + sigma_min^2) / sqrt(1 + sigma_max^2) at sigma_min (no final zero step)
    denoiser = lambda x, s: x / (1 + s**2)
    x = torch.ones(1, dtype=torch.float64)
    exact = math.sqrt(1 + 0.5**2) / math.sqrt(1 + 5.0**2)
    errors = {}
    for heun in (False, True):
        for n in (64, 128):
            sig = dd.edm_sigmas(n, sigma_min=0.5, sigma_max=5.0)[:-1]
            errors[heun, n] = abs(dd.edm_sample(denoiser, x, sig, heun=heun).item() - exact)
    assert 1.7 < errors[False, 64] / errors[False, 128] < 2.3  # halving the step halves it
    assert 3.4 < errors[True, 64] / errors[True, 128] < 4.6  # ... or quarters it


def test_classifier_guidance_with_w_zero_is_the_model_and_moves_towards_the_label():
    torch.manual_seed(0)
    model = DDPM(channels=0, hidden=32, num_classes=10).eval()
    classifier = dd.NoisyClassifier(model.schedule, hidden=32).eval()
    guided = dd.ClassifierGuided(model, classifier)
    xt, t = torch.randn(4, 64), torch.full((4,), 300)
    y = torch.tensor([0, 1, 2, 3])
    assert torch.allclose(guided.guided_x0(xt, t, y, w=0.0), model.x0_hat(xt, t, y))
    # a small step along the shift raises the classifier's log-probability of y
    shift = guided.guided_x0(xt, t, y, w=1.0) - model.x0_hat(xt, t, y)
    log_p = lambda x: torch.log_softmax(classifier(x, t), 1).gather(1, y[:, None]).sum()
    ab = model.schedule.alpha_bar[299]
    with torch.no_grad():
        assert log_p(xt + 1e-3 * shift * ab.sqrt()) > log_p(xt)


def test_noisy_classifier_training_lowers_its_loss():
    x, y = data.digits("train", labels=True)
    clf = dd.NoisyClassifier(DDPM().schedule, hidden=32)
    losses = dd.train_noisy_classifier(clf, x[:200], y[:200], steps=60, batch_size=50)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10


def test_masked_diffusion_bound_of_a_uniform_model_is_the_uniform_nll():
    # a network that predicts uniform levels at every masked pixel pays log 17 per pixel,
    # exactly once in expectation under every estimator of the bound
    torch.manual_seed(1)
    model = dd.MaskedDiffusion(hidden=16)
    last = model.net[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = data.digits("test")[:40]
    uniform = 64 * math.log(LEVELS)
    count = model.nll_bound(x, draws=2)
    assert torch.allclose(count, torch.full_like(count, uniform), atol=1e-3)
    for kw in (dict(estimator="time"), dict(T=8)):
        b = model.nll_bound(x, draws=50, **kw)
        assert abs(b.mean().item() - uniform) < 4 * b.std().item() / b.numel() ** 0.5


def test_masked_diffusion_carries_over_unmasked_pixels_and_samples_levels():
    torch.manual_seed(2)
    model = dd.MaskedDiffusion(hidden=16).eval()
    x0 = data.digits("train")[:3]
    xt = model.mask_random_subset(x0, torch.tensor([0, 10, 64]))
    assert int((xt == dd.MASK).sum(1)[1]) == 10 and bool((xt[0] == x0[0]).all())
    logp = model.log_p_x0(xt)
    kept = xt != dd.MASK
    assert torch.allclose(logp[kept].exp().gather(1, xt[kept][:, None]).squeeze(1),
                          torch.ones(int(kept.sum())))
    s = model.sample(5, steps=8)
    assert s.shape == (5, 64) and s.dtype == torch.long and int(s.max()) < LEVELS
    with pytest.raises(ValueError, match="estimator"):
        model.bound_estimate(x0, "nonsense")
