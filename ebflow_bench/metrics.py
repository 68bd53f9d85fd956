"""Metrics: one registry that declares every metric of the suite once, and plain functions with one signature.

Every metric is registered with its ``label`` (full human title), ``unit``, ``direction`` (``"lower"`` or
``"higher"`` is better, or ``"zero"`` for unbiased estimates of a non-negative quantity such as MMD^2, whose
best value is 0 and whose estimates may fall below it), ``applies(task)``, ``needs`` (``samples``, ``nll``,
``density``), ``group`` (``quality``: ranked in the report; ``diagnostic``: shown, not ranked; ``cost``: time
and memory; ``curve``: time-to-quality rows) and ``computed_by``: ``"metrics"`` (computed here by
:func:`compute_metrics`) or ``"runner"`` (recorded by ``ebflow_bench.runner``: timings, memory, log Z
diagnostics; declared here without a function so that the report and ``ebflow-bench list`` read label, unit and
direction from one place).

A computed metric is ``fn(task, samples, nll, *, seed, density=None) -> float`` where ``samples`` are the model's
samples ([n, D] float32 CPU), ``nll`` the per-sample test NLL in nats ([N], on ``tasks.evaluation_rows(task, N)``: all test rows, or a seeded
random stratified sample of N of them)
or ``None`` when the method has no likelihood, and ``density`` the model's unnormalised log density
(``[N, D] -> [N]``, any constant offset; ``Adapter.density_fn()``) or ``None`` when the method has none. Functions
registered without a ``density`` keyword (the older signature) are still accepted. A metric raises
:class:`MetricUnavailable` when it is not defined for this method (e.g. ``test_nll`` without an NLL); it may
return :class:`Flagged` (a float with a ``status`` and ``reason``, e.g. ``unreliable``); any other exception, or
a non-finite value, marks it ``failed``. :func:`compute_metrics` runs every computed metric that applies to the
task and never raises for one bad metric. Metrics whose ``applies(task)`` is false (e.g. ``grid_kl`` on a 64-D
task) are left out of its rows.

Choices where the sources are silent (all documented per metric below):

- sample metrics compare at most ``MAX_POINTS`` = 2000 model samples with at most 2000 test points, each a
  deterministic subsample drawn from ``seed`` (the first rows when there are fewer);
- MMD uses the RBF kernel with one bandwidth per task and data seed: the median pairwise distance of a fixed
  subsample (``MMD_BANDWIDTH_POINTS`` rows, fixed generator) of ``task.test`` alone, so every method on a task is
  scored with the same kernel, and collapsed samples get a finite (large) MMD^2;
- grid KL/TV use a ``GRID`` x ``GRID`` histogram on ``task.bounds`` (20 x 20), with the true cell
  probabilities integrated by an 8 x 8 midpoint rule per cell;
- EBM mode weights come from the model's own density: in 2-D by quadrature on a ``QUAD_POINTS`` x
  ``QUAD_POINTS`` midpoint grid over ``task.bounds`` padded by ``QUAD_PAD`` of their width on every side (the mass
  outside that grid is integrated where it is, by a log-radius polar rule out to ``FAR_FACTOR`` times the grid,
  and reported as ``mode_weight_outside``), in D > 2 by
  self-normalised importance sampling with ``SNIS_DRAWS`` draws whose effective sample size is reported as
  ``mode_weight_ess``; below ``MIN_MODE_ESS`` the weights are flagged ``unreliable``;
- an importance-sampling log Z (EBMs) makes the NLL ``unreliable`` when the ESS of its weights is below
  ``MIN_LOG_Z_ESS`` or below ``MIN_LOG_Z_ESS_FRACTION`` of the draws (:func:`nll_reliability`).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .tasks import Task, bits_per_dim, evaluation_rows

Tensor = torch.Tensor
MetricFn = Callable[..., float]
Density = Callable[[Tensor], Tensor]

#: subsample size (per side) of the sample-based metrics
MAX_POINTS = 2000
#: random projections of the sliced Wasserstein distance
N_PROJECTIONS = 500
#: cells per axis of the grid metrics, midpoint-rule points per cell and axis, histogram pseudo-count
GRID, GRID_SUBDIV, GRID_ALPHA = 20, 8, 0.5
#: test points whose median pairwise distance sets the task's MMD bandwidth (a fixed subsample)
MMD_BANDWIDTH_POINTS = 1000
#: 2-D mode weights: midpoints per axis of the quadrature grid, and its padding (fraction of the bounds' width)
QUAD_POINTS, QUAD_PAD = 512, 0.5
#: importance-sampling draws of the mode weights (D > 2)
SNIS_DRAWS = 16384
#: the mass outside the 2-D quadrature grid: a polar midpoint rule of FAR_POINTS radii x FAR_POINTS angles out to
#: FAR_FACTOR times the grid's inscribed radius (log-spaced radii)
FAR_POINTS, FAR_FACTOR = 512, 1e6
#: below this effective sample size the SNIS mode weights are flagged ``unreliable``
MIN_MODE_ESS = 100
#: an importance-sampling log Z makes the NLL ``unreliable`` when its ESS is below this many samples ...
MIN_LOG_Z_ESS = 100
#: ... or below this fraction of the draws
MIN_LOG_Z_ESS_FRACTION = 0.01
#: a likelihood that rests on a learned inverse (free-form flows) is ``unreliable`` above this relative
#: reconstruction error of that inverse on the test points (:func:`reconstruction_reliability`)
MAX_RECONSTRUCTION_ERROR = 0.05

DIRECTIONS = ("lower", "higher", "zero")
NEEDS = frozenset({"samples", "nll", "density"})
GROUPS = ("quality", "diagnostic", "cost", "curve")
COMPUTED_BY = ("metrics", "runner")


class MetricUnavailable(RuntimeError):
    """The metric is not defined for this method (the message says why)."""


class Flagged(float):
    """A metric value that carries a status other than ``ok`` (e.g. ``unreliable``) and the reason."""

    def __new__(cls, value: float, status: str, reason: str) -> "Flagged":
        obj = super().__new__(cls, value)
        obj.status, obj.reason = status, reason
        return obj


def _always(task: Task) -> bool:
    return True


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn | None
    unit: str
    applies: Callable[[Task], bool] = _always
    label: str = ""
    direction: str = "lower"
    needs: frozenset = frozenset({"samples"})
    group: str = "quality"
    computed_by: str = "metrics"
    #: whether ``fn`` takes the ``density`` keyword (functions of the older signature do not)
    takes_density: bool = True

    def __call__(self, task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
                 density: Density | None = None) -> float:
        if self.fn is None:
            raise MetricUnavailable(f"{self.name} is recorded by the runner, not computed from samples")
        if self.takes_density:
            return self.fn(task, samples, nll, seed=seed, density=density)
        return self.fn(task, samples, nll, seed=seed)

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` is strictly better than ``b`` in this metric's direction."""
        key = {"lower": lambda v: v, "higher": lambda v: -v, "zero": abs}[self.direction]
        return key(a) < key(b)


