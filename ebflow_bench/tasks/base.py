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
``ebflow-bench tune`` selects hyperparameters on it). The option ``augment="cifar"`` (image tasks) applies the
official EBFlow CIFAR-10 training augmentation to every training batch through :meth:`Task.augment`
(:mod:`.augment`; the test set is untouched). scikit-learn's bundled tables ``iris``, ``wine``,
``breast_cancer`` are registered standardised (training mean and sd), split by the seed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .._lazy import lazy

torch = lazy("torch")  # imported when a task is built (the static checks read only declarations)

if TYPE_CHECKING:
    from torch import Tensor


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
    #: training-batch augmentation of an image task (option ``augment``; "" = none): a key of
    #: ``tasks.augment.AUGMENTATIONS``, applied by :meth:`augment` to every training batch, never to ``test``
    augmentation: str = ""
    #: toys that support smoothing: s -> exact log density of the data convolved with N(0, s^2 I)
    smoothed_log_prob: Callable[[float], Callable[[Tensor], Tensor]] | None = field(default=None, repr=False)
    #: strata of the test rows ([N_test] integers: class labels or source-image ids; None = no strata): every
    #: evaluation subset (:func:`evaluation_indices`) is stratified by them
    groups: Tensor | None = field(default=None, repr=False)
    #: the same strata for the training rows (carried into a validation split's test set)
    train_groups: Tensor | None = field(default=None, repr=False)
    #: the data seed the task was built with (:func:`get_task` sets it); it seeds the evaluation subsets
    seed: int = 0

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            t = getattr(self, split)
            if t.ndim != 2 or t.shape[1] != self.dim:
                raise ValueError(f"task {self.name!r}: {split} has shape {tuple(t.shape)}, expected [N, {self.dim}]")
            if not torch.isfinite(t).all():
                raise ValueError(f"task {self.name!r}: {split} contains non-finite values")
        for split, key in (("test", "groups"), ("train", "train_groups")):
            gr = getattr(self, key)
            if gr is None:
                continue
            gr = torch.as_tensor(gr)
            if gr.shape != (getattr(self, split).shape[0],) or gr.is_floating_point():
                raise ValueError(f"task {self.name!r}: {key} must be [{getattr(self, split).shape[0]}] integers (one "
                                 f"stratum per {split} row), got {gr.dtype} of shape {tuple(gr.shape)}")
            setattr(self, key, gr.long())

    def augment(self, batch: Tensor, generator: torch.Generator) -> Tensor:
        """The training batch the model sees: ``batch`` itself; with ``augmentation`` (option ``augment``) the
        image augmentation of every row; for a smoothed task plus ``s * N(0, I)``. All draws come from
        ``generator`` (the cell's seeded generator, so runs repeat)."""
        if self.augmentation:
            from .augment import AUGMENTATIONS

            batch = AUGMENTATIONS[self.augmentation](batch, self.image_shape, self.discrete_scale, generator)
        if not self.smooth:
            return batch
        noise = torch.randn(tuple(batch.shape), generator=generator, dtype=batch.dtype, device=generator.device)
        return batch + self.smooth * noise.to(batch.device)


#: offset of the evaluation-subset stream from the data seed (apart from the data's own streams)
EVAL_STREAM = 15485863


def evaluation_order(task: Task) -> Tensor:
    """A seeded random order of all test rows ([N_test] indices) whose every prefix is a stratified sample.

    Seeded by ``task.seed`` (+ ``EVAL_STREAM``), so it repeats for a task and its seed. Without strata
    (``task.groups`` None) it is a uniform random permutation. With strata, each stratum's rows are shuffled
    and the j-th of a stratum of n_g rows gets the key (j + u) / n_g (u uniform): sorted by key, any prefix of
    n rows holds n n_g / N rows of each stratum up to about one row (proportional allocation)."""
    n = task.test.shape[0]
    g = torch.Generator().manual_seed(int(task.seed) + EVAL_STREAM)
    if task.groups is None:
        return torch.randperm(n, generator=g)
    groups = task.groups.cpu()
    key = torch.empty(n, dtype=torch.float64)
    for c in torch.unique(groups):
        idx = torch.nonzero(groups == c).flatten()
        m = len(idx)
        rank = torch.empty(m, dtype=torch.float64)
        rank[torch.randperm(m, generator=g)] = torch.arange(m, dtype=torch.float64)
        key[idx] = (rank + torch.rand(m, generator=g, dtype=torch.float64)) / m
    return torch.argsort(key, stable=True)


