"""Generative adversarial networks: the GAN losses, MLP generator and discriminator, gradient penalties, the training loop.

Generated from book/04_gans.md by tools/export.py: do not edit. Change the chapter's cells
marked #@save and run `make notebooks`.
"""

import torch
import torch.nn.functional as F
from torch import nn

from dgm import data
from dgm.train import default_device


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """-V(G, D) on a minibatch, from D's logits on real and generated samples.

    With a = logit D(x): log D(x) = -softplus(-a) and log(1 - D(x)) = -softplus(a).
    Defined in book/04_gans.md, section "The two-player game".
    """
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def generator_loss(d_fake: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """The generator's loss from the logits a = logit D(G(z)) of its samples.

    "minimax": E log(1 - D(G(z))), the game's own term (saturates when D rejects the
    samples); "non-saturating": -E log D(G(z)); "wasserstein": -E f(G(z)) for a critic f
    with real outputs.
    Defined in book/04_gans.md, section "Saturation and the non-saturating loss".
    """
    if kind == "minimax":
        return -F.softplus(d_fake).mean()
    if kind == "non-saturating":
        return F.softplus(-d_fake).mean()
    if kind == "wasserstein":
        return -d_fake.mean()
    raise ValueError(f"unknown generator loss {kind!r}; "
                     "use 'minimax', 'non-saturating' or 'wasserstein'")


def gan_mlp(d_in: int, d_out: int, hidden: int, depth: int,
            spectral: bool = False) -> nn.Sequential:
    """An MLP with `depth` hidden layers of width `hidden`, LeakyReLU(0.2) activations.

    With spectral=True every linear layer is spectrally normalized (its weight divided
    by its largest singular value, estimated by power iteration), so the network is
    (approximately) 1-Lipschitz.
    Defined in book/04_gans.md, section "Training a GAN on 2D data".
    """
    dims = [d_in] + [hidden] * depth
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    layers.append(nn.Linear(dims[-1], d_out))
    if spectral:
        layers = [nn.utils.parametrizations.spectral_norm(l) if isinstance(l, nn.Linear)
                  else l for l in layers]
    return nn.Sequential(*layers)


def _with_labels(h: torch.Tensor, y, n_classes: int) -> torch.Tensor:
    """Append one-hot labels to the inputs of a class-conditional network."""
    if n_classes == 0:
        if y is not None:
            raise ValueError("this network is unconditional (n_classes=0) "
                             "but labels y were given")
        return h
    if y is None:
        raise ValueError(f"this network is class-conditional (n_classes={n_classes}): "
                         "pass labels y")
    y = torch.as_tensor(y, device=h.device)
    if (y.shape != (len(h),) or y.dtype != torch.long or int(y.min()) < 0
            or int(y.max()) >= n_classes):
        raise ValueError(f"labels y must be a torch.long tensor of shape ({len(h)},) "
                         f"with values in 0..{n_classes - 1}")
    return torch.cat([h, F.one_hot(y, n_classes).to(h.dtype)], dim=1)


class Generator(nn.Module):
    """x = G(z) with z ~ N(0, I_{z_dim}): `scale` times an MLP's output, or its tanh.

    The tanh is for images: with `levels` set (images of integer levels 0..levels-1),
    G's outputs lie in (-1, 1), the range of the dequantized training data, and `sample`
    returns integer levels.
    Defined in book/04_gans.md, section "Training a GAN on 2D data".
    """

    def __init__(self, dim: int = 2, z_dim: int = 8, hidden: int = 128, depth: int = 3,
                 scale: float = 1.0, levels: int | None = None, n_classes: int = 0):
        super().__init__()
        self.dim, self.z_dim, self.scale = dim, z_dim, scale
        self.levels, self.n_classes = levels, n_classes
        self.net = gan_mlp(z_dim + n_classes, dim, hidden, depth)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (n, {self.z_dim}), "
                             f"got {tuple(z.shape)}")
        h = self.net(_with_labels(z, y, self.n_classes))
        return torch.tanh(h) if self.levels else self.scale * h

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """n samples: points (n, dim), or levels (torch.long) when `levels` is set."""
        device = next(self.parameters()).device
        x = self(torch.randn(n, self.z_dim, device=device), y)
        if self.levels:  # (-1, 1) -> bins of width 2 / levels -> levels 0..levels-1
            return ((x + 1) / 2 * self.levels).floor().clamp(0, self.levels - 1).long()
        return x


