"""One fit loop for every model in the book.

``fit(model, loss_fn, train)`` runs minibatch Adam on ``loss_fn(model, batch)``, a scalar
(mean over the batch) that the chapter writes with the math. It seeds everything, shows a
progress bar in Jupyter (quiet in the static site), records the loss history, evaluates a
validation set each epoch, stops early on it and restores the best weights.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .book import building_site

__all__ = ["seed_everything", "default_device", "History", "fit", "evaluate"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; return a ``torch.Generator`` seeded the same way."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def default_device(device: str | torch.device | None = "auto") -> torch.device:
    """The device to train on: ``device`` itself, or for ``"auto"`` (and ``None``) CUDA when
    present, else Apple's MPS when present, else the CPU. The book never needs a GPU: on a
    machine without one, "auto" is the CPU and every number is the CPU's."""
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:0', 'mps' or a "
                         f"torch.device, got {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for, but this torch "
                           f"({torch.__version__}) sees no CUDA GPU; use device='auto' "
                           "(the CPU here) or, in Colab, Runtime > Change runtime type > GPU")
    return resolved


@dataclass
class History:
    """What a fit leaves behind: per-step and per-epoch losses, the best epoch, wall time."""

    step: list[float] = field(default_factory=list)  # training loss of every minibatch
    train: list[float] = field(default_factory=list)  # mean training loss of every epoch
    val: list[float] = field(default_factory=list)  # validation loss after every epoch
    best_epoch: int | None = None  # 0-based epoch whose weights were restored (with val)
    seconds: float = 0.0

    @property
    def best_val(self) -> float | None:
        return None if self.best_epoch is None else self.val[self.best_epoch]


def _as_tensors(data, what: str) -> tuple[torch.Tensor, ...]:
    items = data if isinstance(data, (tuple, list)) else (data,)
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise TypeError(f"{what} must be a tensor or a tuple of tensors with the same first dimension")
    n = len(items[0])
    if n == 0 or any(len(t) != n for t in items):
        raise ValueError(f"{what}: tensors must be non-empty and share their first dimension, got "
                         f"{[tuple(t.shape) for t in items]}")
    return tuple(items)


def _batch(items: Sequence[torch.Tensor], idx: torch.Tensor, device: torch.device):
    out = tuple(t[idx].to(device) for t in items)
    return out[0] if len(out) == 1 else out


@torch.no_grad()
def evaluate(model: torch.nn.Module, loss_fn: Callable, data, batch_size: int = 512,
             device: str | torch.device | None = None) -> float:
    """Mean of ``loss_fn(model, batch)`` over ``data``, weighted by batch size, in eval mode."""
    items = _as_tensors(data, "data")
    device = default_device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, n = 0.0, len(items[0])
    for i in range(0, n, batch_size):
        idx = torch.arange(i, min(i + batch_size, n))
        total += float(loss_fn(model, _batch(items, idx, device))) * len(idx)
    model.train(was_training)
    return total / n


def fit(
    model: torch.nn.Module,
    loss_fn: Callable,
    train,
    *,
    val=None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    patience: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    optimizer: torch.optim.Optimizer | None = None,
    clip_grad: float | None = None,
    progress: bool = True,
    desc: str = "fit",
) -> History:
    """Train ``model`` by minimizing ``loss_fn(model, batch)`` with minibatch Adam.

    ``train`` (and ``val``) is a tensor or a tuple of tensors; a batch is the same rows of
    each (a single tensor when there is one). With ``val`` the validation loss is measured
    after each epoch; with ``patience`` too, training stops after that many epochs without
    improvement. With ``val`` the weights of the best epoch are restored at the end.
    ``optimizer`` replaces the default ``Adam(lr, weight_decay)``. ``device="auto"`` trains on
    CUDA when present, else MPS, else the CPU (:func:`default_device`); batches are moved
    there, the data stay where they are. Returns a :class:`History`.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    items = _as_tensors(train, "train")
    val_items = _as_tensors(val, "val") if val is not None else None
    g = seed_everything(seed)
    device = default_device(device)
    model.to(device).train()
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)

    from tqdm.auto import tqdm

    hist, best_state, best, since_best = History(), None, math.inf, 0
    n, start = len(items[0]), time.perf_counter()
    bar = tqdm(range(epochs), desc=desc, disable=not progress or building_site(), leave=False)
    for epoch in bar:
        total = 0.0
        for idx in torch.randperm(n, generator=g).split(batch_size):
            loss = loss_fn(model, _batch(items, idx, device))
            if loss.ndim != 0:
                raise ValueError(f"loss_fn must return a scalar (the batch mean), got shape {tuple(loss.shape)}")
            value = loss.detach().item()
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at epoch {epoch}; try a smaller lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            opt.step()
            hist.step.append(value)
            total += value * len(idx)
        hist.train.append(total / n)
        postfix = {"train": f"{hist.train[-1]:.4g}"}
        if val_items is not None:
            hist.val.append(evaluate(model, loss_fn, val_items, device=device))
            postfix["val"] = f"{hist.val[-1]:.4g}"
            if hist.val[-1] < best:
                best, since_best, hist.best_epoch = hist.val[-1], 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
        bar.set_postfix(postfix)
        if patience is not None and val_items is not None and since_best >= patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    hist.seconds = time.perf_counter() - start
    return hist
