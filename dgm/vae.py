"""Variational autoencoders: discretized logistic likelihood, the VAE for the digits, its training loss.

Generated from book/03_vae.md by tools/export.py: do not edit. Change the chapter's cells
marked #@save and run `make notebooks`.
"""

import math

import torch
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

from dgm import data
from dgm.vi import kl_diag_gaussians, reparameterize

LEVELS = data.DIGITS_LEVELS  # pixel values 0..16


def discretized_logistic_log_prob(k, mean, log_scale, levels: int = LEVELS):
    """log P(x = k) under the discretized logistic of eq. (disc-logistic).

    k, mean, log_scale broadcast; k holds levels 0..levels-1 (any dtype); the end bins
    take the logistic's tails.
    Defined in book/03_vae.md, section "A likelihood for discrete pixels".
    """
    k = k.to(mean.dtype)
    inv_s = torch.exp(-log_scale)
    # lower and upper bin edge, standardized
    a = torch.where(k > 0, (k - 0.5 - mean) * inv_s, -math.inf)
    b = torch.where(k < levels - 1, (k + 0.5 - mean) * inv_s, math.inf)
    # eq. (disc-logistic-log)
    return F.logsigmoid(b) + F.logsigmoid(-a) + torch.log(-torch.expm1(a - b))


def mlp_with_dropout(n_in: int, hidden: int, n_out: int, depth: int = 2,
                     dropout: float = 0.0,
                     activation: type[nn.Module] = nn.GELU) -> nn.Sequential:
    """n_in -> hidden (activation, dropout) x depth -> n_out.

    Defined in book/03_vae.md, section "A likelihood for discrete pixels".
    """
    layers, width = [], n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), activation(), nn.Dropout(dropout)]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, n_out))


