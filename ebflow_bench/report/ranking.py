"""Who wins where, and at what cost: the numbers behind the report's answer at a glance (and the Summary's
reference columns), as DataFrames.

- The task column is the task *with its data* (:func:`identify_tasks`: a user's file is ``file: name @ hash``),
  so different data never share a table, a rank or a figure panel.
- Each (task, D) is judged on one criterion (:func:`criteria`): its likelihood (bits/dim where the task has it,
  else the test NLL) when some ranked configuration has it, else the first sample or mode metric present
  (:data:`CRITERIA` order).
- :func:`final_points`: every configuration's final value on its task's criterion (mean, sample std and
  95% t-interval half-width over seeds) at its mean training compute (the cells' process CPU seconds), with its
  status: ``ok`` (every cell finished ok: ranked), ``degenerate``/``capped``/``failed`` (some cell was: shown,
  never ranked), ``n/a`` (the metric is not available for the method) and ``reference`` (``truth``,
  ``gaussian-fit``: shown as lines, never ranked). ``rank`` is 1 for the best ranked configuration;
  ``worse_than_gaussian`` marks a ranked value worse than the ``gaussian-fit`` reference of the same task and
  metric (in the metric's direction); ``pareto`` marks the ranked configurations no other ranked one beats in
  both compute and quality.
- :func:`rank_table`: configurations x tasks, each cell the rank or the status.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .tables import FLAGS, UNRANKED, quality_stats, reference_methods, t_halfwidth

#: the criterion of a task, in order of preference: a likelihood, then sample and mode metrics
CRITERIA = ("test_bpd", "test_nll", "sliced_wasserstein", "mode_weight_error")
#: short names of the criteria for compact headers
SHORT = {"test_bpd": "bits/dim", "test_nll": "NLL", "sliced_wasserstein": "sliced W2",
         "mode_weight_error": "mode-weight MSE"}
GAUSSIAN = "gaussian-fit"
TRUTH = "truth"
#: the marker of a value worse than the Gaussian fit, in compact tables (legend: :data:`WORSE_NOTE`)
WORSE_MARK = "†"
WORSE_NOTE = (f"{WORSE_MARK}: worse than the `{GAUSSIAN}` reference (a full-covariance Gaussian fitted to the "
              "training data) on the same task and criterion")


def identify_tasks(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``task`` replaced by the task with its data (``task_id`` where present, e.g.
    ``file: wine_a @ 1a2b3c4d``) and the registered name kept in ``task_name``."""
    ids = df["task_id"] if "task_id" in df.columns else pd.Series("", index=df.index)
    ids = ids.astype(object).where(ids.notna() & ids.astype(str).ne(""), df["task"]).astype(str)
    return df.assign(task_name=df["task"].astype(str), task=ids)


def direction_key(metric: str, values: pd.Series | np.ndarray) -> np.ndarray:
    """Values turned into "lower is better" keys in the metric's registered direction."""
    from ..metrics import get_metric

    v = np.asarray(values, dtype=float)
    d = get_metric(metric).direction
    return np.abs(v) if d == "zero" else (-v if d == "higher" else v)


def criteria(stats: pd.DataFrame) -> dict[tuple[str, int], str]:
    """(task, dim) -> the criterion it is judged on (module docstring)."""
    refs = set(stats["method"]) & (reference_methods(stats) | {TRUTH, GAUSSIAN})
    ok = stats[stats["status"].eq("ok") & ~stats["method"].isin(refs) & ~stats["metric"].isin(UNRANKED)]
    out = {}
    for (task, dim), g in ok.groupby(["task", "dim"], sort=True):
        present = set(g["metric"])
        m = next((c for c in CRITERIA if c in present), None)
        if m is not None:
            out[(task, int(dim))] = m
    return out


def _cell_compute(df: pd.DataFrame) -> pd.Series:
    """config_key -> mean training compute seconds of its cells (the totals on non-checkpoint rows)."""
    rows = df[~df["metric"].eq("nll_at_time")].drop_duplicates(["run_id", "cell_id"])
    return rows.groupby(["task", "dim", "config_key"])["compute_s"].mean()


