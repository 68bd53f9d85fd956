"""Shared parameters and fixtures of the asv suite (like numpy's ``benchmarks/common.py``).

The suite is thin: every model is built through ``ebflow_bench.adapters.get`` on a task from
``ebflow_bench.tasks.get_task`` (via :mod:`ebflow_bench.steptime` for step timing and
:func:`ebflow_bench.runner.run_cell` for the quality tracks), so asv measures exactly what the matrix runs.

Choices:

- ``THREADS = 2``: torch's intra-op thread count is pinned in every ``setup`` to the reference machine's 2
  cores, so results do not depend on the machine's default and are comparable over commits. On a bigger
  machine, keep 2 for comparability (or change it and record a new asv machine name).
- every setup seeds ``random``, numpy and torch with ``SEED``; adapters seed their own generators.
- every parameterised benchmark uses the parameter names ``method``, ``dim``, ``layers`` (a sweep fixes one of
  them with a one-element list), so each asv result is self-describing for
  :func:`ebflow_bench.asv_results.load_asv_results`.
- import is cheap (torch and the harness modules, no adapter libraries): ``asv check`` and the fork server
  import this module once.
"""

from __future__ import annotations

from typing import Any

import torch

from ebflow_bench.steptime import (BATCH_SIZE, FLOOR_OBJECTIVES, FLOOR_PREFIX, PLAIN, PLAIN_NOOPT, StepBench, build_step,
                                   gemm_floor, plain_step, seed_everything)

#: torch intra-op threads in every benchmark process (the reference machine's core count)
THREADS = 2
SEED = 0
#: mini-batch of a timed step (the paper's FC batch size)
STEP_BATCH = BATCH_SIZE

#: dense-architecture methods timed per step (``ebflow-sml`` and ``mle-lu`` are the optional extras; the
#: determinant-free peers of family ``approx-ml`` on the same 2 x D x D model: ``free-form-flow`` trains an
#: encoder and a decoder of that shape)
STEP_METHODS = ["ebflow-ml", "ebflow-sml", "ebflow-ssm", "ebflow-dsm", "ebflow-fdssm", "mle-lu",
                "snf", "relative-gradient", "free-form-flow"]
#: D-sweep at fixed L: powers of two plus 1536 and 3072, so that the asymptotic range D >= 1024
#: (``ebflow_bench.scaling.ASYMPTOTIC_MIN_DIM``) has 5 points and its t-interval 3 degrees of freedom
D_SWEEP = [64, 128, 256, 512, 1024, 1536, 2048, 3072, 4096]
D_SWEEP_LAYERS = 2
#: L-sweep at fixed D. L = 1 is a single affine map (activations sit between consecutive dense layers), so the
#: L-exponent is also fitted over L >= 2, where every model has the same layer types (L = 16 gives that fit a
#: fourth point)
L_SWEEP = [1, 2, 4, 8, 16]
L_SWEEP_DIM = 512
#: the limits timed beside each step in the D-sweep (``ebflow_bench.stepcost`` divides by them): a plain
#: forward+backward of the same dense model with and without the steps' fused-Adam/EMA update, and each
#: objective's matrix products alone
FLOOR_METHODS = [PLAIN, PLAIN_NOOPT] + [FLOOR_PREFIX + o for o in FLOOR_OBJECTIVES]
#: peak memory of a step: ML against the score-matching objectives at every D of the sweep, and a baseline
#: process (imports only) to subtract
PEAKMEM_BASELINE = "baseline"
PEAKMEM_METHODS = [PEAKMEM_BASELINE, "ebflow-ml", "ebflow-ssm", "ebflow-dsm", "ebflow-fdssm"]
PEAKMEM_DIMS = D_SWEEP

#: quality tracks: short fixed-seed training on 2-D toys, default hyperparameters of each adapter
TRACK_METHODS = ["ebflow-ml", "ebflow-dsm", "ebflow-ssm", "energy-flow", "mle-lu"]
TRACK_TASKS = ["checkerboard", "eight_gaussians"]
TRACK_STEPS = 200
TRACK_LAYERS = 4
TRACK_SAMPLES = 2000


def pin(seed: int = SEED) -> None:
    """Pin torch's thread count to :data:`THREADS` and seed every generator."""
    torch.set_num_threads(THREADS)
    seed_everything(seed)