_METRICS: dict[str, Metric] = {}


def _add(name: str, fn: MetricFn | None, *, unit: str, applies: Callable[[Task], bool], label: str | None,
         direction: str, needs: Any, group: str, computed_by: str) -> Metric:
    if name in _METRICS:
        raise ValueError(f"metric {name!r} registered twice")
    if direction not in DIRECTIONS:
        raise ValueError(f"metric {name!r}: direction must be one of {DIRECTIONS}, got {direction!r}")
    if group not in GROUPS:
        raise ValueError(f"metric {name!r}: group must be one of {GROUPS}, got {group!r}")
    if computed_by not in COMPUTED_BY:
        raise ValueError(f"metric {name!r}: computed_by must be one of {COMPUTED_BY}, got {computed_by!r}")
    needs = frozenset([needs] if isinstance(needs, str) else needs)
    if not needs <= NEEDS:
        raise ValueError(f"metric {name!r}: needs {sorted(needs - NEEDS)} unknown; known: {sorted(NEEDS)}")
    takes_density = True
    if fn is not None:
        params = inspect.signature(fn).parameters
        takes_density = "density" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    m = Metric(name, fn, unit, applies, label or name, direction, needs, group, computed_by, takes_density)
    _METRICS[name] = m
    return m


def register_metric(name: str, *, unit: str, applies: Callable[[Task], bool] = _always, label: str | None = None,
                    direction: str = "lower", needs: Any = ("samples",), group: str = "quality",
                    computed_by: str = "metrics"):
    """Decorator registering ``fn(task, samples, nll, *, seed, density=None) -> float`` under ``name`` with its
    declaration (see the module docstring; ``label`` defaults to the name). ``fn(task, samples, nll, *, seed)``
    (no ``density``) is accepted too."""

    def deco(fn: MetricFn) -> MetricFn:
        _add(name, fn, unit=unit, applies=applies, label=label, direction=direction, needs=needs, group=group,
             computed_by=computed_by)
        return fn

    return deco


