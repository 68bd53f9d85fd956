"""Section Summary: per task, the best configurations at equal compute and by final quality (mean ± 95%
t-interval over seeds), noise floors, the claims' verdicts and the commands that reproduce the report."""

from __future__ import annotations

import math

import pandas as pd

from ..doc import Block, Code, Heading, Para, Table
from ..ranking import direction_key
from ..tables import (PM_NOTE, UNRANKED, equal_compute, fmt, nll_scales, pm_text, quality_stats,
                      reference_methods, t_halfwidth)

#: the final-quality criteria of the summary, in order of preference: a likelihood (the first present), then
#: the sample and mode metrics present
SUMMARY_LIKELIHOOD = ("test_bpd", "test_nll")
SUMMARY_OTHER = ("sliced_wasserstein", "mode_weight_error")
#: how many configurations the summary names per criterion
SUMMARY_TOP = 3


def _floor_text(g: pd.DataFrame, metric: str, best: pd.Series) -> str:
    """The noise floor of ``metric`` (the ``truth`` row), noting when the best entry reaches its interval."""
    r = g[g["metric"].eq(metric) & g["method"].eq("truth") & g["status"].eq("ok")]
    if r.empty:
        return ""
    f = r.iloc[0]
    text = pm_text(f["mean"], f["std"], int(f["n_ok"]))
    h = t_halfwidth(f["std"], int(f["n_ok"]))
    if len(best) and math.isfinite(h) and direction_key(metric, [best.iloc[0]])[0] <= \
            direction_key(metric, [f["mean"]])[0] + h:
        text += "; the best reaches its interval"
    return text


def _entry(label: str, text: str, steps: str | None, worse: bool, finished: float | None = None) -> str:
    """One ranked entry of the Summary: "label (N steps): mean ± h", marked where worse than the Gaussian fit."""
    out = f"{label}{f' ({steps} steps)' if steps and f'[{steps} steps]' not in label else ''}: {text}"
    if finished is not None:
        out += f" (finished at {fmt(finished, 2)} s)"
    return out + (f" ({WORSE_TEXT})" if worse else "")


#: how a Summary entry worse than the Gaussian fit is marked
WORSE_TEXT = "worse than gaussian-fit"


def _worse(metric: str, value: float, gauss: float) -> bool:
    if not (math.isfinite(value) and math.isfinite(gauss)):
        return False
    return bool(direction_key(metric, [value])[0] > direction_key(metric, [gauss])[0])


def _reference_text(g: pd.DataFrame, method: str, metric: str) -> str:
    r = g[g["metric"].eq(metric) & g["method"].eq(method) & g["status"].eq("ok")]
    if r.empty:
        return "not run"
    f = r.iloc[0]
    return pm_text(f["mean"], f["std"], int(f["n_ok"]))


def _task_cell(task: str, dim: int, g: pd.DataFrame) -> str:
    """"checkerboard (D = 2, L = 4, 220-4500 steps)": the step budgets once, numerically sorted."""
    layers = sorted({int(v) for v in g["layers"]})
    budgets = sorted({int(v) for v in g["budget"] if int(v) > 0})
    steps = "" if not budgets else (f", {budgets[0]} steps" if len(budgets) == 1 else
                                    f", {len(budgets)} step budgets {budgets[0]}-{budgets[-1]}")
    return f"{task} (D = {dim}, L = {'/'.join(map(str, layers))}{steps})"


