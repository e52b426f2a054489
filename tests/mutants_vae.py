"""One-bug submissions of project 2 and the exact scores the grader must give them.

Each mutant is (name, score, edits): text replacements (old, new) in the reference solution,
each old occurring exactly once there. A bug in a part costs exactly that part's points
(reparameterize 1, kl_to_standard_normal 2, VAE.elbo 2, train 3, iwae_log_prob 2); a correct
variant keeps all 10.

The training target (103 nats) lies below what a decoder that ignores z reaches (about 106,
the independent per-pixel model), so a loop cut short must fail: the reference's own loop
reaches about 110 after 1 epoch, 108 after 2 and 106.5 after 12, and 98 after its 40.
"""

REPARAM = "return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)"
KL = "return 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(-1)"
ELBO = "return self.log_lik(x, z) - kl_to_standard_normal(mu, logvar)"
DRAW = "z = reparameterize(mu, logvar)"
LOSS = "loss = -model.elbo(x_train[idx]).mean()"
IWAE = "return torch.logsumexp(log_w, dim=0) - math.log(k)"
LOG_W = "log_w = model.log_lik(x, z) + log_prior - log_q"
LOG_Q = "log_q = (-0.5 * ((z - mu) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)"

MUTANTS = [
    # reparameterize (1 point)
    ("reparameterize: std = exp(logvar)", 9,
     [(REPARAM, "return mu + torch.exp(logvar) * torch.randn_like(mu)")]),
    ("reparameterize: ignores logvar (std 1)", 9, [(REPARAM, "return mu + torch.randn_like(mu)")]),
    ("reparameterize: eps = 0, z = mu", 9,
     [(REPARAM, "return mu + torch.exp(0.5 * logvar) * torch.zeros_like(mu)")]),
    ("reparameterize: one eps shared by all rows", 9,
     [(REPARAM, "return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape[-1], dtype=mu.dtype)")]),
    ("reparameterize: detached sample", 9,
     [(REPARAM, "return (mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)).detach()")]),
    # kl_to_standard_normal (2 points)
    ("kl: without the 1/2", 8, [(KL, "return (logvar.exp() + mu**2 - 1 - logvar).sum(-1)")]),
    ("kl: summed over the batch axis", 8, [(KL, "return 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(0)")]),
    ("kl: mean over the latent dimensions", 8, [(KL, "return 0.5 * (logvar.exp() + mu**2 - 1 - logvar).mean(-1)")]),
    ("kl: the -1 left out", 8, [(KL, "return 0.5 * (logvar.exp() + mu**2 - logvar).sum(-1)")]),
    ("kl: sigma for sigma^2", 8, [(KL, "return 0.5 * ((0.5 * logvar).exp() + mu**2 - 1 - logvar).sum(-1)")]),
    # VAE.elbo (2 points)
    ("elbo: reconstruction at z = mu (reparameterize called, its z unused)", 8,
     [(ELBO, "return self.log_lik(x, mu) - kl_to_standard_normal(mu, logvar)")]),
    ("elbo: + KL", 8, [(ELBO, "return self.log_lik(x, z) + kl_to_standard_normal(mu, logvar)")]),
    ("elbo: no KL", 8, [(ELBO, "return self.log_lik(x, z)")]),
    ("elbo: detached z (no gradient through the sample)", 8, [(DRAW, "z = reparameterize(mu, logvar).detach()")]),
    ("elbo: inline sample with std = exp(logvar)", 8, [(DRAW, "z = mu + torch.exp(logvar) * torch.randn_like(mu)")]),
    ("elbo: inline sample with std = exp(2 logvar)", 8, [(DRAW, "z = mu + torch.exp(2 * logvar) * torch.randn_like(mu)")]),
    # train (3 points)
    ("train: maximizes the -ELBO (loss sign flipped)", 7, [(LOSS, "loss = model.elbo(x_train[idx]).mean()")]),
    ("train: 1 epoch (no decrease to show)", 7, [("epochs=40", "epochs=1")]),
    ("train: learning rate 1e-6", 7, [("lr=2e-3", "lr=1e-6")]),
    ("train: no optimizer step", 7, [("            opt.step()\n", "")]),
    ("train: no zero_grad (gradients add up over the steps)", 7, [("            opt.zero_grad()\n", "")]),
    ("train: 2 epochs", 7, [("epochs=40", "epochs=2")]),
    ("train: one minibatch per epoch", 7,
     [("            total += loss.item() * len(idx)\n", "            total += loss.item() * len(idx)\n            break\n")]),
    ("train: only the encoder is optimized", 7,
     [("opt = torch.optim.Adam(model.parameters(), lr=lr)", "opt = torch.optim.Adam(model.encoder.parameters(), lr=lr)")]),
    # iwae_log_prob (2 points)
    ("iwae: log(mean(exp(log_w))), no logsumexp", 8, [(IWAE, "return torch.log(torch.exp(log_w).mean(0))")]),
    ("iwae: the - log k left out", 8, [(IWAE, "return torch.logsumexp(log_w, dim=0)")]),
    ("iwae: logsumexp divided by k", 8, [(IWAE, "return torch.logsumexp(log_w, dim=0) / k")]),
    ("iwae: mean of log w (the ELBO, not the IWAE bound)", 8, [(IWAE, "return log_w.mean(0)")]),
    ("iwae: the prior term left out", 8, [(LOG_W, "log_w = model.log_lik(x, z) - log_q")]),
    ("iwae: log q without its log sigma", 8,
     [(LOG_Q, "log_q = (-0.5 * ((z - mu) / std) ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)")]),
    ("iwae: decoder evaluated at mu", 8, [(LOG_W, "log_w = model.log_lik(x, mu.expand_as(z)) + log_prior - log_q")]),
    # correct variants, written differently from the reference: full marks
    ("correct: reparameterize with Normal.rsample", 10,
     [(REPARAM, "return torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).rsample()")]),
    ("correct: kl with torch.distributions", 10,
     [(KL, "return torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()), "
           "torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)")]),
    ("correct: elbo with Normal.rsample, no reparameterize", 10,
     [(DRAW, "z = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).rsample()")]),
    ("correct: elbo with a sampled KL, log q(z) - log p(z) at the drawn z", 10,
     [(ELBO, "q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))\n"
             "        return self.log_lik(x, z) + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) "
             "- q.log_prob(z).sum(-1)")]),
    ("correct: train on the summed -ELBO", 10, [(LOSS, "loss = -model.elbo(x_train[idx]).sum()")]),
    ("correct: iwae with the max subtracted by hand", 10,
     [(IWAE, "top = log_w.max(0).values\n    return top + torch.log(torch.exp(log_w - top).mean(0))")]),
]