class VAE(nn.Module):
    """A variational autoencoder for the 8x8 digits (dim=784, levels=256: MNIST).

    x has shape (n, dim), torch.long levels 0..levels-1. q_phi(z | x) =
    N(mu, diag exp(logvar)) from an MLP encoder; p(z) = N(0, I); p_theta(x | z) a
    product over pixels of a mixture of `components` discretized logistics
    (likelihood="logistic") or of levels-way categoricals (likelihood="categorical"),
    from an MLP decoder.
    Defined in book/03_vae.md, section "A likelihood for discrete pixels".
    """

    def __init__(self, z_dim: int = 16, hidden: int = 512, likelihood: str = "logistic",
                 components: int = 3, dropout: float = 0.1, dim: int = 64,
                 levels: int = LEVELS):
        super().__init__()
        if likelihood not in ("logistic", "categorical"):
            raise ValueError("likelihood must be 'logistic' or 'categorical', "
                             f"got {likelihood!r}")
        self.z_dim, self.dim, self.likelihood = z_dim, dim, likelihood
        self.components, self.levels = components, levels
        # the middle level (8 on the digits), and one digits level (1/16 of the
        # range) in levels: the decoder's means and scales are in that unit
        self.mid, self.unit = (levels - 1) / 2, (levels - 1) / 16
        # decoder outputs per pixel
        self.n_out = 3 * components if likelihood == "logistic" else levels
        self.encoder = mlp_with_dropout(dim, hidden, 2 * z_dim, dropout=dropout)
        self.decoder = mlp_with_dropout(z_dim, hidden, self.n_out * dim,
                                        dropout=dropout)

    def encode(self, x):
        """(mu, logvar) of q_phi(z | x), each of shape (n, z_dim)."""
        x = data.check_levels(x, self.levels, self.dim)
        return self.encoder(x.float() / self.mid - 1).chunk(2, dim=-1)

    def _decode(self, z):
        """The decoder's outputs for each pixel: shape (..., dim, n_out)."""
        return self.decoder(z).unflatten(-1, (self.n_out, self.dim)).transpose(-1, -2)

    def _mixture_log_prob(self, out, x):
        """log of each pixel's mixture of discretized logistics at levels x.

        x is broadcast against out[..., 0].
        """
        # each of shape (..., components)
        logits, mean, log_scale = out.unflatten(-1, (3, self.components)).unbind(-2)
        log_p = discretized_logistic_log_prob(
            x[..., None], self.mid + self.unit * mean,
            log_scale.clamp(min=-5) + math.log(self.unit), self.levels)
        return torch.logsumexp(F.log_softmax(logits, -1) + log_p, dim=-1)

    def log_lik(self, x, z):
        """log p_theta(x | z), summed over pixels.

        x of shape (n, dim) and z of shape (..., n, z_dim) give shape (..., n).
        """
        out = self._decode(z)
        if self.likelihood == "categorical":
            log_p = (F.log_softmax(out, -1)
                     .gather(-1, x.expand(*out.shape[:-1])[..., None]).squeeze(-1))
        else:
            # only at the observed levels: `levels` times cheaper
            log_p = self._mixture_log_prob(out, x)
        return log_p.sum(-1)

    def pixel_log_probs(self, z):
        """log p_theta(x_i = k | z) for every pixel i and level k.

        Shape (..., dim, levels) for z of shape (..., z_dim).
        """
        out = self._decode(z)
        if self.likelihood == "categorical":
            return F.log_softmax(out, -1)
        return self._mixture_log_prob(out[..., None, :],
                                      torch.arange(self.levels, device=z.device))

    def elbo_terms(self, x, per_dim: bool = False):
        """The ELBO's two terms (eq. vae-elbo): reconstruction and KL.

        The reconstruction log p(x | z) at one sample z ~ q, shape (n,), and
        KL(q || p(z)), shape (n,), or (n, z_dim) per latent dimension with per_dim=True.
        """
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)
        zero = torch.zeros_like(mu)
        # KL of a diagonal Gaussian is a sum over dimensions; with per_dim=True each
        # dimension j is passed as its own 1-D Gaussian (a trailing axis of size 1),
        # so kl_diag_gaussians returns the summands KL(q_j || N(0, 1)), shape (n, z_dim)
        if per_dim:
            return self.log_lik(x, z), kl_diag_gaussians(
                mu[..., None], logvar[..., None], zero[..., None], zero[..., None])
        return self.log_lik(x, z), kl_diag_gaussians(mu, logvar, zero, zero)

    def elbo(self, x):
        """A one-sample estimate of the ELBO of each image in nats, shape (n,)."""
        reconstruction, kl = self.elbo_terms(x)
        return reconstruction - kl

    @torch.no_grad()
    def log_prob(self, x, k: int = 1000, chunk: int = 100):
        """Importance-sampled estimate of log p_theta(x) (eq. iwae), shape (n,).

        It uses k samples of q_phi(z | x), and the model as it is: call model.eval()
        first (fit does) so that dropout is off.
        """
        mu, logvar = self.encode(x)
        q = Normal(mu, (0.5 * logvar).exp())
        log_w = []
        for start in range(0, k, chunk):
            z = q.sample((min(chunk, k - start),))  # (chunk, n, z_dim)
            log_w.append(self.log_lik(x, z) + Normal(0.0, 1.0).log_prob(z).sum(-1)
                         - q.log_prob(z).sum(-1))
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)

    @torch.no_grad()
    def decode_mean(self, z):
        """The expected pixel values E[x | z], shape (n, dim).

        A picture of what z encodes (in eval mode, no dropout).
        """
        levels = torch.arange(self.levels, dtype=z.dtype, device=z.device)
        return (self.pixel_log_probs(z).exp() * levels).sum(-1)

    @torch.no_grad()
    def sample(self, n: int):
        """n images x ~ p_theta(x | z), z ~ p(z) (in eval mode, no dropout).

        Shape (n, dim), torch.long levels 0..levels-1.
        """
        z = torch.randn(n, self.z_dim, device=next(self.parameters()).device)
        return torch.distributions.Categorical(logits=self.pixel_log_probs(z)).sample()


