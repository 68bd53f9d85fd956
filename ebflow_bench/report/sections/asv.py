"""Section asv: step-time scaling at the latest commit, history per commit, step-cost tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import figures
from ..doc import Block, Figure, Heading, Para, Table
from ..tables import BASELINE, fmt, speedup_table


def asv_section(asv_results: str | Path | pd.DataFrame, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("asv: step-time scaling and history")]
    if isinstance(asv_results, pd.DataFrame):
        asv = asv_results
    else:
        try:
            from ...asv_results import load_asv_results
        except ImportError as e:
            return blocks + [Para(f"asv results not read: ebflow_bench.asv_results is unavailable ({e}).")]
        asv = load_asv_results(asv_results)
    asv = asv[pd.to_numeric(asv["value"], errors="coerce").notna()] if len(asv) else asv
    if asv.empty:
        return blocks + [Para("The asv results hold no values.")]
    asv = asv.assign(value=asv["value"].astype(float))
    blocks += _asv_scaling(asv, fig_dir)
    path = figures.asv_history(asv, fig_dir / "asv_history.png")
    blocks.append(Figure(path, "asv benchmark values per commit (commits in date order), each relative to its "
                               "value at the first commit that measured it (1: unchanged; < 1: faster or smaller), "
                               "one line per parameter set (task, D, L), coloured by method; absolute values in "
                               "the table below."))
    from ...asv_results import history_table

    hist = history_table(asv)
    commits = [c for c in hist.columns if c in set(asv["commit"])]
    keys = [c for c in hist.columns if c not in commits]
    rows = [[*("" if pd.isna(r[k]) else str(r[k]) for k in keys), *("" if pd.isna(r[c]) else fmt(r[c]) for c in commits)]
            for _, r in hist.iterrows()]
    blocks += [Para(f"Values at the last {len(commits)} commits (oldest first), one row per benchmark and "
                    "parameter combination (tasks are never averaged together):"),
               Table([*keys, *[c[:7] for c in commits]], rows, name="asv-history")]
    blocks += _asv_stepcost(asv)
    return blocks


def _asv_stepcost(asv: pd.DataFrame) -> list[Block]:
    """Step cost against its limits, from the asv sweep (``ebflow_bench.stepcost.report_tables``): each
    objective's step as a multiple of a plain forward+backward (with the same optimizer update) and of its GEMM
    floor, the speed-up over ML, the crossover D above which each score-matching objective is cheaper per step
    than ML, and peak memory net of the process baseline."""
    from ... import stepcost

    blocks: list[Block] = [Heading("Step cost: multiples, crossover D and memory", 3)]
    try:
        t = stepcost.report_tables(asv)
    except (KeyError, ValueError) as e:
        return blocks + [Para(f"No step-cost tables: {e}")]
    fmt = lambda v: "" if pd.isna(v) else (f"{v:.3g}" if isinstance(v, float) else str(v))  # noqa: E731
    texts = {
        "multiples": ("Per D (L = 2, batch 100, latest commit): `x plain` = step time / a plain forward+backward of "
                      "the same model with the same fused-Adam and EMA update; `x floor` = step time / the time of "
                      "that objective's matrix products alone (asv `TimeFloorD`); `ML /` = ML's step time / this "
                      "objective's (> 1: faster than ML)."),
        "crossover": ("Crossover D: the smallest D of the sweep above which the objective's step is cheaper than "
                      "ML's (bracketed between two measured D; a fitted value only with >= 5 points)."),
        "crossover_dsm": ("Crossover D of the determinant-free peers (snf, relative-gradient, free-form-flow) "
                          "against EBFlow's DSM step: the smallest D above which the peer's step is cheaper "
                          "than DSM's (NaN: not cheaper at the largest D)."),
        "memory": "Peak memory of one step (MiB) net of a process that only imported the libraries (asv "
                  "`PeakMemStep` baseline), per D.",
    }
    for key, text in texts.items():
        table = t.get(key)
        if table is None or table.empty:
            blocks.append(Para(f"{key}: no data in these asv results."))
            continue
        blocks += [Para(text), Table([str(c) for c in table.columns],
                                     [[fmt(v) for v in row] for row in table.itertuples(index=False)],
                                     name=f"stepcost-{key}")]
    return blocks


def _asv_scaling(asv: pd.DataFrame, fig_dir: Path) -> list[Block]:
    """Step-time scaling of the latest asv commit: log-log plots, fitted exponents, speedups against ml."""
    from ...asv_results import step_exponents

    fits = step_exponents(asv)
    if fits.empty:
        return []
    commit = asv[asv["metric"].eq("step_time")].sort_values("date")["commit"].iloc[-1]
    steps = asv[asv["metric"].eq("step_time") & asv["commit"].eq(commit) & asv["value"].gt(0)]
    machine = ", ".join(sorted(set(steps["machine"].astype(str))))
    blocks: list[Block] = [Para(
        f"Step-time scaling at commit `{commit[:8]}` (machine {machine}): one training step of EBFlow's dense "
        "model (batch 100) on the `gaussian` task, D swept at L = 2 and L swept at D = 512. Exponents are "
        "log-log slopes with 95% intervals (`ebflow_bench.asv_results.step_exponents`); in D they are given "
        "over the whole sweep and over the asymptotic range, where the leading term dominates the fixed "
        "per-step overhead.")]
    colors = figures.method_colors(steps["method"])
    for (sweep, x), g in fits.groupby(["sweep", "x"], sort=False):
        name = "D" if x == "dim" else "L"
        rows = steps[steps["benchmark"].str.contains(f"{sweep}.", regex=False)]
        rows = rows.assign(dim=rows["dim"].astype(float), layers=rows["layers"].astype(float))
        fixed = float(g["fixed"].iloc[0])
        best = g[g["range"].ne("all")] if g["range"].ne("all").any() else g
        labels = {("asv " + sweep, fixed, r["method"]): (f"{r['method']} ({fmt(r['slope'], 3)}, "
                                                          f"[{fmt(r['ci_low'], 3)}, {fmt(r['ci_high'], 3)}])")
                  for _, r in best.iterrows() if not r["error"]}
        path = figures.scaling([("asv " + sweep, fixed, rows)], x, labels, colors, fig_dir / f"asv_scaling_{name}.png")
        blocks += [Figure(path, f"asv: step time against {name} (log-log); legend: exponent "
                                f"({best['range'].iloc[0]}) and 95% interval."),
                   Table(["method", f"exponent in {name}", "range", "95% CI", "points"],
                         [[r["method"], "not fitted" if r["error"] else fmt(r["slope"], 3), r["range"],
                           r["error"] or f"[{fmt(r['ci_low'], 3)}, {fmt(r['ci_high'], 3)}]", str(r["n"])]
                          for _, r in g.sort_values(["range", "method"]).iterrows()])]
    d_rows = steps[steps["benchmark"].str.contains("TimeStepD.", regex=False)]
    sp = speedup_table(d_rows.assign(task="gaussian", status="ok"))
    if len(sp):
        dcols = [c for c in sp.columns if c.startswith("D=")]
        blocks += [Para(f"asv: speedup of a step against `{BASELINE}` (its time / the method's; > 1 is faster) "
                        "at each D, L = 2:"),
                   Table(["method", *dcols],
                         [[r["method"], *("" if pd.isna(r[c]) else f"{r[c]:.3g}x" for c in dcols)]
                          for _, r in sp.iterrows()])]
    return blocks
