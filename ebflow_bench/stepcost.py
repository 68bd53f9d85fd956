"""Cost of a training step against its limits: step time as a multiple of a plain forward+backward of the same
model and of the step's matrix-product (GEMM) floor, the crossover D above which a score-matching objective is
cheaper per step than ML, and peak memory net of the process baseline.

Input: the tidy table of :func:`ebflow_bench.asv_results.load_asv_results` (the asv benchmarks
``TimeStepD``, ``TimeFloorD``, ``PeakMemStep`` of ``benchmarks/bench_step.py``) or of
:func:`ebflow_bench.steptime.floor_table` (``ebflow-bench steptime --floor``). Only the columns ``benchmark``,
``params`` and ``value`` are required: ``method``, ``dim``, ``layers`` are read from ``params`` (a dict or asv's
``"method=ebflow-ml, dim=64, layers=2"`` text) where they are not columns of their own, and the metric (time
or peak memory) from the benchmark's name where there is no ``metric`` column. A table without ``benchmark``
is taken as step times (the ``floor_table`` shape). With ``commit``/``date`` columns one commit is used (the
latest by default). Failed rows (NaN, None, non-positive) are left out.

Names (the ``method`` parameter): objective steps are adapter names (``ebflow-dsm``); the plain
forward+backward is ``steptime.PLAIN`` (``plain-fb``: with the same fused-Adam and EMA update as every adapter
step, so that the multiple isolates the objective) and ``steptime.PLAIN_NOOPT`` (``plain-fb-noopt``: forward
and backward alone); the GEMM floor of objective ``o`` is
``steptime.FLOOR_PREFIX + o`` (``gemm-dsm``); the peak-memory baseline process is :data:`BASELINE`.
"""

from __future__ import annotations

import ast
import math
import sys
from typing import Any

import numpy as np
import pandas as pd

from .steptime import FLOOR_PREFIX, PLAIN, PLAIN_NOOPT

__all__ = ["BASELINE", "DSM", "ML", "MIN_FIT_POINTS", "PEERS", "tidy", "step_multiples", "crossover", "memory_table",
           "report_tables", "to_markdown"]

#: the peak-memory process that imports the suite and builds nothing (``PeakMemStep`` with method="baseline")
BASELINE = "baseline"
#: the maximum-likelihood step every crossover is measured against
ML = "ebflow-ml"
#: EBFlow's cheapest per-step objective, the second baseline of the determinant-free peers' crossovers
DSM = "ebflow-dsm"
#: determinant-free peers (family ``approx-ml``) compared with EBFlow beside its own objectives
PEERS = ("snf", "relative-gradient", "free-form-flow")
#: |slope| of log(t / t_baseline) on log D below which the ratio counts as flat (no fitted crossover)
FLAT_SLOPE = 1e-9
#: fewest valid D of a ratio curve for a fitted crossover (below it only the bracketing one is reported)
MIN_FIT_POINTS = 5

_KEYS = ("method", "dim", "layers")


def _parse_params(p: Any) -> dict[str, Any]:
    if isinstance(p, dict):
        return dict(p)
    if not isinstance(p, str) or not p.strip():
        return {}
    out: dict[str, Any] = {}
    for part in p.split(","):
        if "=" not in part:
            continue
        k, v = (s.strip() for s in part.split("=", 1))
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def _metric_of(benchmark: Any) -> str:
    func = str(benchmark).rsplit(".", 1)[-1]
    if func.startswith("peakmem_"):
        return "peak_memory"
    if func.startswith("time_"):
        return "step_time"
    return func


def tidy(df: pd.DataFrame, commit: str | None = None) -> pd.DataFrame:
    """Normalise a results table to columns ``method, dim, layers, metric, value`` (valid rows of one commit).

    Raises ``KeyError`` naming the missing columns when neither the parameter columns nor ``params`` exist.
    """
    if "value" not in df.columns:
        raise KeyError(f"stepcost: the table has no 'value' column (columns: {list(df.columns)})")
    data = df.copy()
    if not all(k in data.columns for k in _KEYS):
        if "params" not in data.columns:
            raise KeyError(f"stepcost: need columns {list(_KEYS)} or 'params' (columns: {list(df.columns)})")
        parsed = data["params"].map(_parse_params)
        for k in _KEYS:
            if k not in data.columns:
                data[k] = parsed.map(lambda p, k=k: p.get(k))
    if "metric" not in data.columns:
        data["metric"] = data["benchmark"].map(_metric_of) if "benchmark" in data.columns else "step_time"
    if "commit" in data.columns and data["commit"].notna().any():
        if commit is None:
            order = data.sort_values("date") if "date" in data.columns else data
            commit = order["commit"].dropna().iloc[-1]
        data = data[data["commit"] == commit]
    data = data.assign(value=pd.to_numeric(data["value"], errors="coerce"),
                       dim=pd.to_numeric(data["dim"], errors="coerce"),
                       layers=pd.to_numeric(data["layers"], errors="coerce"))
    ok = np.isfinite(data["value"].to_numpy(float)) & data["dim"].notna() & data["method"].notna()
    data = data[ok & ((data["value"] > 0) | (data["metric"] != "step_time"))]
    out = data.groupby(["method", "dim", "layers", "metric"], dropna=False, sort=True)["value"].mean()
    return out.reset_index()[["method", "dim", "layers", "metric", "value"]]


