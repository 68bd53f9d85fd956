"""Wall time of one training step of a method at a given size: the shared core of ``ebflow-bench steptime``
and the asv ``time_*`` / ``peakmem_*`` benchmarks (``benchmarks/bench_step.py``).

Choices:

- the model is built through the adapter registry (``adapters.get(method)``) on the ``gaussian`` task, as in
  the matrix's scaling block; only the batch matters for the cost, so the task is drawn with
  ``n_train = batch_size`` and a tiny test set (its O(D^3) QR is paid once per (D, seed) and cached);
- fixed batch size (default 100; the paper's FC runs use 100) passed as the adapter's ``batch_size`` hparam;
- everything is seeded (``random``, numpy, torch, the adapter's own generators) from ``seed``;
- :meth:`StepBench.warm_up` runs ``warmup`` untimed steps first (lazy initialisation, allocator growth, Adam
  state creation); the timed steps reuse one batch (data loading is not part of a step);
- on CUDA the device is synchronised before each clock read; on CPU the thread count is whatever the caller
  set (asv's ``setup`` pins it, ``benchmarks.common.THREADS``).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: the step-time task (any D), as in the ``scaling`` preset
TASK = "gaussian"
#: default mini-batch size of a timed step
BATCH_SIZE = 100


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy and torch's global generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class StepBench:
    """A built adapter and a fixed batch on its device; ``step()`` runs one training step."""

    method: str
    dim: int
    layers: int
    adapter: Any
    batch: torch.Tensor
    device: torch.device

    def step(self) -> float:
        """One ``train_step`` on the fixed batch; returns the loss."""
        return self.adapter.train_step(self.batch)

    def warm_up(self, steps: int = 1) -> None:
        for _ in range(steps):
            loss = self.step()
            if not np.isfinite(loss):
                raise FloatingPointError(f"{self.method} at D={self.dim}, L={self.layers}: warm-up loss {loss}")
        _sync(self.device)

    def timed_step(self) -> float:
        """Seconds of one step (device synchronised before each clock read)."""
        _sync(self.device)
        t0 = time.perf_counter()
        self.step()
        _sync(self.device)
        return time.perf_counter() - t0


def build_step(method: str, dim: int, layers: int, *, batch_size: int = BATCH_SIZE,
               device: str | torch.device = "cpu", seed: int = 0, warmup: int = 1,
               **hparams: Any) -> StepBench:
    """Build ``method`` on the ``gaussian`` task at ``dim``/``layers``, seeded, and run ``warmup`` steps.

    Raises ``KeyError`` for an unknown method, ``ValueError`` for sizes < 1, and the adapter's ``Unsupported``
    (with its reason) when ``adapter.check`` refuses the size.
    """
    from .adapters import Unsupported, get
    from .device import resolve_device
    from .tasks import get_task

    if dim < 1 or layers < 1 or batch_size < 1:
        raise ValueError(f"dim, layers and batch_size must be >= 1, got {dim}, {layers}, {batch_size}")
    cls = get(method)
    dev = resolve_device(device)
    seed_everything(seed)
    task = get_task(TASK, dim=dim, seed=seed, n_train=batch_size, n_test=1)
    reason = cls.check(task, dim, layers)
    if reason:
        raise Unsupported(reason)
    adapter = cls(task, dim=dim, layers=layers, seed=seed, device=dev, batch_size=batch_size, **hparams)
    bench = StepBench(method, dim, layers, adapter, task.train.to(dev), dev)
    bench.warm_up(warmup)
    return bench


def step_time(method: str, dim: int, layers: int, *, repeats: int = 5, batch_size: int = BATCH_SIZE,
              device: str | torch.device = "cpu", seed: int = 0) -> float:
    """Mean wall time (s) of one ``train_step`` over ``repeats`` steps, after one warm-up step."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    bench = build_step(method, dim, layers, batch_size=batch_size, device=device, seed=seed, warmup=1)
    return float(np.mean([bench.timed_step() for _ in range(repeats)]))
