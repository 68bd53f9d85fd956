"""Resource pre-flight: each cell's peak memory estimated before any work, checked against the memory there is.

:func:`estimate` adds up, in bytes, what a cell holds at its peak (the runner's ``peak_memory``: building the
task, the adapter, training steps, evaluation), from its method, D, L, batch and hyperparameters alone, without
building anything:

- the task (:func:`task_parts`): training and test data (``n_train``/``n_test`` from the task's options or its
  factory's defaults) in float32 and their float64 construction copies; the ``gaussian`` task's D x D
  eigenbasis (a float64 Gaussian matrix, its QR factors and the float32 copies, :data:`GAUSSIAN_D2_BYTES`);
- the method: :meth:`ebflow_bench.adapters.base.Adapter.memory_parts` (a per-adapter hook): parameters,
  gradients, optimizer state, EMA, activations of a step, workspaces (e.g. the ML log-det's LU factors);
  the default describes a network of width ``hidden`` (default 64) per layer, linear in D;
- evaluation: model samples and test data in chunks (:data:`EVAL_SLACK` per sample and dimension).

:func:`check` compares every cell's estimate with the limit (:func:`available_memory`: the kernel's
``MemAvailable``, lowered by a cgroup ``memory.max``; divided among local workers) and raises one
:class:`ResourceError` line naming the largest cell, its estimate and the limit (exit status 2 from the CLI),
before the run folder exists and before any data or model is built. Cells estimated above
:data:`ANNOUNCE_BYTES` announce each setup stage on stderr (:func:`announce`) instead of a silent wait.
``tests/test_preflight.py`` checks the estimate against measured peaks (the error is stated there).
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: bytes per D^2 of the ``gaussian`` task's construction: the float64 Gaussian matrix, Q and R (8 bytes each),
#: LAPACK's workspace and the float32 copy of Q
GAUSSIAN_D2_BYTES = 36
#: tasks whose construction holds D x D matrices
D2_TASKS = {"gaussian": GAUSSIAN_D2_BYTES}
#: bytes per (sample x dimension) of evaluation: model samples (float32 and a float64 copy), the metrics'
#: projections of samples and test points
EVAL_SLACK = 48
#: what any cell adds to its process besides its own tensors (torch's lazy initialisation, allocator slack,
#: the metrics' fixed buffers)
RUNTIME_BYTES = 64 << 20
#: cells estimated above this announce their setup stages on stderr
ANNOUNCE_BYTES = 1 << 30
#: a worker process's own memory (Python, torch, the suite) when a local cluster runs the cells
WORKER_BASELINE_BYTES = 400 << 20


class ResourceError(ValueError):
    """A matrix whose cells cannot fit in the memory there is (one line: the cell, its estimate, the limit)."""


@dataclass(frozen=True)
class Estimate:
    """A cell's estimated peak memory: ``parts`` (name -> bytes) and their ``total``."""

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    def describe(self, top: int = 3) -> str:
        """The largest parts, e.g. ``parameters 1.2 GiB, task eigenbasis 800 MiB``."""
        big = sorted(self.parts.items(), key=lambda kv: -kv[1])[:top]
        return ", ".join(f"{k} {fmt_bytes(v)}" for k, v in big if v > 0)


def fmt_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _factory_default(task: str, key: str) -> Any:
    from .tasks.base import _TASKS

    try:
        p = inspect.signature(_TASKS[task]).parameters.get(key)
    except (KeyError, TypeError, ValueError):
        return None
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def task_parts(task: str, dim: int, options: dict[str, Any] | None = None) -> dict[str, int]:
    """Bytes the task holds once built (and at its construction peak), from its options or factory defaults."""
    options = options or {}
    n_train = options.get("n_train", _factory_default(task, "n_train"))
    if n_train is None:  # the gaussian task's rule (tasks.gaussians._gaussian_default_n); 20000 elsewhere
        n_train = min(20000, max(2000, int(8e6 / max(dim, 1)))) if task == "gaussian" else 20000
    n_test = options.get("n_test", _factory_default(task, "n_test"))
    n_test = 2000 if n_test is None else n_test
    n = int(n_train) + int(n_test)
    parts = {"task data": 12 * n * dim}  # float32 data and its float64 draws
    if task in D2_TASKS:
        parts["task eigenbasis"] = D2_TASKS[task] * dim * dim
    return parts


def estimate(cls: type, task: str, dim: int, layers: int, hparams: dict[str, Any],
             task_options: dict[str, Any] | None = None, n_samples: int = 2000) -> Estimate:
    """The estimated peak memory of one cell of adapter class ``cls`` (see the module docstring)."""
    hp = {**cls.defaults, **(hparams or {})}
    batch = int(hp.get("batch_size") or 256)
    parts = dict(task_parts(task, dim, task_options))
    parts.update(cls.memory_parts(int(dim), int(layers), hp, batch))
    parts["evaluation"] = EVAL_SLACK * int(n_samples) * int(dim)
    parts["runtime"] = RUNTIME_BYTES
    return Estimate({k: int(v) for k, v in parts.items()})