def _times(t: pd.DataFrame, layers: int | None) -> pd.DataFrame:
    s = t[t["metric"] == "step_time"]
    if layers is not None:
        s = s[s["layers"] == layers]
    return s.pivot_table(index="dim", columns="method", values="value", aggfunc="mean")


def _is_step(method: Any) -> bool:
    """Whether ``method`` is a training step of a compared method (an EBFlow objective or a peer), not a floor."""
    return str(method).startswith("ebflow-") or method in PEERS


def _objective(method: str) -> str:
    return method.split("-", 1)[1] if method.startswith("ebflow-") else method


def step_multiples(df: pd.DataFrame, *, layers: int | None = 2, commit: str | None = None) -> pd.DataFrame:
    """Per D and objective step (every ``ebflow-*`` method and each of :data:`PEERS`): its time, the plain forward+backward's, its GEMM
    floor's (NaN where no floor is defined, e.g. ML), and the multiples ``x_plain = step / plain`` (same
    optimizer update in both), ``x_fb = step / plain forward+backward without update``,
    ``x_floor = step / floor``, ``floor_x_plain = floor / plain``, ``vs_ml = ML step / step`` (the speed-up).
    Missing references give NaN.

    Columns: ``dim, method, step_s, plain_s, floor_s, x_plain, x_fb, x_floor, floor_x_plain, vs_ml``.
    """
    piv = _times(tidy(df, commit), layers)
    cols = ["dim", "method", "step_s", "plain_s", "floor_s", "x_plain", "x_fb", "x_floor", "floor_x_plain",
            "vs_ml"]
    rows = []
    methods = [m for m in piv.columns if _is_step(m)]
    for d, r in piv.iterrows():
        plain = r.get(PLAIN, math.nan)
        fb = r.get(PLAIN_NOOPT, math.nan)
        ml = r.get(ML, math.nan)
        for m in methods:
            step = r[m]
            if not np.isfinite(step):
                continue
            floor = r.get(FLOOR_PREFIX + _objective(m), math.nan)
            rows.append({"dim": int(d), "method": m, "step_s": step, "plain_s": plain, "floor_s": floor,
                         "x_plain": step / plain, "x_fb": step / fb, "x_floor": step / floor, "floor_x_plain": floor / plain,
                         "vs_ml": ml / step})
    return pd.DataFrame(rows, columns=cols)


def _bracket(dims: np.ndarray, log_ratio: np.ndarray) -> float:
    """Smallest D from which log(SM / ML) stays negative, interpolated log-linearly in D inside its bracket;
    ``dims[0]`` when SM is cheaper everywhere, NaN when it never ends cheaper."""
    below = log_ratio < 0
    if not below[-1]:
        return math.nan
    k = len(below) - 1
    while k > 0 and below[k - 1]:
        k -= 1
    if k == 0:
        return float(dims[0])
    x0, x1 = math.log(dims[k - 1]), math.log(dims[k])
    y0, y1 = log_ratio[k - 1], log_ratio[k]
    return float(math.exp(x0 + (x1 - x0) * y0 / (y0 - y1)))


