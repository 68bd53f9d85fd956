"""The run folder: checks before any work, an exclusive lock, clean-up after a kill, damaged cell records.

A run folder (layout in ``docs/ARCHITECTURE.md``) is written by one process at a time. The runner calls, in
this order:

1. :func:`resolve_run_dir` and :func:`check_run_dir` before anything is created: ``~`` is expanded; an
   ``--out`` that is a file, that cannot be created or written, a non-empty folder without ``resume``, a
   ``resume`` into a folder that is not a run folder (no ``matrix.json``) or that holds another matrix, are all
   refused with :class:`RunDirError` (a one-line message, exit status 2 in the CLI). Nothing is written.
2. :class:`RunLock` (a context manager): creates the folder and holds ``.lock`` (pid, host, start time) with an
   exclusive ``flock`` for the whole run. A second run into the same folder is refused (:class:`RunDirLocked`,
   naming the holder); a lock left by a dead process (the kernel drops ``flock`` when a process dies, however it
   dies) is taken over with a warning.
3. :func:`tidy_run_dir` (under the lock): removes the temporary files of writes that a kill interrupted
   (``.<name>.tmp*``) and moves every damaged cell record (:func:`scan_cells`: a ``cells/<id>.json`` that does
   not parse, lacks a required key, or names another cell) to ``cells/corrupt/`` with a warning, so that
   ``resume`` runs those cells again and nothing is silently lost.

Readers (:func:`read_cell_records`, used by ``results.write_results`` and ``report``) skip damaged records with
a :class:`DamagedCellRecord` warning naming the file.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any

#: keys every cell record must have to be read into the results table
REQUIRED_KEYS = ("cell_id", "spec", "rows", "status")
LOCK_NAME = ".lock"
CORRUPT_DIR = "corrupt"
#: entries a run folder may hold before its ``matrix.json`` exists (a run killed while starting)
_START_ENTRIES = {"cells", "samples", LOCK_NAME, "meta.json"}


class RunDirError(RuntimeError):
    """A run folder that cannot be used as asked; the message says why and what to do (exit status 2)."""


class RunDirExists(RunDirError, FileExistsError):
    """The run folder already holds a run and ``resume`` was not asked for (or holds a different run)."""


class RunDirLocked(RunDirError):
    """Another live process is writing this run folder."""


class DamagedCellRecord(UserWarning):
    """A ``cells/<id>.json`` that cannot be read (truncated, corrupt, incomplete): skipped or moved aside."""


# ----------------------------------------------------------------------------------------- before any work


def resolve_run_dir(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` expanded (a quoted ``--out=~/x`` reaches us unexpanded)."""
    return Path(os.path.expanduser(os.fspath(path)))


def _is_tmp(p: Path) -> bool:
    return p.name.startswith(".") and ".tmp" in p.name


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable(folder: Path) -> str | None:
    """None if a file can be created in ``folder``, else why not (a probe folder is made and removed at once:
    permission bits alone do not tell, e.g. for root or on a read-only mount)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ebflow-bench-probe.tmp", dir=folder))
    except OSError as e:
        return e.strerror or str(e)
    return None


def check_run_dir(run_dir: Path, cell_ids: list[str], resume: bool) -> None:
    """Refuse, before anything is written, a run folder that cannot be used (see the module docstring)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--out {str(run_dir)!r} is a file, not a folder; choose another --out")
    if not run_dir.exists():
        base = _nearest_existing(run_dir)
        if not base.is_dir():
            raise RunDirError(f"cannot create run folder {str(run_dir)!r}: {str(base)!r} is a file")
        why = _writable(base)
        if why:
            raise RunDirError(f"cannot create run folder {str(run_dir)!r}: {str(base)!r} is not writable ({why})")
        return
    why = _writable(run_dir)
    if why:
        raise RunDirError(f"run folder {str(run_dir)!r} is not writable ({why})")
    entries = [p for p in run_dir.iterdir() if not _is_tmp(p)]
    if not entries:
        return
    if not resume:
        raise RunDirExists(f"run directory {str(run_dir)!r} already exists and is not empty; pass --resume "
                           "(resume=True) to continue it, or choose another --out; nothing was overwritten")
    old = run_dir / "matrix.json"
    if not old.exists():
        foreign = sorted(p.name for p in entries if p.name not in _START_ENTRIES
                         or (p.is_dir() and any(q for q in p.iterdir() if not _is_tmp(q))))
        if foreign:
            raise RunDirExists(f"cannot resume {str(run_dir)!r}: it is not a run folder (no matrix.json; holds "
                               f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); "
                               "choose another --out; nothing was touched")
        return
    prev = read_matrix_doc(run_dir)
    if sorted(prev.get("cell_ids", [])) != sorted(cell_ids):
        raise RunDirExists(f"cannot resume {str(run_dir)!r}: it was started with a different matrix "
                           f"({prev.get('name')!r}, {len(prev.get('cell_ids', []))} cells); use another --out")