def spec_estimate(spec) -> Estimate:
    """:func:`estimate` of a resolved :class:`ebflow_bench.cell.CellSpec`."""
    from .matrix import adapter_registry

    cls = adapter_registry()[spec.method]
    return estimate(cls, spec.task, spec.dim, spec.layers, spec.hparams, spec.task_options, spec.eval.n_samples)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes this process may still allocate: ``MemAvailable`` of ``/proc/meminfo``, lowered by a cgroup v2
    ``memory.max`` (minus ``memory.current``); None where neither can be read (no check is made)."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    limit, current = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and current is not None:
        avail = limit - current if avail is None else min(avail, limit - current)
    return avail


def cell_name(method: str, task: str, dim: int, layers: int, batch: Any) -> str:
    return f"{method} on {task} (D={dim}, L={layers}, batch {batch})"


def check(estimates: list[tuple[str, Estimate]], limit: int | None, *, where: str = "memory available") -> None:
    """Raise :class:`ResourceError` when a cell's estimate exceeds ``limit`` (bytes; None: no check): one line
    naming the largest such cell, its estimate and its largest parts, the limit and how many other cells
    exceed it."""
    if limit is None:
        return
    over = sorted(((e.total, name, e) for name, e in estimates if e.total > limit), key=lambda t: -t[0])
    if not over:
        return
    total, name, e = over[0]
    more = f" (and {len(over) - 1} more cell{'s' if len(over) > 2 else ''} over it)" if len(over) > 1 else ""
    raise ResourceError(f"cell {name} needs an estimated {fmt_bytes(total)} of memory ({e.describe()}); "
                        f"{where}: {fmt_bytes(limit)}{more}. Make D, L or batch_size smaller, or run it on a "
                        "bigger machine")


def fit_workers(workers: int, estimates: list[Estimate], limit: int | None) -> int:
    """The largest worker count <= ``workers`` whose ``n`` largest cells fit in ``limit`` together (each
    worker also paying :data:`WORKER_BASELINE_BYTES`); at least 1."""
    if limit is None or workers <= 1:
        return max(1, workers)
    sizes = sorted((e.total for e in estimates), reverse=True)
    for n in range(workers, 1, -1):
        if sum(sizes[:n]) + n * WORKER_BASELINE_BYTES <= limit:
            return n
    return 1


def announce(message: str) -> None:
    """One setup-progress line on stderr (long setups say what they do instead of waiting in silence)."""
    print(f"setup: {message}", file=sys.stderr, flush=True)


def dense_parts(n_params: int, *, optimizer: str = "adam", ema: bool = False) -> dict[str, int]:
    """float32 parameters, their gradients, the optimizer's state (Adam/AdamW: 2 buffers, RMSprop: 1) and an
    EMA copy, in bytes: the parts every adapter of ``n_params`` trained parameters holds."""
    state = {"rmsprop": 1, "sgd": 0}.get(str(optimizer).lower(), 2)
    out = {"parameters": 4 * n_params, "gradients": 4 * n_params, "optimizer state": 4 * state * n_params}
    if ema:
        out["EMA"] = 4 * n_params
    return out


__all__ = ["Estimate", "ResourceError", "estimate", "check_cells", "spec_estimate", "task_parts", "available_memory",
           "check",
           "fit_workers", "announce", "dense_parts", "fmt_bytes", "cell_name", "ANNOUNCE_BYTES"]


def check_cells(cells: list[tuple[type, Any]], n_samples: int, limit: int | None = None) -> None:
    """The pre-flight of :func:`ebflow_bench.matrix.validate`: ``cells`` are (adapter class, raw cell with
    ``method, task, dim, layers, hparams, task_options``) pairs; each distinct configuration is estimated
    and checked against ``limit`` (default :func:`available_memory`)."""
    limit = available_memory() if limit is None else limit
    seen: dict[tuple, tuple[str, Estimate]] = {}
    for cls, c in cells:
        key = (c.method, c.task, c.dim, c.layers, repr(sorted(c.hparams.items())), repr(sorted(c.task_options.items())))
        if key not in seen:
            hp = {**cls.defaults, **c.hparams}
            name = cell_name(c.method, c.task, c.dim, c.layers, hp.get("batch_size", "n/a"))
            seen[key] = (name, estimate(cls, c.task, c.dim, c.layers, c.hparams, c.task_options, n_samples))
    check(list(seen.values()), limit, where="memory available here")