def declare_metric(name: str, *, unit: str, label: str, direction: str = "lower", group: str = "cost",
                   applies: Callable[[Task], bool] = _always, needs: Any = ()) -> Metric:
    """Declare a metric that the runner records itself (``computed_by="runner"``, no function)."""
    return _add(name, None, unit=unit, applies=applies, label=label, direction=direction, needs=needs, group=group,
                computed_by="runner")


def available_metrics(computed_by: str | None = None) -> list[str]:
    """Names of every declared metric (or only those ``computed_by`` ``"metrics"`` or ``"runner"``), sorted."""
    return sorted(n for n, m in _METRICS.items() if computed_by is None or m.computed_by == computed_by)


#: the same list under the name the CLI uses (like ``adapters.available``)
available = available_metrics


def declared() -> list[Metric]:
    """Every declared metric, in declaration order (the report's column order)."""
    return list(_METRICS.values())


def get_metric(name: str) -> Metric:
    try:
        return _METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(available_metrics())}") from None


def compute_metrics(task: Task, samples: Tensor, nll: Tensor | None, seed: int = 0,
                    names: list[str] | None = None, *, density: Density | None = None) -> list[dict[str, Any]]:
    """Rows ``{metric, value, unit, status, reason}`` for every computed metric (or those in ``names``) that
    applies to ``task``; ``status`` is ``ok``, ``unavailable`` (MetricUnavailable), the status of a
    :class:`Flagged` value (e.g. ``unreliable``, value kept) or ``failed`` (any other error or a non-finite
    value; value NaN, ``reason`` says why). ``density`` is the model's unnormalised log density, or None."""
    rows = []
    for name in (available_metrics("metrics") if names is None else names):
        m = get_metric(name)
        if m.computed_by != "metrics":
            raise ValueError(f"metric {name!r} is recorded by the runner, not computed by compute_metrics")
        if not m.applies(task):
            continue
        row = {"metric": name, "value": math.nan, "unit": m.unit, "status": "ok", "reason": ""}
        try:
            out = m(task, samples, nll, seed=seed, density=density)
            value = float(out)
            if math.isfinite(value):
                row["value"] = value
                if isinstance(out, Flagged):
                    row.update(status=out.status, reason=out.reason)
            else:
                row.update(status="failed", reason=f"non-finite value {value}")
        except MetricUnavailable as e:
            row.update(status="unavailable", reason=str(e))
        except Exception as e:  # noqa: BLE001  (one bad metric must not sink the others)
            row.update(status="failed", reason=f"{type(e).__name__}: {e}")
        rows.append(row)
    return rows


