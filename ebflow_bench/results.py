"""The tidy results table: one row per cell x metric, written as ``results.parquet`` and ``results.csv``.

Every row carries its cell's contract, copied from the cell record (``ebflow_bench.cell.CellRecord``), never
recomputed. Columns (``COLUMNS``):

- identity: ``run_id``, ``cell_id`` (hash of the whole spec), ``config_key`` (hash of the spec without its
  seeds: the cells of one configuration share it), ``method``, ``family``, ``objective``, ``task``, ``task_id``
  (the task with its data: ``tasks.task_identity``, e.g. ``file: wine_a @ 1a2b3c4d`` for a user's file; the
  report groups by it; empty in tables written before it existed, read as ``task``), ``dim``,
  ``layers``, ``hparams`` (JSON of the resolved hyperparameters, sorted keys), ``data_seed``, ``train_seed``,
  ``budget`` (steps asked for), ``threads``, ``device``;
- outcome: ``steps_done``, ``cell_status`` (the whole cell's: ``ok``, ``failed``, ``capped`` or
  ``degenerate``; one failed metric of a finished cell does not make the cell failed), ``cell_reason`` (the
  record's reason for a status other than ``ok``), ``n_params``;
- the metric: ``metric``, ``value``, ``unit``, ``status`` (the row's: ``ok``, ``failed`` with value NaN and a
  ``reason``, or ``unavailable``), ``reason``;
- compute: ``step``, ``compute_s``, ``wall_s``: on ``nll_at_time`` rows the checkpoint's step and the training
  compute/wall seconds up to it; on every other row ``step`` is missing and ``compute_s``/``wall_s`` are the
  cell's training totals;
- provenance: ``versions`` (JSON of library versions), ``commit`` (``+dirty``: uncommitted changes),
  ``timestamp``, ``rule_fingerprints`` (JSON ``{claim: fingerprint}`` of the claims the cell decides, registered
  when its run started; '' before pre-registration: see ``claims.registration``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .cell import CellRecord
from .tasks.base import task_identity

COLUMNS = ["run_id", "cell_id", "config_key", "method", "family", "objective", "task", "dim", "layers", "hparams",
           "data_seed", "train_seed", "budget", "steps_done", "threads", "metric", "value", "unit", "status", "reason",
           "cell_status", "cell_reason", "step", "compute_s", "wall_s", "n_params", "device", "versions", "commit",
           "timestamp", "rule_fingerprints", "task_id"]

_DTYPES = {"dim": "Int64", "layers": "Int64", "data_seed": "Int64", "train_seed": "Int64", "budget": "Int64",
           "steps_done": "Int64", "threads": "Int64", "n_params": "Int64", "value": "float64", "step": "float64",
           "compute_s": "float64", "wall_s": "float64"}
_STRINGS = [c for c in COLUMNS if c not in _DTYPES]


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace``: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def write_table_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` (``.parquet`` or ``.csv``) through a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if path.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def rows_from_cell(record: dict[str, Any] | CellRecord) -> list[dict[str, Any]]:
    """The tidy rows of one cell record (``CellRecord`` or its dict, as written to ``cells/<cell_id>.json``)."""
    rec = record if isinstance(record, CellRecord) else CellRecord.from_dict(record)
    spec = rec.spec
    base = {
        "run_id": rec.run_id, "cell_id": rec.cell_id, "config_key": rec.config_key, "method": spec.method,
        "family": spec.family, "objective": spec.objective, "task": spec.task, "dim": spec.dim,
        "layers": spec.layers, "hparams": hparams_json(spec.hparams), "data_seed": spec.data_seed,
        "train_seed": spec.train_seed, "budget": spec.budget, "steps_done": rec.steps_done,
        "threads": spec.threads, "cell_status": rec.status, "cell_reason": rec.reason, "n_params": rec.n_params,
        "device": spec.device,
        "versions": json.dumps(rec.versions, sort_keys=True), "commit": rec.commit, "timestamp": rec.finished,
        "rule_fingerprints": json.dumps(rec.rule_fingerprints, sort_keys=True) if rec.rule_fingerprints else "",
        "task_id": task_identity(spec.task, spec.task_options),
    }
    out = []
    for r in rec.rows:
        row = {**base, "metric": r["metric"], "value": r.get("value", np.nan), "unit": r.get("unit", ""),
               "status": r.get("status", "ok"), "reason": r.get("reason") or "", "step": r.get("step", np.nan),
               "compute_s": r.get("compute_s", rec.compute_s), "wall_s": r.get("wall_s", rec.wall_s)}
        out.append(row)
    return out


def hparams_json(hparams: dict[str, Any]) -> str:
    """The ``hparams`` column: canonical JSON (sorted keys) of resolved hyperparameters."""
    return json.dumps(hparams, sort_keys=True)


def frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A DataFrame with exactly ``COLUMNS`` in order and stable dtypes (NaN/None -> missing)."""
    df = pd.DataFrame(list(rows), columns=COLUMNS)
    for c, t in _DTYPES.items():
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(t)
    for c in _STRINGS:
        df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    df["task_id"] = df["task_id"].where(df["task_id"].ne(""), df["task"])  # tables written before the column
    return df


