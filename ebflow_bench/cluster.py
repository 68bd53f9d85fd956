"""Running cells on a Dask cluster: a local one (``--workers N``) or an existing one (``--scheduler ADDR``).

What this module guarantees, so that a distributed run gives what a serial one gives:

- **Connect first, fail fast**: :func:`connect` reaches the scheduler (at most :data:`CONNECT_TIMEOUT_S`) before
  the runner writes anything; an unreachable address is one :class:`ClusterError` line.
- **Same software everywhere**: the versions of :data:`CHECKED_PACKAGES` and Python on every worker must equal
  the client's; otherwise :class:`ClusterError` lists each mismatch (results of mixed versions are not
  comparable).
- **Plugins travel with the client**: every ``.py`` file named in the matrix ``imports`` is sent to the workers
  by a :class:`PluginFiles` worker plugin (also to workers that join or restart later) and imported there under
  the module name the client uses (``ebflow_bench_plugin_<stem>``), so the paths need not exist on the workers.
  Dotted module names are imported on each worker (they must be installed there). A plugin that fails to import
  on a worker is a :class:`ClusterError`.
- **A lost worker costs one retry**: a cell whose worker dies (killed, out of memory) is run once more
  elsewhere (scheduler ``allowed-failures = 1`` on a local cluster; an existing cluster keeps its own setting);
  when it is lost again, it becomes a ``failed`` record with reason ``"worker lost twice"`` and the run goes on.
  Any other error that escapes a cell (cells record their own failures, so this is an infrastructure problem)
  also becomes a ``failed`` record of that cell.
- **One GPU per local worker**: with CUDA devices present and the matrix device ``cuda`` or ``auto``, local
  worker ``i`` sees only GPU ``i mod n`` (``CUDA_VISIBLE_DEVICES``), so ``cuda`` means a different card on each.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from distributed.diagnostics.plugin import WorkerPlugin

#: seconds to reach an existing scheduler (and for local workers to start) before giving up
CONNECT_TIMEOUT_S = 10.0
#: packages whose versions must agree between the client and every worker
CHECKED_PACKAGES = ("torch", "numpy", "ebflow-bench")
#: reason recorded for a cell whose worker died on both tries
LOST_TWICE = "worker lost twice"


class ClusterError(RuntimeError):
    """The cluster cannot run this matrix (unreachable, mismatched versions, a plugin that fails there)."""


# ------------------------------------------------------------------------------------------------- checks


def package_versions() -> dict[str, str]:
    """Python and :data:`CHECKED_PACKAGES` versions of this process ('missing' for a package not installed)."""
    import importlib.metadata

    out = {"python": ".".join(map(str, sys.version_info[:3]))}
    for pkg in CHECKED_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def version_mismatches(local: dict[str, str], workers: dict[str, dict[str, str]]) -> list[str]:
    """One line per (worker, package) whose version differs from ``local``."""
    out = []
    for addr, theirs in sorted(workers.items()):
        for pkg, mine in local.items():
            if theirs.get(pkg) != mine:
                out.append(f"{addr}: {pkg} {theirs.get(pkg, 'missing')} (client has {mine})")
    return out


def check_versions(client) -> None:
    """Raise :class:`ClusterError` listing every version mismatch between the client and its workers."""
    try:
        theirs = client.run(package_versions)
    except Exception as e:  # noqa: BLE001  (e.g. the workers cannot import this package at all)
        raise ClusterError(f"cannot read package versions on the workers ({type(e).__name__}: {e}); is "
                           "ebflow-bench installed there?") from None
    bad = version_mismatches(package_versions(), theirs)
    if bad:
        raise ClusterError("package versions differ between this client and the workers (results would not be "
                           "comparable); install the same versions everywhere:\n  " + "\n  ".join(bad))


# ------------------------------------------------------------------------------------------------ plugins


class PluginFiles(WorkerPlugin):
    """Worker plugin: writes the matrix's plugin files into the worker's folder and imports them there under
    the client's module names; imports dotted plugin modules."""

    name = "ebflow-bench-plugins"

    def __init__(self, imports: tuple[str, ...] | list[str]) -> None:
        self.files: dict[str, bytes] = {}  # stem -> source
        self.modules: list[str] = []
        for item in imports:
            if item.endswith(".py"):
                path = Path(item).resolve()
                try:
                    self.files[path.stem] = path.read_bytes()
                except OSError as e:
                    raise ClusterError(f"import {item!r}: cannot read the plugin file to ship it: {e}") from None
            else:
                self.modules.append(item)

    def setup(self, worker) -> None:  # runs in each worker process, also after a restart
        from .matrix import load_imports

        import hashlib

        folder = Path(worker.local_directory) / "ebflow_bench_plugins"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for stem, source in self.files.items():
            digest = hashlib.sha1(source).hexdigest()
            loaded = sys.modules.get(f"ebflow_bench_plugin_{stem}")
            if loaded is not None and getattr(loaded, "__ebflow_bench_sha1__", digest) != digest:
                raise RuntimeError(f"plugin {stem}.py changed since this worker imported it; restart the "
                                   "workers to load the new version")
            path = folder / f"{stem}.py"
            path.write_bytes(source)
            paths.append(str(path))
        load_imports(paths + self.modules)
        for stem, source in self.files.items():
            sys.modules[f"ebflow_bench_plugin_{stem}"].__ebflow_bench_sha1__ = hashlib.sha1(source).hexdigest()