def crossover(df: pd.DataFrame, *, layers: int | None = 2, commit: str | None = None,
              baseline: str = ML, min_points: int = MIN_FIT_POINTS,
              methods: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Per compared method (``methods``, default every ``ebflow-*`` one and each of :data:`PEERS`): the D above
    which its step is cheaper than ``baseline``'s.

    ``crossover_d`` comes from the sweep itself (log-linear interpolation of ``log(t / t_ML)`` inside the last
    bracket where the sign changes; the smallest D when cheaper everywhere; NaN when not cheaper at the
    largest D). ``fit_d`` solves ``a + b log D = 0`` for an OLS fit of ``log(t / t_ML)`` on ``log D`` over all
    D where both are valid, reported only with at least ``min_points`` D and a decreasing ratio
    (``b < -FLAT_SLOPE``; two steps of the same exponent never cross),
    else NaN. Columns: ``method, crossover_d, fit_d, slope, n, dims``.
    """
    piv = _times(tidy(df, commit), layers)
    cols = ["method", "crossover_d", "fit_d", "slope", "n", "dims"]
    if baseline not in piv.columns:
        return pd.DataFrame(columns=cols)
    rows = []
    for m in piv.columns:
        if m == baseline or not (_is_step(m) if methods is None else m in methods):
            continue
        pair = piv[[m, baseline]].dropna()
        pair = pair[(pair[m] > 0) & (pair[baseline] > 0)].sort_index()
        dims = pair.index.to_numpy(float)
        lr = np.log(pair[m].to_numpy(float) / pair[baseline].to_numpy(float))
        row = {"method": m, "crossover_d": math.nan, "fit_d": math.nan, "slope": math.nan, "n": len(dims),
               "dims": f"{int(dims[0])}-{int(dims[-1])}" if len(dims) else ""}
        if len(dims):
            row["crossover_d"] = _bracket(dims, lr)
        if len(dims) >= min_points:
            b, a = np.polyfit(np.log(dims), lr, 1)
            row["slope"] = float(b)
            if b < -FLAT_SLOPE:  # a flat ratio (equal exponents) has no fitted crossing
                row["fit_d"] = float(math.exp(min(-a / b, math.log(sys.float_info.max))))
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def memory_table(df: pd.DataFrame, *, layers: int | None = 2, commit: str | None = None) -> pd.DataFrame:
    """Peak memory (MiB, asv's ``peakmem`` converted by the loader) of each method's step process net of the
    :data:`BASELINE` process at the same D, and each method's net peak over ML's (``x_ml``).

    Columns: ``dim, method, peak_mib, baseline_mib, net_mib, x_ml``. Empty without baseline rows.
    """
    t = tidy(df, commit)
    s = t[t["metric"] == "peak_memory"]
    if layers is not None:
        s = s[s["layers"] == layers]
    piv = s.pivot_table(index="dim", columns="method", values="value", aggfunc="mean")
    cols = ["dim", "method", "peak_mib", "baseline_mib", "net_mib", "x_ml"]
    if BASELINE not in piv.columns:
        return pd.DataFrame(columns=cols)
    rows = []
    for d, r in piv.iterrows():
        base = r[BASELINE]
        ml_net = r.get(ML, math.nan) - base
        for m in piv.columns:
            if m == BASELINE or not np.isfinite(r[m]):
                continue
            net = r[m] - base
            rows.append({"dim": int(d), "method": m, "peak_mib": r[m], "baseline_mib": base, "net_mib": net,
                         "x_ml": net / ml_net if ml_net > 0 else math.nan})
    return pd.DataFrame(rows, columns=cols)


def report_tables(df: pd.DataFrame, *, layers: int | None = 2, commit: str | None = None) -> dict[str, pd.DataFrame]:
    """The report's step-cost tables: ``multiples`` (wide: one row per D, ``x_plain`` / ``x_floor`` /
    ``vs_ml`` per objective), ``crossover`` (against ML), ``crossover_dsm`` (each of :data:`PEERS` against
    EBFlow's DSM step) and ``memory`` (wide: net MiB per method, and SM / ML)."""
    mult = step_multiples(df, layers=layers, commit=commit)
    wide = pd.DataFrame()
    if not mult.empty:
        parts = []
        for col, label in (("x_plain", "x plain"), ("x_floor", "x floor"), ("vs_ml", "ML /")):
            p = mult.pivot(index="dim", columns="method", values=col)
            p.columns = [f"{m.removeprefix('ebflow-')} {label}" for m in p.columns]
            parts.append(p)
        wide = pd.concat(parts, axis=1).dropna(axis=1, how="all").reset_index()
    mem = memory_table(df, layers=layers, commit=commit)
    mem_wide = pd.DataFrame()
    if not mem.empty:
        mem_wide = mem.pivot(index="dim", columns="method", values="net_mib")
        mem_wide.columns = [f"{m.removeprefix('ebflow-')} MiB" for m in mem_wide.columns]
        mem_wide = mem_wide.reset_index()
    return {"multiples": wide, "crossover": crossover(df, layers=layers, commit=commit),
            "crossover_dsm": crossover(df, layers=layers, commit=commit, baseline=DSM, methods=PEERS),
            "memory": mem_wide}


def _cell(v: Any, digits: int) -> str:
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return "-"
        return f"{v:.{digits}g}"
    return str(v)


def to_markdown(table: pd.DataFrame, *, digits: int = 3) -> str:
    """A DataFrame as a GitHub markdown table (numbers to ``digits`` significant digits, NaN as ``-``)."""
    if table.empty:
        return "_(no data)_\n"
    head = "| " + " | ".join(str(c) for c in table.columns) + " |"
    sep = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_cell(v, digits) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"