def vae_loss(beta: float = 1.0, warmup_steps: int = 0, free_bits: float = 0.0,
             shift: bool = True, record=None):
    """The training loss for `fit`: the batch average of -[reconstruction - beta_t KL].

    beta_t = beta * min(1, t / warmup_steps) (KL warm-up). With free_bits > 0 each
    latent dimension's batch-average KL counts as at least free_bits nats. While
    training, images are shifted by up to one pixel (data.shift_digits), and `record` (a
    dict of lists), if given, receives the batch means of both terms. In evaluation the
    loss is the plain negative ELBO.
    Defined in book/03_vae.md, section "A likelihood for discrete pixels".
    """
    step = 0

    def loss(model, x):
        nonlocal step
        if not model.training:
            return -model.elbo(x).mean()
        step += 1
        beta_t = beta * (min(1.0, step / warmup_steps) if warmup_steps else 1.0)
        # per-dimension rates; a model with several stochastic layers (HVAE) returns one
        # block per layer, and every latent dimension is treated alike
        reconstruction, *rates = model.elbo_terms(data.shift_digits(x) if shift else x,
                                                  per_dim=True)
        kl = torch.cat(rates, -1)
        kl_term = (kl.mean(0).clamp(min=free_bits).sum() if free_bits
                   else kl.sum(-1).mean())
        if record is not None:
            record.setdefault("reconstruction", []).append(reconstruction.mean().item())
            record.setdefault("KL", []).append(kl.sum(-1).mean().item())
        return -(reconstruction.mean() - beta_t * kl_term)

    return loss


def iwae_encoder_grads(model: VAE, x, k: int, replicates: int,
                       estimator: str = "iwae"):
    """M = replicates independent estimates of the gradient of L_k (eq. iwae).

    The gradient is taken with respect to the encoder's outputs (mu, logvar), that is
    the biases of its last layer, by the plain reparameterized IWAE estimator
    (estimator="iwae") or the doubly reparameterized one (eq. dreg, "dreg"). x has shape
    (n, dim); returns shape (replicates, n, 2 * z_dim). Call model.eval() first.
    Defined in book/03_vae.md, section "Training with the bound: the encoder's signal-to-noise ratio".
    """
    if estimator not in ("iwae", "dreg"):
        raise ValueError(f"estimator must be 'iwae' or 'dreg', got {estimator!r}")
    if k < 1 or replicates < 2:
        raise ValueError(f"need k >= 1 and replicates >= 2, got {k} and {replicates}")
    mu, logvar = (t.detach() for t in model.encode(x))  # (n, z_dim) each
    # one copy of (mu, logvar) per replicate: its gradient is that replicate's estimate
    mu_r = mu.expand(replicates, *mu.shape).clone().requires_grad_()
    logvar_r = logvar.expand(replicates, *mu.shape).clone().requires_grad_()
    eps = torch.randn(k, *mu_r.shape, device=mu.device)
    z = mu_r + (0.5 * logvar_r).exp() * eps  # (k, M, n, z_dim)
    if estimator == "dreg":  # q's parameters enter log w only through z
        q = Normal(mu_r.detach(), (0.5 * logvar_r.detach()).exp())
    else:
        q = Normal(mu_r, (0.5 * logvar_r).exp())
    log_w = (model.log_lik(x, z) + Normal(0.0, 1.0).log_prob(z).sum(-1)
             - q.log_prob(z).sum(-1))  # (k, M, n)
    if estimator == "dreg":  # eq. (dreg)
        w_tilde = torch.softmax(log_w, dim=0).detach()
        surrogate = (w_tilde ** 2 * log_w).sum(0)
    else:  # log (1/k) sum_i w_i
        surrogate = torch.logsumexp(log_w, dim=0) - math.log(k)
    g_mu, g_logvar = torch.autograd.grad(surrogate.sum(), [mu_r, logvar_r])
    return torch.cat([g_mu, g_logvar], dim=-1)


