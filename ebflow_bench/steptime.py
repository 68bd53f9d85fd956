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

import math
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


def _timed(fn: Any, device: torch.device) -> float:
    """Wall seconds of one call of ``fn``, the device synchronised before each clock read."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


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
        return _timed(self.step, self.device)


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


#: default number of timed blocks per variant and the shortest block (s): a block repeats the call until it
#: lasts at least this long, so that a short step is not one clock tick and one preemption spoils one block
BLOCKS = 7
MIN_BLOCK_S = 0.05


@dataclass(frozen=True)
class Timing:
    """Seconds per call from ``blocks`` timed blocks of ``number`` calls each: the ``median`` of the blocks'
    per-call times (the statistic reported), their quartiles ``q1``/``q3`` (spread: ``iqr``) and ``minimum``."""

    median: float
    q1: float
    q3: float
    minimum: float
    blocks: int
    number: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, per_call: list[float], number: int) -> Timing:
        q1, med, q3 = np.percentile(per_call, [25, 50, 75])
        return cls(float(med), float(q1), float(q3), float(min(per_call)), len(per_call), int(number))


def measure(fns: dict[str, Any], *, blocks: int = BLOCKS, min_block_s: float = MIN_BLOCK_S,
            clock: Any = time.perf_counter, sync: Any = lambda: None, max_number: int = 1000) -> dict[str, Timing]:
    """Time each callable of ``fns`` robustly, interleaved: first each is called once to pick its ``number``
    (calls per block, so that a block lasts at least ``min_block_s``; at most ``max_number``), then ``blocks``
    rounds time one block of every callable in turn, so that load from other processes hits all alike. The
    statistic is the median of the blocks (:class:`Timing`, with its quartiles). ``clock`` (seconds) and
    ``sync`` (called before each clock read: a CUDA synchronise) can be injected."""
    if blocks < 1 or min_block_s < 0:
        raise ValueError(f"blocks must be >= 1 and min_block_s >= 0, got {blocks}, {min_block_s}")

    def block(fn: Any, number: int) -> float:
        sync()
        t0 = clock()
        for _ in range(number):
            fn()
        sync()
        return (clock() - t0) / number

    numbers = {}
    for name, fn in fns.items():
        once = block(fn, 1)
        numbers[name] = int(min(max_number, max(1, math.ceil(min_block_s / once)))) if once > 0 else max_number
    per_call: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(blocks):
        for name, fn in fns.items():
            per_call[name].append(block(fn, numbers[name]))
    return {name: Timing.of(ts, numbers[name]) for name, ts in per_call.items()}


def step_times(methods: list[str], dim: int, layers: int, *, blocks: int = BLOCKS,
               min_block_s: float = MIN_BLOCK_S,
               batch_size: int = BATCH_SIZE, device: str | torch.device = "cpu",
               seed: int = 0) -> dict[str, Timing | Exception]:
    """:func:`measure` of one ``train_step`` of each method at ``dim``/``layers`` (built and warmed up first,
    timed interleaved); a method that cannot be built gets its exception instead."""
    benches: dict[str, Any] = {}
    failed: dict[str, Exception] = {}
    for m in methods:
        try:
            benches[m] = build_step(m, dim, layers, batch_size=batch_size, device=device, seed=seed, warmup=1)
        except Exception as e:  # noqa: BLE001  (an impossible size is reported, the others are timed)
            failed[m] = e
    from .device import resolve_device

    dev = resolve_device(device)
    timed = measure({m: b.step for m, b in benches.items()}, blocks=blocks, min_block_s=min_block_s,
                    sync=lambda: _sync(dev))
    return {m: timed.get(m, failed.get(m)) for m in methods}


def step_time(method: str, dim: int, layers: int, *, repeats: int = BLOCKS, batch_size: int = BATCH_SIZE,
              device: str | torch.device = "cpu", seed: int = 0) -> Timing:
    """:class:`Timing` of one ``train_step`` (median of ``repeats`` blocks of at least :data:`MIN_BLOCK_S`),
    after one warm-up step."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    result = step_times([method], dim, layers, blocks=repeats, batch_size=batch_size, device=device, seed=seed)
    if isinstance(result[method], Exception):
        raise result[method]
    return result[method]


