"""Section Quality at equal compute: test NLL interpolated at common compute points, and the curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import figures
from ..doc import Block, Figure, Heading, Para, Table
from ..tables import equal_compute, fmt, nll_at_time, steps_text


def equal_compute_section(df: pd.DataFrame, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Quality at equal compute")]
    curves = nll_at_time(df)
    if curves.empty:
        return blocks + [Para("No `nll_at_time` checkpoints in these runs (or none with an available NLL).")]
    table = equal_compute(df)
    blocks.append(Para("Test NLL (nats, on the checkpoint test points) of each configuration after C seconds of "
                       "training compute (process CPU time; CUDA time on a GPU), interpolated linearly between "
                       "its checkpoints and averaged over its ok cells. Blank: C outside the range some cell of "
                       "the configuration measured (no extrapolation). Entries: mean ± standard deviation over "
                       "the configuration's cells (seeds). Lower is better; capped, degenerate and failed cells "
                       "are left out."))
    for (task, dim), g in table.groupby(["task", "dim"], sort=True):
        points = sorted(g["compute_s"].unique())
        wide = g.pivot_table(index="label", columns="compute_s", values="nll", aggfunc="first", dropna=False)
        sd = g.pivot_table(index="label", columns="compute_s", values="nll_std", aggfunc="first", dropna=False)
        sd = sd.reindex(index=wide.index, columns=wide.columns)

        def entry(label, p):
            v, e = wide.loc[label, p], sd.loc[label, p]
            return "" if pd.isna(v) else (fmt(v) if pd.isna(e) else f"{fmt(v)} ± {fmt(e, 2)}")

        rows = [[label, *(entry(label, p) for p in points)] for label in wide.index]
        blocks += [Heading(f"{task} (D = {dim}): test NLL at C seconds of compute", 3),
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
