"""Section Failures: every failed, capped or degenerate cell with its reason."""

from __future__ import annotations

import pandas as pd

from ..doc import Block, Heading, Para, Table
from ..tables import cell_status, failures, flagged


def _cell_table(f: pd.DataFrame) -> Table:
    return Table(["cell", "method", "task", "D", "L", "seeds (data/train)", "steps done", "reason"],
                 [[f"`{r['cell_id']}`", r["label"], r["task"], str(r["dim"]), str(r["layers"]),
                   f"{r['data_seed']}/{r['train_seed']}", f"{r['steps_done']} of {r['budget']}", r["reason"]]
                  for _, r in f.iterrows()])



def failures_section(df: pd.DataFrame) -> list[Block]:
    f, flags = failures(df), flagged(df)
    blocks: list[Block] = [Heading("Failures")]
    n = cell_status(df).shape[0]
    if f.empty:
        blocks.append(Para("No cell failed."))
    else:
        blocks += [Para(f"{len(f)} of {n} cells failed:"), _cell_table(f)]
    if len(flags):
        blocks += [Para(f"{len(flags)} of {n} cells finished but are flagged (capped: stopped by the safety time "
                        "cap; degenerate: diagnosed degenerate); their entries are marked and not ranked:"),
                   _cell_table(flags.assign(reason=flags["status"] + ": " + flags["reason"]))]
    return blocks
