"""Sections Quality per task and Score matching against maximum likelihood."""

from __future__ import annotations

import pandas as pd

from ..doc import Block, Bullets, Heading, Para, Table
from ..tables import METRIC_LABELS, PM_NOTE, PM_SHORT, fmt, nll_scales, quality_stats, quality_table


def quality_section(df: pd.DataFrame) -> list[Block]:
    blocks: list[Block] = [Heading("Quality per task"),
                           Para("One row per configuration (cells alike in everything but their seeds); where one "
                                "method appears with several configurations, its label names the hyperparameters "
                                "that differ. Entries: mean; " + PM_NOTE + ". NLLs are in nats per sample on the scale "
                                "named in each table's heading (bits/dim: of the integer pixel values). "
                                "Lower is better in every column (MMD^2, an unbiased estimate that can dip below "
                                "zero: closer to zero); the best per task and column is **bold** (log Z stderr is "
                                "not ranked). \"failed\": every seed of the configuration failed; \"n/a\": the "
                                "metric is not available for the method; \"(capped)\": stopped by the safety time "
                                "cap before its step budget, \"(degenerate)\": the model was diagnosed degenerate: "
                                "such entries are shown but never ranked. \"steps\" are the steps actually done. "
                                "Reasons are listed under each table.")]
    stats = quality_stats(df)
    if stats.empty:
        return blocks + [Para("No quality metrics in these runs.")]
    text = quality_table(df, mark_best=True)
    scales = nll_scales(df)
    for (task, dim), g in text.groupby(["task", "dim"], sort=True):
        metrics = list(stats.loc[stats["task"].eq(task) & stats["dim"].eq(dim), "metric"].unique())
        metrics = [m for m in METRIC_LABELS if m in metrics]
        multi = g["layers"].nunique() > 1 or g["steps"].nunique() > 1
        if multi:  # steps as numbers, not strings ("220" after "1900")
            g = g.assign(_n=pd.to_numeric(g["steps"].astype(str).str.split("-").str[0], errors="coerce")) \
                .sort_values(["method", "layers", "_n", "label"], kind="stable")
        head = ["method", *(["L", "steps"] if multi else []),
                *["test NLL (nats)" if m == "test_nll" else METRIC_LABELS[m] for m in metrics]]
        rows = [[r["label"], *([str(r["layers"]), str(r["steps"])] if multi else []), *[r[m] for m in metrics]]
                for _, r in g.iterrows()]
        one = g.iloc[0]
        blocks += [Heading(f"{task} (D = {dim})" + ("" if multi else f", L = {one['layers']}, "
                                                                      f"{one['steps']} steps"), 3)]
        blocks.append(Para((f"NLL scale: {scales.get(task, '')}. " if "test_nll" in metrics else "") + PM_SHORT
                           + "."))
        blocks.append(Table(head, rows))
        s = stats[stats["task"].eq(task) & stats["dim"].eq(dim) & stats["reason"].ne("")]
        notes = sorted({f"{r['label']}: {r['reason']}" for _, r in s.iterrows()
                        if r["status"] == "failed" or r["n_failed"] or r["n_capped"] or r["n_degenerate"]}) + \
            sorted({f"{r['label']}, {METRIC_LABELS[r['metric']]} n/a: {r['reason']}" for _, r in s.iterrows()
                    if r["status"] == "n/a"})
        if notes:
            blocks.append(Bullets(notes))
    return blocks




def sm_vs_ml_section(df: pd.DataFrame) -> list[Block]:
    """EBFlow's objectives against its maximum likelihood, with a diagnosis where one ends > 10% behind."""
    from ..tables import SM_GAP, sm_vs_ml

    t = sm_vs_ml(df)
    if t.empty:
        return []
    rows = [[r.task, str(r.dim), str(r.layers), f"`{r.method}`", str(r.steps), fmt(r.value, 4), fmt(r.ml_value, 4),
             r.metric, f"{100 * r.gap:+.1f}%" if r.metric == "test_bpd" or r.ml_value > 0 else f"{r.gap:+.3g}/dim",
             "yes" if r.within else "no", r.diagnosis] for r in t.itertuples()]
    return [Heading("Score matching against maximum likelihood"), Para(
        f"Each EBFlow objective against `ebflow-ml` on the same task, D and L (means over seeds, each at its own "
        f"step budget: see the equal-compute table for equal compute). \"within\" means at most "
        f"{100 * SM_GAP:.0f}% behind (bits/dim where the task has it, else the test NLL; per dimension where ml's "
        "NLL is negative) and not degenerate. Where an objective ends further behind, the diagnosis is read from "
        "the table's own evidence (`report.tables.sm_vs_ml`)."),
        Table(["task", "D", "L", "method", "steps", "value", "ml", "metric", "gap", "within", "diagnosis"], rows,
              name="sm-vs-ml")]
