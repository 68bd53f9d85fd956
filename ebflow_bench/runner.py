"""Runs a benchmark matrix cell by cell: resumable, failure-tolerant, serial or on a Dask cluster.

For one cell (:func:`run_cell`): seed ``random``/numpy/torch with the cell's seed, build the task (seeded) and
the adapter, then train for ``budget`` steps (or until ``time_cap_s`` of training wall time) on mini-batches
drawn by the cell's own ``torch.Generator``: each epoch is a fresh random permutation of the training set,
cut into batches of ``adapter.batch_size`` (the last, shorter batch of an epoch is dropped unless it is the only
one). Then the per-sample test NLL (``adapter.nll``, in chunks) and ``n_samples`` model samples go to
``metrics.compute_metrics``. The runner adds the timing rows:

- ``step_time`` (s): mean wall time of ``train_step`` over the steps after the first (the first one pays for
  lazy initialisation and allocator warm-up); with a single step, that step. CUDA is synchronised before each
  clock read.
- ``train_time`` (s): wall time of the training loop (batching included, checkpoint evaluations excluded).
- ``peak_memory`` (MiB): on CUDA, ``torch.cuda.max_memory_allocated`` after resetting the peak statistics at
  the start of the cell. On CPU, tracemalloc does not see torch's allocator, so we use the process's resident
  set: the kernel's high-water mark VmHWM is reset at the start of the cell (``/proc/self/clear_refs`` = 5),
  and the value is VmHWM at the end minus VmRSS at the start, i.e. the cell's peak resident memory above what
  the process already held (task data, model, optimizer state, activations; the first cell of a process also
  pays for torch's one-time lazy initialisation, tens of MiB). Where ``/proc`` is missing, the increase of
  ``getrusage().ru_maxrss`` is used (a lower bound, as that high-water mark cannot be reset).
- ``nll_at_time`` (nats): time-to-quality, the mean NLL of the first ``checkpoint_test`` test points after
  ``round(budget * i / k)`` steps, i = 1..k (k = ``checkpoints``), with ``step`` and ``elapsed_s`` (training
  wall time so far) set; with a ``time_cap_s``, also at the first step past each ``time_cap_s * i / k``
  (i < k) of training time, and at the cap.
- ``log_z_stderr`` (nats): for adapters exposing a ``log_z_stderr`` attribute (EBMs whose NLL uses an
  importance-sampling estimate of log Z), its value after the final NLL.

A non-finite loss, non-finite samples or any exception make the cell ``failed`` (value NaN, ``reason`` with the
step and the error); the matrix goes on. Records are written atomically to ``cells/<cell_id>.json``;
``resume=True`` skips cells that have one. Cell results depend only on the cell (seeds), not on the order or
process that ran it, so a Dask run equals a serial one on every non-timing metric.
"""

from __future__ import annotations

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

from .matrix import Cell, Matrix, load_imports, validate
from .results import write_json_atomic, write_results

#: metrics the runner records itself (all others come from ``metrics.compute_metrics``)
TIMING_METRICS = ("step_time", "train_time", "peak_memory", "nll_at_time")
RUNNER_METRICS = TIMING_METRICS + ("log_z_stderr",)
#: samples kept on disk per cell
MAX_SAVED_SAMPLES = 2000
_NLL_CHUNK = 1024