def reconstruction_reliability(error: float) -> tuple[str, str]:
    """``(status, reason)`` of the NLL rows of a method whose likelihood is the change of variables through an
    encoder that is invertible only in so far as its learned decoder inverts it (free-form flows), given the
    relative squared reconstruction error ``mean ||u - g(f(u))||^2 / mean ||u - mean u||^2`` on the test points:
    ``("ok", "")``, or ``("unreliable", why)`` above ``MAX_RECONSTRUCTION_ERROR``.

    Why: the encoder's change of variables is a density only when the encoder is a bijection; nothing in the
    architecture makes it one, and the decoder's failure to invert it on the data is the visible sign that it is
    not (it may fold space, counting mass twice), which makes the likelihood spurious (vislearn/FFF issues #8, #9).
    5% of the data's variance left unexplained is a heuristic bar, not a proof either way.
    """
    if error is None or not math.isfinite(float(error)):
        return "unreliable", f"the learned inverse's reconstruction error is not finite ({error!r})"
    if error > MAX_RECONSTRUCTION_ERROR:
        return ("unreliable", f"the learned inverse reconstructs test points with relative squared error "
                              f"{float(error):.3g} > {MAX_RECONSTRUCTION_ERROR:g}: the encoder may not be invertible "
                              f"and its likelihood may be spurious")
    return "ok", ""


def nll_reliability(ess: float, n: int) -> tuple[str, str]:
    """``(status, reason)`` of the NLL rows of a method whose log Z is an importance-sampling estimate with
    effective sample size ``ess`` (Kish, ``(sum w)^2 / sum w^2``) from ``n`` draws: ``("ok", "")``, or
    ``("unreliable", why)`` when ``ess < MIN_LOG_Z_ESS`` or ``ess / n < MIN_LOG_Z_ESS_FRACTION``.

    Why these thresholds: with fewer than ~100 effective draws the estimate rests on a handful of weights, so
    ``log Z_hat`` is biased low by an unknown amount (its expectation is below log Z by Jensen, and the missing
    mass sits where the proposal never went), which makes the NLL optimistic, while the delta-method standard
    error, itself estimated from the same few weights, stays small. An ESS fraction below 1% says the proposal
    misses most of the EBM's mass even when ``n`` is large enough to reach 100.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"nll_reliability: n must be a positive integer number of draws, got {n!r}")
    if ess is None or not math.isfinite(float(ess)):
        return "unreliable", f"log Z importance weights have no finite effective sample size ({ess!r})"
    frac = float(ess) / n
    if ess < MIN_LOG_Z_ESS or frac < MIN_LOG_Z_ESS_FRACTION:
        return ("unreliable", f"log Z importance sampling ESS {float(ess):.1f} of {int(n)} draws ({100 * frac:.2g}%) "
                              f"is below {MIN_LOG_Z_ESS} or {100 * MIN_LOG_Z_ESS_FRACTION:g}%: log Z may be biased "
                              f"low and the NLL optimistic")
    return "ok", ""


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


def median_bandwidth(x: Tensor, y: Tensor | None = None) -> float:
    """Median heuristic: the median of the pairwise Euclidean distances (i != j) of ``x`` (pooled with ``y`` when
    given)."""
    z = x if y is None else torch.cat([x, y])
    h = float(torch.pdist(z).median())
    if not h > 0:
        raise ValueError("median pairwise distance is 0 (most points coincide): no RBF bandwidth")
    return h


def task_bandwidth(task: Task) -> float:
    """The task's MMD bandwidth: the median pairwise distance of ``MMD_BANDWIDTH_POINTS`` rows of ``task.test``
    chosen by a fixed generator (all rows when there are fewer). It depends on the task (and its data seed) only,
    not on the model's samples nor on the metric seed, so every method on one task is scored with one kernel."""
    test = task.test.detach().to("cpu", torch.float64)
    if len(test) > MMD_BANDWIDTH_POINTS:
        test = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:MMD_BANDWIDTH_POINTS]]
    if len(test) < 2:
        raise ValueError(f"task {task.name!r}: MMD bandwidth needs >= 2 test points, got {len(test)}")
    try:
        return median_bandwidth(test)
    except ValueError:
        raise ValueError(f"task {task.name!r}: median pairwise distance of its test points is 0: "
                         f"no RBF bandwidth") from None


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


def _is_mixture(task: Task) -> bool:
    return task.mode_means is not None and task.mode_weights is not None