def ship_plugins(client, imports: tuple[str, ...] | list[str]) -> None:
    """Register :class:`PluginFiles` for ``imports`` on every worker (present and future)."""
    if not imports:
        return
    try:
        result = client.register_plugin(PluginFiles(imports))
    except ClusterError:
        raise
    except Exception as e:  # noqa: BLE001  (the worker's import error, re-raised on the client)
        raise ClusterError(f"a plugin of the matrix failed to import on a worker: {type(e).__name__}: {e}") from None
    if isinstance(result, dict):  # older distributed returns per-worker statuses instead of raising
        bad = {w: r for w, r in result.items() if isinstance(r, dict) and r.get("status") == "error"}
        if bad:
            w, r = next(iter(bad.items()))
            raise ClusterError(f"a plugin of the matrix failed to import on worker {w}: {r.get('exception')}")


# ------------------------------------------------------------------------------------------------ connect


def gpu_assignment(n_workers: int, device: str) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` for each local worker: one GPU each (round robin over the visible ones) when
    CUDA is present and ``device`` is ``cuda`` or ``auto``; None (leave unset) otherwise."""
    import torch

    if device not in ("cuda", "auto") or not torch.cuda.is_available():
        return [None] * n_workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in visible.split(",") if s.strip()] if visible else \
        [str(i) for i in range(torch.cuda.device_count())]
    if not ids:
        return [None] * n_workers
    return [ids[i % len(ids)] for i in range(n_workers)]


def _local_cluster(workers: int, device: str):
    from distributed import Nanny, Scheduler, SpecCluster

    gpus = gpu_assignment(workers, device)
    if any(g is not None for g in gpus) and workers > len(set(gpus)):
        import warnings

        warnings.warn(f"{workers} workers share {len(set(gpus))} GPU(s)", stacklevel=3)
    spec = {}
    for i, gpu in enumerate(gpus):
        options: dict[str, Any] = {"nthreads": 1, "host": "127.0.0.1", "silence_logs": logging.ERROR}
        if gpu is not None:
            options["env"] = {"CUDA_VISIBLE_DEVICES": gpu}
        spec[f"worker-{i}"] = {"cls": Nanny, "options": options}
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None, "host": "127.0.0.1"}}
    return SpecCluster(workers=spec, scheduler=scheduler, silence_logs=logging.ERROR, name="ebflow-bench")


@contextlib.contextmanager
def connect(workers: int = 1, scheduler: str | None = None, imports: tuple[str, ...] | list[str] = (),
            device: str = "cpu") -> Iterator[Any]:
    """A ready ``dask.distributed.Client``: a local cluster of ``workers`` single-threaded processes, or the
    existing ``scheduler``; versions checked and plugins shipped. Closed (and the local cluster shut down) on
    exit. Raises :class:`ClusterError` with one line when the scheduler cannot be reached."""
    import dask
    from distributed import Client

    cluster = client = None
    try:
        if scheduler is None:
            # one retry for a lost worker's cell (run_cells keeps queued cells off the workers)
            with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                                  "distributed.scheduler.worker-saturation": 1.0}):
                cluster = _local_cluster(workers, device)
                client = Client(cluster, timeout=CONNECT_TIMEOUT_S)
                client.wait_for_workers(workers, timeout=max(CONNECT_TIMEOUT_S, 60))
        else:
            try:
                client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError, ValueError) as e:
                raise ClusterError(f"cannot reach the Dask scheduler at {scheduler!r} within "
                                   f"{CONNECT_TIMEOUT_S:g} s ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                                   "is `dask scheduler` running there? nothing was written") from None
            if not client.scheduler_info().get("workers"):
                try:
                    client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
                except (TimeoutError, OSError):
                    raise ClusterError(f"the Dask scheduler at {scheduler!r} has no workers; start some with "
                                       f"`dask worker {scheduler}`; nothing was written") from None
        check_versions(client)
        ship_plugins(client, imports)
        yield client
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


# -------------------------------------------------------------------------------------------------- cells


def failed_record(cell, reason: str) -> dict[str, Any]:
    """The record of a cell (a ``CellSpec``) that never returned from the cluster, in ``CellRecord`` form."""
    from .cell import CellRecord
    from .runner import versions

    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rec = CellRecord(spec=cell, status="failed", reason=reason, versions=versions(), started=now, finished=now,
                     rows=[{"metric": "test_nll", "value": math.nan, "unit": "nats", "status": "failed",
                            "reason": reason}])
    return rec.to_dict()


def run_cells(client, cells: list, finish: Callable[[dict[str, Any], Any], None], on_done: Callable[[], None]
              = lambda: None) -> None:
    """Run ``cells`` on ``client``'s workers; ``finish(record, samples)`` each result as it arrives (in this
    process, which alone writes the run folder). A lost worker's cell is retried once (see the module
    docstring), then recorded failed; the other cells go on.

    Cells are submitted as worker threads free up (at most one per thread in flight, re-counted as workers come
    and go), not all at once: a worker then never holds queued cells, so one that dies takes down (and counts a
    loss against) only the cell it was running.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    from .runner import run_cell

    waiting = list(reversed(cells))
    cell_of: dict[str, Any] = {}
    running = as_completed()

    def top_up() -> None:
        slots = max(1, sum(client.nthreads().values()))
        while waiting and len(cell_of) < slots:
            cell = waiting.pop()
            fut = client.submit(run_cell, cell, pure=False, retries=1)  # the spec sets its threads
            cell_of[fut.key] = cell
            running.add(fut)

    top_up()
    for fut in running:
        cell = cell_of.pop(fut.key)
        try:
            record, samples = fut.result()
        except KilledWorker:
            record, samples = failed_record(cell, LOST_TWICE), None
        except Exception as e:  # noqa: BLE001  (an infrastructure error of one cell must not end the run)
            record, samples = failed_record(cell, f"on the cluster: {type(e).__name__}: {e}"), None
        fut.release()
        top_up()  # the next cell starts before this one's files are written
        finish(record, samples)
        on_done()


__all__ = ["connect", "run_cells", "check_versions", "version_mismatches", "package_versions", "ship_plugins",
           "PluginFiles", "gpu_assignment", "failed_record", "ClusterError", "CONNECT_TIMEOUT_S", "LOST_TWICE"]
