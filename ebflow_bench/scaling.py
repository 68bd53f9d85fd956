"""Scaling exponents of step time (or any positive quantity) against D or L, with confidence intervals.

:func:`fit_exponents` fits ``log y = a + b log x`` by ordinary least squares per group and reports the slope
``b`` with a 95% Student-t interval (``n - 2`` degrees of freedom; repeated measurements at one x count as
separate points). With exactly two distinct x the slope has no interval, so at least three distinct x are
required.

Choice of range (``min_x``): a step's cost is a sum of terms, e.g. ``c3 D^3 + c2 B D^2 + c0`` for maximum
likelihood; the log-log slope only approaches the leading exponent once that term dominates. On two CPU cores
with batch 100, the O(D^3) log-determinant of ``ebflow-ml`` dominates from D ~ 1024 on, and fixed per-step
overhead (Python, optimizer bookkeeping) flattens every curve below D ~ 256. The asymptotic fits of the asv
suite therefore use ``min_x = ASYMPTOTIC_MIN_DIM = 1024`` (D in {1024, 1536, 2048, 3072, 4096}); a fit over the whole
range reports a smaller, range-dependent exponent.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

#: smallest D of the asymptotic (large-D) fit used by ``track`` summaries (see the module docstring)
ASYMPTOTIC_MIN_DIM = 1024
#: fewest distinct x of a fit that the report and ``track`` show as a result (3 points leave the t-interval one
#: degree of freedom: intervals several units of exponent wide); smaller fits are marked insufficient
MIN_FIT_POINTS = 5

COLUMNS = ["slope", "ci_low", "ci_high", "n"]


def _fit_one(lx: np.ndarray, ly: np.ndarray, level: float) -> tuple[float, float, float]:
    n = len(lx)
    res = stats.linregress(lx, ly)
    if n == 2 or not math.isfinite(res.stderr):
        return float(res.slope), math.nan, math.nan
    h = float(stats.t.ppf(0.5 + level / 2, n - 2) * res.stderr)
    return float(res.slope), float(res.slope) - h, float(res.slope) + h


def fit_exponents(df: pd.DataFrame, by: str = "method", x: str = "dim", y: str = "value", *,
                  min_x: float | None = None, level: float = 0.95) -> pd.DataFrame:
    """Per group of ``by``: OLS slope of log(``y``) on log(``x``) with a ``level`` t-interval.

    Returns a DataFrame with columns ``[by, "slope", "ci_low", "ci_high", "n"]`` (``n``: points used), one row
    per group, sorted by group. Rows with ``x < min_x`` are left out first. Raises ``ValueError`` naming the
    group when it has fewer than 3 distinct x, or a non-positive or non-finite x or y; ``KeyError`` when a
    column is missing.
    """
    missing = [c for c in (by, x, y) if c not in df.columns]
    if missing:
        raise KeyError(f"fit_exponents: column(s) {missing} not in the table (columns: {list(df.columns)})")
    if not 0 < level < 1:
        raise ValueError(f"fit_exponents: level must be in (0, 1), got {level}")
    data = df[[by, x, y]]
    if min_x is not None:
        data = data[pd.to_numeric(data[x], errors="coerce") >= min_x]
    if data.empty:
        where = f" with {x} >= {min_x}" if min_x is not None else ""
        raise ValueError(f"fit_exponents: no rows{where} to fit")
    rows = []
    for key, g in data.groupby(by, sort=True):
        xs = pd.to_numeric(g[x], errors="coerce").to_numpy(float)
        ys = pd.to_numeric(g[y], errors="coerce").to_numpy(float)
        bad = ~(np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0))
        if bad.any():
            raise ValueError(f"fit_exponents: {by}={key!r} has {int(bad.sum())} non-positive or non-finite "
                             f"{x}/{y} value(s); a log-log fit needs positive numbers")
        distinct = np.unique(xs).size
        if distinct < 3:
            raise ValueError(f"fit_exponents: {by}={key!r} has {distinct} distinct {x} value(s)"
                             f"{f' >= {min_x}' if min_x is not None else ''}; need at least 3 for a slope "
                             f"with an interval")
        slope, lo, hi = _fit_one(np.log(xs), np.log(ys), level)
        rows.append({by: key, "slope": slope, "ci_low": lo, "ci_high": hi, "n": int(len(xs))})
    return pd.DataFrame(rows, columns=[by, *COLUMNS])


def speedup_at(df: pd.DataFrame, baseline: str = "ebflow-ml", *, x: str = "dim", at: float | None = None,
               by: str = "method", y: str = "value") -> pd.DataFrame:
    """Mean ``y`` of ``baseline`` / mean ``y`` of each group at ``x == at`` (default: the largest x the
    baseline has); > 1 means faster than the baseline. Columns ``[by, x, "speedup"]``."""
    if baseline not in set(df[by]):
        raise ValueError(f"speedup_at: baseline {baseline!r} not in the table's {by!r} column")
    base = df[df[by] == baseline]
    if at is None:
        at = float(pd.to_numeric(base[x]).max())
    here = df[pd.to_numeric(df[x]) == at]
    ref = here.loc[here[by] == baseline, y].astype(float).mean()
    if not math.isfinite(ref):
        raise ValueError(f"speedup_at: baseline {baseline!r} has no value at {x}={at}")
    means = here.groupby(by, sort=True)[y].apply(lambda v: v.astype(float).mean())
    return pd.DataFrame({by: means.index, x: at, "speedup": ref / means.to_numpy()}).reset_index(drop=True)
