"""asv results (JSON, asv 0.6.6 format, api_version 2) -> the suite's tidy table.

Layout read: ``RESULTS_DIR/<machine>/<commit[:8]>-<env>.json`` (one file per commit and environment) next to
``RESULTS_DIR/<machine>/machine.json`` and ``RESULTS_DIR/benchmarks.json`` (written by ``asv run``; gives
each benchmark's ``param_names``, ``unit`` and ``type``). A results file holds ``commit_hash``, ``date`` (commit
time, ms since the epoch), ``params`` (the machine/environment description) and ``results``: per benchmark a
row aligned with ``result_columns`` (``result``, ``params``, ``version``, ``started_at``, ``duration``,
``stats_*``, ...; trailing ``None`` columns dropped). ``result`` is a flat list over the Cartesian product of
the benchmark's parameter lists (``itertools.product`` order; ``None`` for a failed or skipped combination,
NaN where asv wrote ``NaN``) and each parameter value is its Python ``repr`` (``"'ebflow-ml'"``, ``"512"``).

Output columns: ``benchmark, commit, machine, env, date, method, task, dim, layers, params, metric, value,
unit`` plus ``ci_low``/``ci_high`` (asv's 99% interval of the statistic, where recorded). ``date`` is a UTC
``pandas.Timestamp``. The metric comes from the benchmark's kind: ``time_*`` -> ``step_time`` (s),
``peakmem_*`` -> ``peak_memory`` (converted from bytes to MiB, the suite's unit), ``mem_*`` -> ``memory``
(MiB), ``track_<name>`` -> ``<name>`` (the benchmark's own unit). Failed combinations are kept with value NaN.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

COLUMNS = ["benchmark", "commit", "machine", "env", "date", "method", "task", "dim", "layers", "params",
           "metric", "value", "unit", "ci_low", "ci_high"]
_MIB = 2.0**20


class AsvResultsError(ValueError):
    """The directory holds no readable asv results (the message says what was looked for)."""


def _parse_param(text: Any) -> Any:
    """A parameter as asv stores it (its ``repr``) -> the Python value, or the text when not a literal."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _metric(bench: str, meta: dict[str, Any]) -> tuple[str, str, float]:
    """(metric name, unit, factor applied to asv's value) for a benchmark's full name."""
    func = bench.rsplit(".", 1)[-1]
    unit = str(meta.get("unit", "") or "")
    if func.startswith("time_") or meta.get("type") == "time":
        return "step_time", "s", 1.0
    if func.startswith("peakmem_") or meta.get("type") == "peakmemory":
        return "peak_memory", "MiB", 1.0 / _MIB
    if func.startswith("mem_") or meta.get("type") == "memory":
        return "memory", "MiB", 1.0 / _MIB
    if func.startswith("track_"):
        return func[len("track_"):], unit, 1.0
    return func, unit, 1.0


def _number(v: Any, factor: float) -> float:
    """asv's number times ``factor``; NaN for None, non-numbers and infinities (asv writes +-inf as the
    interval of a single sample)."""
    try:
        x = float(v) * factor
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AsvResultsError(f"cannot read asv results file {path}: {e}") from e
    if not isinstance(data, dict):
        raise AsvResultsError(f"{path} is not an asv results file (not a JSON object)")
    return data


def _file_rows(path: Path, benchmarks: dict[str, Any]) -> list[dict[str, Any]]:
    d = _read_json(path)
    if d.get("version") != 2:
        raise AsvResultsError(f"{path}: asv results api_version {d.get('version')!r}, expected 2 (asv 0.5/0.6)")
    missing = [k for k in ("commit_hash", "result_columns", "results") if k not in d]
    if missing:
        raise AsvResultsError(f"{path}: not an asv results file (missing {missing})")
    cols = list(d["result_columns"])
    env_params = d.get("params") or {}
    machine = str(env_params.get("machine") or path.parent.name)
    date = pd.to_datetime(d.get("date"), unit="ms", utc=True) if d.get("date") is not None else pd.NaT
    rows = []
    for bench, raw in d["results"].items():
        rec = dict(zip(cols, raw))
        meta = benchmarks.get(bench, {})
        metric, unit, factor = _metric(bench, meta)
        results = rec.get("result")
        param_lists = rec.get("params") or []
        names = list(meta.get("param_names") or [])
        if len(names) != len(param_lists):
            names = [f"param{i + 1}" for i in range(len(param_lists))]
        combos = list(itertools.product(*param_lists)) if param_lists else [()]
        if results is None:
            results = [None] * len(combos)
        elif not isinstance(results, list):
            results = [results]
        if len(results) != len(combos):
            raise AsvResultsError(f"{path}: {bench} has {len(results)} results for {len(combos)} parameter "
                                  f"combinations")
        ci_a = rec.get("stats_ci_99_a") or [None] * len(combos)
        ci_b = rec.get("stats_ci_99_b") or [None] * len(combos)
        for combo, value, lo, hi in zip(combos, results, ci_a, ci_b):
            p = {n: _parse_param(v) for n, v in zip(names, combo)}
            rows.append({
                "benchmark": bench, "commit": str(d["commit_hash"]), "machine": machine,
                "env": str(d.get("env_name", "")), "date": date,
                "method": p.get("method"), "task": p.get("task"),
                "dim": p.get("dim"), "layers": p.get("layers"),
                "params": ", ".join(f"{n}={p[n]}" for n in names),
                "metric": metric, "value": _number(value, factor), "unit": unit,
                "ci_low": _number(lo, factor), "ci_high": _number(hi, factor),
            })
    return rows


