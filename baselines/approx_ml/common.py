"""What the three methods share: the batch mean of per-sample losses with non-finite ones zeroed and counted
(their FC stack is :func:`ebflow.architectures.dense_stack` with each method's own dense layer)."""

from __future__ import annotations

import torch
from torch import Tensor


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