class RunDirExists(FileExistsError):
    """The run directory already holds a run and ``resume`` was not asked for."""


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
    """HEAD of the repository holding this package (``+dirty`` if the tree has changes), or '' outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if dirty else "")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    """The steps after which time-to-quality NLL is measured: round(budget * i / k), i = 1..k, distinct."""
    return sorted({max(1, round(budget * i / k)) for i in range(1, k + 1)}) if k > 0 else []


def _batches(n: int, batch_size: int, gen: torch.Generator):
    """Endless mini-batch indices: per epoch a random permutation cut into full batches."""
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


def _timing_rows(step_times: list[float], train_time: float) -> list[dict[str, Any]]:
    if not step_times:
        return []
    timed = step_times[1:] or step_times
    return [{"metric": "step_time", "value": float(np.mean(timed)), "unit": "s", "status": "ok"},
            {"metric": "train_time", "value": train_time, "unit": "s", "status": "ok"}]


def run_cell(cell: Cell, threads: int | None = None) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run one cell; return its record (without run-level fields) and up to 2000 samples (or None).

    Never raises for a problem of the cell itself: that becomes a ``failed`` record.
    """
    from .adapters.base import NLLUnavailable

    if threads is not None:
        torch.set_num_threads(threads)
    load_imports(cell.imports)
    from .matrix import adapter_registry
    from .tasks import get_task, task_dim

    device = _resolve_device(cell.eval.device)
    record: dict[str, Any] = {"cell_id": cell.cell_id, "config": cell.config(), "device": str(device),
                              "versions": versions(), "status": "ok", "reason": "", "n_params": None,
                              "steps_done": 0, "started": _now()}
    rows: list[dict[str, Any]] = []
    samples_out = None
    step = 0
    step_times: list[float] = []
    train_time = 0.0
    stage = "building the task"
    try:
        random.seed(cell.seed)
        np.random.seed(cell.seed)
        torch.manual_seed(cell.seed)
        mem = _PeakMemory(device)
        mem.start()
        task = get_task(cell.task, dim=None if task_dim(cell.task) is not None else cell.dim, seed=cell.seed,
                        **cell.task_options)
        stage = "building the adapter"
        cls = adapter_registry()[cell.method]
        record.update(family=cls.family, objective=cls.objective)
        adapter = cls(task, dim=cell.dim, layers=cell.layers, seed=cell.seed, device=device, **cell.hparams)
        record["n_params"] = int(adapter.num_params())

        stage = "training"
        train = task.train.to(device)
        ckpt_x = task.test[:cell.eval.checkpoint_test]
        ckpts = set(checkpoint_steps(cell.budget, cell.eval.checkpoints))
        # with a time cap, also at i/k of the cap (a capped cell may never reach the step checkpoints)
        k = cell.eval.checkpoints
        time_marks = [cell.time_cap_s * i / k for i in range(1, k)] if cell.time_cap_s and k > 0 else []
        gen = torch.Generator().manual_seed(cell.seed)
        batches = _batches(train.shape[0], adapter.batch_size, gen)
        nll_unavailable: str | None = None
        capped = False
        for step in range(1, cell.budget + 1):
            _sync(device)
            t0 = time.perf_counter()
            batch = task.augment(train[next(batches).to(device)], gen)
            t1 = time.perf_counter()
            loss = adapter.train_step(batch)
            _sync(device)
            t2 = time.perf_counter()
            step_times.append(t2 - t1)
            train_time += t2 - t0
            if not math.isfinite(loss):
                raise CellFailure(f"diverged at step {step}: loss is {loss}")
            record["steps_done"] = step
            capped = cell.time_cap_s is not None and train_time >= cell.time_cap_s
            timed = bool(time_marks) and train_time >= time_marks[0]
            while time_marks and train_time >= time_marks[0]:
                time_marks.pop(0)
            if (step in ckpts or capped or timed) and nll_unavailable is None:
                try:
                    v = float(_mean_nll(adapter, ckpt_x, device).mean())
                    rows.append({"metric": "nll_at_time", "value": v, "unit": "nats", "status": "ok",
                                 "step": step, "elapsed_s": train_time})
                except NLLUnavailable as e:
                    nll_unavailable = str(e)
                    rows.append({"metric": "nll_at_time", "value": math.nan, "unit": "nats",
                                 "status": "unavailable", "reason": nll_unavailable})
            if capped:
                break
        rows += _timing_rows(step_times, train_time)

        stage = "evaluating"
        test_x = task.test if cell.eval.max_test is None else task.test[:cell.eval.max_test]
        nll: torch.Tensor | None
        try:
            nll = _mean_nll(adapter, test_x, device)
            if not torch.isfinite(nll).all():
                raise CellFailure(f"test NLL has {int((~torch.isfinite(nll)).sum())} non-finite values")
        except NLLUnavailable as e:
            nll, nll_unavailable = None, str(e)
        se = getattr(adapter, "log_z_stderr", None)  # EBMs whose NLL rests on an estimated log Z
        if se is not None and nll is not None:
            rows.append({"metric": "log_z_stderr", "value": float(se), "unit": "nats",
                         "status": "ok" if math.isfinite(se) else "unavailable",
                         "reason": "" if math.isfinite(se) else "no log Z estimate"})
        samples = adapter.sample(cell.eval.n_samples).detach().to("cpu", torch.float32)
        if samples.shape != (cell.eval.n_samples, cell.dim):
            raise CellFailure(f"sample() returned shape {tuple(samples.shape)}, expected "
                              f"{(cell.eval.n_samples, cell.dim)}")
        if not torch.isfinite(samples).all():
            raise CellFailure(f"sample() returned {int((~torch.isfinite(samples)).sum())} non-finite values")
        rows.append({"metric": "peak_memory", "value": mem.mib(), "unit": "MiB", "status": "ok"})
        samples_out = samples[:MAX_SAVED_SAMPLES].numpy()

        stage = "computing metrics"
        from .metrics import compute_metrics

        metric_rows = [dict(r) for r in compute_metrics(task, samples, nll, seed=cell.seed)]
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
        record.update(status="failed", reason=reason, traceback=traceback.format_exc(limit=8))
        if stage == "training":  # the steps that did run were timed
            rows += _timing_rows(step_times, train_time)
        rows.append({"metric": "test_nll", "value": math.nan, "unit": "nats", "status": "failed",
                     "reason": reason})
        samples_out = None
    record["rows"] = rows
    record["finished"] = record["timestamp"] = _now()
    return record, samples_out


