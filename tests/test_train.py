"""Properties of the fit loop (dgm.train) on problems whose answer is known."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from dgm.book import STATIC_SITE_ENV
from dgm.train import History, default_device, evaluate, fit, seed_everything

W_TRUE = torch.tensor([[1.5, -2.0, 0.5]])
B_TRUE = 0.3


def _regression(n: int = 256, seed: int = 0, noise: float = 0.01):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ W_TRUE.T + B_TRUE + noise * torch.randn(n, 1, generator=g)
    return x, y


def _mse(model, batch):
    x, y = batch
    return (model(x) - y).square().mean()


def _linear(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 1)


def test_fit_reduces_the_loss_and_recovers_the_true_weights():
    model = _linear()
    hist = fit(model, _mse, _regression(), epochs=60, batch_size=32, lr=0.05, progress=False)
    assert isinstance(hist, History)
    assert len(hist.train) == 60 and len(hist.step) == 60 * 8
    assert hist.train[-1] < 1e-3 * hist.train[0]
    assert torch.allclose(model.weight.detach(), W_TRUE, atol=0.02)
    assert abs(model.bias.item() - B_TRUE) < 0.02
    assert hist.val == [] and hist.best_epoch is None and hist.best_val is None
    assert hist.seconds > 0
    assert not model.training  # left in eval mode


def test_epoch_loss_is_the_batch_size_weighted_mean_of_step_losses():
    hist = fit(_linear(), _mse, _regression(n=100), epochs=3, batch_size=32, progress=False)
    sizes = [32, 32, 32, 4]
    for e in range(3):
        steps = hist.step[4 * e: 4 * e + 4]
        assert hist.train[e] == pytest.approx(sum(s * k for s, k in zip(steps, sizes)) / 100, rel=1e-12)


def test_same_seed_gives_the_same_history_and_other_seeds_differ():
    model = _linear()
    data = _regression()
    runs = [fit(copy.deepcopy(model), _mse, data, epochs=3, batch_size=16, seed=s, progress=False).step
            for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_single_tensor_data_gives_single_tensor_batches():
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)) + 3.0
    model = torch.nn.Module()
    model.mu = torch.nn.Parameter(torch.zeros(2))
    seen = []

    def loss_fn(m, batch):
        seen.append(batch)
        return (batch - m.mu).square().sum(dim=1).mean()

    fit(model, loss_fn, x, epochs=200, batch_size=50, lr=0.1, progress=False)
    assert all(isinstance(b, torch.Tensor) for b in seen)
    assert torch.allclose(model.mu.detach(), x.mean(dim=0), atol=1e-2)  # the MLE of a Gaussian mean


def _scalar_model() -> torch.nn.Module:
    model = torch.nn.Module()
    model.theta = torch.nn.Parameter(torch.zeros(()))
    return model


def _sq(model, y):
    return (model.theta - y).square().mean()


def test_early_stopping_stops_and_restores_the_best_weights():
    # Training pulls theta from 0 to 1; validation wants 0.5, so it improves, then worsens.
    train, val = torch.ones(64), torch.full((16,), 0.5)
    model = _scalar_model()
    patience, epochs = 3, 200
    hist = fit(model, _sq, train, val=val, epochs=epochs, batch_size=16, lr=0.02, patience=patience,
               progress=False)
    assert len(hist.val) < epochs
    assert hist.best_epoch is not None and 0 < hist.best_epoch < len(hist.val) - 1
    assert len(hist.val) == hist.best_epoch + 1 + patience  # stopped `patience` epochs after the best
    assert hist.best_val == min(hist.val)
    assert all(v > hist.best_val for v in hist.val[hist.best_epoch + 1:])
    assert evaluate(model, _sq, val) == hist.best_val  # the best weights are back
    assert evaluate(model, _sq, val) < hist.val[-1]
    assert len(hist.train) == len(hist.val)


def test_val_without_patience_runs_all_epochs_and_restores_the_best():
    train, val = torch.ones(64), torch.full((16,), 0.5)
    model = _scalar_model()
    hist = fit(model, _sq, train, val=val, epochs=40, batch_size=16, lr=0.02, progress=False)
    assert len(hist.val) == 40
    assert hist.best_val == min(hist.val)
    assert evaluate(model, _sq, val) == hist.best_val


def test_evaluate_is_the_size_weighted_mean_and_keeps_the_mode():
    model = _linear()
    x, y = _regression(n=103)
    model.train()
    with torch.no_grad():
        full = float(_mse(model, (x, y)))
    assert evaluate(model, _mse, (x, y), batch_size=10) == pytest.approx(full, rel=1e-6)
    assert model.training


def test_non_scalar_loss_raises():
    with pytest.raises(ValueError, match="scalar"):
        fit(_linear(), lambda m, b: (m(b[0]) - b[1]).square(), _regression(n=32), epochs=1, progress=False)


def test_nan_loss_raises():
    with pytest.raises(FloatingPointError):
        fit(_linear(), lambda m, b: _mse(m, b) * float("nan"), _regression(n=32), epochs=1, progress=False)


def test_diverging_loss_raises():
    with pytest.raises(FloatingPointError):
        fit(_linear(), lambda m, b: _mse(m, b) * float("inf"), _regression(n=32), epochs=1, progress=False)


@pytest.mark.parametrize("data", [
    (torch.zeros(10, 3), torch.zeros(9, 1)),  # mismatched lengths
    (torch.zeros(0, 3), torch.zeros(0, 1)),  # empty
])
def test_train_tensors_must_share_a_non_empty_first_dimension(data):
    with pytest.raises(ValueError):
        fit(_linear(), _mse, data, epochs=1, progress=False)


def test_mismatched_validation_data_raise():
    with pytest.raises(ValueError):
        fit(_linear(), _mse, _regression(n=32), val=(torch.zeros(5, 3), torch.zeros(4, 1)), epochs=1,
            progress=False)


@pytest.mark.parametrize("data", [np.zeros((10, 3)), [], (torch.zeros(3), np.zeros(3))])
def test_train_data_must_be_tensors(data):
    with pytest.raises(TypeError):
        fit(_linear(), _mse, data, epochs=1, progress=False)


@pytest.mark.parametrize("kw", [{"epochs": 0}, {"batch_size": 0}])
def test_epochs_and_batch_size_must_be_positive(kw):
    with pytest.raises(ValueError):
        fit(_linear(), _mse, _regression(n=32), progress=False, **kw)


def _fit_with_bar():
    fit(_linear(), _mse, _regression(n=32), epochs=2, batch_size=16, progress=True)


def test_progress_bar_shows_outside_the_site_build(monkeypatch, capsys):
    monkeypatch.delenv(STATIC_SITE_ENV, raising=False)
    _fit_with_bar()
    assert "fit" in capsys.readouterr().err  # the check below could not fail without this


def test_progress_bar_is_quiet_in_the_site_build(monkeypatch, capsys):
    monkeypatch.setenv(STATIC_SITE_ENV, "1")
    _fit_with_bar()
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_progress_false_is_quiet(monkeypatch, capsys):
    monkeypatch.delenv(STATIC_SITE_ENV, raising=False)
    fit(_linear(), _mse, _regression(n=32), epochs=2, progress=False)
    assert capsys.readouterr().err == ""


def test_seed_everything_seeds_python_numpy_and_torch():
    g = seed_everything(5)
    a = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    g = seed_everything(5)
    b = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    assert a == b
    assert isinstance(g, torch.Generator)


@pytest.mark.parametrize("seed", [1.0, "1", True, None])
def test_seed_everything_rejects_non_int(seed):
    with pytest.raises(TypeError):
        seed_everything(seed)


def test_seed_everything_accepts_seeds_beyond_numpys_range():
    seed_everything(2**32 + 5)  # numpy's seed is reduced mod 2^32


def test_default_device():
    # "auto" (the default) is CUDA, else MPS, else the CPU: tests/test_scaling.py checks the rest
    assert default_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert default_device().type == expected