def final_points(df: pd.DataFrame, stats: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per configuration and task: task, dim, layers, method, label, config_key, steps, metric (the task's
    criterion), mean, std, half (95% t half-width), n, compute_s, status, rank, worse_than_gaussian, gaussian
    (the reference's value), pareto. See the module docstring."""
    stats = quality_stats(df) if stats is None else stats
    cols = ["task", "dim", "layers", "method", "label", "config_key", "steps", "metric", "mean", "std", "half", "n",
            "compute_s", "status", "rank", "worse_than_gaussian", "gaussian", "pareto"]
    if stats.empty:
        return pd.DataFrame(columns=cols)
    crit = criteria(stats)
    refs = reference_methods(stats) | {TRUTH, GAUSSIAN}
    compute = _cell_compute(df.assign(dim=pd.to_numeric(df["dim"], errors="coerce").fillna(-1).astype(int)))
    out = []
    for (task, dim), metric in crit.items():
        g = stats[stats["task"].eq(task) & stats["dim"].eq(dim) & stats["metric"].eq(metric)]
        gauss = g[g["method"].eq(GAUSSIAN) & g["status"].eq("ok")]
        gval = float(gauss["mean"].iloc[0]) if len(gauss) else math.nan
        rows = []
        for _, r in g.iterrows():
            if r["method"] in refs:
                status = "reference"
            elif r["status"] != "ok":
                status = "failed" if r["status"] == "failed" else "n/a"
            else:
                flags = [f for f in ("failed", *FLAGS) if int(r.get(f"n_{f}", 0) or 0)]
                status = flags[0] if flags else "ok"
            rows.append({"task": task, "dim": int(dim), "layers": int(r["layers"]), "method": r["method"],
                         "label": r["label"], "config_key": r["config_key"], "steps": r["steps"], "metric": metric,
                         "mean": r["mean"], "std": r["std"], "half": t_halfwidth(r["std"], int(r["n_ok"])),
                         "n": int(r["n_ok"]), "compute_s": float(compute.get((task, int(dim), r["config_key"]),
                                                                              math.nan)),
                         "status": status, "rank": math.nan, "worse_than_gaussian": False, "gaussian": gval,
                         "pareto": False})
        t = pd.DataFrame(rows, columns=cols)
        ranked = t["status"].eq("ok") & t["mean"].notna()
        if ranked.any():
            key = pd.Series(direction_key(metric, t["mean"]), index=t.index)
            t.loc[ranked, "rank"] = key[ranked].rank(method="min").astype(int)
            if not math.isnan(gval):
                gkey = float(direction_key(metric, [gval])[0])
                t.loc[ranked, "worse_than_gaussian"] = key[ranked] > gkey
            t.loc[ranked, "pareto"] = pareto_mask(t.loc[ranked, "compute_s"].to_numpy(float), key[ranked].to_numpy())
        out.append(t)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


def pareto_mask(cost: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """True where no other point is at most as costly and at most as bad, and strictly better in one of them
    (NaN cost: compared on loss alone, never dominating on cost)."""
    cost = np.where(np.isfinite(cost), cost, np.inf)
    out = np.ones(len(cost), dtype=bool)
    for i in range(len(cost)):
        dominated = (cost <= cost[i]) & (loss <= loss[i]) & ((cost < cost[i]) | (loss < loss[i]))
        out[i] = not dominated.any()
    return out


def place_of(value: float, metric: str, ranked: pd.Series) -> int:
    """The place a reference value would take among the ranked values (1 = better than all of them)."""
    key = float(direction_key(metric, [value])[0])
    return int((direction_key(metric, ranked.to_numpy(float)) < key).sum()) + 1


def rank_entry(r: pd.Series, points: pd.DataFrame) -> str:
    """A rank table cell: the rank (with :data:`WORSE_MARK` where worse than the Gaussian fit), the status of an
    unranked configuration, or, for a reference row, the place its value would take, in parentheses."""
    if r["status"] == "ok" and not math.isnan(r["rank"]):
        return f"{int(r['rank'])}" + (f" {WORSE_MARK}" if r["worse_than_gaussian"] else "")
    if r["status"] == "reference":
        same = points[points["task"].eq(r["task"]) & points["dim"].eq(r["dim"]) & points["status"].eq("ok")]
        if math.isnan(r["mean"]) or same.empty:
            return "ref"
        return f"ref ({place_of(r['mean'], r['metric'], same['mean'])})"
    return str(r["status"])


def task_column(task: str, dim: int, metric: str, n_dims: int = 1) -> str:
    """A compact column title: ``checkerboard: NLL`` (with ``D = ..`` where the task runs at several D)."""
    return f"{task}{f' (D = {dim})' if n_dims > 1 else ''}: {SHORT.get(metric, metric)}"


def rank_table(points: pd.DataFrame) -> pd.DataFrame:
    """Rows: configurations (label), ranked ones first by their mean relative rank, references last; columns: one per (task, D), titled by
    :func:`task_column`; cells: :func:`rank_entry`, "" where the configuration did not run on the task."""
    if points.empty:
        return pd.DataFrame(columns=["method"])
    n_dims = points.groupby("task")["dim"].nunique()
    cols = {}
    for (task, dim), g in points.groupby(["task", "dim"], sort=True):
        title = task_column(task, int(dim), g["metric"].iloc[0], int(n_dims[task]))
        cols[title] = {r["label"]: rank_entry(r, points) for _, r in g.iterrows()}
    table = pd.DataFrame(cols).fillna("")
    refs = set(points.loc[points["status"].eq("reference"), "label"])
    ok = points[points["status"].eq("ok")]
    # rows by mean relative rank (rank / configurations ranked on the task: 1st of 3 and 1st of 12 alike)
    n_ranked = ok.groupby(["task", "dim"])["rank"].transform("count")
    score = (ok["rank"] / n_ranked).groupby(ok["label"]).mean()
    order = sorted(table.index, key=lambda lab: (lab in refs, score.get(lab, math.inf), lab))
    table = table.loc[order]
    table.index.name = "method"
    return table.reset_index()
