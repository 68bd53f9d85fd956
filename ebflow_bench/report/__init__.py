"""The comparison report: ``build_report(run_dirs, out_dir)`` writes ``report.md``, a self-contained
``report.html`` (figures inlined as base64 PNG) and the PNG figures under ``out_dir/figures/``.

Sections: header (versions, device, commit, dates, commands to reproduce, cells found in several run folders);
scaling of step time with D and L (log-log, fitted exponents with 95% intervals from ``ebflow_bench.scaling``,
speedups against ``ebflow-ml``); quality per task, one row per configuration (``config_key``; labelled with the
hyperparameters that differ between rows of one method), mean ± std over seeds, best in bold among unflagged
entries, failed cells as "failed", capped/degenerate cells marked and not ranked, unavailable metrics as "n/a";
quality at equal compute (test NLL interpolated at common compute points, and the curves); samples beside the
target; the papers' published numbers beside ours (``ebflow_bench.published``); asv history when given; every
failed, capped or degenerate cell with its reason and the steps it did.

Each cell is counted once: a cell (``cell_id``) found in several run folders is taken from the first, with a
warning (``results.DuplicateCells``) and a note in the header.

``quality_table(df)`` / ``quality_stats(df)`` return the quality table as DataFrames (see ``tables``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import figures
from .doc import Block, Bullets, Code, Figure, Heading, Para, Table, to_html, to_markdown
from .tables import (BASELINE, METRIC_LABELS, cell_status, equal_compute, failures, flagged, fmt, nll_at_time,
                     quality_stats, quality_table, scaling_panels, speedup_table, step_times, steps_text)

__all__ = ["build_report", "quality_table", "quality_stats", "failures", "speedup_table", "equal_compute", "tables"]

TITLE = "ebflow-bench comparison report"
IMAGE_TASKS = ("digits", "mnist5k", "patches")


def tables(run_dirs: list[str | Path] | str | Path) -> dict[str, pd.DataFrame]:
    """The report's tables for ``run_dirs`` as DataFrames: quality (text), quality_stats (numbers), speedup,
    equal_compute, failures, flagged (capped/degenerate cells). Cells repeated across run folders count once."""
    from ..results import load_results

    df = load_results(run_dirs, dedupe=True)
    return {"quality": quality_table(df), "quality_stats": quality_stats(df), "speedup": speedup_table(df),
            "equal_compute": equal_compute(df), "failures": failures(df), "flagged": flagged(df)}


def build_report(run_dirs: list[str | Path] | str | Path, out_dir: str | Path, *,
                 asv_results: str | Path | pd.DataFrame | None = None, command: str | None = None) -> Path:
    """Write report.md, report.html and figures/*.png for ``run_dirs`` into ``out_dir``; return report.md's path.

    ``asv_results`` is an asv results directory (read with ``ebflow_bench.asv_results.load_asv_results``) or the
    tidy table it returns. ``command`` is the command line that built the report (printed in the header).
    """
    from ..results import load_results

    run_dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("build_report: no run directories given")
    missing = [str(d) for d in run_dirs if not d.is_dir()]
    if missing:
        raise FileNotFoundError(f"run directories not found: {', '.join(missing)}")
    import warnings

    from ..results import DuplicateCells

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DuplicateCells)
        df = load_results(run_dirs, dedupe=True)
    dup_notes = [str(w.message) for w in caught if issubclass(w.category, DuplicateCells)]
    for w in caught:  # pass every warning on to the caller
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if df.empty:
        raise ValueError(f"no results in {', '.join(map(str, run_dirs))}: nothing to report")
    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):  # figures of an earlier report must not linger beside this one
        old.unlink()

    blocks: list[Block] = []
    blocks += _header(run_dirs, df, command)
    if dup_notes:
        blocks.append(Para("Duplicate cells: " + " ".join(dup_notes) + "."))
    blocks += _scaling(df, fig_dir)
    blocks += _quality(df)
    blocks += _equal_compute(df, fig_dir)
    blocks += _samples(run_dirs, df, fig_dir)
    blocks += _published(df)
    if asv_results is not None:
        blocks += _asv(asv_results, fig_dir)
    blocks += _failures(df)

    md = out / "report.md"
    md.write_text(to_markdown(TITLE, blocks, out))
    (out / "report.html").write_text(to_html(TITLE, blocks))
    return md


# ------------------------------------------------------------------------------------------------ header


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _command_text(cmd: list[str] | str | None) -> str:
    """A recorded command line as text, with the installed script's full path shortened to its name."""
    parts = list(cmd) if isinstance(cmd, list) else str(cmd or "").split(" ")
    if parts and Path(parts[0]).name == "ebflow-bench":
        parts[0] = "ebflow-bench"
    return " ".join(parts)


def _header(run_dirs: list[Path], df: pd.DataFrame, command: str | None) -> list[Block]:
    blocks: list[Block] = [Heading("Runs")]
    rows, cmds = [], []
    for d in run_dirs:
        meta = _read_json(d / "meta.json")
        versions = meta.get("versions") or {}
        vtext = ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) if isinstance(versions, dict) \
            else str(versions)
        n_cells = df.loc[df["run_id"].eq(meta.get("run_id")), "cell_id"].nunique() if meta.get("run_id") else ""
        rows.append([f"`{d}`", str(meta.get("run_id", "")), str(meta.get("commit", "")) or "unknown",
                     str(meta.get("device", "")) or "unknown", str(meta.get("started", "")),
                     str(meta.get("finished", "")), str(n_cells), vtext or "unknown"])
        for s in meta.get("sessions", []):
            cmds.append(_command_text(s.get("command")))
        if not meta.get("sessions") and meta.get("command"):
            cmds.append(_command_text(meta["command"]))
        if not meta:
            cmds.append(f"# {d}: no meta.json: the command that produced this run is unknown")
    blocks.append(Table(["run dir", "run id", "commit", "device", "started", "finished", "cells", "versions"],
                        rows))
    devices = sorted(set(df["device"]) - {""})
    commits = sorted(set(df["commit"]) - {""})
    blocks.append(Para(f"Devices in the results table: {', '.join(devices) or 'unknown'}; commits: "
                       f"{', '.join(commits) or 'unknown'}."))
    if command:
        cmds.append(command)
    blocks += [Para("Commands to reproduce (run(s), then this report):"), Code("\n".join(cmds) or "(unknown)")]
    return blocks


# ----------------------------------------------------------------------------------------------- scaling


def _fit(panels: list[tuple[str, float, pd.DataFrame]], x: str) -> tuple[pd.DataFrame, str]:
    """Exponents of step time against ``x`` per method in each scaling panel, from
    ``ebflow_bench.scaling.fit_exponents``; returns (table with task and fixed columns, note on failures)."""
    try:
        from ..scaling import fit_exponents
    except ImportError as e:
        return pd.DataFrame(), f"Exponents not fitted: ebflow_bench.scaling is unavailable ({e})."
    parts, notes = [], []
    for task, v, g in panels:
        try:
            parts.append(fit_exponents(g, by="method", x=x).assign(task=task, fixed=v))
        except ValueError as e:
            notes.append(f"{task} at {'L' if x == 'dim' else 'D'}={int(v)}: {e}")
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return table, ("Not fitted: " + "; ".join(notes) + ".") if notes else ""


def _exponent_label(r: pd.Series) -> str:
    return f"{r['method']} ({fmt(r['slope'], 3)}, [{fmt(r['ci_low'], 3)}, {fmt(r['ci_high'], 3)}])"


def _scaling(df: pd.DataFrame, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Scaling: step time against D and L")]
    steps = step_times(df)
    if steps.empty:
        return blocks + [Para("No step-time rows in these runs.")]
    blocks.append(Para("Mean wall time of one training step (s) per task, averaged over seeds. Exponents are "
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
        fits, note = _fit(panels, x)
        labels = {(r["task"], r["fixed"], r["method"]): _exponent_label(r) for _, r in fits.iterrows()}
        path = figures.scaling(panels, x, labels, figures.method_colors(df["method"]),
                               fig_dir / f"scaling_{name}.png")
        blocks.append(Figure(path, f"Step time against {name} (log-log) per method, for each task and fixed "
                                   f"{fixed_name}; legend: fitted exponent and 95% interval."))
        if len(fits):
            blocks.append(Table(["task", f"fixed {fixed_name}", "method", f"exponent in {name}", "95% CI",
                                 "points"],
                                [[r["task"], str(int(r["fixed"])), r["method"], fmt(r["slope"], 3),
                                  f"[{fmt(r['ci_low'], 3)}, {fmt(r['ci_high'], 3)}]", str(r.get("n", ""))]
                                 for _, r in fits.iterrows()]))
        if note:
            blocks.append(Para(note))
    sp = speedup_table(df)
    if sp.empty:
        blocks.append(Para(f"No speedup table: `{BASELINE}` has no step-time rows in these runs."))
    else:
        dcols = [c for c in sp.columns if c.startswith("D=")]
        blocks += [Para(f"Speedup against `{BASELINE}` (its mean step time / the method's; > 1 is faster) at "
                        f"each D, on the same task and L:"),
                   Table(["task", "L", "method", *dcols],
                         [[r["task"], str(r["layers"]), r["method"],
                           *[("" if math.isnan(r[c]) else f"{r[c]:.3g}x") for c in dcols]]
                          for _, r in sp.iterrows()])]
    return blocks


# ----------------------------------------------------------------------------------------------- quality


def _quality(df: pd.DataFrame) -> list[Block]:
    blocks: list[Block] = [Heading("Quality per task"),
                           Para("One row per configuration (cells alike in everything but their seeds); where one "
                                "method appears with several configurations, its label names the hyperparameters "
                                "that differ. Mean ± standard deviation over seeds (one value: a single seed). "
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
    for (task, dim), g in text.groupby(["task", "dim"], sort=True):
        metrics = list(stats.loc[stats["task"].eq(task) & stats["dim"].eq(dim), "metric"].unique())
        metrics = [m for m in METRIC_LABELS if m in metrics]
        multi = g["layers"].nunique() > 1 or g["steps"].nunique() > 1
        head = ["method", *(["L", "steps"] if multi else []), *[METRIC_LABELS[m] for m in metrics]]
        rows = [[r["label"], *([str(r["layers"]), str(r["steps"])] if multi else []), *[r[m] for m in metrics]]
                for _, r in g.iterrows()]
        one = g.iloc[0]
        blocks += [Heading(f"{task} (D = {dim})" + ("" if multi else f", L = {one['layers']}, "
                                                                      f"{one['steps']} steps"), 3),
                   Table(head, rows)]
        s = stats[stats["task"].eq(task) & stats["dim"].eq(dim) & stats["reason"].ne("")]
        notes = sorted({f"{r['label']}: {r['reason']}" for _, r in s.iterrows()
                        if r["status"] == "failed" or r["n_failed"] or r["n_capped"] or r["n_degenerate"]}) + \
            sorted({f"{r['label']}, {METRIC_LABELS[r['metric']]} n/a: {r['reason']}" for _, r in s.iterrows()
                    if r["status"] == "n/a"})
        if notes:
            blocks.append(Bullets(notes))
    return blocks


# ----------------------------------------------------------------------------------------- equal compute


def _equal_compute(df: pd.DataFrame, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Quality at equal compute")]
    curves = nll_at_time(df)
    if curves.empty:
        return blocks + [Para("No `nll_at_time` checkpoints in these runs (or none with an available NLL).")]
    table = equal_compute(df)
    blocks.append(Para("Test NLL (nats, on the checkpoint test points) of each configuration after C seconds of "
                       "training compute (process CPU time; CUDA time on a GPU), interpolated linearly between "
                       "its checkpoints and averaged over its ok cells. Blank: C outside the range some cell of "
                       "the configuration measured (no extrapolation). Lower is better; capped, degenerate and "
                       "failed cells are left out."))
    for (task, dim), g in table.groupby(["task", "dim"], sort=True):
        points = sorted(g["compute_s"].unique())
        wide = g.pivot_table(index="label", columns="compute_s", values="nll", aggfunc="first", dropna=False)
        rows = [[label, *("" if pd.isna(wide.loc[label, p]) else fmt(wide.loc[label, p]) for p in points)]
                for label in wide.index]
        blocks += [Heading(f"{task} (D = {dim}): test NLL at C seconds of compute", 3),
                   Table(["method", *(f"C = {fmt(p, 2)} s" for p in points)], rows)]
    path = figures.equal_compute(curves, table, figures.method_colors(curves["label"]), fig_dir / "equal_compute.png")
    blocks.append(Figure(path, "Checkpoint test NLL (nats) against training compute seconds, one line per cell "
                               "(configuration and seeds), per task; dotted lines: the compute points of the "
                               "tables."))
    return blocks


# ----------------------------------------------------------------------------------------------- samples


def _task_target(run_dirs: list[Path], cell_id: str) -> tuple[Any, str]:
    """(Task or None, note) for drawing the target of a cell: built exactly as the cell's recorded spec says
    (task options, data seed); without a cell record, or when the data cannot be had, no target is drawn."""
    from ..cell import CellRecord

    rec = next((p for d in run_dirs for p in [d / "cells" / f"{cell_id}.json"] if p.is_file()), None)
    if rec is None:
        return None, "target not drawn (no cell record beside the results)"
    try:
        from ..matrix import load_imports
        from ..tasks import get_task, task_dim

        spec = CellRecord.from_dict(json.loads(rec.read_text())).spec
        load_imports(spec.imports)
        return get_task(spec.task, dim=None if task_dim(spec.task) is not None else spec.dim, seed=spec.data_seed,
                        **spec.task_options), ""
    except Exception as e:  # noqa: BLE001  (any reason the data cannot be had: the plot goes without target)
        return None, f"target not drawn ({type(e).__name__}: {e})"


def _sample_files(run_dirs: list[Path]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for d in run_dirs:  # the first run folder holding a cell wins, as for the results
        for p in sorted((d / "samples").glob("*.npy")):
            files.setdefault(p.stem, p)
    return files


def _samples(run_dirs: list[Path], df: pd.DataFrame, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Samples")]
    files = _sample_files(run_dirs)
    cells = cell_status(df)
    cells = cells[cells["status"].eq("ok") & cells["cell_id"].isin(files)]
    drawn = 0
    colors = figures.method_colors(cells["label"])
    for (task, dim), g in cells.groupby(["task", "dim"], sort=True):
        if dim != 2 and task not in IMAGE_TASKS:
            continue
        picked = g.sort_values(["steps_done", "layers", "train_seed"], ascending=[False, False, True]) \
            .drop_duplicates("label").sort_values("label")
        target_task, note = _task_target(run_dirs, picked["cell_id"].iloc[0])
        shape = getattr(target_task, "image_shape", None)
        if dim != 2 and shape is None:
            side = int(round(math.sqrt(dim)))
            if side * side != dim:
                continue
            shape = (1, side, side)
        samples = {r["label"]: np.load(files[r["cell_id"]]) for _, r in picked.iterrows()}
        samples = {m: s for m, s in samples.items() if s.ndim == 2 and s.shape[1] == dim}
        if not samples:
            continue
        target = target_task.test.numpy() if target_task is not None else None
        which = ", ".join(f"{r['label']}: seeds {r['data_seed']}/{r['train_seed']}, L={r['layers']}, "
                          f"{r['steps_done']} steps" for _, r in picked.iterrows())
        if dim == 2:
            bounds = getattr(target_task, "bounds", None)
            path = figures.scatter_2d(target, samples, bounds, colors, task, fig_dir / f"samples_{task}.png")
            caption = f"{task}: model samples beside the test data ({which}; seeds: data/train)."
        else:
            path = figures.image_grid(target, samples, shape, task, fig_dir / f"samples_{task}.png")
            caption = f"{task}: sample images beside test images ({which}; seeds: data/train)."
        blocks.append(Figure(path, caption + (f" {note}." if note else "")))
        drawn += 1
    if not drawn:
        blocks.append(Para("No 2-D or image task with saved samples in these runs."))
    return blocks


# --------------------------------------------------------------------------------------------- published


def _ours(df: pd.DataFrame, stats: pd.DataFrame, table, method: str, metric: str) -> str:
    """Our entry for ``method`` beside a published row: the first of the table's tasks in the run, the group
    (dim, layers, budget) with the most ok cells, then the largest budget."""
    present = [t for t in table.tasks if t in set(stats["task"])]
    if not present:
        return ""
    task = present[0]
    if metric == "batches_per_s":
        s = step_times(df)
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
    scale = float(r["dim"]) * math.log(2.0) if metric == "test_nll_discrete" else 1.0
    mean, std = r["mean"] * scale, r["std"] * scale
    return fmt(mean) if math.isnan(std) else f"{fmt(mean)} ± {fmt(std, 2)}"


def _published_value(v) -> str:
    if v is None:
        return ""
    mean, ci = v
    return f"{mean:g}" if ci is None else f"{mean:g} ± {ci:g}"


def _published(df: pd.DataFrame) -> list[Block]:
    from ..published import TABLES, tables_for

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
                                             f"by the paper, or not measured by these runs."),
                   Table(head, rows), Bullets(list(t.differences))]
    return blocks


# --------------------------------------------------------------------------------------------------- asv


def _asv(asv_results: str | Path | pd.DataFrame, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("asv: step-time scaling and history")]
    if isinstance(asv_results, pd.DataFrame):
        asv = asv_results
    else:
        try:
            from ..asv_results import load_asv_results
        except ImportError as e:
            return blocks + [Para(f"asv results not read: ebflow_bench.asv_results is unavailable ({e}).")]
        asv = load_asv_results(asv_results)
    asv = asv[pd.to_numeric(asv["value"], errors="coerce").notna()] if len(asv) else asv
    if asv.empty:
        return blocks + [Para("The asv results hold no values.")]
    asv = asv.assign(value=asv["value"].astype(float))
    blocks += _asv_scaling(asv, fig_dir)
    path = figures.asv_history(asv, fig_dir / "asv_history.png")
    blocks.append(Figure(path, "asv benchmark values per commit (commits in date order)."))
    order = asv.sort_values("date").drop_duplicates("commit")["commit"].tolist()[-8:]
    keys = [c for c in ("benchmark", "method", "dim", "layers", "unit") if c in asv.columns]
    recent = asv[asv["commit"].isin(order)]
    wide = recent.groupby([*keys, "commit"], dropna=False)["value"].mean().unstack("commit")
    wide = wide.reindex(columns=order)
    rows = [[*("" if pd.isna(k) else str(k) for k in (idx if isinstance(idx, tuple) else (idx,))),
             *("" if pd.isna(v) else fmt(v) for v in r)] for idx, r in wide.iterrows()]
    blocks += [Para(f"Values at the last {len(order)} commits (oldest first):"),
               Table([*keys, *[c[:7] for c in order]], rows)]
    return blocks


def _asv_scaling(asv: pd.DataFrame, fig_dir: Path) -> list[Block]:
    """Step-time scaling of the latest asv commit: log-log plots, fitted exponents, speedups against ml."""
    from ..asv_results import step_exponents

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
                           "" if r["error"] else f"[{fmt(r['ci_low'], 3)}, {fmt(r['ci_high'], 3)}]", str(r["n"])]
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


# ---------------------------------------------------------------------------------------------- failures


def _cell_table(f: pd.DataFrame) -> Table:
    return Table(["cell", "method", "task", "D", "L", "seeds (data/train)", "steps done", "reason"],
                 [[f"`{r['cell_id']}`", r["label"], r["task"], str(r["dim"]), str(r["layers"]),
                   f"{r['data_seed']}/{r['train_seed']}", f"{r['steps_done']} of {r['budget']}", r["reason"]]
                  for _, r in f.iterrows()])


def _failures(df: pd.DataFrame) -> list[Block]:
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