def read_matrix_doc(run_dir: Path) -> dict[str, Any]:
    """``matrix.json`` of a run folder, or :class:`RunDirError` naming the file when it is unreadable."""
    path = run_dir / "matrix.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot resume {str(run_dir)!r}: {path} is unreadable ({e}); use another --out") from None
    if not isinstance(doc, dict):
        raise RunDirError(f"cannot resume {str(run_dir)!r}: {path} is not a matrix record; use another --out")
    return doc


def stored_device(run_dir: Path) -> str | None:
    """The ``eval.device`` a run folder was started with (None for a new or unreadable folder)."""
    try:
        doc = json.loads((run_dir / "matrix.json").read_text())
        return str(doc["eval"]["device"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def align_device(run_dir: Path, requested: str) -> str:
    """The device string to resume ``run_dir`` with: the stored one when ``requested`` names the same device
    on this machine (``auto`` on a CPU-only machine is ``cpu``), so that the cells keep their ids; else
    ``requested`` (a different device is a different matrix, refused by :func:`check_run_dir`)."""
    from .device import resolve_device

    old = stored_device(run_dir)
    if old is None or old == requested:
        return requested
    try:
        same = resolve_device(old) == resolve_device(requested)
    except (RuntimeError, TypeError):
        return requested
    return old if same else requested


# --------------------------------------------------------------------------------------------------- lock


def run_provenance(meta: dict[str, Any]) -> tuple[str, str]:
    """``(commits, clean)`` of a run's ``meta.json`` for the report's Runs section: every session's commit in
    order (a resumed run may span several), and ``yes`` iff every session ran from a clean, known commit (else
    ``no`` naming the sessions from uncommitted code or of unknown commit). Runs from before sessions recorded
    their commit fall back to the run's last ``commit``."""
    sessions = [x for x in meta.get("sessions") or [] if isinstance(x, dict) and "commit" in x]
    commits = [str(x.get("commit") or "") for x in sessions] or [str(meta.get("commit") or "")]
    unclean = [i for i, c in enumerate(commits, 1) if not c or c == "unknown" or c.endswith("+dirty")]
    text = ", ".join(dict.fromkeys(c or "unknown" for c in commits))
    if not unclean:
        return text, "yes"
    if len(commits) == 1:
        return text, "no (uncommitted changes)" if commits[0].endswith("+dirty") else "no (commit unknown)"
    return text, f"no (session(s) {', '.join(map(str, unclean))} of {len(commits)})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive lock on a run folder for the lifetime of a run (``with RunLock(run_dir): ...``).

    Creates the folder. The lock is an ``fcntl.flock`` on ``RUN_DIR/.lock``, which records ``pid``, ``host``
    and ``started``; the file is removed on release. Where ``flock`` is unsupported (some network file
    systems), the recorded pid's liveness decides (same host only; a lock of another host is respected).
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def _holder(self) -> dict[str, Any]:
        try:
            info = json.loads(self.path.read_text() or "{}")
            return info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            return {}

    def _refuse(self, info: dict[str, Any]) -> RunDirLocked:
        who = f"pid {info.get('pid', '?')} on {info.get('host', '?')}, since {info.get('started', '?')}"
        return RunDirLocked(f"run folder {str(self.run_dir)!r} is in use by another run ({who}); wait for it "
                            f"to finish, or if that process is gone, delete {self.path}")

    def acquire(self) -> RunLock:
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._refuse(self._holder()) from None
                self._fd = self._acquire_by_pid()
                return self
            try:  # the file we locked must still be the one at the path (a releaser may have unlinked it)
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = self._holder()
            if old.get("pid") and old.get("pid") != os.getpid():
                warnings.warn(f"{self.path}: taking over the stale lock of pid {old.get('pid')} on "
                              f"{old.get('host', '?')} (that process is gone)", stacklevel=2)
            self._fd = fd
            self._write_info(fd)
            return self
        raise RunDirLocked(f"could not lock {self.path}: it keeps being replaced by another process")

    def _acquire_by_pid(self) -> int:
        """Fallback without flock: O_EXCL creation; a lock of a dead pid on this host is removed first."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = self._holder()
                pid = info.get("pid")
                if info.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
                    warnings.warn(f"{self.path}: taking over the stale lock of dead pid {pid}", stacklevel=3)
                    self.path.unlink(missing_ok=True)
                    continue
                raise self._refuse(info) from None
            self._write_info(fd)
            return fd
        raise self._refuse(self._holder())

    @staticmethod
    def _write_info(fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# ------------------------------------------------------------------------------------------- cell records


def check_record(record: Any, path: Path | None = None) -> str | None:
    """None if ``record`` is a complete cell record (``CellRecord.to_dict()`` form, for the file ``path``),
    else what is wrong with it."""
    from .cell import CellRecord

    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        return f"missing key(s) {missing}"
    if not isinstance(record["rows"], list) or not all(isinstance(r, dict) and "metric" in r
                                                        for r in record["rows"]):
        return "`rows` is not a list of metric rows"
    try:
        CellRecord.from_dict(record)
    except (TypeError, ValueError, KeyError) as e:
        return f"not a valid cell record: {type(e).__name__}: {e}"
    if path is not None and record["cell_id"] != path.stem:
        return f"records cell {record['cell_id']!r}, not {path.stem!r}"
    return None


def load_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` for a good ``cells/<id>.json``, ``(None, reason)`` for a damaged one."""
    try:
        record = json.loads(path.read_text())
    except UnicodeDecodeError as e:
        return None, f"not text: {e}"
    except ValueError as e:
        return None, f"not valid JSON (truncated?): {e}"
    problem = check_record(record, path)
    return (None, problem) if problem else (record, None)


def scan_cells(run_dir: str | os.PathLike) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """``(good records sorted by cell id, [(path, reason)] of damaged ones)`` of ``RUN_DIR/cells``."""
    good, bad = [], []
    for p in sorted((Path(run_dir) / "cells").glob("*.json")):
        record, problem = load_record(p)
        if problem:
            bad.append((p, problem))
        else:
            good.append(record)
    return good, bad


def read_cell_records(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Good cell records of a run, sorted by cell id; each damaged one is skipped with a warning naming it."""
    good, bad = scan_cells(run_dir)
    for p, problem in bad:
        warnings.warn(f"skipping damaged cell record {p}: {problem} (a --resume run moves it to cells/"
                      f"{CORRUPT_DIR}/ and runs that cell again)", DamagedCellRecord, stacklevel=2)
    return good


def tidy_run_dir(run_dir: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """Under the lock: delete temporary files of interrupted writes and move damaged cell records (and their
    samples) to ``cells/corrupt/``. Returns ``(removed temporary files, moved records' new paths)``."""
    run_dir = Path(run_dir)
    removed = []
    for p in list(run_dir.glob(".*.tmp*")) + list(run_dir.glob("*/.*.tmp*")):
        if p.is_file():
            p.unlink()
            removed.append(p)
    moved = []
    _, bad = scan_cells(run_dir)
    if bad:
        dest = run_dir / "cells" / CORRUPT_DIR
        dest.mkdir(exist_ok=True)
        stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
        for p, problem in bad:
            target = dest / f"{p.stem}.{stamp}.json"
            os.replace(p, target)
            moved.append(target)
            sample = run_dir / "samples" / f"{p.stem}.npy"
            if sample.exists():
                os.replace(sample, dest / f"{p.stem}.{stamp}.npy")
            warnings.warn(f"damaged cell record {p} ({problem}) moved to {target}; that cell runs again",
                          DamagedCellRecord, stacklevel=2)
    return removed, moved


__all__ = ["run_provenance", "RunDirError", "RunDirExists", "RunDirLocked", "DamagedCellRecord", "RunLock", "resolve_run_dir",
           "check_run_dir", "read_matrix_doc", "align_device", "stored_device", "check_record", "load_record",
           "scan_cells", "read_cell_records", "tidy_run_dir", "REQUIRED_KEYS"]
