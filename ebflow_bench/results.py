"""The tidy results table: one row per cell x metric, written as ``results.parquet`` and ``results.csv``.

Columns (``COLUMNS``): run_id, cell_id, method, family, objective, task, dim, layers, seed, budget, metric,
value, unit, status, reason, cell_status, step, elapsed_s, n_params, device, versions, commit, timestamp.
``status`` is the row's: ``ok``, ``failed`` (value NaN, ``reason`` says why) or ``unavailable``;
``cell_status`` is the whole cell's (``ok`` or ``failed``), so that one failed metric of a finished cell is not
mistaken for a failed cell. ``step`` and
``elapsed_s`` are set on ``nll_at_time`` rows only. ``versions`` is a JSON string of library versions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

COLUMNS = ["run_id", "cell_id", "method", "family", "objective", "task", "dim", "layers", "seed", "budget",
           "metric", "value", "unit", "status", "reason", "cell_status", "step", "elapsed_s", "n_params", "device",
           "versions", "commit", "timestamp"]

_DTYPES = {"dim": "Int64", "layers": "Int64", "seed": "Int64", "budget": "Int64", "n_params": "Int64",
           "value": "float64", "step": "float64", "elapsed_s": "float64"}
_STRINGS = [c for c in COLUMNS if c not in _DTYPES]


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace``: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def rows_from_cell(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The tidy rows of one cell record (as written to ``cells/<cell_id>.json`` by the runner)."""
    cfg = record["config"]
    base = {
        "run_id": record.get("run_id", ""), "cell_id": record["cell_id"], "method": cfg["method"],
        "family": record.get("family", ""), "objective": record.get("objective", ""), "task": cfg["task"],
        "dim": cfg["dim"], "layers": cfg["layers"], "seed": cfg["seed"], "budget": cfg["budget"],
        "n_params": record.get("n_params"), "device": record.get("device", ""),
        "versions": json.dumps(record.get("versions", {}), sort_keys=True), "commit": record.get("commit", ""),
        "timestamp": record.get("timestamp", ""),
    }
    out = []
    for r in record["rows"]:
        row = {**base, "metric": r["metric"], "value": r.get("value", np.nan), "unit": r.get("unit", ""),
               "status": r.get("status", "ok"), "reason": r.get("reason") or "",
               "cell_status": record.get("status", "ok"), "step": r.get("step", np.nan),
               "elapsed_s": r.get("elapsed_s", np.nan)}
        out.append(row)
    return out


def frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A DataFrame with exactly ``COLUMNS`` in order and stable dtypes (NaN/None -> missing)."""
    df = pd.DataFrame(list(rows), columns=COLUMNS)
    for c, t in _DTYPES.items():
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(t)
    for c in _STRINGS:
        df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    return df


def read_cell_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """All readable cell records of a run, sorted by cell id (temporary files of an interrupted write are
    ignored; a damaged record is skipped with a ``rundir.DamagedCellRecord`` warning naming the file)."""
    from .rundir import read_cell_records as read_good_records

    return read_good_records(run_dir)


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
    tmp = run_dir / ".results.parquet.tmp"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, run_dir / "results.parquet")
    tmp = run_dir / ".results.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, run_dir / "results.csv")
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


def load_results(path_or_paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Load a run directory, a parquet/CSV results file, or a list of them (concatenated, ``COLUMNS`` order)."""
    if isinstance(path_or_paths, (str, Path)):
        path_or_paths = [path_or_paths]
    frames = [_load_one(Path(p)) for p in path_or_paths]
    if not frames:
        raise ValueError("load_results: no paths given")
    return frame(pd.concat(frames, ignore_index=True).to_dict("records"))