def summary_section(df: pd.DataFrame, claims: pd.DataFrame, commands: list[str]) -> list[Block]:
    stats = quality_stats(df)
    refs = reference_methods(df)
    scales = nll_scales(df)
    blocks: list[Block] = [Heading("Summary"), Para(
        "Per task: the best configurations at equal training compute and by final quality. Entries: "
        + PM_NOTE + "; each with its step budget where the task's budgets differ (a task's budgets are listed "
        "once, in its first row). Only configurations whose every cell finished `ok` are ranked (failed, capped "
        "and degenerate cells never are), and reference rows (" + ", ".join(f"`{m}`" for m in sorted(
            {"truth", "gaussian-fit"} | refs)) + ") are never ranked: `truth` (exact samples of the target) "
        "gives each metric's noise floor at the run's sample size, `gaussian-fit` (a full-covariance Gaussian "
        "of the training data) what every model should beat: an entry worse than it says \"" + WORSE_TEXT
        + "\". At equal compute, a configuration that finished training before C counts with its final "
        "checkpoint (\"finished at\"). Details follow in the sections below.")]
    rows = []
    eq = equal_compute(df)
    rankable = (stats["status"].eq("ok") & ~stats["metric"].isin(UNRANKED) & ~stats["method"].isin(refs)
                & stats["n_failed"].eq(0) & stats["n_capped"].eq(0) & stats["n_degenerate"].eq(0))
    from ...metrics import get_metric

    for (task, dim), g in stats.groupby(["task", "dim"], sort=True):
        first = len(rows)
        scale = scales.get(task, "")
        ok = g[rankable.reindex(g.index, fill_value=False)]
        many_budgets = ok["budget"].nunique() > 1

        def steps_of(r) -> str | None:
            return str(r["steps"]) if many_budgets else None

        e = eq[eq["task"].eq(task) & eq["dim"].eq(dim) & ~eq["method"].isin(refs) & eq["nll"].notna()]
        if len(e):
            counts = e.groupby("compute_s")["label"].nunique()
            point = max(counts[counts >= 2].index) if (counts >= 2).any() else max(counts.index)
            top = e[e["compute_s"].eq(point)].sort_values("nll").head(SUMMARY_TOP)
            steps = dict(zip(ok["label"], ok["steps"].astype(str)))
            gauss = g[g["metric"].eq("test_nll") & g["method"].eq("gaussian-fit") & g["status"].eq("ok")]
            gval = float(gauss["mean"].iloc[0]) if len(gauss) else math.nan
            rows.append([f"{task} (D = {dim})", f"test NLL ({scale}) at C = {fmt(point, 2)} s of compute",
                         *[_entry(r["label"], pm_text(r["nll"], r["nll_std"], int(r["n_cells"]), show_n=True),
                                  steps.get(r["label"]) if many_budgets else None, _worse("test_nll", r["nll"], gval),
                                  r["final_s"] if r["finished"] else None) for _, r in top.iterrows()],
                         *[""] * (SUMMARY_TOP - len(top)), _reference_text(g, "gaussian-fit", "test_nll"),
                         _floor_text(g, "test_nll", top["nll"])])
        present = [m for m in SUMMARY_LIKELIHOOD if m in set(ok["metric"])][:1] + \
            [m for m in SUMMARY_OTHER if m in set(ok["metric"])]
        for m in present:
            meta = get_metric(m)
            h = ok[ok["metric"].eq(m)]
            key = pd.Series(direction_key(m, h["mean"]), index=h.index)
            top = h.loc[key.sort_values(kind="stable").index].head(SUMMARY_TOP)
            if g["layers"].nunique() > 1:  # one configuration at several depths: say which
                top = top.assign(label=top["label"] + " (L=" + top["layers"].astype(str) + ")")
            gauss = g[g["metric"].eq(m) & g["method"].eq("gaussian-fit") & g["status"].eq("ok")]
            gval = float(gauss["mean"].iloc[0]) if len(gauss) else math.nan
            unit = scale if m == "test_nll" else meta.unit
            rows.append([f"{task} (D = {dim})", f"{meta.label} ({unit}), final",
                         *[_entry(r["label"], pm_text(r["mean"], r["std"], int(r["n_ok"]), show_n=True), steps_of(r),
                                  _worse(m, r["mean"], gval)) for _, r in top.iterrows()],
                         *[""] * (SUMMARY_TOP - len(top)), _reference_text(g, "gaussian-fit", m),
                         _floor_text(g, m, top["mean"])])
        if len(rows) > first:
            trained = g[~g["method"].isin(refs)]  # a reference's nominal budget trains nothing
            rows[first][0] = _task_cell(task, int(dim), trained if len(trained) else g)
    if rows:
        blocks.append(Table(["task", "criterion (lower is better; MMD^2: closer to 0)", "best", "second", "third",
                             "gaussian-fit (reference)", "noise floor (truth)"], rows, name="summary"))
    else:
        blocks.append(Para("No ranked quality entry in these runs."))
    if len(claims):
        counts = claims["verdict"].value_counts()
        from ...claims import RULE_CHANGED, VERDICTS

        kinds = [*VERDICTS, *([RULE_CHANGED] if counts.get(RULE_CHANGED) else [])]
        blocks.append(Para("Claims: " + ", ".join(f"{int(counts.get(v, 0))} {v}" for v in kinds) + ": " +
                           "; ".join(f"`{r['claim']}` {r['verdict']}" for _, r in claims.iterrows()) +
                           " (section Claims; `claims.csv`)."))
    blocks += [Para("How to reproduce this report (the run(s), then this report; details under Runs):"),
               Code("\n".join(commands) or "(unknown)")]
    return blocks
