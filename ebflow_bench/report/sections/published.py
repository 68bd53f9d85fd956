"""Section Published numbers beside ours (``ebflow_bench.published``)."""

from __future__ import annotations

import math

import pandas as pd

from ..doc import Block, Bullets, Heading, Para, Table
from ..tables import PM_NOTE, comparable, pm_text, quality_stats, step_times


def _ours(df: pd.DataFrame, stats: pd.DataFrame, table, method: str, metric: str) -> str:
    """Our entry for ``method`` beside a published row: the first of the table's tasks in the run, the group
    (dim, layers, budget) with the most ok cells, then the largest budget."""
    present = [t for t in table.tasks if t in set(stats["task"])]
    if not present:
        return ""
    task = present[0]
    if metric == "batches_per_s":
        s = step_times(comparable(df))
        s = s[s["task"].eq(task) & s["method"].eq(method)]
        return f"{1.0 / s['value'].mean():.3g}" if len(s) else ""
    # "test_nll_discrete": the NLL of the integer data (the papers' 0..256 scale), D ln 2 x bits/dim
    source = "test_bpd" if metric == "test_nll_discrete" else metric
    s = stats[stats["task"].eq(task) & stats["method"].eq(method) & stats["metric"].eq(source)]
    if s.empty:
        return ""
    r = s.sort_values(["n_ok", "budget"], ascending=False).iloc[0]
    if r["status"] != "ok":
        return str(r["status"])
    flags = "".join(f" ({k}/{r['n_cells']} {f})" for f in ("failed", "capped", "degenerate")
                    for k in [int(r.get(f"n_{f}", 0))] if k)
    scale = float(r["dim"]) * math.log(2.0) if metric == "test_nll_discrete" else 1.0
    return pm_text(r["mean"] * scale, r["std"] * scale, int(r["n_ok"])) + flags


def _published_value(v) -> str:
    if v is None:
        return ""
    mean, ci = v
    return f"{mean:g}" if ci is None else f"{mean:g} ± {ci:g}"


def published_section(df: pd.DataFrame) -> list[Block]:
    from ...published import TABLES, tables_for

    blocks: list[Block] = [Heading("Published numbers beside ours")]
    stats = quality_stats(df)
    run_tasks = set(df["task"])
    found = tables_for(run_tasks)
    missing = [t for t in TABLES if t not in found]
    if missing:
        blocks.append(Para("Not shown, as no run here has their task: " + "; ".join(
            f"{t.title} (task {' or '.join(f'`{x}`' for x in t.tasks)})" for t in missing)
            + ". The `paper` preset runs them."))
    if not found:
        return blocks + [Para("No task of these runs matches a published table.")]
    for t in found:
        our_methods = set(df["method"])
        head = ["published row", *t.columns, *[label for label, _ in t.ours]]
        rows = []
        for label, values in t.rows.items():
            m = t.method_map.get(label)
            ours = [_ours(df, stats, t, m, metric) if m in our_methods else "" for _, metric in t.ours]
            rows.append([label + (f" (ours: `{m}`)" if m in our_methods else ""),
                         *[_published_value(v) for v in values], *ours])
        blocks += [Heading(t.title, 3), Para(f"Source: {t.source}. Metric: {t.metric}. Empty cells: not given "
                                             f"by the paper, or not measured by these runs. Our entries: mean; "
                                             f"{PM_NOTE}; the published ± is the paper's own (its source says "
                                             "which)."),
                   Table(head, rows), Bullets(list(t.differences))]
    return blocks
