"""A training step and a small fit loop (used by examples, tests and the suite's adapters)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from . import objectives
from .ema import EMA
from .model import EBFlow

__all__ = ["train_step", "fit", "FitResult", "decayed_lr"]


def decayed_lr(lr: float, step: int, steps_per_epoch: int, factor: float = 1.0, epochs: int = 0) -> float:
    """Learning rate for training step ``step`` (0-based) under EBFlow's per-epoch decay.

    The official code multiplies the lr by ``factor`` after each of the first ``epochs`` epochs
    (MNIST-FC: 0.95 for 49 epochs), so step ``t`` of epoch ``e = t // steps_per_epoch`` uses
    ``lr * factor ** min(e, epochs)``.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"lr decay factor must lie in (0, 1], got {factor}")
    if epochs < 0 or step < 0:
        raise ValueError(f"epochs and step must be >= 0, got {epochs}, {step}")
    return lr * factor ** min(step // steps_per_epoch, epochs)


def _objective(objective: str | Callable[..., Tensor]) -> Callable[..., Tensor]:
    return objectives.get(objective) if isinstance(objective, str) else objective


def train_step(model: EBFlow, optimizer: torch.optim.Optimizer, objective: str | Callable[..., Tensor],
               batch: Tensor, clip: float | None = None, **hp: Any) -> float:
    """One step: ``loss = objective(model, batch, **hp)``, backward, optional grad-norm clip, optimizer step.

    Raises ``FloatingPointError`` on a non-finite loss (before touching the parameters), so that a diverged
    run is reported instead of silently continuing (EBFlow's code zeroes NaN losses per sample instead).
    """
    loss = _objective(objective)(model, batch, **hp)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    model.invalidate_logdet_cache()  # fused optimizers write parameters without bumping their versions
    return float(loss.detach())


@dataclass
class FitResult:
    losses: list[float] = field(default_factory=list)
    ema: EMA | None = None


def fit(model: EBFlow, data: Tensor, objective: str | Callable[..., Tensor], *, steps: int,
        batch_size: int = 256, lr: float = 1e-3, optimizer: str = "adam", clip: float | None = None,
        ema_decay: float | None = None, seed: int = 0, **hp: Any) -> FitResult:
    """Train ``model`` on ``data`` [N, D] for ``steps`` minibatch steps (batches drawn with replacement).

    ``optimizer`` is ``"adam"`` or ``"rmsprop"`` (EBFlow's image configs). ``hp`` goes to the objective.
    With ``ema_decay`` the result carries an :class:`EMA` updated after every step.
    """
    makers = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
    if optimizer not in makers:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {sorted(makers)}")
    if data.ndim != 2 or data.shape[1] != model.dim:
        raise ValueError(f"fit: data must be [N, {model.dim}], got {tuple(data.shape)}")
    ref = next(model.parameters())
    data = data.to(device=ref.device, dtype=ref.dtype)
    opt = makers[optimizer](model.parameters(), lr=lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    fn = _objective(objective)
    if "generator" in inspect.signature(fn).parameters:
        hp.setdefault("generator", gen)  # seeded objective noise too
    result = FitResult(ema=EMA(model, ema_decay) if ema_decay is not None else None)
    for _ in range(steps):
        idx = torch.randint(data.shape[0], (min(batch_size, data.shape[0]),), generator=gen)
        result.losses.append(train_step(model, opt, fn, data[idx.to(data.device)], clip=clip, **hp))
        if result.ema is not None:
            result.ema.update()
    return result
