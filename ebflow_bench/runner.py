"""Runs a benchmark matrix cell by cell: resumable, failure-tolerant, serial or on a Dask cluster.

For one cell (:func:`run_cell`, given its resolved :class:`ebflow_bench.cell.CellSpec`): set torch to
``spec.threads`` threads; build the task with ``spec.data_seed``; seed ``random``/numpy/torch with
``spec.train_seed`` and build the adapter with it (initialisation, objective noise, chains); train for exactly
``spec.budget`` steps on mini-batches drawn by a ``torch.Generator`` seeded with ``train_seed``: each epoch is a
fresh random permutation of the training set, cut into batches of ``adapter.batch_size`` (the last, shorter
batch of an epoch is dropped unless it is the only one). Then the per-sample test NLL (``adapter.nll``, in
chunks) and ``n_samples`` model samples go to ``diagnostics.diagnose`` and ``metrics.compute_metrics`` (seeded
with ``train_seed``). So a cell's non-timing results depend only on its spec: not on the machine's load, the
order of cells or the process (serial or Dask) that ran it.

Measured, never used to stop (except the safety cap below):

- ``compute_s``: training compute, process CPU seconds (``time.process_time``) over the training steps; on
  CUDA the sum of the steps' CUDA-event times. ``wall_s``: training wall seconds. Both exclude checkpoint
  evaluations. ``median_step_s``: median wall time of one step (robust to the first step's warm-up and to
  load spikes).
- checkpoints: after ``round(budget * i / k)`` steps, i = 1..k (k = ``eval.checkpoints``), the mean NLL of
  ``checkpoint_test`` test points (``tasks.evaluation_rows``: a seeded random sample of the whole test set,
  stratified by the task's ``groups``; the final NLL reads ``max_test`` rows the same way) with ``step``, ``compute_s`` and ``wall_s`` so far (record
  ``checkpoints``; rows ``nll_at_time``).
- rows ``step_time`` (s, the median step time), ``train_time`` (s, ``wall_s``), ``peak_memory`` (MiB): on
  CUDA ``torch.cuda.max_memory_allocated`` after resetting the peak statistics at the start of the cell; on CPU
  the kernel's high-water mark VmHWM (reset through ``/proc/self/clear_refs`` = 5) minus VmRSS at the start,
  i.e. the cell's peak resident memory above what the process already held (the first cell of a process also
  pays for torch's lazy initialisation); where ``/proc`` is missing, the increase of ``ru_maxrss`` (a lower
  bound). ``log_z_stderr`` (nats) for adapters exposing it (EBMs whose NLL uses an estimated log Z).
- ``nonfinite_losses`` (samples) for adapters that count the non-finite per-sample losses they zeroed
  (attribute ``nonfinite_losses``), also when the cell fails in training; ``reconstruction_error`` (relative)
  for adapters with a learned inverse (method ``reconstruction_error(test_x)``); where the likelihood rests on
  that inverse (``nll_needs_inverse``: free-form flows) the NLL rows are flagged ``unreliable`` above
  ``metrics.MAX_RECONSTRUCTION_ERROR`` (:func:`ebflow_bench.metrics.reconstruction_reliability`).

``spec.time_cap_s`` is a safety limit only: a cell whose training wall time reaches it stops, gets a checkpoint
at that step and the status ``capped`` (reason: the step it stopped at). ``diagnostics.diagnose`` finding the
model degenerate gives the status ``degenerate``. A non-finite loss, a non-finite test NLL or any exception
make the cell ``failed`` (a failed ``test_nll`` row, ``reason`` with the step and the error); the matrix goes
on. Records (``CellRecord.to_dict()``) are written atomically to ``cells/<cell_id>.json``; ``resume=True``
skips cells that have a complete one (a damaged record is moved to ``cells/corrupt/`` and its cell runs again;
the folder is locked while a run writes it: see :mod:`ebflow_bench.rundir`). Cell results depend only on the
cell's spec, not on the order or process that ran it, so a Dask run (:mod:`ebflow_bench.cluster`) equals a
serial one on every non-timing metric.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .cell import CellRecord, CellSpec, Checkpoint
from .matrix import Matrix, load_imports, validate
from .results import write_json_atomic, write_results
from .rundir import RunDirExists, RunLock, align_device, check_run_dir, resolve_run_dir, tidy_run_dir

#: metrics the runner records itself (all others come from ``metrics.compute_metrics``)
TIMING_METRICS = ("step_time", "train_time", "peak_memory", "nll_at_time")
RUNNER_METRICS = TIMING_METRICS + ("log_z_stderr", "log_z_ess", "nonfinite_losses", "reconstruction_error")
#: samples kept on disk per cell
MAX_SAVED_SAMPLES = 2000
_NLL_CHUNK = 1024


class CellFailure(RuntimeError):
    """A cell could not finish (divergence, bad samples); the message is the recorded reason."""


# ------------------------------------------------------------------------------------------ environment


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "numpy", "ebflow-bench", "nflows", "normflows"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str:
    """HEAD of the repository holding this package (``+dirty`` if tracked files have changes or an untracked
    ``.py`` file lies in the code packages, which would run too), or '' outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", "ebflow",
                                    "ebflow_bench", "baselines"], cwd=root, capture_output=True, text=True,
                                   timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if dirty or any(f.endswith(".py") for f in untracked) else "")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class _PeakMemory:
    """Peak memory of a block of work in MiB (see the module docstring for the method)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @staticmethod
    def _status_kib(field: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self.maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.rss0 = self._status_kib("VmRSS")
        except OSError:
            self.rss0 = None

    def mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        hwm = self._status_kib("VmHWM") if self.rss0 is not None else None
        if hwm is not None and self.rss0 is not None:
            return max(hwm - self.rss0, 0) / 1024
        return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.maxrss0, 0) / 1024


# ---------------------------------------------------------------------------------------------- one cell


def checkpoint_steps(budget: int, k: int) -> list[int]:
    """The steps after which the checkpoint NLL is measured: round(budget * i / k), i = 1..k, distinct."""
    return sorted({max(1, round(budget * i / k)) for i in range(1, k + 1)}) if k > 0 else []


def _batches(n: int, batch_size: int, gen: torch.Generator):
    """Endless mini-batch indices: per epoch a random permutation cut into full batches.

    ``batch_size`` and ``n`` must be >= 1 (checked here too, not only by matrix validation: an empty range
    would make this generator spin forever without yielding)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if n < 1:
        raise ValueError(f"no training data to draw batches from (n = {n})")
    bs = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - bs + 1, bs):
            yield perm[i:i + bs]


