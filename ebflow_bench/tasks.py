"""Tasks: data sets with their ground truth, in a registry with one uniform signature.

``get_task(name, dim=None, seed=0, **options) -> Task``. Every task returns float32 CPU tensors ``train`` and
``test`` of shape [N, D] in its *data space*; the NLL of every method is measured in that space.

Ground truth, where known, is carried on the task: an exact ``log_prob`` (toys, mixtures, Gaussians), a
``sampler``, mode centres and weights (mixtures), grid bounds (2-D), and for dequantized image data the
``discrete_scale`` s such that data = (integer + uniform) / s, so that the NLL of the integer data in
bits/dim is (nll + D log s) / (D log 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

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
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            t = getattr(self, split)
            if t.ndim != 2 or t.shape[1] != self.dim:
                raise ValueError(f"task {self.name!r}: {split} has shape {tuple(t.shape)}, expected [N, {self.dim}]")
            if not torch.isfinite(t).all():
                raise ValueError(f"task {self.name!r}: {split} contains non-finite values")


class TaskUnavailable(RuntimeError):
    """The task's data cannot be had on this machine (e.g. a UCI folder that was not given)."""


#: name -> factory(dim, seed, **options) -> Task
_TASKS: dict[str, Callable[..., Task]] = {}
#: name -> fixed dimension, or None when the task takes ``dim``
_FIXED_DIM: dict[str, int | None] = {}


def register_task(name: str, dim: int | None = None):
    """Decorator registering a task factory. ``dim`` is the task's fixed D (None: any D, passed as ``dim``)."""

    def deco(fn: Callable[..., Task]) -> Callable[..., Task]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} registered twice")
        _TASKS[name] = fn
        _FIXED_DIM[name] = dim
        return fn

    return deco


def available_tasks() -> list[str]:
    return sorted(_TASKS)


def task_dim(name: str) -> int | None:
    """The task's fixed dimension, or None if it accepts any ``dim``."""
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(available_tasks())}")
    return _FIXED_DIM[name]


def get_task(name: str, dim: int | None = None, seed: int = 0, **options) -> Task:
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(available_tasks())}")
    fixed = _FIXED_DIM[name]
    if fixed is not None:
        if dim is not None and int(dim) != fixed:
            raise ValueError(f"task {name!r} has fixed dimension {fixed}, not {dim}")
        return _TASKS[name](seed=seed, **options)
    if dim is None:
        raise ValueError(f"task {name!r} needs a dimension (dim=...)")
    return _TASKS[name](dim=int(dim), seed=seed, **options)


# --- task factories below (2-D toys, mixtures, Gaussians, digits, MNIST-5k, image patches, UCI loaders) ---
