"""The energy score, a strictly proper scoring rule estimated from model samples (no density, no log-det).

For a model P and an observation y,

    ES_beta(P, y) = E ||X - y||^beta - 1/2 E ||X - X'||^beta,        X, X' ~ P i.i.d.,

strictly proper for ``beta`` in (0, 2) (Gneiting & Raftery 2007): ``E_{y~Q} ES_beta(P, y)`` is minimised only
at ``P = Q``, and exceeds its minimum by half the beta-energy distance between P and Q.

With ``m >= 2`` samples ``x_1..x_m ~ P`` per datum, the estimator used here is the symmetric U-statistic

    (1/m) sum_i ||x_i - y||^beta  -  1/2 * 1/(m(m-1)) sum_{i != j} ||x_i - x_j||^beta,

unbiased for ``ES_beta(P, y)``. Si et al.'s public code (m = 2) uses only ``x_1`` in the first term: also
unbiased, but noisier; the symmetric form costs nothing more. Gradients are pathwise: the samples must come
from a reparameterised generator and stay in the autodiff graph.

Choice where the paper is silent: the norm's gradient at exactly zero (a sample equal to the datum, or two
equal samples) is set to zero and the value is exact; no ``eps`` is added to the norm, so the estimator keeps
its unbiasedness.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["energy_score_loss", "pow_norm", "check_beta", "check_m"]


def check_beta(beta: float) -> float:
    """Return ``beta`` as a float if it lies in the open interval (0, 2), else raise ``ValueError``."""
    beta = float(beta)
    if not 0.0 < beta < 2.0:
        raise ValueError(f"energy score: beta must lie in the open interval (0, 2) (strictly proper range), "
                         f"got beta={beta}")
    return beta


def check_m(m: int) -> int:
    """Return ``m`` if it is an integer >= 2 (the pairwise term needs two samples), else raise ``ValueError``."""
    if isinstance(m, bool) or int(m) != m or m < 2:
        raise ValueError(f"energy score: m (model samples per datum) must be an integer >= 2, got m={m}")
    return int(m)


def pow_norm(diff: Tensor, beta: float) -> Tensor:
    """``||diff||^beta`` over the last dimension, computed as ``(sum diff^2)^(beta/2)``.

    Exact value everywhere; the gradient at ``diff = 0`` (where ``||.||^beta`` is not differentiable, and its
    derivative is infinite for beta < 1) is set to zero instead of NaN: the masked entries see a dummy value 1.
    """
    sq = diff.square().sum(dim=-1)
    positive = sq > 0
    safe = torch.where(positive, sq, torch.ones_like(sq))
    return torch.where(positive, safe.pow(beta / 2.0), torch.zeros_like(sq))


def energy_score_loss(samples: Tensor, y: Tensor, beta: float = 1.0, *, reduction: str = "mean") -> Tensor:
    """Unbiased estimate of ``ES_beta(P, y)`` from ``samples [m, B, D]`` (m >= 2 draws of P per datum), ``y [B, D]``.

    Returns the batch mean (``reduction="mean"``, a scalar) or the per-datum estimates (``"none"``, ``[B]``).
    """
    beta = check_beta(beta)
    if samples.ndim != 3:
        raise ValueError(f"energy_score_loss: samples must have shape [m, B, D], got {tuple(samples.shape)}")
    m = check_m(samples.shape[0])
    if y.shape != samples.shape[1:]:
        raise ValueError(f"energy_score_loss: y has shape {tuple(y.shape)}, expected [B, D] = "
                         f"{tuple(samples.shape[1:])} to match samples {tuple(samples.shape)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"energy_score_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    fit = pow_norm(samples - y.unsqueeze(0), beta).mean(dim=0)  # [B]
    i, j = torch.triu_indices(m, m, offset=1, device=samples.device)
    spread = pow_norm(samples[i] - samples[j], beta).mean(dim=0)  # [B], mean over the m(m-1)/2 unordered pairs
    score = fit - 0.5 * spread
    return score.mean() if reduction == "mean" else score
