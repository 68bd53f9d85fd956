"""Normalising-constant estimate by importance sampling, and mode-weight fractions."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .samplers import LogDensity, Proposal


class LogZEstimate(NamedTuple):
    """An importance-sampling ``log Z``: the estimate, its delta-method standard error, the Kish effective
    sample size ``(sum w)^2 / sum w^2`` of the weights and that ESS as a fraction of the ``n`` draws."""

    log_z: float
    stderr: float
    ess: float
    ess_fraction: float
    n: int


@torch.no_grad()
def estimate_log_z(log_unnorm: LogDensity, flow: Proposal, n: int, generator: torch.Generator | None = None,
                   batch_size: int = 8192) -> LogZEstimate:
    """``log Z`` of ``exp(log_unnorm)`` with the flow ``lambda`` as importance proposal, its standard error and
    the effective sample size of the weights (a :class:`LogZEstimate`).

    ``Z_hat = (1/n) sum_i w_i`` with ``w_i = p~(y_i) / lambda(y_i)``, ``y_i ~ lambda``; computed as
    ``logsumexp(log w) - log n``. The standard error of ``log Z_hat`` is the delta-method value
    ``sd(w) / (sqrt(n) mean(w))`` (unbiased sample sd), evaluated on weights rescaled by their maximum.
    It is itself estimated from the weights and is unreliable when the weights are very heavy-tailed: then the
    ESS is small (a handful of draws carry the estimate), ``log Z`` is typically biased low and the stderr too
    small, which is what the ESS is there to show.
    """
    if int(n) != n or n < 2:
        raise ValueError(f"estimate_log_z: n must be an integer >= 2, got {n}")
    chunks = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        y, log_q = flow.sample_and_log_prob(m, generator)
        chunks.append((log_unnorm(y) - log_q.to(y.dtype)).double())
    log_w = torch.cat(chunks)
    if not torch.isfinite(log_w).all():
        raise FloatingPointError("estimate_log_z: non-finite importance log-weights")
    log_z = float(torch.logsumexp(log_w, 0) - math.log(n))
    w = torch.exp(log_w - log_w.max())
    stderr = float(w.std() / (math.sqrt(n) * w.mean()))
    ess = float(w.sum().square() / w.square().sum())
    return LogZEstimate(log_z, stderr, ess, ess / n, int(n))


def mode_weights(samples: Tensor, centers: Tensor) -> Tensor:
    """``[K]``: fraction of ``samples`` ``[n, D]`` whose nearest (Euclidean) centre in ``centers`` ``[K, D]`` is k."""
    if samples.ndim != 2 or centers.ndim != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(f"mode_weights: need samples [n, D] and centers [K, D], got "
                         f"{tuple(samples.shape)} and {tuple(centers.shape)}")
    if samples.shape[0] == 0:
        raise ValueError("mode_weights: no samples")
    nearest = torch.cdist(samples.double(), centers.to(samples.device).double()).argmin(1)
    counts = torch.bincount(nearest, minlength=centers.shape[0])
    return counts.double() / samples.shape[0]
