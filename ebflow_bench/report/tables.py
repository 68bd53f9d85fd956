"""The report's tables, computed from the tidy results table as DataFrames (rendering is elsewhere).

Choices made here:
- A *cell* failed when any of its rows has status ``failed``. Its quality metrics are then shown as ``failed``
  (the runner writes only a failed ``test_nll`` row for such a cell), never as numbers.
- Quality entries are mean ± sample standard deviation (ddof = 1) over the ok cells of a group
  (task, dim, layers, budget, method), i.e. over seeds; one ok cell gives the value alone. When some seeds
  failed and others did not, the entry is the statistic of the ok seeds followed by "(k/n failed)".
- A metric with no ok value and no failed cell is ``n/a`` (unavailable for that method, e.g. the NLL of an EBM
  without log Z, or ``unreliable``, e.g. an NLL resting on a log Z whose importance weights have too small an
  ESS; the reason says which). Columns are the metrics that occur for the task at all.
- Metric names, labels, units and directions come from the registry (``ebflow_bench.metrics.declared``):
  the quality columns are its ``quality`` and ``diagnostic`` metrics in declaration order, labelled
  "label (unit)". "Best" follows each metric's ``direction``: lowest mean for ``lower``, highest for
  ``higher``, closest to zero for ``zero`` (the unbiased MMD^2, which may dip below zero from noise);
  ``diagnostic`` metrics (``log_z_stderr``, ``log_z_ess``, ...) are shown but not ranked.
- Step time is analysed per task (a step's cost depends on the task's batch and model, not only on D and L):
  entries average the ok ``step_time`` rows of (task, method, dim, layers) over seeds, including cells that
  failed later (the steps that ran were timed). An exponent in D is fitted for each (task, L) with at least two
  D values, using the methods measured at two or more D; likewise in L. A fit over fewer than
  ``MIN_FIT_POINTS`` = 5 distinct values is not a result: :func:`scaling_fits` returns it marked
  ``insufficient`` with no slope or interval (with 3 points a t-interval on 1 degree of freedom spans
  several units of exponent).
- Speed-ups (:func:`speedup_table`) use only cells that finished ``ok``: a failed or degenerate cell (its
  single warm-up step, or a diverged model) never enters one.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..metrics import declared
from ..scaling import MIN_FIT_POINTS

KEYS = ["task", "dim", "layers", "budget", "method"]
_SHOWN = [m for m in declared() if m.group in ("quality", "diagnostic")]
#: the quality table's metrics, in the registry's declaration order
QUALITY_METRICS = tuple(m.name for m in _SHOWN)
#: shown but not ranked (the registry's ``diagnostic`` group)
UNRANKED = frozenset(m.name for m in _SHOWN if m.group == "diagnostic")
#: unbiased estimates of a non-negative quantity, ranked by their distance to zero (direction ``zero``)
SIGNED_ESTIMATES = tuple(m.name for m in _SHOWN if m.direction == "zero")
#: ranked by the highest mean (direction ``higher``)
HIGHER_IS_BETTER = frozenset(m.name for m in _SHOWN if m.direction == "higher")
#: column titles: "label (unit)" from the registry
METRIC_LABELS = {m.name: f"{m.label} ({m.unit})" for m in _SHOWN}
BASELINE = "ebflow-ml"
#: cell statuses that keep a cell out of speed-ups (``degenerate``: finished with a diverged or collapsed model)
BAD_CELL_STATUSES = ("failed", "degenerate")


def fmt(x: float, digits: int = 4) -> str:
    """A number with ``digits`` significant digits ('n/a' for NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def _keyed(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with integer dim/layers/budget/seed (a missing one becomes -1) so that keys group and compare."""
    out = df.copy()
    for c in ("dim", "layers", "budget", "seed"):
        out[c] = pd.to_numeric(out[c], errors="coerce").fillna(-1).astype(int)
    return out


def cell_status(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (run_id, cell_id): its keys, seed, ``failed`` flag and first failure reason."""
    df = _keyed(df)
    failed = df["status"].eq("failed")
    if "cell_status" in df.columns and df["cell_status"].isin(["ok", "failed"]).all():
        failed &= df["cell_status"].eq("failed")  # a failed metric of a finished cell is not a failed cell
    reasons = df.loc[failed].groupby(["run_id", "cell_id"], sort=False)["reason"].first()
    cells = df[["run_id", "cell_id", *KEYS, "seed"]].drop_duplicates(["run_id", "cell_id"])
    cells = cells.set_index(["run_id", "cell_id"])
    cells["failed"] = cells.index.isin(reasons.index)
    cells["reason"] = reasons.reindex(cells.index).fillna("").astype(str)
    return cells.reset_index()


def quality_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Numbers behind the quality table: per group (``KEYS``) and metric, mean, std, n_ok, n_failed, n_cells,
    status (``ok``, ``failed`` or ``n/a``) and reason (why failed / unavailable)."""
    cells = cell_status(df)
    q = _keyed(df[df["metric"].isin(QUALITY_METRICS)])
    q = q.merge(cells[["run_id", "cell_id", "failed"]], on=["run_id", "cell_id"], how="left")
    ok = q[q["status"].eq("ok") & q["value"].notna() & ~q["failed"]]
    stats = ok.groupby([*KEYS, "metric"])["value"].agg(["mean", "std", "count"])
    # ``unreliable`` rows (e.g. an NLL on a log Z with too small an ESS) are not results either: n/a, with why
    na = q[q["status"].isin(["unavailable", "unreliable"])]
    na_reasons = (na.assign(reason=na["reason"].where(na["status"].ne("unreliable"), "unreliable: " + na["reason"]))
                  .groupby([*KEYS, "metric"])["reason"].agg(lambda s: "; ".join(sorted(set(s) - {""}))))
    metric_failed = (q[q["status"].eq("failed") & ~q["failed"]].groupby([*KEYS, "metric"])["reason"]
                     .agg(lambda s: "; ".join(sorted(set(s) - {""}))))
    metrics_of_task = q.groupby("task")["metric"].agg(lambda s: [m for m in QUALITY_METRICS if m in set(s)])

    out = []
    for key, g in cells.groupby(KEYS, sort=True):
        n_failed, n_cells = int(g["failed"].sum()), len(g)
        fail_reasons = "; ".join(sorted(set(g.loc[g["failed"], "reason"])))
        for m in metrics_of_task.get(key[0], []):
            row = {**dict(zip(KEYS, key)), "metric": m, "mean": np.nan, "std": np.nan, "n_ok": 0,
                   "n_failed": n_failed, "n_cells": n_cells}
            if (*key, m) in stats.index:
                st = stats.loc[(*key, m)]
                row.update(status="ok", mean=float(st["mean"]), std=float(st["std"]), n_ok=int(st["count"]),
                           reason=fail_reasons)
            elif n_failed:
                row.update(status="failed", reason=fail_reasons)
            elif (*key, m) in metric_failed.index:  # the cells finished, this metric could not be computed
                row.update(status="failed", reason=f"{m}: {metric_failed[(*key, m)]}")
            else:
                row.update(status="n/a", reason=na_reasons.get((*key, m), ""))
            out.append(row)
    cols = [*KEYS, "metric", "mean", "std", "n_ok", "n_failed", "n_cells", "status", "reason"]
    return pd.DataFrame(out, columns=cols)


def _entry(r: pd.Series) -> str:
    if r["status"] == "failed":
        return "failed"
    if r["status"] != "ok":
        return "n/a"
    text = fmt(r["mean"]) if math.isnan(r["std"]) else f"{fmt(r['mean'])} ± {fmt(r['std'], 2)}"
    if r["n_failed"]:
        text += f" ({r['n_failed']}/{r['n_cells']} failed)"
    return text


def best_mask(stats: pd.DataFrame) -> pd.Series:
    """True where a row's mean is the best among ok entries of the same task, dim and metric, in the metric's
    registered direction: lowest, highest, or (MMD^2, whose unbiased estimate can fall below zero) closest to
    zero."""
    ok = stats["status"].eq("ok") & ~stats["metric"].isin(UNRANKED)
    score = stats["mean"].where(~stats["metric"].isin(SIGNED_ESTIMATES), stats["mean"].abs())
    score = score.where(~stats["metric"].isin(HIGHER_IS_BETTER), -score)
    lowest = score[ok].groupby([stats["task"], stats["dim"], stats["metric"]]).transform("min")
    return ok & score.eq(lowest.reindex(stats.index))


def quality_table(df: pd.DataFrame, *, mark_best: bool = False) -> pd.DataFrame:
    """The quality table: one row per (task, dim, layers, budget, method), one text column per quality metric
    of the run ("mean ± std", "failed" or "n/a"; "n/a" too where the metric does not apply to the task).
    ``mark_best`` wraps the best entry of each task and metric in ``**...**``."""
    stats = quality_stats(df)
    if stats.empty:
        return pd.DataFrame(columns=KEYS)
    text = stats.apply(_entry, axis=1)
    if mark_best:
        text = text.where(~best_mask(stats), "**" + text + "**")
    wide = stats.assign(text=text).set_index([*KEYS, "metric"])["text"].unstack("metric")
    wide = wide.reindex(columns=[m for m in QUALITY_METRICS if m in wide.columns]).fillna("n/a")
    wide.columns.name = None
    return wide.reset_index()


def failures(df: pd.DataFrame) -> pd.DataFrame:
    """Every failed cell with its keys, seed and reason."""
    cells = cell_status(df)
    cols = ["run_id", "cell_id", "method", "task", "dim", "layers", "seed", "budget", "reason"]
    return cells.loc[cells["failed"], cols].sort_values(["task", "method", "dim", "seed"]).reset_index(drop=True)


def step_times(df: pd.DataFrame) -> pd.DataFrame:
    """Ok, finite ``step_time`` rows (all tidy columns, ``dim`` and ``layers`` as floats for plotting)."""
    s = df[df["metric"].eq("step_time") & df["status"].eq("ok") & df["value"].notna()].copy()
    s = s[np.isfinite(s["value"].astype(float)) & (s["value"] > 0) & s["dim"].notna() & s["layers"].notna()]
    return s.assign(dim=s["dim"].astype(float), layers=s["layers"].astype(float), value=s["value"].astype(float))


def scaling_panels(steps: pd.DataFrame, x: str) -> list[tuple[str, float, pd.DataFrame]]:
    """(task, fixed value of the other variable, rows) for every task and fixed L (``x="dim"``) or fixed D
    (``x="layers"``) with at least two values of ``x``, keeping the methods measured at two or more of them."""
    other = "layers" if x == "dim" else "dim"
    out = []
    for (task, v), g in steps.groupby(["task", other], sort=True):
        g = g[g.groupby("method")[x].transform("nunique") >= 2]
        if len(g):
            out.append((task, v, g))
    return out


def bad_cells(df: pd.DataFrame) -> set[tuple[str, str]]:
    """(run_id, cell_id) of every failed or degenerate cell: a row or the cell's ``cell_status`` in
    ``BAD_CELL_STATUSES``. Empty when the table has no cell ids (e.g. asv rows)."""
    if not {"run_id", "cell_id"} <= set(df.columns):
        return set()
    bad = df["status"].isin(BAD_CELL_STATUSES)
    if "cell_status" in df.columns:
        bad |= df["cell_status"].isin(BAD_CELL_STATUSES)
    return set(map(tuple, df.loc[bad, ["run_id", "cell_id"]].astype(str).to_numpy()))


def speedup_table(df: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Per task, layers value, method and D: mean step time of ``baseline`` / mean step time of the method
    (> 1 means faster than the baseline), over cells that finished ok (failed or degenerate cells,
    :func:`bad_cells`, are left out). Columns: task, layers, method, then one per D ("D=64", ...); NaN where
    either mean is missing. Empty when the baseline has no step time."""
    bad = bad_cells(df)
    if bad:
        ids = list(zip(df["run_id"].astype(str), df["cell_id"].astype(str)))
        df = df[[i not in bad for i in ids]]
    s = step_times(df)
    if s.empty or baseline not in set(s["method"]):
        return pd.DataFrame(columns=["task", "layers", "method"])
    mean = s.groupby(["task", "layers", "method", "dim"])["value"].mean()
    base = mean.xs(baseline, level="method")
    ratio = base.reindex(mean.droplevel("method").index).to_numpy() / mean.to_numpy()
    out = pd.Series(ratio, index=mean.index).unstack("dim")
    out.columns = [f"D={int(d)}" for d in out.columns]
    out = out.reset_index().assign(layers=lambda t: t["layers"].astype(int))
    return out[out.groupby(["task", "layers"])["method"].transform(lambda m: (m == baseline).any())] \
        .reset_index(drop=True)


def nll_at_time(df: pd.DataFrame) -> pd.DataFrame:
    """Ok ``nll_at_time`` rows with finite value and elapsed time, from cells that did not fail."""
    cells = cell_status(df)
    bad = set(cells.loc[cells["failed"], "cell_id"])
    t = df[df["metric"].eq("nll_at_time") & df["status"].eq("ok") & df["value"].notna() & df["elapsed_s"].notna()
           & ~df["cell_id"].isin(bad)]
    return t.assign(value=t["value"].astype(float), elapsed_s=t["elapsed_s"].astype(float))


def scaling_fits(panels: list[tuple[str, float, pd.DataFrame]], x: str,
                 min_points: int = MIN_FIT_POINTS) -> pd.DataFrame:
    """Exponents of step time against ``x`` per method in each panel of :func:`scaling_panels`
    (``ebflow_bench.scaling.fit_exponents``). Columns: task, fixed, method, slope, ci_low, ci_high, n (points),
    n_x (distinct x), status (``ok``, ``insufficient``: fewer than ``min_points`` distinct x, slope and
    interval NaN, not a result; ``failed``: the fit raised) and reason."""
    from ..scaling import fit_exponents

    cols = ["task", "fixed", "method", "slope", "ci_low", "ci_high", "n", "n_x", "status", "reason"]
    rows = []
    for task, v, g in panels:
        for method, gm in g.groupby("method", sort=True):
            n_x = int(gm[x].nunique())
            row = {"task": task, "fixed": v, "method": method, "slope": math.nan, "ci_low": math.nan,
                   "ci_high": math.nan, "n": len(gm), "n_x": n_x, "status": "ok", "reason": ""}
            if n_x < min_points:
                row.update(status="insufficient", reason=f"{n_x} distinct {x} values < {min_points}: not fitted")
            else:
                try:
                    r = fit_exponents(gm, by="method", x=x).iloc[0]
                    row.update(slope=float(r["slope"]), ci_low=float(r["ci_low"]), ci_high=float(r["ci_high"]),
                               n=int(r["n"]))
                except ValueError as e:
                    row.update(status="failed", reason=str(e))
            rows.append(row)
    return pd.DataFrame(rows, columns=cols)