# ------------------------------------------------------------------------------------------ the matrix


def _prepare_run_dir(run_dir: Path, matrix: Matrix, cell_ids: list[str], resume: bool) -> None:
    matrix_doc = {**matrix.to_dict(), "cell_ids": cell_ids}
    if run_dir.exists() and any(run_dir.iterdir()):
        if not resume:
            raise RunDirExists(f"run directory {str(run_dir)!r} already exists and is not empty; pass --resume "
                               "(resume=True) to continue it, or choose another --out; nothing was overwritten")
        old = run_dir / "matrix.json"
        if old.exists():
            prev = json.loads(old.read_text())
            if sorted(prev.get("cell_ids", [])) != sorted(cell_ids):
                raise RunDirExists(f"cannot resume {str(run_dir)!r}: it was started with a different matrix "
                                   f"({prev.get('name')!r}, {len(prev.get('cell_ids', []))} cells); "
                                   "use another --out")
    (run_dir / "cells").mkdir(parents=True, exist_ok=True)
    (run_dir / "samples").mkdir(exist_ok=True)
    write_json_atomic(run_dir / "matrix.json", matrix_doc)


def _finish_record(record: dict[str, Any], samples: np.ndarray | None, run_dir: Path, run_id: str,
                   commit: str) -> None:
    record.update(run_id=run_id, commit=commit)
    if samples is not None:
        tmp = run_dir / "samples" / f".{record['cell_id']}.tmp.npy"
        np.save(tmp, samples)
        os.replace(tmp, run_dir / "samples" / f"{record['cell_id']}.npy")
    write_json_atomic(run_dir / "cells" / f"{record['cell_id']}.json", record)


def run_matrix(matrix: Matrix, run_dir: str | Path, *, resume: bool = False, workers: int = 1,
               scheduler: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Validate ``matrix``, run its cells into ``run_dir`` and return the tidy results table.

    ``workers > 1`` starts a local ``dask.distributed`` cluster of that many single-threaded worker
    processes; ``scheduler="tcp://host:port"`` uses an existing cluster instead (workers need this package
    and any matrix ``imports``; results travel back to this process, which alone writes ``run_dir``).
    Torch uses one thread per Dask worker; a serial run keeps the process's setting.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cells = validate(matrix)
    run_dir = Path(run_dir)
    ids = [c.cell_id for c in cells]
    _prepare_run_dir(run_dir, matrix, ids, resume)
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    commit = git_commit()
    started = _now()
    meta.setdefault("run_id", f"{matrix.name}-{_dt.datetime.now():%Y%m%dT%H%M%S}")
    meta.setdefault("started", started)
    meta.setdefault("sessions", []).append({"command": sys.argv, "started": started, "workers": workers,
                                            "scheduler": scheduler, "resume": resume})
    meta.update(matrix=matrix.name, versions=versions(), device=str(_resolve_device(matrix.eval.device)),
                commit=commit, n_cells=len(cells), command=" ".join(sys.argv))
    write_json_atomic(meta_path, meta)
    run_id = meta["run_id"]

    done = {p.stem for p in (run_dir / "cells").glob("*.json")}
    todo = [c for c in cells if c.cell_id not in done]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=f"{matrix.name} ({len(cells) - len(todo)} done)", unit="cell",
               disable=not progress)
    if workers == 1 and scheduler is None:
        for c in todo:
            bar.set_postfix_str(f"{c.method} {c.task} D={c.dim}")
            rec, samples = run_cell(c)
            _finish_record(rec, samples, run_dir, run_id, commit)
            bar.update()
    else:
        _run_dask(todo, run_dir, run_id, commit, workers, scheduler, bar)
    bar.close()

    df = write_results(run_dir)
    meta["finished"] = _now()
    meta["n_failed"] = int(sum(json.loads((run_dir / "cells" / f"{i}.json").read_text())["status"] == "failed"
                               for i in ids if (run_dir / "cells" / f"{i}.json").exists()))
    write_json_atomic(meta_path, meta)
    return df


def _run_dask(todo: list[Cell], run_dir: Path, run_id: str, commit: str, workers: int, scheduler: str | None,
              bar) -> None:
    import logging

    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = client.map(run_cell, todo, threads=1, pure=False)
        for fut in as_completed(futures):
            rec, samples = fut.result()
            _finish_record(rec, samples, run_dir, run_id, commit)
            bar.update()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


__all__ = ["run_matrix", "run_cell", "checkpoint_steps", "RunDirExists", "CellFailure"]