class CVAE(VAE):
    """A conditional VAE (eq. cvae-elbo).

    q_phi(z | x, y), p_theta(x | z, y) and p(z) = N(0, I).

    y has shape (n,), torch.long classes 0..n_classes-1, one-hot encoded into the
    input of both networks; the other arguments are those of VAE.
    Defined in book/03_vae.md, section "Conditional VAEs".
    """

    def __init__(self, n_classes: int = 10, z_dim: int = 16, hidden: int = 256,
                 dropout: float = 0.1, **kwargs):
        super().__init__(z_dim=z_dim, hidden=hidden, dropout=dropout, **kwargs)
        self.n_classes = n_classes
        self.encoder = mlp_with_dropout(self.dim + n_classes, hidden, 2 * z_dim,
                                        dropout=dropout)
        self.decoder = mlp_with_dropout(z_dim + n_classes, hidden,
                                        self.n_out * self.dim, dropout=dropout)

    def _with_label(self, h, y):
        """h of shape (..., n, m) with one-hot y appended: (..., n, m + n_classes)."""
        if y.dtype != torch.long or y.shape != h.shape[-2:-1]:
            raise ValueError(f"y must be torch.long of shape ({h.shape[-2]},), got "
                             f"{y.dtype} of shape {tuple(y.shape)}")
        one_hot = F.one_hot(y, self.n_classes).to(h.dtype)
        return torch.cat([h, one_hot.expand(*h.shape[:-1], self.n_classes)], -1)

    def encode(self, x, y):
        """(mu, logvar) of q_phi(z | x, y), each of shape (n, z_dim)."""
        x = data.check_levels(x, self.levels, self.dim)
        h = x.float() / self.mid - 1
        return self.encoder(self._with_label(h, y)).chunk(2, dim=-1)

    def elbo(self, x, y):
        """A one-sample estimate of the ELBO (eq. cvae-elbo) per image, shape (n,)."""
        mu, logvar = self.encode(x, y)
        z = reparameterize(mu, logvar)
        zero = torch.zeros_like(mu)
        return (self.log_lik(x, self._with_label(z, y))
                - kl_diag_gaussians(mu, logvar, zero, zero))

    @torch.no_grad()
    def decode_mean(self, z, y):
        """E[x | z, y], shape (n, dim)."""
        return super().decode_mean(self._with_label(z, y))

    @torch.no_grad()
    def sample(self, n: int, y):
        """n images x ~ p_theta(x | z, y), z ~ p(z), for the labels y of shape (n,)."""
        z = torch.randn(n, self.z_dim, device=next(self.parameters()).device)
        logits = self.pixel_log_probs(self._with_label(z, y))
        return torch.distributions.Categorical(logits=logits).sample()

    def log_prob(self, x, *args, **kwargs):
        raise NotImplementedError("a CVAE models p(x | y): its bound is elbo(x, y); "
                                  "the VAE's log_prob(x) has no label to condition on")

    def elbo_terms(self, x, *args, **kwargs):
        raise NotImplementedError("a CVAE's ELBO needs the labels: use elbo(x, y)")


class VQVAE(nn.Module):
    """A VQ-VAE (eqs. vq, vq-loss) for the 8x8 digits.

    The MLP encoder gives `positions` vectors of size code_dim, each quantized to the
    nearest of `codes` codebook vectors; the MLP decoder gives levels-way categoricals
    per pixel. x has shape (n, dim), torch.long levels 0..levels-1.
    Defined in book/03_vae.md, section "Discrete latents: the VQ-VAE".
    """

    def __init__(self, positions: int = 4, codes: int = 32, code_dim: int = 8,
                 hidden: int = 256, dim: int = 64, levels: int = LEVELS):
        super().__init__()
        self.positions, self.codes, self.code_dim, self.dim = (positions, codes,
                                                               code_dim, dim)
        self.levels, self.mid = levels, (levels - 1) / 2
        self.encoder = mlp_with_dropout(dim, hidden, positions * code_dim)
        self.decoder = mlp_with_dropout(positions * code_dim, hidden, dim * levels)
        self.codebook = nn.Parameter(torch.randn(codes, code_dim))  # e_1..e_K

    def encode(self, x):
        """z_e(x), shape (n, positions, code_dim)."""
        x = data.check_levels(x, self.levels, self.dim)
        return self.encoder(x.float() / self.mid - 1).unflatten(-1, (self.positions,
                                                              self.code_dim))

    def quantize(self, z_e):
        """Eq. (vq): code indices c, shape (n, positions), and z_q = e_c."""
        c = torch.cdist(z_e.flatten(0, -2), self.codebook).argmin(-1)
        c = c.view(z_e.shape[:-1])
        return c, self.codebook[c]

    def pixel_log_probs(self, z_q):
        """log p_theta(x_i = k | z_q), shape (n, dim, levels)."""
        logits = self.decoder(z_q.flatten(-2)).unflatten(-1, (self.dim, self.levels))
        return F.log_softmax(logits, -1)

    def log_lik(self, x, z_q):
        """log p_theta(x | z_q), summed over pixels, shape (n,)."""
        return self.pixel_log_probs(z_q).gather(-1, x[..., None]).squeeze(-1).sum(-1)

    def loss_terms(self, x):
        """Eq. (vq-loss)'s three terms, each of shape (n,), and the codes c.

        Returns log p_theta(x | z_q) (through the straight-through estimator), the
        codebook loss and the commitment loss (without its weight beta_c).
        """
        z_e = self.encode(x)
        c, e = self.quantize(z_e)
        z_q = z_e + (e - z_e).detach()  # straight-through: forward e, backward identity
        codebook_loss = ((z_e.detach() - e) ** 2).sum((-1, -2))
        commitment_loss = ((z_e - e.detach()) ** 2).sum((-1, -2))
        return self.log_lik(x, z_q), codebook_loss, commitment_loss, c


