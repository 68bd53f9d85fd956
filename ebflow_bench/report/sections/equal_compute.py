"""Section Quality at equal compute: test NLL interpolated at common compute points, and the curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import figures
from ..doc import Block, Figure, Heading, Para, Table
from ..tables import PM_NOTE, PM_SHORT, equal_compute, fmt, nll_at_time, nll_scales, pm_text, steps_text


def equal_compute_section(df: pd.DataFrame, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Quality at equal compute")]
    curves = nll_at_time(df)
    if curves.empty:
        return blocks + [Para("No `nll_at_time` checkpoints in these runs (or none with an available NLL).")]
    table = equal_compute(df)
    blocks.append(Para("Test NLL (nats per sample, on the checkpoint test points; the scale of each task in its "
                       "heading) of each configuration after C seconds of training compute (process CPU time; CUDA "
                       "time on a GPU), interpolated linearly between its checkpoints and averaged over its ok "
                       "cells. A configuration that finished training before C counts there with its final "
                       "checkpoint (its model no longer changes), marked \"final\"; blank: C before the first "
                       "checkpoint of some cell of the configuration (no extrapolation backwards). Entries: mean; "
                       + PM_NOTE + ". Lower is better; capped, degenerate and failed cells are left out."))
    scales = nll_scales(df)
    for (task, dim), g in table.groupby(["task", "dim"], sort=True):
        points = sorted(g["compute_s"].unique())
        cells = g.set_index(["label", "compute_s"])
        labels = sorted(set(g["label"]))

        def entry(label, p):
            r = cells.loc[(label, p)]
            if pd.isna(r["nll"]):
                return ""
            return pm_text(r["nll"], r["nll_std"], int(r["n_cells"])) + (" (final)" if r["finished"] else "")

        rows = [[label, *(entry(label, p) for p in points)] for label in labels]
        blocks += [Heading(f"{task} (D = {dim}): test NLL at C seconds of compute", 3),
                   Para(f"NLL scale: {scales.get(task, '')}. {PM_SHORT}."),
                   Table(["method", *(f"C = {fmt(p, 2)} s" for p in points)], rows, name=f"equal-compute-{task}")]
    titles = {}
    for (task, dim), c in curves.groupby(["task", "dim"]):
        layers = "/".join(str(int(v)) for v in sorted(set(c["layers"])))
        titles[(task, dim)] = (f"{task}, D = {dim}, L = {layers}, {steps_text(c['steps_done'].astype(int))} "
                               f"steps: test NLL vs compute")
    path = figures.equal_compute(curves, table, figures.method_colors(curves["label"]),
                                 fig_dir / "equal_compute.png", titles)
    blocks.append(Figure(path, "Checkpoint test NLL (nats) against training compute seconds, one line per cell "
                               "(configuration and seeds), per task; dotted lines: the compute points of the "
                               "tables."))
    return blocks