def read_cell_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """All readable cell records of a run, sorted by cell id (temporary files of an interrupted write are
    ignored; a damaged record is skipped with a ``rundir.DamagedCellRecord`` warning naming the file)."""
    from .rundir import read_cell_records as read_good_records

    return read_good_records(run_dir)


class DuplicateCells(UserWarning):
    """The same cell (same ``cell_id``) was found in several run folders; it is counted once."""


def dedupe_cells(frames: list[pd.DataFrame], names: list[str] | None = None) -> pd.DataFrame:
    """Concatenate results tables keeping each cell (``cell_id``) from the first table that holds it; warn
    (:class:`DuplicateCells`) naming how many cells were found again in later tables (``names`` label them)."""
    seen: set[str] = set()
    parts, repeated = [], {}
    for i, f in enumerate(frames):
        ids = set(f["cell_id"])
        again = ids & seen
        if again:
            repeated[names[i] if names else f"table {i}"] = len(again)
        parts.append(f[~f["cell_id"].isin(again)])
        seen |= ids
    if repeated:
        import warnings

        warnings.warn("cells found in more than one run folder are counted once, from the first: "
                      + ", ".join(f"{n} repeats {k} cell(s)" for n, k in repeated.items()),
                      DuplicateCells, stacklevel=2)
    return pd.concat(parts, ignore_index=True)


def write_results(run_dir: str | Path) -> pd.DataFrame:
    """Gather ``cells/*.json`` of ``run_dir`` into ``results.parquet`` and ``results.csv``; return the table.

    Rows follow the cell order listed in ``matrix.json`` (``cell_ids``) when present, else the cell ids' order.
    """
    run_dir = Path(run_dir)
    records = read_cell_records(run_dir)
    matrix_file = run_dir / "matrix.json"
    if matrix_file.exists():
        try:
            order = json.loads(matrix_file.read_text()).get("cell_ids", [])
        except (ValueError, AttributeError):
            order = []  # an unreadable matrix.json only loses the row order
        rank = {cid: i for i, cid in enumerate(order)}
        records.sort(key=lambda r: (rank.get(r["cell_id"], len(rank)), r["cell_id"]))
    df = frame(row for rec in records for row in rows_from_cell(rec))
    write_table_atomic(df, run_dir / "results.parquet")
    write_table_atomic(df, run_dir / "results.csv")
    return df


def _load_one(path: Path) -> pd.DataFrame:
    if path.is_dir():
        if (path / "results.parquet").exists():
            return frame(pd.read_parquet(path / "results.parquet").to_dict("records"))
        if (path / "cells").is_dir():
            return frame(row for rec in read_cell_records(path) for row in rows_from_cell(rec))
        raise FileNotFoundError(f"{path}: no results.parquet and no cells/ folder: not a run directory")
    if not path.exists():
        raise FileNotFoundError(f"results {str(path)!r} not found")
    if path.suffix == ".parquet":
        return frame(pd.read_parquet(path).to_dict("records"))
    if path.suffix == ".csv":
        return frame(pd.read_csv(path, keep_default_na=False, na_values=[""]).to_dict("records"))
    raise ValueError(f"{path}: expected a run directory, a .parquet or a .csv file")


def load_results(path_or_paths: str | Path | Iterable[str | Path], *, dedupe: bool = False) -> pd.DataFrame:
    """Load a run directory, a parquet/CSV results file, or a list of them (concatenated, ``COLUMNS`` order).

    ``dedupe=True`` keeps each cell once, from the first path that holds it, with a :class:`DuplicateCells`
    warning (the report does this: overlapping run folders must not count a cell twice)."""
    if isinstance(path_or_paths, (str, Path)):
        path_or_paths = [path_or_paths]
    paths = [Path(p) for p in path_or_paths]
    frames = [_load_one(p) for p in paths]
    if not frames:
        raise ValueError("load_results: no paths given")
    df = dedupe_cells(frames, [str(p) for p in paths]) if dedupe else pd.concat(frames, ignore_index=True)
    return frame(df.to_dict("records"))