class CodePrior(nn.Module):
    """An autoregressive prior pi(c) = prod_p pi(c_p | c_<p) over grids of codes.

    Position p's logits come from a one-hidden-layer MLP on the one-hot codes before it
    (position 0 from a constant input). c has shape (n, positions), torch.long.
    Defined in book/03_vae.md, section "Discrete latents: the VQ-VAE".
    """

    def __init__(self, positions: int, codes: int, hidden: int = 64):
        super().__init__()
        self.positions, self.codes = positions, codes
        self.nets = nn.ModuleList([mlp_with_dropout(max(p, 1) * codes, hidden, codes,
                                                    depth=1) for p in range(positions)])

    def logits(self, c):
        """Logits of pi(c_p | c_<p) for every p, shape (n, positions, codes)."""
        if c.dtype != torch.long or c.ndim != 2 or c.shape[1] != self.positions:
            raise ValueError(f"c must be torch.long of shape (n, {self.positions}), "
                             f"got {c.dtype} of shape {tuple(c.shape)}")
        one_hot = F.one_hot(c, self.codes).float().flatten(-2)
        start = torch.ones_like(one_hot[:, :self.codes])  # the input for position 0
        inputs = [one_hot[:, :p * self.codes] if p else start
                  for p in range(self.positions)]
        return torch.stack([net(h) for net, h in zip(self.nets, inputs)], -2)

    def log_prob(self, c):
        """log pi(c) in nats, shape (n,)."""
        log_p = F.log_softmax(self.logits(c), -1)
        return log_p.gather(-1, c[..., None]).squeeze(-1).sum(-1)

    @torch.no_grad()
    def sample(self, n: int):
        """n code grids from pi, one position at a time; shape (n, positions)."""
        c = torch.zeros(n, self.positions, dtype=torch.long)
        for p in range(self.positions):
            logits = self.logits(c)[:, p]
            c[:, p] = torch.distributions.Categorical(logits=logits).sample()
        return c