def _eval_density(density: Density, x: Tensor, chunk: int = 65536) -> Tensor:
    """``density`` on ``x`` in chunks, as float64 CPU; NaN or +inf values are an error (-inf is zero mass)."""
    with torch.no_grad():
        out = torch.cat([density(x[i:i + chunk].float()).detach().to("cpu", torch.float64).reshape(-1)
                         for i in range(0, len(x), chunk)])
    if out.shape != (len(x),):
        raise ValueError(f"the model's log density returned {out.numel()} values for {len(x)} points")
    bad = int((torch.isnan(out) | (out == math.inf)).sum())
    if bad:
        raise ValueError(f"the model's log density is NaN or +inf at {bad} of {len(x)} points")
    if not torch.isfinite(out).any():
        raise ValueError("the model's log density is -inf everywhere it was evaluated")
    return out


def quadrature_box(task: Task) -> tuple[tuple[float, float], tuple[float, float]]:
    """The 2-D mode-weight grid's box: ``task.bounds`` (else the test points' range) padded by ``QUAD_PAD`` of its
    width on every side."""
    if task.bounds is not None:
        (x0, x1), (y0, y1) = task.bounds
    else:
        lo, hi = task.test.double().min(0).values, task.test.double().max(0).values
        (x0, x1), (y0, y1) = (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))
    px, py = QUAD_PAD * (x1 - x0), QUAD_PAD * (y1 - y0)
    return (x0 - px, x1 + px), (y0 - py, y1 + py)


