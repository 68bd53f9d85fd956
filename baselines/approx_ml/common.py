"""What the three methods share: EBFlow's FC stack with a method's own dense layer, and the batch mean of per-sample losses with non-finite ones zeroed and counted."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ebflow import EBFlow
from ebflow.layers import Layer, SmoothLeakyReLU


def finite_mean(per_sample: Tensor) -> tuple[Tensor, int]:
    """``(sum of the finite per-sample losses / B, number of non-finite ones)``.

    The official SNF and EBFlow code zero NaN per-sample losses (``lossval[lossval != lossval] = 0``) and go on
    silently; this keeps that behaviour (the batch mean still divides by the full batch) but returns the count,
    so that a caller can report it. A batch with no finite loss gives NaN (a divergence, not a zero loss).
    """
    finite = torch.isfinite(per_sample)
    n_bad = int((~finite).sum())
    if n_bad == per_sample.numel():
        return per_sample.new_tensor(float("nan")), n_bad
    if n_bad == 0:
        return per_sample.mean(), 0
    return torch.where(finite, per_sample, torch.zeros_like(per_sample)).sum() / per_sample.numel(), n_bad


def dense_stack(dim: int, num_layers: int, dense: Callable[[], Layer], *, alpha: float = 0.3,
                preprocessing: nn.Module | None = None) -> EBFlow:
    """EBFlow's FC model: ``num_layers`` layers built by ``dense()``, a smooth leaky ReLU ``alpha`` between
    consecutive ones."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    layers: list[Layer] = []
    for i in range(num_layers):
        if i:
            layers.append(SmoothLeakyReLU(alpha))
        layers.append(dense())
    return EBFlow(layers, (dim,), preprocessing)