def evaluation_indices(task: Task, n: int | None = None) -> Tensor:
    """The indices of the ``n`` test rows an evaluation reads (all rows, in order, when ``n`` is None or at
    least N_test): the first ``n`` of :func:`evaluation_order`, a seeded random sample of the whole test set,
    stratified by ``task.groups`` where the task has strata. Subsets are nested: a smaller ``n`` reads a subset
    of a larger one's rows (checkpoints read part of the final evaluation's rows)."""
    total = task.test.shape[0]
    if n is None or int(n) >= total:
        return torch.arange(total)
    if int(n) < 1:
        raise ValueError(f"task {task.name!r}: an evaluation subset needs n >= 1 test rows, got {n}")
    return evaluation_order(task)[:int(n)]


def evaluation_rows(task: Task, n: int | None = None) -> Tensor:
    """``task.test[evaluation_indices(task, n)]``: the test rows every checkpoint, metric and claim evaluates."""
    return task.test[evaluation_indices(task, n)]


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


def task_kind(name: str) -> str:
    """The kind of data of a registered task: the last part of the module its factory is defined in (``toys``,
    ``gaussians``, ``images``, ``tabular``; a plugin's own module name otherwise); "" for an unknown task."""
    fn = _TASKS.get(name)
    return str(getattr(fn, "__module__", "") or "").rsplit(".", 1)[-1] if fn is not None else ""


#: the task option that pins a data file's content (``file`` tasks): the hex SHA-256 of its bytes
DATA_HASH_OPTION = "sha256"


def task_identity(name: str, options: dict | None = None) -> str:
    """The task as results and reports name it: its registered name, and for a task whose data is a user's file
    (options ``path``/``name``/:data:`DATA_HASH_OPTION`) also the data's label and the first 8 hex digits of its
    content hash, so that two different files never share a name: ``file: wine_a @ 1a2b3c4d``."""
    options = options or {}
    sha = str(options.get(DATA_HASH_OPTION) or "")
    label = str(options.get("name") or (Path(str(options["path"])).stem if options.get("path") else ""))
    if not sha and not label:
        return name
    text = f"{name}: {label}" if label and label != name else name
    return f"{text} @ {sha[:8]}" if sha else text


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
    augment = options.pop("augment", None)
    fixed = _FIXED_DIM[name]
    if fixed is not None:
        if dim is not None and int(dim) != fixed:
            raise ValueError(f"task {name!r} has fixed dimension {fixed}, not {dim}")
        task = _TASKS[name](seed=seed, **options)
    else:
        if dim is None and name not in _DIM_OF:
            raise ValueError(f"task {name!r} needs a dimension (dim=...)")
        task = _TASKS[name](dim=None if dim is None else int(dim), seed=seed, **options)
    task.seed = int(seed)
    if validation:
        task = validation_split(task, validation, seed)
    if augment not in (None, "", "none"):
        task = augment_task(task, augment)
    return smooth_task(task, smooth, seed) if smooth else task


def augment_task(task: Task, mode: str) -> Task:
    """``task`` with the training-batch augmentation ``mode`` (option ``augment``; ``"cifar"``: the official
    EBFlow CIFAR-10 augmentation, :mod:`.augment`). Only image tasks with dequantized integer pixels
    (``image_shape`` and ``discrete_scale`` set) support it; ``train`` and ``test`` are unchanged."""
    from .augment import AUGMENTATIONS

    if mode not in AUGMENTATIONS:
        raise ValueError(f"task {task.name!r}: augment must be one of {sorted(AUGMENTATIONS)} or 'none', "
                         f"got {mode!r}")
    if task.image_shape is None or task.discrete_scale is None:
        raise ValueError(f"task {task.name!r} does not support augment={mode!r}: it is not an image task of "
                         "dequantized pixels (it has no image_shape / discrete_scale)")
    return dataclasses.replace(
        task, augmentation=mode, options={**task.options, "augment": mode},
        description=f"{task.description}; training batches augmented ({mode}: flips and translations, fresh "
                    "dequantization noise)")


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
    tg = task.train_groups
    return dataclasses.replace(
        task, train=train, test=val, options={**task.options, "validation": float(fraction)},
        train_groups=None if tg is None else tg[perm[:n - n_val]], groups=None if tg is None else tg[perm[n - n_val:]],
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