def _region_masses(x: Tensor, log_w: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Normalised weights of ``x`` (softmax of ``log_w``) and their sum over each nearest-centre region."""
    w = torch.softmax(log_w, 0)
    nearest = torch.cdist(x, centres).argmin(1)
    return w, torch.zeros(len(centres), dtype=torch.float64).index_add_(0, nearest, w)


def mode_masses_quadrature(task: Task, density: Density) -> Tensor:
    """[K] mass of the normalised model density on each nearest-centre region, by the midpoint rule on
    ``QUAD_POINTS`` x ``QUAD_POINTS`` cells over :func:`quadrature_box` (normalised over the grid). 2-D only."""
    if task.dim != 2:
        raise ValueError(f"quadrature mode weights need a 2-D task, got D={task.dim}")
    (x0, x1), (y0, y1) = quadrature_box(task)
    cx = x0 + (torch.arange(QUAD_POINTS, dtype=torch.float64) + 0.5) * (x1 - x0) / QUAD_POINTS
    cy = y0 + (torch.arange(QUAD_POINTS, dtype=torch.float64) + 0.5) * (y1 - y0) / QUAD_POINTS
    pts = torch.stack(torch.meshgrid(cx, cy, indexing="ij"), -1).reshape(-1, 2)
    return _region_masses(pts, _eval_density(density, pts), task.mode_means.double())[1]  # type: ignore[union-attr]


def _proposal(task: Task) -> torch.distributions.Distribution:
    """SNIS proposal: an equal mixture of Gaussians at the task's mode centres, each with the covariance of the
    test points nearest to it (global test covariance when fewer than D + 1 points) with its scale inflated by
    1.5, mixed with weight 0.2 with a defensive broad Gaussian (test mean, test covariance scaled by 2^2)."""
    D = torch.distributions
    test = task.test.detach().to("cpu", torch.float64)
    centres = task.mode_means.double()  # type: ignore[union-attr]
    k, d = centres.shape
    ridge = 1e-6 * torch.eye(d, dtype=torch.float64)

    def cov(x: Tensor) -> Tensor:
        c = torch.cov(x.T).reshape(d, d)
        return c + ridge * max(float(c.diagonal().mean()), 1e-12)

    glob = cov(test)
    nearest = torch.cdist(test, centres).argmin(1)
    covs = torch.stack([1.5**2 * (cov(test[nearest == j]) if int((nearest == j).sum()) > d else glob)
                        for j in range(k)] + [4.0 * glob])
    means = torch.cat([centres, test.mean(0, keepdim=True)])
    mix = D.Categorical(torch.cat([torch.full((k,), 0.8 / k, dtype=torch.float64),
                                   torch.tensor([0.2], dtype=torch.float64)]))
    return D.MixtureSameFamily(mix, D.MultivariateNormal(means, covariance_matrix=covs))


def mode_masses_snis(task: Task, density: Density, seed: int,
                     n: int = SNIS_DRAWS) -> tuple[Tensor, float, Tensor, Tensor]:
    """Self-normalised importance sampling of the model's mass on each nearest-centre region with the
    :func:`_proposal` (``n`` draws seeded by ``seed``): ``(masses [K], Kish ESS (sum w)^2 / sum w^2, draws,
    normalised weights)``."""
    q = _proposal(task)
    g = torch.Generator().manual_seed(int(seed) * 1000003 + 3)
    comp = torch.multinomial(q.mixture_distribution.probs, int(n), replacement=True, generator=g)
    normal = q.component_distribution
    eps = torch.randn(int(n), task.dim, generator=g, dtype=torch.float64)
    y = normal.loc[comp] + (normal.scale_tril[comp] @ eps[:, :, None])[:, :, 0]
    log_w = _eval_density(density, y) - q.log_prob(y)
    w, masses = _region_masses(y, log_w, task.mode_means.double())  # type: ignore[union-attr]
    return masses, float(1.0 / w.square().sum()), y, w


def _need_density(density: Density | None) -> Density:
    if density is None:
        raise MetricUnavailable("the method exposes no density (no log_density or NLL)")
    return density


# --- metrics ----------------------------------------------------------------------------------------------------

@register_metric("test_nll", unit="nats", needs=("nll",), label="test negative log-likelihood")
def test_nll(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
             density: Density | None = None) -> float:
    """Mean per-sample test NLL in nats (data space)."""
    return float(_nll(nll).mean())


@register_metric("test_bpd", unit="bits/dim", applies=lambda task: task.discrete_scale is not None, needs=("nll",),
                 label="test bits per dimension")
def test_bpd(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
             density: Density | None = None) -> float:
    """Mean test NLL in bits/dim of the integer data: (nll + D log s) / (D log 2), see ``tasks.bits_per_dim``."""
    return float(bits_per_dim(float(_nll(nll).mean()), task))


@register_metric("sliced_wasserstein", unit="data units", label="sliced 2-Wasserstein distance to the test set")
def sliced_wasserstein(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
                       density: Density | None = None) -> float:
    """Sliced 2-Wasserstein distance to the test set (POT, N_PROJECTIONS random directions seeded by ``seed``):
    (E_theta W_2^2(theta^T X, theta^T Y))^(1/2)."""
    import ot

    x, y = _pair(task, samples, seed)
    return float(ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), n_projections=N_PROJECTIONS,
                                                seed=int(seed)))


@register_metric("mmd", unit="MMD^2", direction="zero", label="unbiased RBF MMD^2 to the test set")
def mmd(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
        density: Density | None = None) -> float:
    """Unbiased RBF MMD^2 to the test set with the task's bandwidth (:func:`task_bandwidth`, from the test data
    only): one kernel for every method on a task. Collapsed samples (all equal) give a finite, large value."""
    x, y = _pair(task, samples, seed)
    return mmd2_unbiased(x, y, task_bandwidth(task))


@register_metric("energy_distance", unit="data units", label="energy distance to the test set")
def energy_distance_metric(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
                           density: Density | None = None) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| between model samples and the test set."""
    return energy_distance(*_pair(task, samples, seed))


@register_metric("grid_kl", unit="nats", applies=_is_grid_task, label="grid KL(true || samples)")
def grid_kl(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
            density: Density | None = None) -> float:
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


@register_metric("grid_tv", unit="probability", applies=_is_grid_task, label="grid total variation")
def grid_tv(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
            density: Density | None = None) -> float:
    """Total variation 1/2 sum_k |p_k - c_k / n| on the grid cells, plus 1/2 the fraction of samples outside the
    bounds (where p is taken as 0); raw frequencies, no smoothing."""
    p, edges = grid_probabilities(task)
    counts, n = _histogram(task, samples, edges)
    outside = 1.0 - float(counts.sum()) / n
    return float(0.5 * ((p - counts / n).abs().sum() + outside))