def load_asv_results(results_dir: str | Path) -> pd.DataFrame:
    """Every asv results file under ``results_dir`` (all machines and commits) as one tidy DataFrame.

    Raises ``FileNotFoundError`` when the directory does not exist and :class:`AsvResultsError` (a
    ``ValueError``) when it holds no results files or one is malformed.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"asv results directory not found: {root}")
    bench_file = root / "benchmarks.json"
    benchmarks = _read_json(bench_file) if bench_file.is_file() else {}
    files = sorted(p for p in root.glob("*/*.json") if p.name != "machine.json")
    if not files:
        raise AsvResultsError(f"no asv results in {root}: expected <machine>/<commit>-<env>.json files "
                              f"(run `ebflow-bench track` or `asv run` first)")
    rows = [r for f in files for r in _file_rows(f, benchmarks)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    for c in ("dim", "layers"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    # files in date order; within a file, asv's benchmark and parameter order
    return df.sort_values(["date", "commit"], kind="stable").reset_index(drop=True)


#: the asv step-time sweeps: (benchmark class, swept variable)
STEP_SWEEPS = (("TimeStepD", "dim"), ("TimeStepL", "layers"))
#: smallest L of the second L fit: at L = 1 the dense model has no activation (a single affine map), a different
#: layer mix from every deeper model
MIN_LAYERS = 2


def step_exponents(df: pd.DataFrame, commit: str | None = None) -> pd.DataFrame:
    """Fitted exponents of step time from asv results (``load_asv_results`` output) at one commit (default: the
    latest by date): per sweep and method, the slope of log time against log D (``TimeStepD``; over the whole
    sweep and over the asymptotic range D >= ``scaling.ASYMPTOTIC_MIN_DIM``) or log L (``TimeStepL``; over the
    whole sweep and over L >= ``MIN_LAYERS``).

    Columns: sweep, x, range, fixed (the other variable's value), method, slope, ci_low, ci_high, n, error
    (why a fit failed, else ""). Every asv sample counts as a point (asv stores one statistic per combination).
    """
    from .scaling import ASYMPTOTIC_MIN_DIM, fit_exponents

    cols = ["sweep", "x", "range", "fixed", "method", "slope", "ci_low", "ci_high", "n", "error"]
    steps = df[(df["metric"] == "step_time") & pd.to_numeric(df["value"], errors="coerce").gt(0)]
    if commit is None and len(steps):
        commit = steps.sort_values("date")["commit"].iloc[-1]
    steps = steps[steps["commit"] == commit]
    rows = []
    for sweep, x in STEP_SWEEPS:
        g = steps[steps["benchmark"].str.contains(f"{sweep}.", regex=False)]
        if g.empty:
            continue
        g = g.assign(dim=g["dim"].astype(float), layers=g["layers"].astype(float), value=g["value"].astype(float))
        other = "layers" if x == "dim" else "dim"
        ranges = ([("all", None), (f"D >= {ASYMPTOTIC_MIN_DIM}", ASYMPTOTIC_MIN_DIM)] if x == "dim" else
                  [("all", None), (f"L >= {MIN_LAYERS}", MIN_LAYERS)])
        for label, min_x in ranges:
            for method, gm in g.groupby("method", sort=True):
                row = {"sweep": sweep, "x": x, "range": label, "fixed": float(gm[other].iloc[0]), "method": method,
                       "slope": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "error": ""}
                try:
                    r = fit_exponents(gm, by="method", x=x, min_x=min_x).iloc[0]
                    row.update(slope=r["slope"], ci_low=r["ci_low"], ci_high=r["ci_high"], n=int(r["n"]))
                except ValueError as e:
                    row["error"] = str(e)
                rows.append(row)
    return pd.DataFrame(rows, columns=cols)