# ------------------------------------------------------------------------------ floors (issue 13)
#: reference variants timed beside the objectives' steps (the ``method`` of their asv rows): a plain
#: forward+backward of the same dense model (loss ``mean E``) followed by the same fused-Adam and EMA update as
#: every adapter step (``PLAIN``), the same without the update (``PLAIN_NOOPT``), and the matrix products alone
#: of each objective's step (``FLOOR_PREFIX + objective``, see :func:`product_counts`)
PLAIN = "plain-fb"
PLAIN_NOOPT = "plain-fb-noopt"
FLOOR_PREFIX = "gemm-"
#: objectives whose matrix-product floor is defined (dense model, L layers)
FLOOR_OBJECTIVES = ("plain", "dsm", "ssm", "fdssm")


def product_counts(objective: str, layers: int, batch_size: int = BATCH_SIZE) -> dict[tuple[str, int], int]:
    """Matrix products of one step of ``objective`` on the dense model (``L`` layers of ``D x D``), as
    ``{(kind, rows): count}``: kind ``"act"`` is ``[rows, D] x [D, D]`` (a forward product or an input
    gradient), ``"wgrad"`` is ``[D, rows] x [rows, D]`` (a weight gradient with ``rows`` as inner dimension,
    written to a fresh ``D x D`` buffer as the step's own are).

    - ``plain`` (forward + backward, data without grad): ``L`` forward, ``L - 1`` input gradients, ``L``
      weight gradients;
    - ``dsm`` (:mod:`ebflow.sweep`: energy, explicit score, hand-written backward; the input ``u`` needs no
      gradient): ``2L`` sweep products, ``2L - 1`` input gradients, and one weight gradient per layer with
      both uses of ``W`` stacked (``2B`` rows);
    - ``ssm`` (primal and tangents stacked through each layer: ``2B`` rows in the first layer, ``3B`` after
      it, plus ``L`` for the score): forward ``[2B] + (L - 1) [3B] + L [B]``, input gradients
      ``L [B] + (L - 1) [3B]``, one weight gradient per layer (``3B`` rows in the first, ``4B`` after);
    - ``fdssm`` (energy of a ``3B`` batch): the plain counts at ``3B`` rows.
    """
    L, b = int(layers), int(batch_size)
    if L < 1 or b < 1:
        raise ValueError(f"product_counts: layers and batch_size must be >= 1, got {layers}, {batch_size}")
    table: dict[str, dict[tuple[str, int], int]] = {
        "plain": {("act", b): 2 * L - 1, ("wgrad", b): L},
        "dsm": {("act", b): 4 * L - 1, ("wgrad", 2 * b): L},
        "ssm": {("act", b): 2 * L, ("act", 2 * b): 1, ("act", 3 * b): 2 * (L - 1),
                ("wgrad", 3 * b): 1, ("wgrad", 4 * b): L - 1},
        "fdssm": {("act", 3 * b): 2 * L - 1, ("wgrad", 3 * b): L},
    }
    if objective not in table:
        raise ValueError(f"product_counts: no floor for {objective!r}; known: {', '.join(FLOOR_OBJECTIVES)}")
    return {k: n for k, n in table[objective].items() if n > 0}


class _Timer:
    """A callable timed like a step (device synchronised around it)."""

    def __init__(self, fn: Any, device: torch.device) -> None:
        self.fn, self.device = fn, device

    def timed_step(self) -> float:
        return _timed(self.fn, self.device)


