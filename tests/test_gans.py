"""dgm.gans (exported from the GAN chapter): the losses, the networks, the penalties and the training loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dgm import data
from dgm.gans import (Discriminator, Generator, discriminator_loss, gradient_penalty, generator_loss, r1_penalty,
                      train_gan)


def test_discriminator_loss_is_minus_the_value_function():
    a_real, a_fake = torch.randn(100), torch.randn(80)
    v = torch.sigmoid(a_real).log().mean() + (1 - torch.sigmoid(a_fake)).log().mean()
    assert torch.allclose(discriminator_loss(a_real, a_fake), -v, atol=1e-6)
    # at D = 1/2 everywhere the value is -log 4; huge logits stay finite (softplus, no log 0)
    assert discriminator_loss(torch.zeros(5), torch.zeros(5)).item() == pytest.approx(math.log(4))
    assert torch.isfinite(discriminator_loss(torch.tensor([-1e4]), torch.tensor([1e4])))


def test_optimal_discriminator_attains_2js_minus_log4():
    """With logit a* = log p_data - log p_G the value is 2 JS - log 4, and no other logit does better."""
    torch.manual_seed(0)
    p, q = torch.distributions.Normal(0.0, 1.0), torch.distributions.Normal(1.5, 1.0)
    x_p, x_q = p.sample((400_000,)), q.sample((400_000,))
    a_star = lambda x: p.log_prob(x) - q.log_prob(x)
    value = -discriminator_loss(a_star(x_p), a_star(x_q)).item()
    grid = torch.linspace(-10, 12, 200_001, dtype=torch.float64)
    pd, pg = p.log_prob(grid).double().exp(), q.log_prob(grid).double().exp()
    m = (pd + pg) / 2
    js = (0.5 * (pd * (pd / m).log() + pg * (pg / m).log())).sum().item() * (grid[1] - grid[0]).item()
    assert value == pytest.approx(2 * js - math.log(4), abs=3e-3)
    for perturb in (lambda a: a + 0.5, lambda a: 0.5 * a, lambda a: a - 0.3 * a.sign()):
        assert -discriminator_loss(perturb(a_star(x_p)), perturb(a_star(x_q))).item() < value


def test_generator_losses_and_their_gradients():
    a = torch.randn(50, requires_grad=True)
    d = torch.sigmoid(a.detach())
    (g_mm,) = torch.autograd.grad(generator_loss(a, "minimax"), a)
    (g_ns,) = torch.autograd.grad(generator_loss(a, "non-saturating"), a)
    assert generator_loss(a, "minimax").item() == pytest.approx((1 - d).log().mean().item(), abs=1e-6)
    assert generator_loss(a, "non-saturating").item() == pytest.approx(-d.log().mean().item(), abs=1e-6)
    assert torch.allclose(g_mm, -d / 50, atol=1e-7)  # vanishes when D(G(z)) -> 0: saturation
    assert torch.allclose(g_ns, -(1 - d) / 50, atol=1e-7)
    assert generator_loss(a, "wasserstein").item() == pytest.approx(-a.mean().item())
    with pytest.raises(ValueError, match="unknown generator loss"):
        generator_loss(a, "hinge")


def test_networks_shapes_levels_and_labels():
    torch.manual_seed(0)
    G, D = Generator(dim=2, z_dim=4, hidden=16, depth=2), Discriminator(dim=2, hidden=16, depth=2)
    assert G(torch.randn(7, 4)).shape == (7, 2) and D(torch.randn(7, 2)).shape == (7,)
    with pytest.raises(ValueError, match=r"z must have shape \(n, 4\)"):
        G(torch.randn(7, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        D(torch.randn(7, 3))
    G_img = Generator(dim=64, z_dim=4, hidden=16, depth=1, levels=17, n_classes=10)
    x = G_img.sample(30, torch.arange(30) % 10)
    assert data.check_levels(x, dim=64) is x
    assert (G_img(torch.randn(5, 4), torch.zeros(5, dtype=torch.long)).abs() < 1).all()
    with pytest.raises(ValueError, match="class-conditional"):
        G_img.sample(3)
    with pytest.raises(ValueError, match="labels y must be"):
        G_img.sample(3, torch.tensor([0, 1, 10]))
    with pytest.raises(ValueError, match="unconditional"):
        D(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))


def test_penalties_on_linear_networks():
    """For a(x) = w.x + b the input gradient is w everywhere: R1 = |w|^2, GP = (|w| - 1)^2."""
    D = Discriminator(dim=3, hidden=4, depth=0)  # depth 0: a single linear layer
    w = torch.tensor([[2.0, 0.0, 0.0]])
    with torch.no_grad():
        D.net[0].weight.copy_(w)
    x_real, x_fake = torch.randn(20, 3), torch.randn(20, 3)
    assert r1_penalty(D, x_real).item() == pytest.approx(4.0)
    assert gradient_penalty(D, x_real, x_fake).item() == pytest.approx(1.0)
    with torch.no_grad():
        D.net[0].weight.copy_(w / 2)
    assert gradient_penalty(D, x_real, x_fake).item() == pytest.approx(0.0, abs=1e-10)


def test_spectral_normalization_makes_every_layer_1_lipschitz():
    torch.manual_seed(0)
    D = Discriminator(dim=2, hidden=32, depth=2, spectral=True)
    for _ in range(30):  # power iterations run in training-mode forward passes
        D(torch.randn(8, 2))
    for m in D.net:
        if isinstance(m, nn.Linear):
            assert torch.linalg.matrix_norm(m.weight.detach(), ord=2).item() == pytest.approx(1.0, abs=1e-3)


def test_train_gan_moves_the_generator_to_the_data_and_records():
    torch.manual_seed(0)
    x = torch.randn(4000, 2) * 0.3 + torch.tensor([2.0, -1.0])
    G, D = Generator(z_dim=2, hidden=32, depth=2, scale=2.0), Discriminator(hidden=32, depth=2, scale=2.0)
    seen = []
    before = (G.sample(2000).mean(0) - x.mean(0)).norm().item()
    hist = train_gan(G, D, x, 300, batch_size=128, record=lambda s, G, D: seen.append(s), record_at=[0, 150, 300])
    after = (G.sample(2000).mean(0) - x.mean(0)).norm().item()
    assert seen == [0, 150, 300] and len(hist["d_loss"]) == len(hist["g_loss"]) == 300
    assert before > 1.5 and after < 0.5  # a GAN oscillates around the data; it does not settle in 300 steps


def test_train_gan_options_and_errors():
    x = torch.randn(200, 2)
    G, D = Generator(z_dim=2, hidden=8, depth=1), Discriminator(hidden=8, depth=1)
    hist = train_gan(G, D, x, 5, loss="wasserstein", gp=10.0, n_critic=2, batch_size=16)
    assert all(math.isfinite(v) for v in hist["d_loss"])
    hist = train_gan(G, D, x, 5, loss="minimax", r1=1.0, batch_size=16, decay=False)
    assert len(hist["g_loss"]) == 5
    with pytest.raises(ValueError, match="unknown loss"):
        train_gan(G, D, x, 5, loss="hinge")
    with pytest.raises(ValueError, match="same length"):
        train_gan(G, D, x, 5, y=torch.zeros(10, dtype=torch.long))


def test_generator_losses_against_optimal_d_descend_their_divergences():
    """Against D* of p_G(theta0), held fixed, at theta0 (Arjovsky & Bottou 2017): the gradient
    of the non-saturating loss is that of KL(p_G || p_data) - 2 JS, and the gradient of the
    minimax loss E log(1 - D*) that of 2 JS.

    p_data = N(0, 1), G_theta(z) = z + theta. E_z is a mean over the n quantiles
    z_i = Phi^-1((i + 1/2) / n) (nearly exact); KL and JS by quadrature, float64.
    """
    n = 400_000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    z = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0).icdf(u)
    x = torch.linspace(-15, 20, 20_001, dtype=torch.float64)
    dx = x[1] - x[0]
    log_n = lambda v, mu: -0.5 * (v - mu) ** 2 - 0.5 * math.log(2 * math.pi)

    def js(log_p, log_q):
        log_m = torch.logaddexp(log_p, log_q) - math.log(2)
        return 0.5 * ((log_p.exp() * (log_p - log_m)).sum() + (log_q.exp() * (log_q - log_m)).sum()) * dx

    for theta0 in (0.3, 1.0, 2.5):
        grads = {}
        for kind in ("non-saturating", "minimax"):
            th = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
            a = -theta0 * (z + th) + theta0**2 / 2  # logit of D* at x = G_theta(z), theta0 fixed
            (grads[kind],) = torch.autograd.grad(generator_loss(a, kind), th)
        th = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
        log_pg, log_pd = log_n(x, th), log_n(x, 0.0)
        kl_rev = (log_pg.exp() * (log_pg - log_pd)).sum() * dx
        (g_kl,) = torch.autograd.grad(kl_rev, th, retain_graph=True)
        (g_js,) = torch.autograd.grad(js(log_pd, log_pg), th)
        assert g_kl.item() == pytest.approx(theta0, rel=1e-6)  # KL(N(theta, 1) || N(0, 1)) = theta^2 / 2
        assert grads["non-saturating"].item() == pytest.approx((g_kl - 2 * g_js).item(), rel=1e-4)
        assert grads["minimax"].item() == pytest.approx(2 * g_js.item(), rel=1e-4)
    # near p_G = p_data, JS ~ KL / 4 and the two gradients agree to first order; far from
    # it they differ (the minimax one saturates)
    assert grads["non-saturating"].item() > 5 * grads["minimax"].item()


def test_conv_gan_shapes_and_parameter_counts_match_the_formulas():
    """G: z (n, 16) -> levels (n, 64); D: (n, 64) -> logits (n,); 32C^2 + 153C + 1 and 32C^2 + 27C + 1."""
    from dgm.gans import ConvDiscriminator, ConvGenerator

    for C in (3, 50):
        G, D = ConvGenerator(z_dim=16, channels=C), ConvDiscriminator(channels=C)
        assert sum(p.numel() for p in G.parameters()) == 32 * C**2 + 153 * C + 1
        assert sum(p.numel() for p in D.parameters()) == 32 * C**2 + 27 * C + 1
        x = G(torch.randn(7, 16))
        assert x.shape == (7, 64) and x.abs().max() < 1
        assert D(x).shape == (7,)
        s = G.sample(5)
        assert s.dtype == torch.long and s.shape == (5, 64) and 0 <= s.min() and s.max() <= 16
    # C = 50 matches the chapter's MLPs (hidden 256, depth 2) to within 2 %
    mlp_G = Generator(dim=64, z_dim=16, hidden=256, depth=2, levels=17)
    mlp_D = Discriminator(dim=64, hidden=256, depth=2)
    for conv, mlp in ((ConvGenerator(channels=50), mlp_G), (ConvDiscriminator(channels=50), mlp_D)):
        n_conv, n_mlp = (sum(p.numel() for p in m.parameters()) for m in (conv, mlp))
        assert abs(n_conv / n_mlp - 1) < 0.02


def test_conv_discriminator_is_local_and_conv_gan_trains():
    """Every pixel reaches D's logit (two stride-2 layers cover 8x8); a few train_gan steps move both nets."""
    from dgm.gans import ConvDiscriminator, ConvGenerator, to_unit

    torch.manual_seed(0)
    D = ConvDiscriminator(channels=4)
    x = torch.zeros(1, 64, requires_grad=True)
    D(x).sum().backward()
    assert (x.grad != 0).all()
    G, D = ConvGenerator(channels=4), ConvDiscriminator(channels=4)
    before = [p.detach().clone() for p in (*G.parameters(), *D.parameters())]
    hist = train_gan(G, D, data.digits("train")[:200], 3, r1=1.0, batch_size=16, augment=to_unit)
    assert len(hist["d_loss"]) == 3 and all(math.isfinite(v) for v in hist["d_loss"] + hist["g_loss"])
    after = list(G.parameters()) + list(D.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after))


def test_conv_gan_shape_errors_are_actionable():
    from dgm.gans import ConvDiscriminator, ConvGenerator

    G, D = ConvGenerator(z_dim=16, channels=2), ConvDiscriminator(channels=2)
    with pytest.raises(ValueError, match=r"z must have shape \(n, 16\)"):
        G(torch.randn(3, 8))
    with pytest.raises(ValueError, match="flatten"):
        D(torch.randn(3, 1, 8, 8))
    with pytest.raises(ValueError, match="unconditional"):
        D(torch.randn(3, 64), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="unconditional"):
        G(torch.randn(3, 16), torch.zeros(3, dtype=torch.long))