def _mean_nll(adapter, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Per-sample NLL of ``x`` through ``adapter.nll``, in chunks, as a CPU float64 tensor."""
    parts = []
    for i in range(0, x.shape[0], _NLL_CHUNK):
        parts.append(adapter.nll(x[i:i + _NLL_CHUNK].to(device)).detach().to("cpu", torch.float64))
    return torch.cat(parts)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timing_rows(step_times: list[float], wall_s: float) -> list[dict[str, Any]]:
    if not step_times:
        return []
    return [{"metric": "step_time", "value": float(np.median(step_times)), "unit": "s", "status": "ok"},
            {"metric": "train_time", "value": wall_s, "unit": "s", "status": "ok"}]


class _Clock:
    """Training compute and wall time: process CPU seconds on CPU, summed CUDA-event times on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.compute_s = 0.0
        self.wall_s = 0.0

    def start(self) -> None:
        _sync(self.device)
        self._w = time.perf_counter()
        if self.cuda:
            self._e0 = torch.cuda.Event(enable_timing=True)
            self._e1 = torch.cuda.Event(enable_timing=True)
            self._e0.record()
        else:
            self._c = time.process_time()

    def stop(self) -> float:
        """Stop the clock; return this interval's wall seconds."""
        if self.cuda:
            self._e1.record()
            torch.cuda.synchronize(self.device)
            self.compute_s += self._e0.elapsed_time(self._e1) / 1000.0
        else:
            self.compute_s += time.process_time() - self._c
        dt = time.perf_counter() - self._w
        self.wall_s += dt
        return dt


def _counter_rows(adapter) -> list[dict[str, Any]]:
    """The ``nonfinite_losses`` row of an adapter that counts its non-finite per-sample losses (attribute
    ``nonfinite_losses``; adapters without it record nothing)."""
    n_bad = getattr(adapter, "nonfinite_losses", None)
    if n_bad is None:
        return []
    return [{"metric": "nonfinite_losses", "value": float(n_bad), "unit": "samples", "status": "ok",
             "reason": "zeroed in the training step" if n_bad else ""}]


def run_cell(spec: CellSpec | dict[str, Any]) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run one cell; return its record (``CellRecord.to_dict()``, without run-level fields) and up to 2000
    samples (or None).

    Never raises for a problem of the cell itself: that becomes a ``failed`` record. The cell runs with
    ``spec.threads`` torch threads and as many BLAS threads (numpy's too, through ``threadpoolctl``), in this
    process or on a Dask worker alike: Dask starts its workers with one BLAS thread, and a float64 reduction
    summed in another order by more threads would differ in its last bits between a serial and a parallel run.
    """
    from .device import cell_threads

    spec = spec if isinstance(spec, CellSpec) else CellSpec.from_dict(spec)
    with cell_threads(spec.threads):
        return _run_cell(spec)


def _run_cell(spec: CellSpec) -> tuple[dict[str, Any], np.ndarray | None]:
    from .adapters.base import NLLUnavailable

    load_imports(spec.imports)
    from .diagnostics import diagnose
    from .matrix import adapter_registry
    from .tasks import evaluation_rows, get_task, task_dim

    device = torch.device(spec.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # CUDA events and streams of this cell on its own GPU
    rec = CellRecord(spec=spec, versions=versions(), started=_now())
    rows: list[dict[str, Any]] = []
    samples_out = None
    step = 0
    step_times: list[float] = []
    clock = _Clock(device)
    adapter = None
    stage = "building the task"
    from . import preflight

    try:
        est = preflight.spec_estimate(spec)
    except Exception:  # noqa: BLE001  (an estimate is advice; the cell itself decides)
        est = None
    big = est is not None and est.total > preflight.ANNOUNCE_BYTES
    who = f"cell {spec.cell_id} ({spec.method} on {spec.task}, D={spec.dim}, L={spec.layers})"

    def announce(what: str) -> None:  # a long cell says what it does (stderr), never a silent wait
        if big:
            preflight.announce(f"{who}: {what}")

    announce(f"building the task (estimated peak {preflight.fmt_bytes(est.total) if est else '?'})")
    try:
        mem = _PeakMemory(device)
        mem.start()
        torch.manual_seed(spec.data_seed)  # a task drawing from the global generator still sees the data seed
        task = get_task(spec.task, dim=None if task_dim(spec.task) is not None else spec.dim, seed=spec.data_seed,
                        **spec.task_options)
        random.seed(spec.train_seed)
        np.random.seed(spec.train_seed)
        torch.manual_seed(spec.train_seed)
        stage = "building the adapter"
        announce(stage)
        cls = adapter_registry()[spec.method]
        adapter = cls(task, dim=spec.dim, layers=spec.layers, seed=spec.train_seed, device=device, **spec.hparams)
        if adapter.hparams != spec.hparams:
            raise CellFailure(f"the adapter resolved hyperparameters {adapter.hparams}, the spec says {spec.hparams}")
        rec.n_params = int(adapter.num_params())

        stage = "training"
        announce(f"training, {spec.budget} steps")
        train = task.train.to(device)
        ckpt_x = evaluation_rows(task, spec.eval.checkpoint_test)
        ckpts = set(checkpoint_steps(spec.budget, spec.eval.checkpoints))
        gen = torch.Generator().manual_seed(spec.train_seed)
        batches = _batches(train.shape[0], adapter.batch_size, gen)
        nll_unavailable: str | None = None
        for step in range(1, spec.budget + 1):
            clock.start()
            batch = task.augment(train[next(batches).to(device)], gen)  # smoothed tasks: fresh noise
            loss = adapter.train_step(batch)
            step_times.append(clock.stop())
            if not math.isfinite(loss):
                raise CellFailure(f"diverged at step {step}: loss is {loss}")
            rec.steps_done = step
            capped = spec.time_cap_s is not None and clock.wall_s >= spec.time_cap_s and step < spec.budget
            if capped:
                rec.status = "capped"
                rec.reason = (f"stopped by the safety time cap ({spec.time_cap_s:g} s of training) at step {step} "
                              f"of {spec.budget}")
            if step in ckpts or capped:
                v = math.nan
                if nll_unavailable is None:
                    try:
                        v = float(_mean_nll(adapter, ckpt_x, device).mean())
                    except NLLUnavailable as e:
                        nll_unavailable = str(e)
                rec.checkpoints.append(Checkpoint(step, clock.compute_s, clock.wall_s, v))
                row = {"metric": "nll_at_time", "value": v, "unit": "nats", "step": step,
                       "compute_s": clock.compute_s, "wall_s": clock.wall_s, "status": "ok"}
                if nll_unavailable is not None:
                    row.update(status="unavailable", reason=nll_unavailable)
                elif getattr(adapter, "log_z_estimate", None) is not None:  # this step's log Z
                    from .metrics import nll_reliability

                    flag = nll_reliability(adapter.log_z_estimate.ess, adapter.log_z_estimate.n)
                    row.update(status=flag[0], reason=flag[1])
                rows.append(row)
            if capped:
                break
        rows += _timing_rows(step_times, clock.wall_s)
        rows += _counter_rows(adapter)

        stage = "evaluating"
        announce(stage)
        test_x = evaluation_rows(task, spec.eval.max_test)
        nll: torch.Tensor | None
        try:
            nll = _mean_nll(adapter, test_x, device)
            if not torch.isfinite(nll).all():
                raise CellFailure(f"test NLL has {int((~torch.isfinite(nll)).sum())} non-finite values")
        except NLLUnavailable as e:
            nll, nll_unavailable = None, str(e)
        est = getattr(adapter, "log_z_estimate", None)  # EBMs: ESS of the log Z importance weights
        nll_flag = ("ok", "")
        if est is not None and nll is not None:
            from .metrics import nll_reliability

            nll_flag = nll_reliability(est.ess, est.n)
            rows.append({"metric": "log_z_ess", "value": float(est.ess), "unit": "samples", "status": nll_flag[0],
                         "reason": nll_flag[1] or f"{est.ess_fraction:.3g} of {est.n} draws"})
        se = getattr(adapter, "log_z_stderr", None)  # EBMs whose NLL rests on an estimated log Z
        if se is not None and nll is not None:  # a standard error from a degenerate ESS is no error bar either
            rows.append({"metric": "log_z_stderr", "value": float(se), "unit": "nats",
                         "status": ("unavailable" if not math.isfinite(se) else nll_flag[0]),
                         "reason": "no log Z estimate" if not math.isfinite(se) else nll_flag[1]})
        recon = getattr(adapter, "reconstruction_error", None)  # learned-inverse methods (approx-ml)
        recon = recon(test_x) if recon is not None else None
        if recon is not None:
            rows.append({"metric": "reconstruction_error", "value": float(recon), "unit": "relative",
                         "status": "ok" if math.isfinite(recon) else "failed"})
            if getattr(adapter, "nll_needs_inverse", False) and nll is not None and nll_flag[0] == "ok":
                from .metrics import reconstruction_reliability

                nll_flag = reconstruction_reliability(recon)
        samples = adapter.sample(spec.eval.n_samples).detach().to("cpu", torch.float32)
        if samples.shape != (spec.eval.n_samples, spec.dim):
            raise CellFailure(f"sample() returned shape {tuple(samples.shape)}, expected "
                              f"{(spec.eval.n_samples, spec.dim)}")
        rows.append({"metric": "peak_memory", "value": mem.mib(), "unit": "MiB", "status": "ok"})
        samples_out = samples[:MAX_SAVED_SAMPLES].numpy()

        stage = "diagnosing"
        found = diagnose(task, samples, nll)
        if found is not None:
            rec.status = "degenerate"
            rec.reason = found.reason if not rec.reason else f"{found.reason}; {rec.reason}"
            rec.diagnosis = {"reason": found.reason, "evidence": dict(found.evidence)}

        stage = "computing metrics"
        from .metrics import compute_metrics

        metric_rows = [dict(r) for r in compute_metrics(task, samples, nll, seed=spec.train_seed,
                                                        density=adapter.density_fn())]
        if nll_flag[0] != "ok":  # the NLL rests on a degenerate log Z estimate or on a poor learned inverse
            for r in metric_rows:
                if r["metric"] in LOG_Z_DERIVED and r["status"] == "ok":
                    r.update(status=nll_flag[0], reason=nll_flag[1])
        if nll is None:  # the adapter's own reason is the one worth reporting
            for r in metric_rows:
                if r["metric"] in ("test_nll", "test_bpd") and r.get("status") == "unavailable":
                    r["reason"] = nll_unavailable
            if not any(r["metric"] == "test_nll" for r in metric_rows):
                metric_rows.insert(0, {"metric": "test_nll", "value": math.nan, "unit": "nats",
                                       "status": "unavailable", "reason": nll_unavailable})
        rows = metric_rows + rows
    except Exception as e:  # noqa: BLE001  (any error of a cell is recorded, the matrix goes on)
        where = f"step {step}" if stage == "training" else stage
        reason = str(e) if isinstance(e, CellFailure) else f"{where}: {type(e).__name__}: {e}"
        rec.status, rec.reason, rec.traceback = "failed", reason, traceback.format_exc(limit=8)
        if stage == "training":  # the steps that did run were timed
            rows += _timing_rows(step_times, clock.wall_s) + _counter_rows(adapter)
        rows.append({"metric": "test_nll", "value": math.nan, "unit": "nats", "status": "failed",
                     "reason": reason})
        samples_out = None
    rec.compute_s, rec.wall_s = clock.compute_s, clock.wall_s
    rec.median_step_s = float(np.median(step_times)) if step_times else None
    rec.rows = rows
    rec.finished = _now()
    return rec.to_dict(), samples_out


#: rows that rest on an EBM's importance-sampled log Z (made ``unreliable`` with it, ``metrics.nll_reliability``);
#: the checkpoints' ``nll_at_time`` rows use the log Z of their own step and are flagged the same way
LOG_Z_DERIVED = ("test_nll", "test_bpd", "log_density_error")


# ------------------------------------------------------------------------------------------ the matrix


def _prepare_run_dir(run_dir: Path, matrix: Matrix, cell_ids: list[str]) -> None:
    """Under the run lock (the folder was checked by ``rundir.check_run_dir``): sub-folders and matrix.json."""
    (run_dir / "cells").mkdir(parents=True, exist_ok=True)
    (run_dir / "samples").mkdir(exist_ok=True)
    write_json_atomic(run_dir / "matrix.json", {**matrix.to_dict(), "cell_ids": cell_ids})


def _finish_record(record: dict[str, Any], samples: np.ndarray | None, run_dir: Path, run_id: str,
                   commit: str, registered: dict[str, dict[str, str]]) -> None:
    """Write a finished cell's record (and samples) with the session's commit and the fingerprints of the
    claims the cell decides, as registered when the session started (``claims.fingerprints_for``)."""
    record.update(run_id=run_id, commit=commit, rule_fingerprints=registered.get(record["cell_id"], {}))
    if samples is not None:
        tmp = run_dir / "samples" / f".{record['cell_id']}.tmp.npy"
        np.save(tmp, samples)
        os.replace(tmp, run_dir / "samples" / f"{record['cell_id']}.npy")
    write_json_atomic(run_dir / "cells" / f"{record['cell_id']}.json", record)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_workers(threads: int, n_cells: int, *, cores: int | None = None, device: str = "cpu") -> int:
    """Local workers of a run not given ``--workers``: as many cells at once as the cores hold at the cells'
    ``threads`` torch threads each (``cores // threads``), at most one per cell to run, at least 1; on CUDA at
    most one per visible GPU. 1 means serial (no cluster is started)."""
    cores = available_cores() if cores is None else int(cores)
    n = min(int(n_cells), cores // max(1, int(threads)))
    if device.startswith("cuda") and torch.cuda.is_available():
        n = min(n, torch.cuda.device_count())
    return max(1, n)


def _local_only(cells: list[CellSpec], imports: tuple[str, ...]) -> str | None:
    """The first method or task of ``cells`` that a fresh worker process could not import (registered in this
    process only, not by an installed package or the matrix's ``imports``), or None."""
    from .adapters.base import _REGISTRY
    from .tasks.base import _TASKS

    shipped = {i for i in imports if not i.endswith(".py")}
    shipped |= {f"ebflow_bench_plugin_{Path(i).stem}" for i in imports if i.endswith(".py")}

    def portable(module: str) -> bool:
        return module.split(".")[0] in ("ebflow_bench", "ebflow", "baselines") or module in shipped

    for c in cells:
        if c.method in _REGISTRY and not portable(_REGISTRY[c.method].__module__):
            return f"method {c.method!r}"
        if c.task in _TASKS and not portable(getattr(_TASKS[c.task], "__module__", "")):
            return f"task {c.task!r}"
    return None


def run_matrix(matrix: Matrix, run_dir: str | Path, *, resume: bool = False, workers: int | None = 1,
               scheduler: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Validate ``matrix``, run its cells into ``run_dir`` and return the tidy results table.

    ``workers > 1`` starts a local ``dask.distributed`` cluster of that many single-threaded worker
    processes; ``workers=None`` (the CLI's default) picks :func:`default_workers` for the cells still to run
    (the machine's cores over ``eval.threads``; serial when that is 1 or one cell is left) and says so on
    stderr when ``progress``; ``scheduler="tcp://host:port"`` uses an existing cluster instead (workers need this package at
    the client's versions; ``.py`` plugin files of ``imports`` are shipped to them; results travel back to this
    process, which alone writes ``run_dir``): see :mod:`ebflow_bench.cluster`. Every cell runs with
    ``spec.threads`` torch threads (the matrix's ``eval.threads``), serial or on Dask.

    Before any work: the matrix is validated, the folder checked (:mod:`ebflow_bench.rundir`: ``~`` expanded,
    a non-writable or file ``run_dir`` refused, ``resume`` only into a run folder of the same matrix) and the
    cluster reached. Then the folder is locked for the run, leftovers of a killed run are tidied (temporary
    files removed, damaged cell records moved to ``cells/corrupt/`` so that those cells run again).
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    run_dir = resolve_run_dir(run_dir)
    if resume:  # `auto` that means this machine's device of the stored run keeps the cells' ids
        matrix = matrix.with_device(align_device(run_dir, matrix.eval.device))
    cells = validate(matrix)  # every problem refused here, before anything exists on disk
    ids = [c.cell_id for c in cells]
    check_run_dir(run_dir, ids, resume)  # nothing is written before this passes
    if workers is None and scheduler is None:
        done = {p.stem for p in (run_dir / "cells").glob("*.json")} if resume else set()
        n_todo = sum(i not in done for i in ids)
        workers = default_workers(matrix.eval.threads, n_todo, device=cells[0].device if cells else "cpu")
        local = _local_only(cells, matrix.imports) if workers > 1 else None
        if local:  # workers would not have it: serial, and say why
            workers = 1
        if progress and n_todo:
            why = f"; serial: {local} is registered in this process only, not by the matrix's imports" if local \
                else ""
            print(f"{n_todo} cells on {workers} local worker{'s' if workers > 1 else ''} ({available_cores()} "
                  f"cores, {matrix.eval.threads} thread{'s' if matrix.eval.threads > 1 else ''} per cell{why}; "
                  "--workers N to change)", file=sys.stderr)
    workers = workers or 1
    if workers > 1 and scheduler is None:  # cells that run at once must fit together
        from . import preflight

        fitted = preflight.fit_workers(workers, [preflight.spec_estimate(c) for c in cells],
                                       preflight.available_memory())
        if fitted < workers:
            import warnings

            warnings.warn(f"{workers} workers' largest cells would not fit in the memory available together: "
                          f"{fitted} worker{'s' if fitted > 1 else ''} instead", stacklevel=2)
            workers = fitted
    if workers > 1 or scheduler is not None:  # reach the cluster before writing anything
        from .cluster import connect

        session = connect(workers, scheduler, matrix.imports, matrix.eval.device)
    else:
        session = contextlib.nullcontext()
    with session as client, RunLock(run_dir):
        tidy_run_dir(run_dir)  # temporary files of killed writes; damaged cell records moved aside
        _prepare_run_dir(run_dir, matrix, ids)
        return _run_locked(matrix, cells, run_dir, resume, workers, scheduler, client, progress)


def _run_locked(matrix: Matrix, cells: list[CellSpec], run_dir: Path, resume: bool, workers: int,
                scheduler: str | None, client, progress: bool) -> pd.DataFrame:
    meta_path = run_dir / "meta.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    except ValueError:  # a meta.json cut by a kill: start a new one
        meta = {}
    commit = git_commit()
    started = _now()
    # pre-registration: the claims' rules as they stand now, for the cells they decide (claims.registration)
    from .claims import CLAIMS, fingerprints_for

    registered = {c.cell_id: fingerprints_for(c, CLAIMS) for c in cells}
    meta.setdefault("run_id", f"{matrix.name}-{_dt.datetime.now():%Y%m%dT%H%M%S}")
    meta.setdefault("started", started)
    meta.setdefault("sessions", []).append({
        "command": sys.argv, "started": started, "workers": workers, "scheduler": scheduler, "resume": resume,
        "commit": commit, "dirty": commit.endswith("+dirty") or not commit,
        "rule_fingerprints": dict(sorted({k: v for fps in registered.values() for k, v in fps.items()}.items()))})
    meta.update(matrix=matrix.name, versions=versions(), device=", ".join(sorted({c.device for c in cells})),
                commit=commit, n_cells=len(cells), command=" ".join(sys.argv))
    write_json_atomic(meta_path, meta)
    run_id = meta["run_id"]

    done = {p.stem for p in (run_dir / "cells").glob("*.json")}
    todo = [c for c in cells if c.cell_id not in done]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=f"{matrix.name} ({len(cells) - len(todo)} done)", unit="cell",
               disable=not progress)
    if client is None:
        for c in todo:
            bar.set_postfix_str(f"{c.method} {c.task} D={c.dim}")
            rec, samples = run_cell(c)
            _finish_record(rec, samples, run_dir, run_id, commit, registered)
            bar.update()
    else:
        from .cluster import run_cells

        run_cells(client, todo, lambda rec, samples: _finish_record(rec, samples, run_dir, run_id, commit, registered),
                  bar.update)
    bar.close()

    df = write_results(run_dir)
    meta["finished"] = _now()
    per_cell = df.drop_duplicates("cell_id")["cell_status"] if len(df) else pd.Series([], dtype=str)
    for k in ("failed", "capped", "degenerate"):
        meta[f"n_{k}"] = int((per_cell == k).sum())
    write_json_atomic(meta_path, meta)
    return df


__all__ = ["run_matrix", "run_cell", "default_workers", "available_cores", "checkpoint_steps", "RunDirExists",
           "CellFailure"]
