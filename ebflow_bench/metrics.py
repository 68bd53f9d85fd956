"""Metrics: a registry of plain functions with one signature.

Every metric is ``fn(task, samples, nll, *, seed) -> float`` where ``samples`` are the model's samples
([n, D] float32 CPU) and ``nll`` the per-sample test NLL in nats ([N], on ``task.test`` or its first N rows) or
``None`` when the method has no likelihood. A metric raises :class:`MetricUnavailable` when it is not defined
for this method (e.g. ``test_nll`` without an NLL); any other exception, or a non-finite value, marks it
``failed``. :func:`compute_metrics` runs every metric that applies to the task and never raises for one bad
metric. Metrics whose ``applies(task)`` is false (e.g. ``grid_kl`` on a 64-D task) are left out of its rows.

Choices where the sources are silent (all documented per metric below):

- sample metrics compare at most ``MAX_POINTS`` = 2000 model samples with at most 2000 test points, each a
  deterministic subsample drawn from ``seed`` (the first rows when there are fewer);
- MMD uses the RBF kernel with the median heuristic on the pooled subsample;
- grid KL/TV use a ``GRID`` x ``GRID`` histogram on ``task.bounds`` (20 x 20), with the true cell
  probabilities integrated by an 8 x 8 midpoint rule per cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .tasks import Task, bits_per_dim

Tensor = torch.Tensor
MetricFn = Callable[..., float]

#: subsample size (per side) of the sample-based metrics
MAX_POINTS = 2000
#: random projections of the sliced Wasserstein distance
N_PROJECTIONS = 500
#: cells per axis of the grid metrics, midpoint-rule points per cell and axis, histogram pseudo-count
GRID, GRID_SUBDIV, GRID_ALPHA = 20, 8, 0.5


class MetricUnavailable(RuntimeError):
    """The metric is not defined for this method (the message says why)."""


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    unit: str
    applies: Callable[[Task], bool]

    def __call__(self, task: Task, samples: Tensor, nll: Tensor | None, *, seed: int) -> float:
        return self.fn(task, samples, nll, seed=seed)


_METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, unit: str, applies: Callable[[Task], bool] = lambda task: True):
    """Decorator registering ``fn(task, samples, nll, *, seed) -> float`` under ``name``."""

    def deco(fn: MetricFn) -> MetricFn:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        _METRICS[name] = Metric(name, fn, unit, applies)
        return fn

    return deco


def available_metrics() -> list[str]:
    return sorted(_METRICS)


#: the same list under the name the CLI uses (like ``adapters.available``)
available = available_metrics


def get_metric(name: str) -> Metric:
    try:
        return _METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(available_metrics())}") from None


def compute_metrics(task: Task, samples: Tensor, nll: Tensor | None, seed: int = 0,
                    names: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows ``{metric, value, unit, status, reason}`` for every metric (or those in ``names``) that applies to
    ``task``; ``status`` is ``ok``, ``unavailable`` (MetricUnavailable) or ``failed`` (any other error or a
    non-finite value; value NaN, ``reason`` says why)."""
    rows = []
    for name in (available_metrics() if names is None else names):
        m = get_metric(name)
        if not m.applies(task):
            continue
        row = {"metric": name, "value": math.nan, "unit": m.unit, "status": "ok", "reason": ""}
        try:
            value = float(m(task, samples, nll, seed=seed))
            if math.isfinite(value):
                row["value"] = value
            else:
                row.update(status="failed", reason=f"non-finite value {value}")
        except MetricUnavailable as e:
            row.update(status="unavailable", reason=str(e))
        except Exception as e:  # noqa: BLE001  (one bad metric must not sink the others)
            row.update(status="failed", reason=f"{type(e).__name__}: {e}")
        rows.append(row)
    return rows


# --- helpers --------------------------------------------------------------------------------------------------------

def _samples(task: Task, samples: Tensor) -> Tensor:
    """Model samples as float64 [n, D], or a clear error if their shape or values are bad."""
    if samples.ndim != 2 or samples.shape[1] != task.dim or samples.shape[0] < 2:
        raise ValueError(f"samples have shape {tuple(samples.shape)}, expected [n >= 2, {task.dim}]")
    bad = int((~torch.isfinite(samples)).sum())
    if bad:
        raise ValueError(f"samples contain {bad} non-finite values")
    return samples.detach().to("cpu", torch.float64)