@register_metric("log_density_error", unit="nats^2", applies=lambda task: task.log_prob is not None, needs=("nll",),
                 label="median squared log-density error")
def log_density_error(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
                      density: Density | None = None) -> float:
    """median_i (log q(x_i) - log p_true(x_i))^2 over the test points x_i, with log q = -nll: the squared
    log-density error of Grenioux et al. (2023, Table 1), there taken over the EBM's normalised density. For
    EBMs whose NLL rests on an estimated log Z, an error in that estimate shifts every term alike."""
    per_sample = _nll(nll).detach().to("cpu", torch.float64)
    x = evaluation_rows(task, len(per_sample))
    log_p = task.log_prob(x.to(torch.float64) if x.dtype != torch.float64 else x)  # type: ignore[misc]
    return float((-per_sample - log_p.detach().to("cpu", torch.float64)).square().median())


@register_metric("mode_weight_error", unit="MSE", applies=_is_mixture, needs=("density",),
                 label="mode-weight MSE of the model's density")
def mode_weight_error(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
                      density: Density | None = None) -> float:
    """mean_k (m_k - w_k)^2 with w_k the true weight and m_k the mass of the model's own normalised density on
    mode k's region (points whose nearest centre is k; Grenioux et al. 2023, Table 3, "E_theta"), from
    ``density`` (the EBM's tilted log density exp(-E) rho for flowMC/ULA-EBM, -NLL for flows). 2-D: quadrature
    (:func:`mode_masses_quadrature`; the mass outside its grid is ``mode_weight_outside``). D > 2:
    self-normalised importance sampling (:func:`mode_masses_snis`), flagged ``unreliable`` when its ESS is below
    ``MIN_MODE_ESS`` (the ESS is ``mode_weight_ess``)."""
    density = _need_density(density)
    w_true = task.mode_weights.double()  # type: ignore[union-attr]
    if task.dim == 2:
        return float((mode_masses_quadrature(task, density) - w_true).square().mean())
    masses, ess, _, _ = mode_masses_snis(task, density, seed)
    value = float((masses - w_true).square().mean())
    if ess < MIN_MODE_ESS:
        return Flagged(value, "unreliable", f"importance-sampling ESS {ess:.1f} < {MIN_MODE_ESS}")
    return value


@register_metric("mode_weight_error_samples", unit="MSE", applies=_is_mixture,
                 label="mode-weight MSE of the samples (negatives for EBMs)")
def mode_weight_error_samples(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
                              density: Density | None = None) -> float:
    """mean_k (f_k - w_k)^2, with f_k the fraction of model samples whose nearest mode centre is k and w_k the
    true weight (Grenioux et al. 2023, Table 3, "negatives": for an EBM these are its sampler's chains, not its
    density). Where modes overlap, nearest-centre fractions of exact samples differ slightly from the weights
    (negligible for the suite's 2-D mixtures; zero by symmetry for ``gmm``)."""
    x = _samples(task, samples)
    centres = task.mode_means.double()  # type: ignore[union-attr]
    nearest = torch.cdist(x, centres).argmin(1)
    frac = torch.bincount(nearest, minlength=len(centres)).double() / len(x)
    return float((frac - task.mode_weights.double()).square().mean())  # type: ignore[union-attr]


@register_metric("mode_weight_ess", unit="samples", applies=lambda task: _is_mixture(task) and task.dim > 2,
                 needs=("density",), direction="higher", group="diagnostic",
                 label=f"ESS of the mode-weight importance sampling (of {SNIS_DRAWS})")
def mode_weight_ess(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
                    density: Density | None = None) -> float:
    """Kish effective sample size of the importance weights behind ``mode_weight_error`` in D > 2 (same draws)."""
    return mode_masses_snis(task, _need_density(density), seed)[1]