# One warmed-up step fixture per benchmark process. asv_runner >= 0.2 re-runs ``setup`` before every timed
# sample (asv#966); a training step costs the same whatever the parameters' values, so rebuilding the model
# (and repeating the O(D^3) task QR and an ML warm-up of seconds at D=4096) for each sample would only waste
# time. asv runs each parameter combination in its own process, so one entry is enough.
_STEP_CACHE: dict[tuple[str, int, int], StepBench] = {}


def warmed_step(method: str, dim: int, layers: int) -> StepBench:
    """Pin threads, seed, and return ``method`` built at (dim, layers) after one warm-up step (cached)."""
    pin()
    key = (method, int(dim), int(layers))
    if key not in _STEP_CACHE:
        _STEP_CACHE.clear()
        _STEP_CACHE[key] = build_step(method, dim, layers, batch_size=STEP_BATCH, seed=SEED, warmup=1)
    return _STEP_CACHE[key]


_FLOOR_CACHE: dict[tuple[str, int, int], object] = {}


def warmed_floor(method: str, dim: int, layers: int):
    """Like :func:`warmed_step` for a :data:`FLOOR_METHODS` entry (plain forward+backward or a GEMM floor)."""
    pin()
    key = (method, int(dim), int(layers))
    if key not in _FLOOR_CACHE:
        _FLOOR_CACHE.clear()
        if method in (PLAIN, PLAIN_NOOPT):
            _FLOOR_CACHE[key] = plain_step(dim, layers, batch_size=STEP_BATCH, seed=SEED,
                                           optimizer=method == PLAIN)
        elif method.startswith(FLOOR_PREFIX):
            _FLOOR_CACHE[key] = gemm_floor(method[len(FLOOR_PREFIX):], dim, layers, batch_size=STEP_BATCH,
                                           seed=SEED)
        else:
            raise ValueError(f"unknown floor method {method!r}; expected one of {FLOOR_METHODS}")
    return _FLOOR_CACHE[key]


def train_quality(method: str, task: str, *, steps: int = TRACK_STEPS, layers: int = TRACK_LAYERS,
                  seed: int = SEED, n_samples: int = TRACK_SAMPLES,
                  threads: int | None = THREADS) -> dict[str, float]:
    """Train ``method`` on the 2-D ``task`` for ``steps`` steps as one matrix cell (``runner.run_cell``: seeded
    data order, exact test NLL, samples, metrics) and return ``{metric: value}`` of its ok quality rows
    (the runner's timing rows are left out: they are not deterministic).

    Raises ``RuntimeError`` with the cell's reason when the cell fails (a ``degenerate`` cell's numbers are kept:
    tracking them is how a regression into degeneracy shows)."""
    from ebflow_bench.matrix import matrix_from_dict, validate
    from ebflow_bench.runner import TIMING_METRICS, run_cell
    from ebflow_bench.tasks import task_dim

    if task_dim(task) is None:
        raise ValueError(f"train_quality: task {task!r} has no fixed dimension; use a 2-D toy")
    (cell,) = validate(matrix_from_dict({
        "name": "asv-quality", "methods": [method], "tasks": [task], "layers": [layers], "seeds": [seed],
        "budgets": [steps], "eval": {"n_samples": n_samples, "checkpoints": 0,
                                     **({"threads": threads} if threads is not None else {})}}))
    record, _ = run_cell(cell)
    if record["status"] == "failed":
        raise RuntimeError(f"{method} on {task}: {record['reason']}")
    return {r["metric"]: float(r["value"]) for r in record["rows"]
            if r.get("status") == "ok" and r["metric"] not in TIMING_METRICS}


def quality_table(methods: list[str] = TRACK_METHODS, tasks: list[str] = TRACK_TASKS,
                  **kw: Any) -> dict[tuple[str, str], dict[str, float] | str]:
    """:func:`train_quality` for every (method, task); a failing cell maps to its error message."""
    out: dict[tuple[str, str], dict[str, float] | str] = {}
    for m in methods:
        for t in tasks:
            try:
                out[(m, t)] = train_quality(m, t, **kw)
            except Exception as e:  # noqa: BLE001  (one bad cell must not hide the others' values)
                out[(m, t)] = f"{type(e).__name__}: {e}"
    return out