class HVAE(VAE):
    """A VAE with two stochastic layers (eq. hvae-elbo) for the 8x8 digits.

    p(z_2) = N(0, I), p_theta(z_1 | z_2) diagonal Gaussian, p_theta(x | z_1) the decoder
    of VAE; q_phi(z_1 | x) q_phi(z_2 | z_1) bottom-up. z_dim = d (layer 1) and
    z2_dim = d_2.
    Defined in book/03_vae.md, section "Two stochastic layers: a hierarchical VAE".
    """

    def __init__(self, z_dim: int = 16, z2_dim: int = 8, hidden: int = 256,
                 hidden2: int = 128, dropout: float = 0.1, **kwargs):
        super().__init__(z_dim=z_dim, hidden=hidden, dropout=dropout, **kwargs)
        self.z2_dim = z2_dim
        self.encoder2 = mlp_with_dropout(z_dim, hidden2, 2 * z2_dim, dropout=dropout)
        self.prior1 = mlp_with_dropout(z2_dim, hidden2, 2 * z_dim, dropout=dropout)

    def _sample_layers(self, x, samples: tuple = ()):
        """z_1, z_2 ~ q and the Gaussians' (mean, logvar); leading dims `samples`."""
        mu1, logvar1 = self.encode(x)
        z1 = mu1 + (0.5 * logvar1).exp() * torch.randn(*samples, *mu1.shape,
                                                      device=mu1.device)
        mu2, logvar2 = self.encoder2(z1).chunk(2, dim=-1)
        z2 = reparameterize(mu2, logvar2)
        prior_mu1, prior_logvar1 = self.prior1(z2).chunk(2, dim=-1)
        return z1, z2, (mu1, logvar1), (mu2, logvar2), (prior_mu1, prior_logvar1)

    def elbo_terms(self, x, per_dim: bool = False):
        """Reconstruction, R_1 and R_2 of eq. (hvae-elbo) at one sample, each (n,).

        With per_dim=True the rates have shapes (n, z_dim) and (n, z2_dim).
        """
        z1, z2, (mu1, logvar1), (mu2, logvar2), (pm1, plv1) = self._sample_layers(x)
        rate1 = (Normal(mu1, (0.5 * logvar1).exp()).log_prob(z1)
                 - Normal(pm1, (0.5 * plv1).exp()).log_prob(z1))
        zero = torch.zeros_like(mu2)
        rate2 = kl_diag_gaussians(mu2[..., None], logvar2[..., None], zero[..., None],
                                  zero[..., None])
        if not per_dim:
            rate1, rate2 = rate1.sum(-1), rate2.sum(-1)
        return self.log_lik(x, z1), rate1, rate2

    def elbo(self, x):
        """A one-sample estimate of the ELBO (eq. hvae-elbo) per image, shape (n,)."""
        reconstruction, rate1, rate2 = self.elbo_terms(x)
        return reconstruction - rate1 - rate2

    @torch.no_grad()
    def log_prob(self, x, k: int = 1000, chunk: int = 100):
        """Importance-sampled estimate of log p_theta(x) with q(z_1 | x) q(z_2 | z_1).

        Shape (n,); call model.eval() first.
        """
        log_w = []
        for start in range(0, k, chunk):
            z1, z2, (mu1, lv1), (mu2, lv2), (pm1, plv1) = self._sample_layers(
                x, (min(chunk, k - start),))
            log_p = (self.log_lik(x, z1)
                     + Normal(pm1, (0.5 * plv1).exp()).log_prob(z1).sum(-1)
                     + Normal(0.0, 1.0).log_prob(z2).sum(-1))
            log_q = (Normal(mu1, (0.5 * lv1).exp()).log_prob(z1).sum(-1)
                     + Normal(mu2, (0.5 * lv2).exp()).log_prob(z2).sum(-1))
            log_w.append(log_p - log_q)
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)

    @torch.no_grad()
    def sample(self, n: int):
        """n images: z_2 ~ p(z_2), z_1 ~ p_theta(z_1 | z_2), x ~ p_theta(x | z_1)."""
        z2 = torch.randn(n, self.z2_dim, device=next(self.parameters()).device)
        z1 = reparameterize(*self.prior1(z2).chunk(2, dim=-1))
        return torch.distributions.Categorical(logits=self.pixel_log_probs(z1)).sample()


def hvae_loss(warmup_steps: int = 0, free_bits: float = 0.0, shift: bool = True):
    """The loss for `fit`: batch mean of -[reconstruction - beta_t (R_1 + R_2)].

    vae_loss with beta = 1: warm-up and free bits (per latent dimension of both layers,
    on the batch mean of its rate) as there; in evaluation the plain negative ELBO.
    Defined in book/03_vae.md, section "Two stochastic layers: a hierarchical VAE".
    """
    return vae_loss(warmup_steps=warmup_steps, free_bits=free_bits, shift=shift)
