"""Degenerate-model detection: does a trained model describe the data at all?

:func:`diagnose` ``(task, samples, nll) -> Diagnosis | None`` compares a cell's samples and test NLL with the
training data and with a full-covariance Gaussian fitted to the training data in closed form (the
``gaussian-fit`` reference, computed in-cell). A model is *degenerate* (shown, never ranked) when one of these
holds; the thresholds are module constants, stated here and in the reason:

- **non-finite samples**: any sample has a NaN or infinite coordinate;
- **mass escapes**: more than ``ESCAPE_FRACTION`` (1%) of the samples lie beyond ``ESCAPE_FACTOR`` (10) times
  the data radius (the largest distance of a training point from the training mean), or the median sample
  distance from the training mean exceeds ``MEDIAN_FACTOR`` (5) times the training data's;
- **NLL far worse than a Gaussian fit**: the mean test NLL exceeds the Gaussian fit's by more than
  ``NLL_MARGIN_PER_DIM`` (1 nat) per dimension, i.e. D nats per sample (this catches finite divergences such
  as 1.5e12 as well as mass spread where the test data are not);
- **collapse**: the samples' spread (square root of the trace of their covariance) is below
  ``COLLAPSE_RATIO`` (0.1) times the training data's.

The reason says in words what happened, with the numbers, e.g. "mass escapes: 38% of samples lie beyond 10x
the data radius (median distance 4,600 vs 3.1)".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .tasks import Task

Tensor = torch.Tensor

ESCAPE_FACTOR = 10.0
ESCAPE_FRACTION = 0.01
MEDIAN_FACTOR = 5.0
NLL_MARGIN_PER_DIM = 1.0
COLLAPSE_RATIO = 0.1
#: ridge added to the fitted covariance, relative to its mean eigenvalue (keeps rank-deficient data finite)
RIDGE = 1e-6

__all__ = ["Diagnosis", "GaussianFit", "gaussian_fit", "diagnose"]


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


def diagnose(task: Task, samples: Tensor, nll: Tensor | None) -> Diagnosis | None:
    """``Diagnosis`` if the model behind ``samples`` ([n, D]) and per-sample test NLL ``nll`` ([N] on the
    first N test points, or None) is degenerate, else None. See the module docstring for the rules."""
    samples = samples.detach().to("cpu", torch.float64)
    if samples.ndim != 2 or samples.shape[1] != task.dim:
        raise ValueError(f"diagnose: samples must be [n, {task.dim}], got {tuple(samples.shape)}")
    train = task.train.double()
    centre = train.mean(0)
    data_dist = (train - centre).norm(dim=1)
    radius, data_median = float(data_dist.max()), float(data_dist.median())
    data_spread = math.sqrt(float(train.var(0, unbiased=False).sum()) + task.dim * task.smooth**2)
    findings: list[str] = []
    ev: dict[str, Any] = {"data_radius": radius, "data_median_distance": data_median, "data_spread": data_spread}

    finite = torch.isfinite(samples).all(dim=1)
    n_bad = int((~finite).sum())
    if n_bad:
        ev["nonfinite_fraction"] = n_bad / samples.shape[0]
        findings.append(f"non-finite samples: {n_bad} of {samples.shape[0]} samples have NaN or infinite "
                        "coordinates")
    good = samples[finite]
    if good.shape[0]:
        dist = (good - centre).norm(dim=1)
        frac = float((dist > ESCAPE_FACTOR * radius).double().mean())
        med = float(dist.median())
        spread = math.sqrt(float(good.var(0, unbiased=False).sum())) if good.shape[0] > 1 else 0.0
        ev.update(escaped_fraction=frac, sample_median_distance=med, sample_spread=spread,
                  sample_max_distance=float(dist.max()))
        if frac > ESCAPE_FRACTION or med > MEDIAN_FACTOR * data_median:
            findings.append(f"mass escapes: {100 * frac:.0f}% of samples lie beyond {ESCAPE_FACTOR:g}x the data "
                            f"radius ({_fmt(radius)}), median distance from the data mean {_fmt(med)} vs "
                            f"{_fmt(data_median)} for the data")
        elif spread < COLLAPSE_RATIO * data_spread:
            findings.append(f"collapse: the samples' spread is {_fmt(spread)} against {_fmt(data_spread)} for the "
                            f"data (below {COLLAPSE_RATIO:g}x)")

    if nll is not None:
        nll = nll.detach().to("cpu", torch.float64)
        fit = gaussian_fit(task)
        ref = float(fit.nll(task.test[: nll.shape[0]]).mean())
        mean_nll = float(nll.mean()) if torch.isfinite(nll).all() else math.inf
        margin = NLL_MARGIN_PER_DIM * task.dim
        ev.update(test_nll=mean_nll, gaussian_fit_nll=ref)
        if not mean_nll <= ref + margin:
            findings.append(f"NLL far worse than a Gaussian fit: test NLL {_fmt(mean_nll)} nats against "
                            f"{_fmt(ref)} for a full-covariance Gaussian fitted to the training data (threshold: "
                            f"{NLL_MARGIN_PER_DIM:g} nat per dimension worse)")
    if not findings:
        return None
    return Diagnosis("; ".join(findings), ev)