class Discriminator(nn.Module):
    """The logit a(x) = logit D(x) (or a critic's real value) of an MLP on x / scale.

    The output has shape (n,).
    Defined in book/04_gans.md, section "Training a GAN on 2D data".
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3,
                 scale: float = 1.0, spectral: bool = False, n_classes: int = 0):
        super().__init__()
        self.dim, self.scale, self.n_classes = dim, scale, n_classes
        self.net = gan_mlp(dim + n_classes, 1, hidden, depth, spectral=spectral)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        return self.net(_with_labels(x / self.scale, y, self.n_classes)).squeeze(1)


def r1_penalty(D: nn.Module, x_real: torch.Tensor, y=None) -> torch.Tensor:
    """E ||grad_x a(x)||^2 at real samples: the R1 regularizer.

    Its weight in the loss is gamma / 2.
    Defined in book/04_gans.md, section "Training a GAN on 2D data".
    """
    x = x_real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x, y).sum(), x, create_graph=True)
    return grad.pow(2).sum(dim=1).mean()


def gradient_penalty(D: nn.Module, x_real: torch.Tensor, x_fake: torch.Tensor,
                     y=None) -> torch.Tensor:
    """The WGAN-GP penalty E (||grad f(x_hat)|| - 1)^2.

    x_hat is uniform on segments between real and generated samples.
    Defined in book/04_gans.md, section "Training a GAN on 2D data".
    """
    eps = torch.rand(len(x_real), 1, device=x_real.device)
    x_hat = (eps * x_real.detach() + (1 - eps) * x_fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat, y).sum(), x_hat, create_graph=True)
    return (grad.norm(dim=1) - 1).pow(2).mean()


def train_gan(G: Generator, D: Discriminator, x: torch.Tensor, steps: int,
              y: torch.Tensor | None = None, loss: str = "non-saturating",
              r1: float = 0.0, gp: float = 0.0, n_critic: int = 1, lr: float = 1e-3,
              betas: tuple[float, float] = (0.5, 0.99), batch_size: int = 256,
              decay: bool = True, augment=None, record=None, record_at=(),
              seed: int = 0, device="auto") -> dict:
    """Alternating minibatch Adam on D (n_critic steps) and G (one step).

    Returns the loss history. loss: the generator's loss ("non-saturating", "minimax",
    or "wasserstein" for a WGAN critic); r1: weight gamma of
    (gamma / 2) E||grad a(x_real)||^2; gp: weight lambda of the WGAN-GP penalty; decay:
    learning rates fall linearly to 0 over `steps`; augment(x_batch) maps data batches
    to the networks' space (e.g. dequantize and rescale images); record(step, G, D) runs
    at steps in record_at. device="auto": CUDA when present, else MPS, else the CPU;
    G and D move there, and so does each batch.
    Defined in book/04_gans.md, section "Training a GAN on 2D data".
    """
    if loss not in ("non-saturating", "minimax", "wasserstein"):
        raise ValueError(f"unknown loss {loss!r}")
    if y is not None and len(y) != len(x):
        raise ValueError("x and y must have the same length, "
                         f"got {len(x)} and {len(y)}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    device = default_device(device)
    G.to(device), D.to(device)
    opt_G = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    schedule = (lambda s: 1 - s / steps) if decay else (lambda s: 1.0)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in (opt_G, opt_D)]
    history = {"d_loss": [], "g_loss": []}
    record_at = set(record_at)

    def batch():
        idx = torch.randint(len(x), (batch_size,), generator=gen)
        xb = x[idx] if augment is None else augment(x[idx])
        return xb.to(device), (None if y is None else y[idx].to(device))

    for step in range(steps + 1):
        if record is not None and step in record_at:
            record(step, G, D)
        if step == steps:
            break
        for _ in range(n_critic):  # discriminator (critic) steps
            x_real, yb = batch()
            with torch.no_grad():
                x_fake = G(torch.randn(batch_size, G.z_dim, device=device), yb)
            a_real, a_fake = D(x_real, yb), D(x_fake, yb)
            if loss == "wasserstein":
                d_loss = a_fake.mean() - a_real.mean()
            else:
                d_loss = discriminator_loss(a_real, a_fake)
            if r1 > 0:
                d_loss = d_loss + r1 / 2 * r1_penalty(D, x_real, yb)
            if gp > 0:
                d_loss = d_loss + gp * gradient_penalty(D, x_real, x_fake, yb)
            opt_D.zero_grad()
            d_loss.backward()
            opt_D.step()
        _, yb = batch()  # generator step, on labels drawn from the data
        z = torch.randn(batch_size, G.z_dim, device=device)
        g_loss = generator_loss(D(G(z, yb), yb), loss)
        opt_G.zero_grad()
        g_loss.backward()
        opt_G.step()
        for s in scheds:
            s.step()
        history["d_loss"].append(d_loss.item())
        history["g_loss"].append(g_loss.item())
    return history


def to_unit(x: torch.Tensor, shift: bool = False,
            levels: int = data.DIGITS_LEVELS) -> torch.Tensor:
    """Digits levels -> dequantized values in (-1, 1), the range of the generator.

    The digits are optionally shifted by ±1 pixel first; levels=256 for MNIST.
    Defined in book/04_gans.md, section "A GAN on the digits".
    """
    return data.dequantize(data.shift_digits(x) if shift else x, levels) * 2 - 1


def quarter_side(side: int) -> int:
    """side / 4: the side of the conv GAN's smallest feature map (2 for 8x8).

    Defined in book/04_gans.md, section "A convolutional GAN".
    """
    if side < 4 or side % 4:
        raise ValueError(f"side must be a multiple of 4 (8 for the digits, 28 for "
                         f"MNIST), got {side}")
    return side // 4


class ConvGenerator(nn.Module):
    """x = G(z) for 8x8 images: a linear map of z to (2C, 2, 2), then transposed
    convolutions (kernel 4, stride 2, padding 1) to (C, 4, 4) and (1, 8, 8), with
    LeakyReLU(0.2) between the layers and a tanh at the end; no batch norm.
    (side=28: (2C, 7, 7), (C, 14, 14), (1, 28, 28).)

    Returns flattened images (n, side^2) in (-1, 1), like Generator(levels=...), so
    that train_gan and the metrics apply unchanged; `sample` returns levels
    0..levels-1.
    Defined in book/04_gans.md, section "A convolutional GAN".
    """

    def __init__(self, z_dim: int = 16, channels: int = 50, levels: int = 17,
                 side: int = 8):
        super().__init__()
        self.z_dim, self.dim, self.channels = z_dim, side * side, channels
        self.levels, self.n_classes, self.base = levels, 0, quarter_side(side)
        self.project = nn.Linear(z_dim, 2 * channels * self.base**2)
        self.net = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1),  # 2->4
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(channels, 1, 4, stride=2, padding=1))  # 4 -> 8

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (n, {self.z_dim}), "
                             f"got {tuple(z.shape)}")
        _with_labels(z, y, 0)  # unconditional: refuses labels with a clear message
        h = self.project(z).view(len(z), 2 * self.channels, self.base, self.base)
        return torch.tanh(self.net(h)).flatten(1)

    sample = Generator.sample  # the same binning of (-1, 1) to levels


class ConvDiscriminator(nn.Module):
    """The logit a(x) of 8x8 images x, given flattened as (n, 64): convolutions
    (kernel 4, stride 2, padding 1) to (C, 4, 4) and (2C, 2, 2) with LeakyReLU(0.2),
    then a linear map to one logit; no batch norm (the R1 penalty is per image).
    (side=28: (C, 14, 14) and (2C, 7, 7).)

    The output has shape (n,).
    Defined in book/04_gans.md, section "A convolutional GAN".
    """

    def __init__(self, channels: int = 50, side: int = 8):
        super().__init__()
        self.dim, self.channels, self.n_classes = side * side, channels, 0
        self.side, base = side, quarter_side(side)
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 4, stride=2, padding=1),  # 8 -> 4
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),  # 4 -> 2
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * channels * base**2, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), {self.side}x"
                             f"{self.side} images flattened (x.flatten(1)), "
                             f"got {tuple(x.shape)}")
        _with_labels(x, y, 0)
        return self.net(x.view(len(x), 1, self.side, self.side)).squeeze(1)
