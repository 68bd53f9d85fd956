"""Degenerate-model detection: does a trained model describe the data at all?

:func:`diagnose` ``(task, samples, nll) -> Diagnosis | None`` compares a cell's samples and test NLL with the
training data, with a full-covariance Gaussian fitted to the training data in closed form (the ``gaussian-fit``
reference, computed in-cell) and with uniform noise. It is the one place that decides that a model is
*degenerate* (shown, never ranked). Every threshold is a module constant, named in the reason it gives:

- **non-finite samples**: any sample has a NaN or infinite coordinate.
- **a sample beyond the hard bound**: any sample lies beyond ``HARD_BOUND_FACTOR`` (1e3) times the data radius
  (the largest distance of a training point from the training mean), whatever the fraction: one such sample
  dominates every sample metric (nflows-maf once drew 7 of 1,000 samples at norm 1.5e11 and ranked first).
- **mass escapes**: more than ``ESCAPE_FRACTION`` (1%) of the samples lie beyond ``ESCAPE_FACTOR`` (10) times the
  data radius, or the median sample distance from the training mean exceeds ``MEDIAN_FACTOR`` (5) times the
  training data's.
- **collapse**: the samples' spread (square root of the trace of their covariance) is below ``COLLAPSE_RATIO``
  (0.1) times the training data's.
- **image tasks** (``discrete_scale`` set, data in [0, 1]): the models are trained in logit space, where the
  sigmoid maps a blow-up onto the pixel bounds, so the distance rules above would never fire in [0, 1]^D.
  There the escape, median and collapse rules run on the logit of the data and samples, with coordinates
  clipped to ``[t, 1 - t]``, t = ``SATURATION_TOL`` / discrete_scale (a thousandth of a quantisation bin, the
  largest logit a float32 sigmoid can still tell apart from the bound at 8 bits), and a **saturation** rule
  fires: more than ``ESCAPE_FRACTION`` of the samples are *saturated*, i.e. more than ``SATURATED_COORDS``
  (50%) of their coordinates lie at the pixel bounds (within t of 0 or 1) or beyond them. Dequantized data
  have a fraction ~t of their coordinates there, a Gaussian fit spills some coordinates over the bounds, a
  logit-space blow-up puts nearly every coordinate on them.
- **NLL far worse than a Gaussian fit** (not clearly better than uniform noise): the mean test NLL is worse than the Gaussian fit's by more
  than ``NLL_GAP_FRACTION`` (0.5) of the gap between uniform noise and the Gaussian fit, i.e. it is nearer to
  noise than to a closed-form Gaussian. Uniform noise is the uniform density on [0, 1]^D for image tasks (NLL
  0 nats in data space, 8 bits/dim for 8-bit data) and on the training data's bounding box (widened by two
  smoothing widths on smoothed tasks) otherwise. The gap is at least ``NLL_MIN_GAP_PER_DIM`` (0.5 nat) per
  dimension (data nearly uniform on a box, e.g. the checkerboard, make a Gaussian no better than the box).
  On MNIST-5k this threshold is 7.05 bits/dim (Gaussian fit 6.10, noise 8; the old rule of 1 nat/dim above
  the Gaussian fit sat at 7.54), on patches32 7.07 (Gaussian fit 6.13; old rule 7.58).
- **poor sampler**: the sliced 2-Wasserstein distance of the samples to the test set (the
  ``sliced_wasserstein`` metric, same seed and subsample) exceeds ``SAMPLER_FACTOR`` (10) times that of as many
  samples of the Gaussian fit: an order of magnitude further from the data than the simplest model, whatever
  the test NLL (a DSM model 28x further than ML with an NLL only 1.24x worse was once not flagged). On the
  suite's image tasks healthy ML flows sit at 1.5-2.5x the Gaussian fit.

The reason says in words what happened, with the numbers, e.g. "mass escapes: 38% of samples lie beyond 10x
the data radius (median distance 4,600 vs 3.1)"; ``evidence`` holds the numbers (JSON-able floats).

Importance-sampled numbers (log Z of EBMs and all derived from it, SNIS mode weights) are not diagnosed here:
they are marked ``unreliable`` row by row below a stated ESS (``metrics.nll_reliability``, ``MIN_MODE_ESS``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .tasks import Task, evaluation_rows

Tensor = torch.Tensor

#: a sample is escaping beyond this many data radii; more than ESCAPE_FRACTION escaping flags the cell
ESCAPE_FACTOR = 10.0
ESCAPE_FRACTION = 0.01
#: median sample distance from the data mean beyond this many times the data's flags the cell
MEDIAN_FACTOR = 5.0
#: any one sample beyond this many data radii flags the cell
HARD_BOUND_FACTOR = 1e3
#: spread below this fraction of the data's is collapse
COLLAPSE_RATIO = 0.1
#: the NLL threshold: Gaussian fit + NLL_GAP_FRACTION x (uniform noise - Gaussian fit), the gap at least
#: NLL_MIN_GAP_PER_DIM nats per dimension
NLL_GAP_FRACTION = 0.5
NLL_MIN_GAP_PER_DIM = 0.5
#: sliced W2 to the test set beyond this many times the Gaussian fit's is a poor sampler
SAMPLER_FACTOR = 10.0
#: image tasks: a coordinate within SATURATION_TOL / discrete_scale of a pixel bound (or beyond it) is saturated
SATURATION_TOL = 1e-3
#: image tasks: a sample with more than this fraction of saturated coordinates is saturated
SATURATED_COORDS = 0.5
#: seed of the Gaussian fit's reference samples (the sampler check)
REFERENCE_SEED = 2718
#: ridge added to the fitted covariance, relative to its mean eigenvalue (keeps rank-deficient data finite)
RIDGE = 1e-6

__all__ = ["Diagnosis", "GaussianFit", "gaussian_fit", "diagnose", "uniform_nll", "nll_threshold"]


@dataclass(frozen=True)
class Diagnosis:
    """Why a model is degenerate: ``reason`` in words, ``evidence`` the numbers behind it."""

    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GaussianFit:
    """N(mean, cov) fitted by maximum likelihood (float64); ``nll`` and ``sample`` are exact."""

    mean: Tensor
    cov: Tensor

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def _chol(self) -> Tensor:
        return torch.linalg.cholesky(self.cov)

    def nll(self, x: Tensor) -> Tensor:
        """Per-sample ``-log N(x; mean, cov)`` in nats ([N], float64)."""
        chol = self._chol()
        w = torch.linalg.solve_triangular(chol, (x.double() - self.mean).T, upper=False).T
        half_logdet = chol.diagonal().log().sum()
        return 0.5 * w.square().sum(-1) + half_logdet + 0.5 * self.dim * math.log(2 * math.pi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.mean + z @ self._chol().T


def gaussian_fit(task: Task) -> GaussianFit:
    """The full-covariance Gaussian fitted to ``task.train`` in closed form (sample mean, 1/N covariance).

    For a smoothed task (``task.smooth = s``) the target is the data convolved with N(0, s^2 I), so ``s^2 I`` is
    added to the covariance (the fit to the smoothed data in expectation). A ridge of ``RIDGE`` times the mean
    eigenvalue keeps data with constant coordinates finite.
    """
    x = task.train.double()
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / x.shape[0]
    if task.smooth:
        cov = cov + task.smooth**2 * torch.eye(task.dim, dtype=torch.float64)
    ridge = RIDGE * float(cov.diagonal().mean()) if float(cov.diagonal().mean()) > 0 else RIDGE
    return GaussianFit(mean, cov + ridge * torch.eye(task.dim, dtype=torch.float64))


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _is_image(task: Task) -> bool:
    return task.discrete_scale is not None


def _saturation_tol(task: Task) -> float:
    return SATURATION_TOL / float(task.discrete_scale)


def _logit(task: Task, x: Tensor) -> Tensor:
    """The logit of ``x`` with coordinates clipped to ``[t, 1 - t]`` (image tasks' training space)."""
    t = _saturation_tol(task)
    return torch.logit(x.clamp(t, 1.0 - t))


def uniform_nll(task: Task) -> float:
    """NLL (nats per sample) of uniform noise: on [0, 1]^D for image tasks (0), else on the training data's
    bounding box, widened by 2 smoothing widths per side on smoothed tasks."""
    if _is_image(task):
        return 0.0
    x = task.train.double()
    width = (x.max(0).values - x.min(0).values + 4.0 * task.smooth).clamp_min(1e-12)
    return float(width.log().sum())


def nll_threshold(task: Task, gaussian_nll: float) -> tuple[float, float]:
    """``(threshold, uniform NLL)``: a mean test NLL above the threshold is not clearly better than noise."""
    noise = uniform_nll(task)
    gap = max(noise - gaussian_nll, NLL_MIN_GAP_PER_DIM * task.dim)
    return gaussian_nll + NLL_GAP_FRACTION * gap, noise


def _geometry(train: Tensor, good: Tensor, space: str, ev: dict[str, Any], findings: list[str],
              smooth: float = 0.0) -> None:
    """The escape, hard-bound, median and collapse rules of ``good`` samples against ``train`` (one space)."""
    centre = train.mean(0)
    data_dist = (train - centre).norm(dim=1)
    radius, data_median = float(data_dist.max()), float(data_dist.median())
    data_spread = math.sqrt(float(train.var(0, unbiased=False).sum()) + train.shape[1] * smooth**2)
    p = "" if space == "data" else f"{space}_"
    where = "" if space == "data" else f" in {space} space"
    ev.update({f"{p}data_radius": radius, f"{p}data_median_distance": data_median, f"{p}data_spread": data_spread})
    if not good.shape[0]:
        return
    dist = (good - centre).norm(dim=1)
    frac = float((dist > ESCAPE_FACTOR * radius).double().mean())
    n_far = int((dist > HARD_BOUND_FACTOR * radius).sum())
    med = float(dist.median())
    spread = math.sqrt(float(good.var(0, unbiased=False).sum())) if good.shape[0] > 1 else 0.0
    ev.update({f"{p}escaped_fraction": frac, f"{p}sample_median_distance": med, f"{p}sample_spread": spread,
               f"{p}sample_max_distance": float(dist.max()), f"{p}beyond_hard_bound": n_far})
    if frac > ESCAPE_FRACTION or med > MEDIAN_FACTOR * data_median:
        findings.append(f"mass escapes{where}: {100 * frac:.0f}% of samples lie beyond {ESCAPE_FACTOR:g}x the data "
                        f"radius ({_fmt(radius)}), median distance from the data mean {_fmt(med)} vs "
                        f"{_fmt(data_median)} for the data")
    elif spread < COLLAPSE_RATIO * data_spread:
        findings.append(f"collapse{where}: the samples' spread is {_fmt(spread)} against {_fmt(data_spread)} for "
                        f"the data (below {COLLAPSE_RATIO:g}x)")
    if n_far:
        findings.append(f"sample beyond the hard bound{where}: {n_far} of {good.shape[0]} samples lie beyond "
                        f"{HARD_BOUND_FACTOR:g}x the data radius ({_fmt(radius)}), the furthest at "
                        f"{float(dist.max()):.3g}")


def _saturated(task: Task, x: Tensor) -> Tensor:
    """[n] fraction of each row's coordinates at the pixel bounds (within t) or beyond them."""
    t = _saturation_tol(task)
    return ((x <= t) | (x >= 1.0 - t)).double().mean(1)


def diagnose(task: Task, samples: Tensor, nll: Tensor | None) -> Diagnosis | None:
    """``Diagnosis`` if the model behind ``samples`` ([n, D]) and per-sample test NLL ``nll`` ([N] on
    ``tasks.evaluation_rows(task, N)``, or None) is degenerate, else None. See the module docstring."""
    samples = samples.detach().to("cpu", torch.float64)
    if samples.ndim != 2 or samples.shape[1] != task.dim:
        raise ValueError(f"diagnose: samples must be [n, {task.dim}], got {tuple(samples.shape)}")
    train = task.train.double()
    findings: list[str] = []
    ev: dict[str, Any] = {}

    finite = torch.isfinite(samples).all(dim=1)
    n_bad = int((~finite).sum())
    if n_bad:
        ev["nonfinite_fraction"] = n_bad / samples.shape[0]
        findings.append(f"non-finite samples: {n_bad} of {samples.shape[0]} samples have NaN or infinite "
                        "coordinates")
    good = samples[finite]
    _geometry(train, good, "data", ev, findings, task.smooth)
    if _is_image(task):
        if good.shape[0]:
            sat = _saturated(task, good)
            frac = float((sat > SATURATED_COORDS).double().mean())
            data_sat = float(_saturated(task, train).mean())
            ev.update(saturated_fraction=frac, saturated_coordinates=float(sat.mean()),
                      data_saturated_coordinates=data_sat)
            if frac > ESCAPE_FRACTION:
                findings.append(f"saturation at the pixel bounds: {100 * frac:.0f}% of samples have more than "
                                f"{100 * SATURATED_COORDS:g}% of their coordinates at or beyond 0 or 1 (within "
                                f"{SATURATION_TOL:g} of a quantisation bin, {100 * float(sat.mean()):.2g}% of all "
                                f"coordinates vs {100 * data_sat:.2g}% for the data): a blow-up in logit space")
        _geometry(_logit(task, train), _logit(task, good), "logit", ev, findings)

    fit: GaussianFit | None = None
    if nll is not None:
        nll = nll.detach().to("cpu", torch.float64)
        fit = gaussian_fit(task)
        ref = float(fit.nll(evaluation_rows(task, nll.shape[0])).mean())
        mean_nll = float(nll.mean()) if torch.isfinite(nll).all() else math.inf
        threshold, noise = nll_threshold(task, ref)
        ev.update(test_nll=mean_nll, gaussian_fit_nll=ref, uniform_nll=noise, nll_threshold=threshold)
        if not mean_nll <= threshold:
            findings.append(f"NLL far worse than a Gaussian fit: test NLL {_fmt(mean_nll)} nats against "
                            f"{_fmt(ref)} for a full-covariance Gaussian fitted to the training data and "
                            f"{_fmt(noise)} for uniform noise, not clearly better than noise (threshold "
                            f"{_fmt(threshold)}: the Gaussian fit + {NLL_GAP_FRACTION:g} of the gap)")

    if n_bad == 0 and good.shape[0] >= 2:  # the sampler check, always: claims read which rules fired
        from .metrics import sliced_wasserstein

        fit = fit or gaussian_fit(task)
        seed = REFERENCE_SEED
        ref_samples = fit.sample(good.shape[0], torch.Generator().manual_seed(REFERENCE_SEED)).float()
        sw = float(sliced_wasserstein(task, good.float(), None, seed=seed))
        sw_ref = float(sliced_wasserstein(task, ref_samples, None, seed=seed))
        ev.update(sliced_wasserstein=sw, gaussian_fit_sliced_wasserstein=sw_ref)
        if not sw <= SAMPLER_FACTOR * sw_ref:
            findings.append(f"poor sampler: the samples' sliced W2 to the test set is {sw:.3g}, "
                            f"{sw / sw_ref:.3g}x that of a Gaussian fit's samples ({sw_ref:.3g}, threshold "
                            f"{SAMPLER_FACTOR:g}x)")
    if not findings:
        return None
    return Diagnosis("; ".join(findings), ev)
