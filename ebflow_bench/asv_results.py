"""asv results -> the suite's tidy table, read through asv's own API (asv 0.6.6).

:func:`load_asv_results` walks ``RESULTS_DIR`` with ``asv.results.iter_results_paths`` (every
``<machine>/<commit>-<env>.json`` next to a valid ``<machine>/machine.json``) and loads each file with
``asv.results.Results.load``; values, parameters and statistics come from ``Results.get_result_params``,
``get_result_value`` and ``get_result_stats`` (asv's 99% interval ``ci_99_a``/``ci_99_b``), benchmark metadata
(``param_names``, ``unit``, ``type``) from ``RESULTS_DIR/benchmarks.json`` via ``asv.util.load_json``. asv stores
each parameter value as its Python ``repr`` (``"'ebflow-ml'"``, ``"512"``); they are turned back into values.

Output columns: ``machine, commit, date, env, benchmark``, one column per benchmark parameter (always
``method, task, dim, layers``, plus any other ``param_names`` of the suite), ``params`` (all of them as text),
``metric, value, unit, ci_low, ci_high, q25, q75`` (asv's 99% interval and the samples' quartiles: the
spread of a timing, whose value is the median of the samples). ``date`` is a UTC ``pandas.Timestamp`` (the commit time asv
recorded). The metric comes from the benchmark's kind: ``time_*`` -> ``step_time`` (s), ``peakmem_*`` ->
``peak_memory`` (converted from bytes to MiB, the suite's unit), ``mem_*`` -> ``memory`` (MiB), ``track_<name>``
-> ``<name>`` (the benchmark's own unit). Failed or skipped combinations are kept with value NaN.

:func:`history_table` is the per-commit table of the report: one row per benchmark *and every parameter*
(``task`` included), so values of different tasks are never averaged into one row.
"""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

#: parameter columns every table has (the suite's ``param_names``); others are added as found
PARAM_COLUMNS = ["method", "task", "dim", "layers"]
COLUMNS = ["machine", "commit", "date", "env", "benchmark", *PARAM_COLUMNS, "params", "metric", "value", "unit",
           "ci_low", "ci_high", "q25", "q75"]
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


def _benchmarks(root: Path) -> dict[str, dict[str, Any]]:
    """``benchmarks.json`` through asv (name -> metadata); empty when the file is absent."""
    from asv import util
    from asv.benchmarks import Benchmarks

    path = root / "benchmarks.json"
    if not path.is_file():
        return {}
    try:
        d = util.load_json(str(path), api_version=Benchmarks.api_version)
    except util.UserError as e:
        raise AsvResultsError(f"cannot read {path}: {e}") from e
    return {k: v for k, v in d.items() if isinstance(v, dict)}