def mass_outside_box(task: Task, density: Density) -> float:
    """The model's normalised mass outside :func:`quadrature_box` (2-D), measured where it is: the box by the
    ``QUAD_POINTS`` x ``QUAD_POINTS`` midpoint rule, the plane outside it by a polar midpoint rule about the
    box's centre, ``FAR_POINTS`` log-spaced radii from the inscribed circle's radius r0 out to ``FAR_FACTOR`` r0
    times ``FAR_POINTS`` angles (cell area r^2 dlog r dtheta; polar cells whose centre lies in the box are left
    out). Mass beyond ``FAR_FACTOR`` r0 (1e6) is not seen, and structure far out is resolved to about 2.7% of
    its radius (one radial cell: log(1e6) / 512)."""
    (x0, x1), (y0, y1) = quadrature_box(task)
    cx = x0 + (torch.arange(QUAD_POINTS, dtype=torch.float64) + 0.5) * (x1 - x0) / QUAD_POINTS
    cy = y0 + (torch.arange(QUAD_POINTS, dtype=torch.float64) + 0.5) * (y1 - y0) / QUAD_POINTS
    inner = torch.stack(torch.meshgrid(cx, cy, indexing="ij"), -1).reshape(-1, 2)
    log_in = _eval_density(density, inner) + math.log((x1 - x0) * (y1 - y0) / QUAD_POINTS**2)
    centre = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2], dtype=torch.float64)
    r0 = min(x1 - x0, y1 - y0) / 2
    dlog = math.log(FAR_FACTOR) / FAR_POINTS
    log_r = math.log(r0) + (torch.arange(FAR_POINTS, dtype=torch.float64) + 0.5) * dlog
    theta = (torch.arange(FAR_POINTS, dtype=torch.float64) + 0.5) * (2 * math.pi / FAR_POINTS)
    lr, th = (t.reshape(-1) for t in torch.meshgrid(log_r, theta, indexing="ij"))
    pts = centre + lr.exp()[:, None] * torch.stack([th.cos(), th.sin()], -1)
    out = ~((pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1))
    pts, lr = pts[out], lr[out]
    log_out = _eval_density(density, pts) + 2 * lr + math.log(dlog * 2 * math.pi / FAR_POINTS)
    z_out = torch.logsumexp(log_out, 0)
    return float(torch.exp(z_out - torch.logsumexp(torch.cat([log_in, log_out]), 0)))


@register_metric("mode_weight_outside", unit="probability", applies=lambda task: _is_mixture(task) and task.dim == 2,
                 needs=("density",), group="diagnostic",
                 label="model mass outside the mode-weight quadrature grid")
def mode_weight_outside(task: Task, samples: Tensor, nll: Tensor | None, *, seed: int,
                        density: Density | None = None) -> float:
    """Fraction of the model's normalised mass outside :func:`quadrature_box` (:func:`mass_outside_box`: a
    polar quadrature out to ``FAR_FACTOR`` times the box, where the mass is); the 2-D mode-weight quadrature
    ignores it, so a value that is not small says the grid missed mass."""
    return mass_outside_box(task, _need_density(density))


# --- metrics the runner records (declared here so that label, unit and direction live in one place) ------------

declare_metric("log_z_stderr", unit="nats", group="diagnostic", needs=("density",),
               label="standard error of the importance-sampling log Z")
declare_metric("log_z_ess", unit="samples", direction="higher", group="diagnostic", needs=("density",),
               label="effective sample size of the log Z importance weights")
declare_metric("nonfinite_losses", unit="samples", group="diagnostic",
               label="non-finite per-sample training losses (zeroed in the step, as the official code does)")
declare_metric("reconstruction_error", unit="relative", group="diagnostic",
               label="relative squared reconstruction error of the learned inverse on test points")
declare_metric("step_time", unit="s", label="mean training-step wall time")
declare_metric("train_time", unit="s", label="training wall time")
declare_metric("peak_memory", unit="MiB", label="peak memory of the cell")
declare_metric("nll_at_time", unit="nats", group="curve", needs=("nll",),
               label="test NLL at a training checkpoint (time to quality)")
