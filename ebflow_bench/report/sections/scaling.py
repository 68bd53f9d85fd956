"""Section Scaling: step time against D and L, fitted exponents and speed-ups against ``ebflow-ml``."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ...scaling import MIN_FIT_POINTS
from .. import figures
from ..doc import Block, Figure, Heading, Para, Table
from ..tables import BASELINE, comparable, fmt, scaling_fits, scaling_panels, speedup_table, step_times, steps_text


def _exponent_label(r: pd.Series) -> str:
    return f"{r['method']} ({fmt(r['slope'], 3)}, [{fmt(r['ci_low'], 3)}, {fmt(r['ci_high'], 3)}])"


def scaling_section(df: pd.DataFrame, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Scaling: step time against D and L")]
    steps = step_times(comparable(df))  # failed, degenerate and capped cells are not timed here
    if steps.empty:
        return blocks + [Para("No step-time rows in these runs.")]
    blocks.append(Para("Mean wall time of one training step (s) per task, averaged over seeds, of cells that "
                       "finished `ok`. Exponents are "
                       "slopes of log step time against log D (or log L) with 95% confidence intervals, fitted "
                       "per method by `ebflow_bench.scaling.fit_exponents`; EBFlow's claim is O(D^2 L) per "
                       "score-matching step against O(D^3 L) for maximum likelihood."))
    for x, name in (("dim", "D"), ("layers", "L")):
        fixed_name = "L" if x == "dim" else "D"
        panels = scaling_panels(steps, x)
        if not panels:
            blocks.append(Para(f"No task was run at two or more {name} with the other settings fixed: no step "
                               f"time against {name}."))
            continue
        fits = scaling_fits(panels, x)
        labels = {(r["task"], r["fixed"], r["method"]): _exponent_label(r) for _, r in fits.iterrows()
                  if r["status"] == "ok"}
        titles = {(task, v): f"{task}: step time vs {name}, {fixed_name} = {int(v)}, "
                             f"{steps_text(g['steps_done'].astype(int))} steps" for task, v, g in panels}
        path = figures.scaling(panels, x, labels, figures.method_colors(df["method"]),
                               fig_dir / f"scaling_{name}.png", titles)
        blocks.append(Figure(path, f"Step time against {name} (log-log) per method, for each task and fixed "
                                   f"{fixed_name}; legend: fitted exponent and 95% interval (only for fits over "
                                   f"at least {MIN_FIT_POINTS} values of {name})."))
        if len(fits):
            blocks.append(Table(["task", f"fixed {fixed_name}", "method", f"exponent in {name}", "95% CI",
                                 "points"],
                                [[r["task"], str(int(r["fixed"])), r["method"],
                                  fmt(r["slope"], 3) if r["status"] == "ok" else "not fitted",
                                  f"[{fmt(r['ci_low'], 3)}, {fmt(r['ci_high'], 3)}]" if r["status"] == "ok"
                                  else r["reason"], f"{r['n']} ({r['n_x']} values of {name})"]
                                 for _, r in fits.iterrows()], name=f"exponents-{name}"))
        if len(fits) and not fits["status"].eq("ok").any():
            blocks.append(Para(f"No exponent in {name} is a result here: a fit needs at least {MIN_FIT_POINTS} "
                               f"distinct values of {name} (with 3 points a 95% t-interval on one degree of "
                               f"freedom spans several units)."))
    sp = speedup_table(df)
    if sp.empty:
        blocks.append(Para(f"No speedup table: `{BASELINE}` has no step-time rows in these runs."))
    else:
        dcols = [c for c in sp.columns if c.startswith("D=")]
        blocks += [Para(f"Speedup against `{BASELINE}` (its mean step time / the method's; > 1 is faster) at "
                        f"each D, on the same task and L; only cells that finished `ok` (failed, capped and "
                        f"degenerate cells never enter a speed-up; reference rows are left out):"),
                   Table(["task", "L", "method", *dcols],
                         [[r["task"], str(r["layers"]), r["method"],
                           *[("" if math.isnan(r[c]) else f"{r[c]:.3g}x") for c in dcols]]
                          for _, r in sp.iterrows()])]
    return blocks