def _result_rows(res: Any, path: str, benchmarks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    import itertools

    date = pd.to_datetime(res.date, unit="ms", utc=True) if res.date is not None else pd.NaT
    machine = str(res.params.get("machine") or Path(path).parent.name)
    rows = []
    for bench in sorted(res.get_all_result_keys()):
        meta = benchmarks.get(bench, {})
        metric, unit, factor = _metric(bench, meta)
        param_lists = res.get_result_params(bench) or []
        names = list(meta.get("param_names") or [])
        if len(names) != len(param_lists):
            names = [f"param{i + 1}" for i in range(len(param_lists))]
        values = res.get_result_value(bench, param_lists)
        stats = res.get_result_stats(bench, param_lists)
        for combo, value, st in zip(itertools.product(*param_lists), values, stats):
            p = {n: _parse_param(v) for n, v in zip(names, combo)}
            st = st or {}
            rows.append({"machine": machine, "commit": str(res.commit_hash), "date": date,
                         "env": str(res.env_name or ""), "benchmark": bench, **p,
                         "params": ", ".join(f"{n}={p[n]}" for n in names),
                         "metric": metric, "value": _number(value, factor), "unit": unit,
                         "ci_low": _number(st.get("ci_99_a"), factor), "ci_high": _number(st.get("ci_99_b"), factor),
                         "q25": _number(st.get("q_25"), factor), "q75": _number(st.get("q_75"), factor)})
    return rows


def load_asv_results(results_dir: str | Path) -> pd.DataFrame:
    """Every asv results file under ``results_dir`` (all machines and commits) as one tidy DataFrame (see the
    module docstring), in commit-date order.

    Raises ``FileNotFoundError`` when the directory does not exist and :class:`AsvResultsError` (a
    ``ValueError``) when it holds no results files or asv cannot load one (e.g. an older api_version).
    """
    from asv import util
    from asv.results import Results, iter_results_paths

    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"asv results directory not found: {root}")
    benchmarks = _benchmarks(root)
    rows, n_files = [], 0
    for folder, name, machine in iter_results_paths(str(root)):
        path = os.path.join(folder, name)
        try:
            res = Results.load(path, machine_name=machine)
        except util.UserError as e:
            raise AsvResultsError(f"asv cannot load results file {path}: {e}") from e
        n_files += 1
        rows += _result_rows(res, path, benchmarks)
    if not n_files:
        raise AsvResultsError(f"no asv results in {root}: expected <machine>/<commit>-<env>.json files next to a "
                              f"valid <machine>/machine.json (run `ebflow-bench track` first)")
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    df = pd.DataFrame(rows, columns=[*COLUMNS[:9], *extra, *COLUMNS[9:]])
    for c in ("dim", "layers"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    # files in date order; within a file, asv's benchmark and parameter order
    return df.sort_values(["date", "commit"], kind="stable").reset_index(drop=True)


def param_columns(df: pd.DataFrame) -> list[str]:
    """The benchmark-parameter columns of a :func:`load_asv_results` table that hold any value."""
    fixed = set(COLUMNS) - set(PARAM_COLUMNS)
    return [c for c in df.columns if c not in fixed and df[c].notna().any()]


def history_table(df: pd.DataFrame, last: int = 8) -> pd.DataFrame:
    """Values of the ``last`` commits (date order, oldest first) per benchmark and parameter combination: one row
    per (benchmark, every parameter column incl. ``task``, unit), one column per commit (full hash). Values of
    different tasks (or any other parameter) stay in different rows; repeated values of one combination at one
    commit (several environments) are averaged."""
    df = df[pd.to_numeric(df["value"], errors="coerce").notna()]
    order = df.sort_values("date").drop_duplicates("commit")["commit"].tolist()[-last:]
    keys = ["benchmark", *param_columns(df), "unit"]
    recent = df[df["commit"].isin(order)].assign(value=lambda t: t["value"].astype(float))
    wide = recent.groupby([*keys, "commit"], dropna=False)["value"].mean().unstack("commit")
    return wide.reindex(columns=order).reset_index()


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
    (why a fit failed or is insufficient, else ""). Every asv sample counts as a point (asv stores one statistic
    per combination). A fit over fewer than ``scaling.MIN_FIT_POINTS`` distinct values is not a result: its
    slope and interval are NaN and ``error`` starts with "insufficient".
    """
    from .scaling import ASYMPTOTIC_MIN_DIM, MIN_FIT_POINTS, fit_exponents

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
                n_x = int(gm.loc[gm[x] >= (min_x or 0), x].nunique())
                if n_x < MIN_FIT_POINTS:
                    row["error"] = (f"insufficient: {n_x} distinct {'D' if x == 'dim' else 'L'} values "
                                    f"(< {MIN_FIT_POINTS}); not fitted")
                    row["n"] = int((gm[x] >= (min_x or 0)).sum())
                    rows.append(row)
                    continue
                try:
                    r = fit_exponents(gm, by="method", x=x, min_x=min_x).iloc[0]
                    row.update(slope=r["slope"], ci_low=r["ci_low"], ci_high=r["ci_high"], n=int(r["n"]))
                except ValueError as e:
                    row["error"] = str(e)
                rows.append(row)
    return pd.DataFrame(rows, columns=cols)
