"""Section At a glance (the report's first): per task family, one figure of quality against training compute
(final points with their intervals, the Pareto front, the reference rows as lines), and one compact table of every
configuration's rank per task with its status (``ranking``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import figures
from ..doc import Block, Figure, Heading, Para, Table
from ..ranking import SHORT, WORSE_NOTE, final_points, rank_table
from ..tables import nll_scales, quality_stats

#: the task families of the figures, by the module that defines a task (``tasks.task_kind``)
FAMILY_TITLES = {"toys": "2-D toys", "gaussians": "Gaussians", "images": "images", "tabular": "tabular data"}
#: y-axis labels of the criteria
AXIS = {"test_nll": "test NLL (nats per sample)", "test_bpd": "test bits/dim (lower is better)",
        "sliced_wasserstein": "sliced W2 to the test set (data units)", "mode_weight_error": "mode-weight MSE"}


def family_of(task_name: str) -> str:
    from ...tasks import task_kind

    kind = task_kind(task_name)
    return FAMILY_TITLES.get(kind, kind or "other")


def _unranked_note(points: pd.DataFrame, panels: list[tuple[str, int]]) -> str:
    """" Not drawn: nflows-maf on iris (degenerate), ..." for the configurations of these panels that are not
    ranked (references aside)."""
    keys = set(panels)
    bad = points[~points["status"].isin(["ok", "reference"])]
    bad = bad[[(t, int(d)) in keys for t, d in zip(bad["task"], bad["dim"])]]
    if bad.empty:
        return ""
    return " Not drawn: " + "; ".join(f"{r['label']} on {r['task']}" + (f" (D = {r['dim']})" if len(
        {d for t, d in panels if t == r["task"]}) > 1 else "") + f" ({r['status']})" for _, r in bad.iterrows()) + "."


def glance_section(df: pd.DataFrame, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("At a glance"), Para(
        "Which method wins where, and at what cost. Each task is judged on one criterion: its likelihood "
        "(bits/dim where the task has it, else the test NLL), or, where no ranked method has one, the sliced "
        "2-Wasserstein distance of the samples. The figures plot each configuration's final value (mean over "
        "seeds; error bar: the 95% t-interval of the mean over seeds, t(0.975, n-1) s / sqrt(n), none for one "
        "seed) against its training compute (process CPU seconds, mean over "
        "seeds); the configurations of one method (several step budgets) are joined; the dashed black step line "
        "and the rings mark the Pareto front (no other ranked configuration is both cheaper and better); the "
        "horizontal lines are the reference rows: `truth` (exact samples of the target: the noise floor) and "
        "`gaussian-fit` (a Gaussian fitted to the training data: what every model should beat). Degenerate, "
        "capped and failed configurations are not drawn and never ranked: the table below names them.")]
    stats = quality_stats(df)
    points = final_points(df, stats)
    if points.empty:
        return blocks + [Para("No ranked quality entry in these runs.")]
    names = dict(zip(df["task"], df["task_name"] if "task_name" in df.columns else df["task"]))
    scales = nll_scales(df)
    keys = sorted({(t, int(d)) for t, d in zip(points["task"], points["dim"])})
    by_family: dict[str, list[tuple[str, int]]] = {}
    for key in keys:
        by_family.setdefault(family_of(names.get(key[0], key[0])), []).append(key)
    n_dims = points.groupby("task")["dim"].nunique()
    for family, panels in by_family.items():
        titles, ylabels = {}, {}
        for task, dim in panels:
            g = points[points["task"].eq(task) & points["dim"].eq(dim)]
            metric = g["metric"].iloc[0]
            layers = "/".join(str(v) for v in sorted(set(g["layers"])))
            titles[(task, dim)] = f"{task}, D = {dim}, L = {layers}"
            ylabels[(task, dim)] = AXIS.get(metric, metric)
        slug = "".join(ch if ch.isalnum() else "_" for ch in family).strip("_")
        path = figures.glance(points, panels, titles, ylabels, f"{family}: quality against training compute",
                              fig_dir / f"glance_{slug}.png")
        nll_tasks = [t for t, d in panels if points.loc[points["task"].eq(t), "metric"].iloc[0] == "test_nll"]
        found = {t: scales[t] for t in dict.fromkeys(nll_tasks) if t in scales}
        scale_text = (next(iter(found.values())) + " (every task)" if len(set(found.values())) == 1 else
                      "; ".join(f"{t}: {s}" for t, s in found.items()))
        blocks.append(Figure(path, f"{family}: final quality against training compute per task (lower is "
                                   f"better; error bars: 95% t-intervals over seeds)."
                                   + (f" NLL scale: {scale_text}." if scale_text else "")
                                   + _unranked_note(points, panels)))
    table = rank_table(points)
    crit = "; ".join(f"{t}" + (f" (D = {d})" if n_dims[t] > 1 else "") + f": {SHORT.get(m, m)}"
                     for (t, d), m in points.groupby(["task", "dim"])["metric"].first().items())
    blocks += [Heading("Rank per task", 3), Para(
        "Rank of each configuration on its task's criterion (1 = best; ties share a rank) among the "
        "configurations whose every cell finished `ok`; a status in place of a rank: `degenerate`, `capped`, "
        "`failed` (some cell was: never ranked), `n/a` (the metric does not exist for the method, e.g. the NLL "
        "of an EBM without log Z). Reference rows show `ref` and, in parentheses, the place their value would "
        "take among the ranked ones. " + WORSE_NOTE + ". Empty: not run on that task. Criteria: " + crit + ". "
        "Rows: ranked configurations by their mean rank, then the references."),
        Table([str(c) for c in table.columns], [[str(v) for v in r] for r in table.itertuples(index=False)],
              name="ranks")]
    return blocks
