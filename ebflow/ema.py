"""Exponential moving average of a model's parameters (EBFlow evaluates with EMA weights, decay 0.999)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Shadow copy ``theta_ema <- decay * theta_ema + (1 - decay) * theta`` of every floating parameter.

    ``with ema.swapped(): ...`` runs the block with the EMA weights in the model and restores the trained
    weights afterwards. Weights are written with in-place ``copy_`` (not through ``.data``), so the parameter
    versions change and :meth:`ebflow.EBFlow.linear_logdet`'s cache is invalidated on both swaps.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.model = model
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow = {name: p.detach().clone() for name, p in self._params()}

    def _params(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.model.named_parameters() if p.is_floating_point())

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses: ``decay``, or with ``warmup`` the official EBFlow rule
        ``min(decay, (1 + n) / (10 + n))`` where ``n`` counts this update (the counter is incremented first)."""
        if not self.warmup:
            return self.decay
        n = self.num_updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self) -> None:
        """Move the shadow weights towards the model's current weights."""
        decay = self.current_decay()
        for name, p in self._params():
            self.shadow[name].lerp_(p.detach(), 1.0 - decay)
        self.num_updates += 1

    @contextmanager
    def swapped(self) -> Iterator[nn.Module]:
        """Context manager: the model holds the EMA weights inside the block."""
        backup = {}
        with torch.no_grad():
            for name, p in self._params():
                backup[name] = p.detach().clone()
                p.copy_(self.shadow[name])
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for name, p in self._params():
                    p.copy_(backup[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.clone() for name, t in self.shadow.items()}