def plain_step(dim: int, layers: int, *, batch_size: int = BATCH_SIZE, device: str | torch.device = "cpu",
               seed: int = 0, optimizer: bool = True) -> _Timer:
    """A plain forward+backward of ``fully_connected(dim, layers)`` (loss ``mean E(x)``, data without grad),
    warmed up once. With ``optimizer`` (default) it is a whole training step with everything but the
    objective as in an ``ebflow-*`` adapter step: ``ebflow.training.train_step`` with fused Adam (lr 1e-3),
    then an EMA (0.999) update; without, only the forward and backward (gradients set to None before each)."""
    from ebflow.architectures import fully_connected
    from ebflow.ema import EMA
    from ebflow.training import train_step

    from .device import resolve_device

    dev = resolve_device(device)
    seed_everything(seed)
    model = fully_connected(dim, layers).to(dev)
    x = torch.randn(batch_size, dim, device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    ema = EMA(model, 0.999)

    def loss(m: Any, batch: torch.Tensor) -> torch.Tensor:
        return m.flow_energy(batch).mean()

    def run() -> None:
        if optimizer:
            train_step(model, opt, loss, x)
            ema.update()
            return
        for p in model.parameters():
            p.grad = None
        loss(model, x).backward()

    run()
    return _Timer(run, dev)


def gemm_floor(objective: str, dim: int, layers: int, *, batch_size: int = BATCH_SIZE,
               device: str | torch.device = "cpu", seed: int = 0) -> _Timer:
    """The matrix products of one ``objective`` step alone (:func:`product_counts`), run back to back on
    random operands of the step's shapes: what the step would cost with free element-wise work, free
    optimizer and no overhead."""
    from .device import resolve_device

    dev = resolve_device(device)
    counts = product_counts(objective, layers, batch_size)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    w = torch.randn(dim, dim, generator=gen).to(dev)
    ops = []
    for (kind, rows), n in counts.items():
        a = torch.randn(rows, dim, generator=gen).to(dev)
        b = torch.randn(rows, dim, generator=gen).to(dev)
        ops += [(lambda a=a: torch.mm(a, w.T)) if kind == "act" else (lambda a=a, b=b: torch.mm(a.T, b))] * n

    def run() -> None:
        for op in ops:
            op()

    run()
    return _Timer(run, dev)


def floor_table(methods: list[str], dims: list[int], layers: int = 2, *, repeats: int = BLOCKS,
                batch_size: int = BATCH_SIZE, device: str | torch.device = "cpu", seed: int = 0,
                floors: tuple[str, ...] = FLOOR_OBJECTIVES, min_block_s: float = MIN_BLOCK_S) -> "pd.DataFrame":
    """Step times of ``methods`` beside the plain forward+backward and the GEMM floors, per D.

    At each D every variant is built once, then timed by :func:`measure`: ``repeats`` rounds, one block of
    each variant per round in turn (interleaved, so that load from other processes hits all variants alike);
    the median of the blocks is kept (``value``) with their interquartile range (``iqr``). Returns the tidy
    columns ``method, dim, layers, value, iqr`` (seconds; ``method`` is an adapter name,
    :data:`PLAIN`, :data:`PLAIN_NOOPT` or ``FLOOR_PREFIX + objective``), the shape :func:`ebflow_bench.asv_results.load_asv_results`
    gives for the asv benchmarks, so :mod:`ebflow_bench.stepcost` reads both. A variant that fails to build
    gets NaN.
    """
    import pandas as pd

    from .device import resolve_device

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rows = []
    for d in dims:
        benches: dict[str, Any] = {}
        makers = [(m, lambda m=m: build_step(m, d, layers, batch_size=batch_size, device=device, seed=seed))
                  for m in methods]
        makers.append((PLAIN, lambda: plain_step(d, layers, batch_size=batch_size, device=device, seed=seed)))
        makers.append((PLAIN_NOOPT, lambda: plain_step(d, layers, batch_size=batch_size, device=device, seed=seed,
                                                       optimizer=False)))
        makers += [(FLOOR_PREFIX + o, lambda o=o: gemm_floor(o, d, layers, batch_size=batch_size, device=device,
                                                             seed=seed)) for o in floors]
        for name, make in makers:
            try:
                benches[name] = make()
            except Exception as e:  # noqa: BLE001  (an impossible size gives NaN, the table goes on)
                benches[name] = None
                import sys
                print(f"  {name} at D={d}: {type(e).__name__}: {e}", file=sys.stderr)
        live = {name: bench.fn if isinstance(bench, _Timer) else bench.step
                for name, bench in benches.items() if bench is not None}
        timed = measure(live, blocks=repeats, min_block_s=min_block_s, sync=lambda: _sync(resolve_device(device)))
        for name in benches:
            t = timed.get(name)
            rows.append({"method": name, "dim": d, "layers": layers,
                         "value": t.median if t else float("nan"), "iqr": t.iqr if t else float("nan")})
        benches.clear()
    return pd.DataFrame(rows, columns=["method", "dim", "layers", "value", "iqr"])
