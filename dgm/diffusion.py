"""Denoising diffusion: schedules, the forward process and its posterior, samplers (DDPM, DDIM), Langevin dynamics, the digits DDPM with a valid likelihood bound.

Generated from book/05_diffusion.md by tools/export.py: do not edit. Change the chapter's cells
marked #@save and run `make notebooks`.
"""

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from dgm import data
from dgm.train import default_device
from dgm.vae import mlp_with_dropout


def linear_alpha_bar(T: int = 1000, beta_1: float = 1e-4,
                     beta_T: float = 0.02) -> torch.Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s) for betas linear from beta_1 to beta_T.

    float64, shape (T,).
    Defined in book/05_diffusion.md, section "The forward process".
    """
    return torch.cumprod(1 - torch.linspace(beta_1, beta_T, T, dtype=torch.float64), 0)


def cosine_alpha_bar(T: int = 1000, nu: float = 0.008) -> torch.Tensor:
    """alpha_bar_t = f(t) / f(0) with f(t) = cos^2((t / T + nu) / (1 + nu) * pi / 2).

    float64, shape (T,).
    Defined in book/05_diffusion.md, section "The forward process".
    """
    f = lambda u: torch.cos((u + nu) / (1 + nu) * math.pi / 2) ** 2
    t = torch.arange(1, T + 1, dtype=torch.float64) / T
    return (f(t) / f(torch.zeros((), dtype=torch.float64))).clamp(min=1e-12)


def rescale_alpha_bar(alpha_bar: torch.Tensor, sigma_1: float,
                      var_T: float) -> torch.Tensor:
    """The schedule with 1 - alpha_bar mapped affinely onto [sigma_1^2, var_T].

    Same shape, chosen ends.
    Defined in book/05_diffusion.md, section "The forward process".
    """
    v = 1 - alpha_bar.double()
    return 1 - (sigma_1**2 + (v - v[0]) / (v[-1] - v[0]) * (var_T - sigma_1**2))


class Schedule:
    """A variance schedule alpha_bar_1..alpha_bar_T and the quantities derived from it.

    Tensors of shape (T,), entry t - 1 for step t: beta, alpha, alpha_bar,
    alpha_bar_prev (alpha_bar_{t-1}, with alpha_bar_0 = 1), sigma = sqrt(1 - alpha_bar),
    the posterior q(x_{t-1} | x_t, x_0)'s variance beta_tilde and mean coefficients
    coef_x0 and coef_xt, logsnr, and kl_weight = (SNR(t-1) - SNR(t)) / 2, the weight of
    ||x_0 - x0_hat||^2 in L_{t-1} (0 at t = 1).
    Defined in book/05_diffusion.md, section "The forward process".
    """

    def __init__(self, alpha_bar: torch.Tensor):
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
        if ab.ndim != 1 or len(ab) < 2:
            raise ValueError("alpha_bar must be a 1D tensor with T >= 2 entries, "
                             f"got shape {tuple(ab.shape)}")
        if not ((ab > 0) & (ab < 1)).all() or not (ab[1:] < ab[:-1]).all():
            raise ValueError("alpha_bar must lie in (0, 1) and decrease strictly")
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        beta = 1 - ab / prev
        self.T = len(ab)
        self.alpha_bar, self.alpha_bar_prev = ab.float(), prev.float()
        self.beta, self.alpha = beta.float(), (1 - beta).float()
        self.sigma = (1 - ab).sqrt().float()
        self.beta_tilde = ((1 - prev) / (1 - ab) * beta).float()           # 0 at t = 1
        self.coef_x0 = (prev.sqrt() * beta / (1 - ab)).float()
        self.coef_xt = ((1 - beta).sqrt() * (1 - prev) / (1 - ab)).float()
        snr = ab / (1 - ab)
        self.logsnr = snr.log().float()
        # eq-diff-snr
        self.kl_weight = torch.cat([torch.zeros(1, dtype=torch.float64),
                                    (snr[:-1] - snr[1:]) / 2]).float()

    @classmethod
    def linear(cls, T: int = 1000, beta_1: float = 1e-4,
               beta_T: float = 0.02) -> "Schedule":
        """Ho et al.'s linear schedule."""
        return cls(linear_alpha_bar(T, beta_1, beta_T))

    @classmethod
    def cosine(cls, T: int = 1000, sigma_1: float | None = None,
               var_T: float | None = None) -> "Schedule":
        """The cosine schedule, optionally rescaled.

        With sigma_1 or var_T, rescaled so that sigma_1^2 = 1 - alpha_bar_1,
        var_T = 1 - alpha_bar_T.
        """
        ab = cosine_alpha_bar(T)
        if sigma_1 is not None or var_T is not None:
            ab = rescale_alpha_bar(
                ab, sigma_1 if sigma_1 is not None else float((1 - ab[0]).sqrt()),
                var_T if var_T is not None else float(1 - ab[-1]))
        return cls(ab)

    def at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The schedule's tensor `name` at steps t (shape (n,)).

        Shaped to broadcast against `like` (n, ...).
        """
        values = getattr(self, name)[t.cpu() - 1].to(like.device)  # kept on the CPU
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor,
                 eps: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sigma_t eps, a draw of q(x_t | x_0)."""
        eps = torch.randn_like(x0) if eps is None else eps
        return self.at("alpha_bar", t, x0).sqrt() * x0 + self.at("sigma", t, x0) * eps

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor,
                  t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0)."""
        mean = self.at("coef_x0", t, x0) * x0 + self.at("coef_xt", t, x0) * xt
        return mean, self.at("beta_tilde", t, x0).expand_as(mean)


def time_embedding(logsnr: torch.Tensor, dim: int = 64) -> torch.Tensor:
    """Sinusoidal features (n, dim) of the noise level, given as its log-SNR (n,).

    Defined in book/05_diffusion.md, section "Training on 2D data".
    """
    freqs = torch.exp(torch.linspace(0, math.log(1000.0), dim // 2,
                                     device=logsnr.device))
    arg = logsnr[:, None] / 20 * freqs
    return torch.cat([torch.sin(arg), torch.cos(arg)], 1)


def with_label(h: torch.Tensor, label: nn.Embedding | None, y: torch.Tensor | None,
               p_uncond: float = 0.0, training: bool = False) -> torch.Tensor:
    """Features h (n, emb) with those of the label y appended: (n, 2 emb).

    label embeds the classes and, in its last row, the null label, used for y = None;
    in training, labels are replaced by the null label with probability p_uncond, so
    that the model also learns the unconditional distribution. A model without labels
    has label = None and gets h itself.
    Defined in book/05_diffusion.md, section "Training on 2D data".
    """
    if label is None:
        if y is not None:
            raise ValueError("this model has no labels (num_classes=0): "
                             "call it with y=None")
        return h
    null = label.num_embeddings - 1
    if y is None:
        y = torch.full((len(h),), null, dtype=torch.long, device=h.device)
    elif training and p_uncond > 0:
        # drop labels so that the model also learns p(x)
        drop = torch.rand(len(y), device=y.device) < p_uncond
        y = torch.where(drop, torch.full_like(y, null), y)
    return torch.cat([h, label(y)], 1)


class Diffusion(nn.Module):
    """What the diffusion models share: a schedule, optional labels, the sampler.

    The labels come with a null label. Subclasses set dim, the data's dimension, and
    define x0_hat(x_t, t, y), the prediction of x_0 from x_t (y = None: no label).
    Defined in book/05_diffusion.md, section "Training on 2D data".
    """

    def __init__(self, schedule: Schedule, num_classes: int = 0, p_uncond: float = 0.0,
                 emb: int = 64):
        super().__init__()
        self.schedule, self.num_classes = schedule, num_classes
        self.p_uncond, self.emb = p_uncond, emb
        # index num_classes: "no label"
        self.label = nn.Embedding(num_classes + 1, emb) if num_classes else None

    def condition(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Features of the step t (through its log-SNR) and of the label y.

        Shape (n, emb or 2 emb).
        """
        h = time_embedding(self.schedule.at("logsnr", t, t), self.emb)
        return with_label(h, self.label, y, self.p_uncond, self.training)

    def x0_hat(self, xt: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        raise NotImplementedError

    def guided_x0(self, xt, t, y=None, w: float = 0.0):
        """Classifier-free guidance.

        x0_hat(x_t, y) + w (x0_hat(x_t, y) - x0_hat(x_t, no label)).
        """
        x0 = self.x0_hat(xt, t, y)
        if y is not None and w != 0:
            x0 = x0 + w * (x0 - self.x0_hat(xt, t, None))
        return x0

    def decode(self, x1, t1, y=None, w: float = 0.0):
        """The last step, x_1 -> x_0: here the predicted mean.

        Discrete models draw a level instead.
        """
        return self.guided_x0(x1, t1, y, w)

    @torch.no_grad()
    def sample_from(self, xT: torch.Tensor, steps: int | None = None, eta: float = 1.0,
                    y=None, w: float = 0.0):
        """Run the reverse process from x_T on `steps` evenly spaced steps (default T).

        eta = 1 draws from the ancestral (DDPM) reverse process; eta = 0 is DDIM's
        deterministic update. Both go through x0_hat and
        eps_hat = (x_t - sqrt(alpha_bar_t) x0_hat) / sigma_t.
        """
        s, was_training = self.schedule, self.training
        steps = s.T if steps is None else steps
        if not 2 <= steps <= s.T:
            raise ValueError(f"steps must lie in 2..{s.T}, got {steps}")
        if y is not None and len(y) != len(xT):
            raise ValueError("y must have one label per sample, "
                             f"got {len(y)} labels for {len(xT)} samples")
        self.eval()
        # T, ..., 1
        ts = torch.linspace(1, s.T, steps).round().long().unique().flip(0).tolist()
        x = xT
        for t, t_prev in zip(ts[:-1], ts[1:]):
            ab, ab_prev = s.alpha_bar[t - 1], s.alpha_bar[t_prev - 1]
            x0 = self.guided_x0(x, torch.full((len(x),), t, device=x.device), y, w)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            # = beta_tilde_t when eta = 1, t_prev = t - 1
            var = eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
            x = (ab_prev.sqrt() * x0 + (1 - ab_prev - var).clamp(min=0).sqrt() * eps
                 + var.sqrt() * torch.randn_like(x))
        x0 = self.decode(x, torch.full((len(x),), ts[-1], device=x.device), y, w)
        self.train(was_training)
        return x0

    def sample(self, n: int, steps: int | None = None, eta: float = 1.0, y=None,
               w: float = 0.0) -> torch.Tensor:
        """n samples of shape (n, dim) from x_T ~ N(0, I) (see sample_from).

        The digits DDPM returns levels, drawn in the last step (see DDPM.decode).
        """
        p = next(self.parameters(), None)  # the model's device (the CPU without any)
        xT = torch.randn(n, self.dim, device=p.device if p is not None else "cpu")
        return self.sample_from(xT, steps, eta, y, w)


class GaussianDiffusion(Diffusion):
    """An epsilon-predicting DDPM for data in R^dim (the 2D toys).

    It is trained with the simple loss.
    Defined in book/05_diffusion.md, section "Training on 2D data".
    """

    def __init__(self, dim: int = 2, schedule: Schedule | None = None,
                 hidden: int = 128, depth: int = 3, num_classes: int = 0,
                 p_uncond: float = 0.1):
        super().__init__(schedule or Schedule.cosine(1000, var_T=0.9999), num_classes,
                         p_uncond, emb=32)
        self.dim = dim
        self.net = mlp_with_dropout(dim + self.emb * (2 if num_classes else 1), hidden,
                                    dim, depth, activation=nn.SiLU)

    def eps_hat(self, xt, t, y=None):
        return self.net(torch.cat([xt, self.condition(t, y)], 1))

    def x0_hat(self, xt, t, y=None):
        s = self.schedule
        return ((xt - s.at("sigma", t, xt) * self.eps_hat(xt, t, y))
                / s.at("alpha_bar", t, xt).sqrt())

    def score(self, xt, t, y=None):
        """The estimate -eps_hat / sigma_t of grad log q_t(x_t) (Tweedie's formula)."""
        return -self.eps_hat(xt, t, y) / self.schedule.at("sigma", t, xt)

    def loss(self, x0: torch.Tensor, y=None) -> torch.Tensor:
        """The simple loss ||eps - eps_hat(x_t, t)||^2 per example.

        t is uniform on 1..T.
        """
        x0 = data.check_points(x0, self.dim)
        t = torch.randint(1, self.schedule.T + 1, (len(x0),), device=x0.device)
        eps = torch.randn_like(x0)
        xt = self.schedule.q_sample(x0, t, eps)
        return ((eps - self.eps_hat(xt, t, y)) ** 2).sum(1)


def train_diffusion(model: Diffusion, x: torch.Tensor, y: torch.Tensor | None = None, *,
                    epochs: int = 100, batch_size: int = 50, lr: float = 1e-3,
                    weight_decay: float = 0.0, ema: float = 0.99, augment=None,
                    val=None, eval_every: int = 10, seed: int = 0, log=None,
                    device="auto") -> dict:
    """Minibatch AdamW on model.loss(x, y).mean(), with an EMA of the weights.

    An exponential moving average (EMA) of the weights: the EMA weights end up in
    `model` (in eval mode). With val = fn(model) -> float (lower is better), evaluated
    every eval_every epochs, the EMA weights of the best evaluation are kept: early
    stopping. Returns the history: per-epoch mean loss, evaluation epochs and values.
    device="auto": CUDA when present, else MPS, else the CPU (batches move there).
    Defined in book/05_diffusion.md, section "Training on 2D data".
    """
    if y is not None and len(y) != len(x):
        raise ValueError("x and y must have the same length, "
                         f"got {len(x)} and {len(y)}")
    if epochs < 1 or batch_size < 1 or not 0 <= ema < 1:
        raise ValueError("need epochs >= 1, batch_size >= 1 and 0 <= ema < 1, "
                         f"got {epochs}, {batch_size}, {ema}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = default_device(device)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    average = copy.deepcopy(model).eval()
    history, best = {"loss": [], "val_epoch": [], "val": []}, (math.inf, None)
    model.train()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            xb = x[idx] if augment is None else augment(x[idx])
            yb = None if y is None else y[idx].to(device)
            loss = model.loss(xb.to(device), yb).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            with torch.no_grad():
                for p_avg, p in zip(average.parameters(), model.parameters()):
                    p_avg.lerp_(p, 1 - ema)
                for b_avg, b in zip(average.buffers(), model.buffers()):
                    b_avg.copy_(b)
        history["loss"].append(total / len(x))
        if val is not None and (epoch % eval_every == 0 or epoch == epochs):
            with torch.no_grad():
                v = float(val(average))
            history["val_epoch"].append(epoch)
            history["val"].append(v)
            if log is not None:
                log(f"epoch {epoch}: validation {v:.3f}")
            if v < best[0]:
                best = (v, copy.deepcopy(average.state_dict()))
    model.load_state_dict(best[1] if best[1] is not None else average.state_dict())
    model.eval()
    return history


@torch.no_grad()
def langevin(score, x: torch.Tensor, n_steps: int, step_size: float) -> torch.Tensor:
    """n_steps of x <- x + (step_size / 2) score(x) + sqrt(step_size) z.

    The chain starts from the points x.
    Defined in book/05_diffusion.md, section "Langevin dynamics".
    """
    for _ in range(n_steps):
        x = x + step_size / 2 * score(x) + math.sqrt(step_size) * torch.randn_like(x)
    return x


LEVELS = 17  # intensity levels of a digits pixel


def discretized_gaussian_log_prob(mean: torch.Tensor, std,
                                  levels: torch.Tensor) -> torch.Tensor:
    """log P(level k): N(mean, std^2) integrated over each level's bin, shape (..., K).

    The outer bins are open.
    Defined in book/05_diffusion.md, section "The smallest noise level decides the likelihood".
    """
    h = (levels[1] - levels[0]) / 2
    normal = torch.distributions.Normal(mean[..., None],
                                        std[..., None] if torch.is_tensor(std) else std)
    one = torch.ones((), device=levels.device)
    zero = torch.zeros((), device=levels.device)
    upper = torch.where(levels < levels[-1], normal.cdf(levels + h), one)
    lower = torch.where(levels > levels[0], normal.cdf(levels - h), zero)
    logp = torch.log((upper - lower).clamp(min=1e-12))
    # normalized again where the clamp added mass
    return logp - logp.logsumexp(-1, keepdim=True)


class DigitsDenoiser(nn.Module):
    """(x_t, condition) -> outputs per pixel.

    Residual 3x3 convolutions on the 8x8 image (channels > 0) plus an MLP on the
    flattened image (hidden > 0), summed. The condition enters as per-channel biases.
    Defined in book/05_diffusion.md, section "The smallest noise level decides the likelihood".
    """

    def __init__(self, d_cond: int, d_out: int, channels: int = 64,
                 conv_layers: int = 6, conv_dropout: float = 0.1, hidden: int = 0,
                 depth: int = 2, dropout: float = 0.5, dim: int = 64):
        super().__init__()
        if channels <= 0 and hidden <= 0:
            raise ValueError("the denoiser needs a convolutional branch (channels > 0) "
                             "or an MLP (hidden > 0)")
        self.side, self.d_out = int(math.isqrt(dim)), d_out
        if channels > 0:
            if self.side**2 != dim:
                raise ValueError("the convolutional branch needs square images, "
                                 f"got dim={dim}")
            self.conv_in = nn.Conv2d(1, channels, 3, padding=1)
            self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1)
                                       for _ in range(conv_layers))
            self.cond = nn.ModuleList(nn.Linear(d_cond, channels)
                                      for _ in range(conv_layers))
            self.conv_drop = nn.Dropout(conv_dropout)
            self.conv_out = nn.Conv2d(channels, d_out // dim, 1)
        self.channels = channels
        self.mlp = (mlp_with_dropout(dim + d_cond, hidden, d_out, depth, dropout,
                                     nn.SiLU) if hidden > 0 else None)

    def forward(self, xt: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = 0
        if self.channels > 0:
            h = self.conv_in(xt.reshape(-1, 1, self.side, self.side))
            for conv, lin in zip(self.convs, self.cond):
                h = h + conv(self.conv_drop(F.silu(h + lin(cond)[:, :, None, None])))
            out = (self.conv_out(F.silu(h)).permute(0, 2, 3, 1)
                   .reshape(len(xt), self.d_out))
        if self.mlp is not None:
            out = out + self.mlp(torch.cat([xt, cond], 1))
        return out


class DDPM(Diffusion):
    """A DDPM for the digits: x of shape (n, dim), levels 0..levels-1 (64 and 17 for
    the digits, 784 and 256 for MNIST) scaled to c_k in [-1, 1].

    denoiser="categorical": p(x_0 = c_k | x_t) per pixel from network logits plus the
    exact Gaussian log-likelihood of x_t, and x0_hat its mean. denoiser="eps": an
    epsilon-predicting network and a discretized Gaussian decoder. Either way the
    reverse step is N(mu_tilde(x_t, x0_hat), beta_tilde), every term of the bound is a
    closed-form KL, and t = 1 is a discrete decoder, so nll_bound estimates a valid
    upper bound on -log P(x) in nats without bias. Network options are those of
    DigitsDenoiser.
    Defined in book/05_diffusion.md, section "The smallest noise level decides the likelihood".
    """

    def __init__(self, schedule: Schedule | None = None, denoiser: str = "categorical",
                 num_classes: int = 0, p_uncond: float = 0.2, dim: int = 64,
                 levels: int = LEVELS, **network):
        super().__init__(schedule or Schedule.cosine(1000, sigma_1=0.02, var_T=0.9999),
                         num_classes, p_uncond)
        if denoiser not in ("categorical", "eps"):
            raise ValueError("denoiser must be 'categorical' or 'eps', "
                             f"got {denoiser!r}")
        self.dim, self.denoiser, self.n_levels = dim, denoiser, levels
        self.register_buffer("levels", torch.linspace(-1, 1, levels))
        d_cond = self.emb * (2 if num_classes else 1)
        self.net = DigitsDenoiser(d_cond, dim * levels if denoiser == "categorical"
                                  else dim, dim=dim, **network)
        # importance sampling of t in training: a moving average of L_t^2 on log-spaced
        # bins of 1..T
        edges = (torch.logspace(0, math.log10(self.schedule.T + 1), 31).round().long()
                 .unique())
        self.register_buffer("bin_edges", edges)
        self.register_buffer("bin_sq", torch.ones(len(edges) - 1))

    def denoise(self, xt: torch.Tensor, t: torch.Tensor,
                y=None) -> tuple[torch.Tensor, torch.Tensor]:
        """x0_hat (n, dim) and log p(x_0 = c_k | x_t) (n, dim, levels)."""
        out = self.net(xt, self.condition(t, y))
        ab = self.schedule.at("alpha_bar", t, xt)
        if self.denoiser == "categorical":
            loglik = (-((xt[..., None] - ab[..., None].sqrt() * self.levels) ** 2)
                      / (2 * (1 - ab[..., None])))
            logits = out.reshape(len(xt), self.dim, self.n_levels)
            logp = F.log_softmax(logits + loglik, -1)
            return (logp.exp() * self.levels).sum(-1), logp
        x0_hat = (xt - (1 - ab).sqrt() * out) / ab.sqrt()
        return x0_hat, discretized_gaussian_log_prob(x0_hat, ((1 - ab) / ab).sqrt(),
                                                     self.levels)

    def x0_hat(self, xt, t, y=None):
        return self.denoise(xt, t, y)[0]

    def terms(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        """Per example, one x_t-sample of the bound's term.

        L_{t-1} for t >= 2, L_0 = -log p(x_0 | x_1) for t = 1.
        """
        x = data.check_levels(x, self.n_levels, dim=self.dim)
        s, x0 = self.schedule, self.levels[x]
        x0_hat, logp = self.denoise(s.q_sample(x0, t), t, y)
        kl = (s.at("kl_weight", t, x0) * (x0 - x0_hat) ** 2).sum(1)  # eq-diff-snr
        nll = -logp.gather(2, x[..., None]).squeeze(2).sum(1)
        return torch.where(t == 1, nll, kl)

    def prior_kl(self, x: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) per example."""
        x0 = self.levels[data.check_levels(x, self.n_levels, dim=self.dim)]
        ab = self.schedule.alpha_bar[-1]
        return 0.5 * (ab * x0**2 + (1 - ab) - 1 - torch.log(1 - ab)).sum(1)

    def t_probs(self) -> torch.Tensor:
        """p(t) for t = 1..T, shape (T,): p(t) proportional to sqrt(E L_t^2) of t's bin.

        A bin of n_b steps is drawn with probability proportional to n_b * rms_b, then t
        uniformly in it (Nichol and Dhariwal's rule, with E L_t^2 pooled per bin).
        """
        sizes = self.bin_edges[1:] - self.bin_edges[:-1]
        per_step = self.bin_sq.sqrt().repeat_interleave(sizes)
        return per_step / per_step.sum()

    def draw_t(self, n: int):
        """t ~ p(t) of t_probs. Returns t, 1 / p(t) and t's bin."""
        p = self.t_probs()
        t = torch.multinomial(p, n, replacement=True) + 1
        b = torch.bucketize(t, self.bin_edges, right=True) - 1
        return t, 1 / p[t - 1], b

    def loss(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """Per example, an unbiased one-step estimate of the bound without L_T.

        L_{t-1} / p(t), t ~ p(t).
        """
        t, inv_p, b = self.draw_t(len(x))
        terms = self.terms(x, t, y)
        if self.training:
            with torch.no_grad():
                for j in b.unique():
                    self.bin_sq[j] = (0.95 * self.bin_sq[j]
                                      + 0.05 * (terms[b == j] ** 2).mean())
        return inv_p * terms

    @torch.no_grad()
    def all_terms(self, x: torch.Tensor, y=None) -> torch.Tensor:
        """Every term of the bound, L_0 .. L_{T-1}, per example: shape (T, n).

        One draw of x_t each, in eval mode.
        """
        was_training = self.training
        self.eval()
        terms = torch.stack([
            self.terms(x, torch.full((len(x),), t, device=x.device), y)
            for t in range(1, self.schedule.T + 1)])
        self.train(was_training)
        return terms

    @torch.no_grad()
    def nll_bound(self, x: torch.Tensor, y=None,
                  t_samples: int | None = None) -> torch.Tensor:
        """The upper bound on -log P(x) in nats per example, estimated without bias.

        The bound is L_T plus the sum of all T terms. Each term is evaluated at one draw
        of x_t (so a single value is an unbiased estimate of the bound, not itself
        guaranteed above -log P(x)). With t_samples = K the sum over t is also
        estimated, from one uniform draw in each of K equal strata of 1..T (cheaper,
        noisier).
        """
        if t_samples is None:
            return self.prior_kl(x) + self.all_terms(x, y).sum(0)
        was_training, T = self.training, self.schedule.T
        self.eval()
        total = self.prior_kl(x)
        edges = torch.linspace(1, T + 1, t_samples + 1).long().tolist()
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi > lo:
                t = torch.randint(lo, hi, (len(x),), device=x.device)
                total += (hi - lo) * self.terms(x, t, y)
        self.train(was_training)
        return total

    def decode(self, x1, t1, y=None, w: float = 0.0):
        """The last step, x_1 -> x_0: a level per pixel drawn from p_theta(x_0 | x_1).

        A draw, not the mean: even DDIM (eta = 0) is random in this one step. With a
        label and w != 0 the log-probabilities are guided like x0_hat.
        """
        logp = self.denoise(x1, t1, y)[1]
        if y is not None and w != 0:
            logp = F.log_softmax(logp + w * (logp - self.denoise(x1, t1, None)[1]), -1)
        return torch.distributions.Categorical(logits=logp).sample()