def _subsample(x: Tensor, seed: int, salt: int) -> Tensor:
    """At most MAX_POINTS rows of ``x``, chosen by a generator seeded from (seed, salt)."""
    if len(x) <= MAX_POINTS:
        return x
    g = torch.Generator().manual_seed(int(seed) * 1000003 + salt)
    return x[torch.randperm(len(x), generator=g)[:MAX_POINTS]]


def _pair(task: Task, samples: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    return (_subsample(_samples(task, samples), seed, 1),
            _subsample(task.test.detach().to("cpu", torch.float64), seed, 2))


def _nll(nll: Tensor | None) -> Tensor:
    if nll is None:
        raise MetricUnavailable("the method gives no likelihood")
    bad = int((~torch.isfinite(nll)).sum())
    if bad:
        raise ValueError(f"test NLL has {bad} non-finite values")
    return nll.detach().double()


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    """Median heuristic: the median of the pairwise Euclidean distances of the pooled points (i != j)."""
    z = torch.cat([x, y])
    h = float(torch.pdist(z).median())
    if not h > 0:
        raise ValueError("median pairwise distance is 0 (most points coincide, e.g. collapsed or saturated "
                         "samples): no RBF bandwidth")
    return h


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidth: float) -> float:
    """Unbiased MMD^2 with k(a, b) = exp(-|a - b|^2 / (2 h^2)):
    sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1)) - 2 mean k(x_i, y_j)."""
    g = -0.5 / bandwidth**2

    def off_diag_mean(a: Tensor) -> Tensor:
        k = torch.exp(g * torch.cdist(a, a).square())
        return (k.sum() - k.diagonal().sum()) / (len(a) * (len(a) - 1))

    kxy = torch.exp(g * torch.cdist(x, y).square()).mean()
    return float(off_diag_mean(x) + off_diag_mean(y) - 2 * kxy)


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance (Szekely's E-statistic, squared form) 2 E|X - Y| - E|X - X'| - E|Y - Y'|, with the
    within-sample means taken over i != j (U-statistics)."""

    def off_diag_mean(a: Tensor) -> Tensor:
        return torch.pdist(a).mean()  # pdist lists each unordered pair once: the mean over i != j

    return float(2 * torch.cdist(x, y).mean() - off_diag_mean(x) - off_diag_mean(y))


def grid_probabilities(task: Task) -> tuple[Tensor, tuple[np.ndarray, np.ndarray]]:
    """True cell probabilities [GRID, GRID] on ``task.bounds`` (normalised over the grid; each cell integrated
    by a GRID_SUBDIV^2-point midpoint rule of ``task.log_prob``) and the cell edges per axis."""
    (x0, x1), (y0, y1) = task.bounds  # type: ignore[misc]
    fine = GRID * GRID_SUBDIV
    cx = x0 + (torch.arange(fine, dtype=torch.float64) + 0.5) * (x1 - x0) / fine
    cy = y0 + (torch.arange(fine, dtype=torch.float64) + 0.5) * (y1 - y0) / fine
    pts = torch.stack(torch.meshgrid(cx, cy, indexing="ij"), -1).reshape(-1, 2)
    logp = task.log_prob(pts).double().reshape(fine, fine)  # type: ignore[misc]
    p = torch.exp(logp - logp.max()).reshape(GRID, GRID_SUBDIV, GRID, GRID_SUBDIV).sum((1, 3))
    edges = (np.linspace(x0, x1, GRID + 1), np.linspace(y0, y1, GRID + 1))
    return p / p.sum(), edges


def _histogram(task: Task, samples: Tensor, edges: tuple[np.ndarray, np.ndarray]) -> tuple[Tensor, int]:
    """Sample counts per grid cell (samples outside the bounds dropped) and the total number of samples."""
    x = _samples(task, samples).numpy()
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=edges)
    return torch.from_numpy(counts), len(x)


def _is_grid_task(task: Task) -> bool:
    return task.dim == 2 and task.bounds is not None and task.log_prob is not None


# --- metrics ----------------------------------------------------------------------------------------------------

@register_metric("test_nll", unit="nats")
def test_nll(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int) -> float:
    """Mean per-sample test NLL in nats (data space)."""
    return float(_nll(nll).mean())


@register_metric("test_bpd", unit="bits/dim", applies=lambda task: task.discrete_scale is not None)
def test_bpd(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int) -> float:
    """Mean test NLL in bits/dim of the integer data: (nll + D log s) / (D log 2), see ``tasks.bits_per_dim``."""
    return float(bits_per_dim(float(_nll(nll).mean()), task))


@register_metric("sliced_wasserstein", unit="data units")
def sliced_wasserstein(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int) -> float:
    """Sliced 2-Wasserstein distance to the test set (POT, N_PROJECTIONS random directions seeded by ``seed``):
    (E_theta W_2^2(theta^T X, theta^T Y))^(1/2)."""
    import ot

    x, y = _pair(task, samples, seed)
    return float(ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), n_projections=N_PROJECTIONS,
                                                seed=int(seed)))


@register_metric("mmd", unit="MMD^2")
def mmd(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int) -> float:
    """Unbiased RBF MMD^2 to the test set, bandwidth by the median heuristic on the pooled points."""
    x, y = _pair(task, samples, seed)
    return mmd2_unbiased(x, y, median_bandwidth(x, y))


@register_metric("energy_distance", unit="data units")
def energy_distance_metric(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| between model samples and the test set."""
    return energy_distance(*_pair(task, samples, seed))


@register_metric("grid_kl", unit="nats", applies=_is_grid_task)
def grid_kl(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int) -> float:
    """KL(p_true || q_model) on the GRID x GRID cells of ``task.bounds``.

    p: true cell probabilities (grid-normalised). q: the model's smoothed histogram
    q_k = (c_k + alpha) / (n + alpha K), alpha = 0.5 (Krichevsky-Trofimov), K = GRID^2, n = all samples, so mass
    the model puts outside the bounds lowers q and is penalised. With n samples from the true density the
    estimate is still biased upwards by about (K_support - 1) / (2 n).
    """
    p, edges = grid_probabilities(task)
    counts, n = _histogram(task, samples, edges)
    q = (counts + GRID_ALPHA) / (n + GRID_ALPHA * counts.numel())
    keep = p > 0
    return float((p[keep] * (p[keep].log() - q[keep].log())).sum())


@register_metric("grid_tv", unit="probability", applies=_is_grid_task)
def grid_tv(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int) -> float:
    """Total variation 1/2 sum_k |p_k - c_k / n| on the grid cells, plus 1/2 the fraction of samples outside the
    bounds (where p is taken as 0); raw frequencies, no smoothing."""
    p, edges = grid_probabilities(task)
    counts, n = _histogram(task, samples, edges)
    outside = 1.0 - float(counts.sum()) / n
    return float(0.5 * ((p - counts / n).abs().sum() + outside))


@register_metric("mode_weight_error", unit="MSE",
                 applies=lambda task: task.mode_means is not None and task.mode_weights is not None)
def mode_weight_error(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int) -> float:
    """mean_k (f_k - w_k)^2, with f_k the fraction of model samples whose nearest mode centre is k and w_k the
    true weight (Grenioux et al. 2023, Table 3). Where modes overlap, nearest-centre fractions of exact samples
    differ slightly from the weights (negligible for the suite's 2-D mixtures; zero by symmetry for ``gmm``)."""
    x = _samples(task, samples)
    centres = task.mode_means.double()  # type: ignore[union-attr]
    nearest = torch.cdist(x, centres).argmin(1)
    frac = torch.bincount(nearest, minlength=len(centres)).double() / len(x)
    return float((frac - task.mode_weights.double()).square().mean())  # type: ignore[union-attr]


@register_metric("log_density_error", unit="nats^2", applies=lambda task: task.log_prob is not None)
def log_density_error(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int) -> float:
    """median_i (log q(x_i) - log p_true(x_i))^2 over the test points x_i, with log q = -nll: the squared
    log-density error of Grenioux et al. (2023, Table 1), there taken over the EBM's normalised density. For
    EBMs whose NLL rests on an estimated log Z, an error in that estimate shifts every term alike."""
    per_sample = _nll(nll).detach().to("cpu", torch.float64)
    x = task.test[:len(per_sample)]
    log_p = task.log_prob(x.to(torch.float64) if x.dtype != torch.float64 else x)  # type: ignore[misc]
    return float((-per_sample - log_p.detach().to("cpu", torch.float64)).square().median())
