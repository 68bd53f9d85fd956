"""The comparison report: ``build_report(run_dirs, out_dir)`` writes ``report.md``, a self-contained
``report.html`` (figures inlined as base64 PNG), the figures under ``out_dir/figures/`` (300-dpi PNG and PDF),
every table as LaTeX (booktabs) under ``out_dir/tables/`` and the claims' verdicts as ``out_dir/claims.csv``.

Sections, in order:

1. **Summary** (readable in a minute): per task, the best configurations at equal compute (test NLL at the
   largest common compute point, ``tables.equal_compute``) and by final quality, as mean ± 95% t-interval over
   seeds (half-width t(0.975, n-1) s / sqrt(n); one seed: the value alone); the noise floor of each metric where
   the run has ``truth`` rows (reference rows, ``tables.REFERENCE_METHODS``, are shown, never ranked); the
   claims' verdicts; the exact commands that reproduce the report.
2. **Claims**: ``ebflow_bench.claims.evaluate_claims`` on the de-duplicated results (verdict table and notes;
   ``not run`` where the run folders lack the deciding cells); the same rows in ``claims.csv`` (columns
   ``claim, source, paper_value, our_value, verdict, note``).
3. **Runs**: run folders, ids, commits, devices, dates, versions, duplicate cells.
4. **Quality per task**: one row per configuration (``config_key``; labelled with the hyperparameters that
   differ between rows of one method), mean ± std over seeds, best in bold among unflagged, non-reference
   entries; failed cells "failed", capped/degenerate marked and never ranked, unavailable metrics "n/a".
5. **Quality at equal compute**: test NLL interpolated at common compute points, and the curves.
6. **Scaling**: step time against D and L (log-log) with exponents from ``tables.scaling_fits`` (a fit over
   fewer than 5 distinct values is marked "not fitted", never shown as a result) and speed-ups against
   ``ebflow-ml`` (ok cells only).
7. **Samples** beside the target; a failed or degenerate cell's panel says so in its title.
8. **Published numbers beside ours** (``ebflow_bench.published``).
9. **asv** (when given): scaling at the latest commit, history per commit with tasks kept apart
   (``asv_results.history_table``), and the place of the step-cost tables (``ebflow_bench.stepcost``).
10. **Failures**: every failed, capped or degenerate cell with its reason and the steps it did.

Each cell is counted once: a cell (``cell_id``) found in several run folders is taken from the first, with a
warning (``results.DuplicateCells``) and a note in the Runs section.

``quality_table(df)`` / ``quality_stats(df)`` return the quality table as DataFrames (see ``tables``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import figures
from .doc import Block, Bullets, Code, Figure, Heading, Para, Table, table_latex, to_html, to_markdown
from ..scaling import MIN_FIT_POINTS
from .tables import (BASELINE, METRIC_LABELS, UNRANKED, best_mask, cell_status, comparable, equal_compute, failures,
                     flagged,
                     fmt, nll_at_time, quality_stats, quality_table, reference_methods, scaling_fits,
                     scaling_panels, speedup_table, step_times, steps_text)

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
                 asv_results: str | Path | pd.DataFrame | None = None, command: str | None = None,
                 write_table: bool = False, previous_claims: str | Path | None = None) -> Path:
    """Write report.md, report.html and figures/*.png for ``run_dirs`` into ``out_dir``; return report.md's path.

    ``asv_results`` is an asv results directory (read with ``ebflow_bench.asv_results.load_asv_results``) or the
    tidy table it returns. ``command`` is the command line that built the report (printed in the header). With
    ``write_table``, the table the report read (every cell once) is also written to ``results.parquet`` beside it.
    ``previous_claims``: an earlier ``claims.csv`` (default: the one in ``out_dir``, read before it is
    overwritten); the Claims section lists the verdicts changed since (``claims.changed_verdicts``).
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
    fig_dir, tex_dir = out / "figures", out / "tables"
    fig_dir.mkdir(parents=True, exist_ok=True)
    tex_dir.mkdir(parents=True, exist_ok=True)
    if write_table:
        from ..results import write_table_atomic

        write_table_atomic(df, out / "results.parquet")
    for pattern, d in (("*.png", fig_dir), ("*.pdf", fig_dir), ("*.tex", tex_dir)):
        for old in d.glob(pattern):  # files of an earlier report must not linger beside this one
            old.unlink()

    from ..claims import changed_verdicts, read_claims_csv

    claims = evaluate_claims_safely(df)
    changes = changed_verdicts(read_claims_csv(previous_claims or out / "claims.csv"), claims)
    claims.to_csv(out / "claims.csv", index=False)

    blocks: list[Block] = []
    blocks += _summary(df, claims, _reproduce_commands(run_dirs, command))
    blocks += _claims(claims, changes)
    blocks += _header(run_dirs, df)
    blocks += _tuning(df)
    if dup_notes:
        blocks.append(Para("Duplicate cells: " + " ".join(dup_notes) + "."))
    blocks += _quality(df)
    blocks += _equal_compute(df, fig_dir)
    blocks += _sm_vs_ml(df)
    blocks += _scaling(df, fig_dir)
    blocks += _samples(run_dirs, df, fig_dir)
    blocks += _published(df)
    if asv_results is not None:
        blocks += _asv(asv_results, fig_dir)
    blocks += _failures(df)
    _write_latex(blocks, tex_dir)

    md = out / "report.md"
    md.write_text(to_markdown(TITLE, blocks, out))
    (out / "report.html").write_text(to_html(TITLE, blocks))
    return md


# ------------------------------------------------------------------------------------------------- LaTeX


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "table"


def _write_latex(blocks: list[Block], tex_dir: Path) -> None:
    """Write every table of ``blocks`` to ``tex_dir/NN-<name>.tex`` (booktabs) and point the table at it."""
    heads: dict[int, str] = {}
    n = 0
    for b in blocks:
        if isinstance(b, Heading):
            heads = {k: v for k, v in heads.items() if k < b.level}
            heads[b.level] = b.text
        elif isinstance(b, Table):
            n += 1
            where = " / ".join(heads[k] for k in sorted(heads))
            name = f"{n:02d}-{_slug(b.name or where)}.tex"
            (tex_dir / name).write_text(table_latex(b, caption=where))
            b.latex = f"{tex_dir.name}/{name}"


# ------------------------------------------------------------------------------------------------ claims


def evaluate_claims_safely(df: pd.DataFrame) -> pd.DataFrame:
    """``claims.evaluate_claims`` claim by claim: a rule that raises on an unexpected table gives ``not run``
    with the error in its note, never a report that fails."""
    from ..claims import CLAIM_COLUMNS, CLAIMS, evaluate_claims

    parts = []
    for c in CLAIMS:
        try:
            parts.append(evaluate_claims(df, (c,)))
        except Exception as e:  # noqa: BLE001  (one broken rule must not sink the report)
            parts.append(pd.DataFrame([{"claim": c.key, "source": c.source, "paper_value": c.paper_value,
                                        "our_value": "", "verdict": "not run",
                                        "rule_fingerprint": c.fingerprint, "note": f"rule could not be evaluated ({type(e).__name__}: {e})"}]))
    return pd.concat(parts, ignore_index=True)[CLAIM_COLUMNS] if parts else pd.DataFrame(columns=CLAIM_COLUMNS)


def _claims(claims: pd.DataFrame, changes: pd.DataFrame | None = None) -> list[Block]:
    from ..claims import CLAIMS, RULE_CHANGED

    blocks: list[Block] = [Heading("Claims"), Para(
        "Each claim of the compared papers gets a verdict from a rule fixed in `ebflow_bench.claims` before the "
        "runs (thresholds in each note): `reproduced`, `not reproduced` (with the evidence; cells of the method "
        "under claim that failed or came out degenerate count as evidence), `inconclusive` (the reason in the "
        "note: a curve still falling, a comparator that diverged, too few seeds) or `not run` (these run "
        "folders lack a deciding cell, comparators included, or it ran too few steps). A run records the "
        "fingerprint of each claim's rule when it starts; where a deciding cell ran under another rule, or "
        f"before rules were recorded, the claim reads `{RULE_CHANGED}` instead of a verdict until its cells are "
        "rerun. The same rows are in `claims.csv` beside this report.")]
    if claims.empty:
        return blocks + [Para("No claims registered.")]
    statement = {c.key: c.statement for c in CLAIMS}
    blocks.append(Table(["claim", "verdict", "paper", "ours"],
                        [[f"`{r['claim']}`", f"**{r['verdict']}**", str(r["paper_value"]), str(r["our_value"])]
                         for _, r in claims.iterrows()], name="claims"))
    blocks.append(Bullets([f"`{r['claim']}` ({r['verdict']}): {statement.get(r['claim'], '')} Source: "
                           f"{r['source']}. {r['note']}" for _, r in claims.iterrows()]))
    if changes is not None and len(changes):
        blocks += [Para("Verdicts changed since the previous results (`claims.csv` before this report):"),
                   Table(list(changes.columns), changes.astype(str).values.tolist(), name="claims-changed")]
    return blocks


# ----------------------------------------------------------------------------------------------- summary

#: the final-quality criteria of the summary, in order of preference: a likelihood (the first present), then
#: the sample and mode metrics present
SUMMARY_LIKELIHOOD = ("test_bpd", "test_nll")
SUMMARY_OTHER = ("sliced_wasserstein", "mode_weight_error")
#: how many configurations the summary names per criterion
SUMMARY_TOP = 3


def t_halfwidth(std: float, n: int, level: float = 0.95) -> float:
    """Half-width of the two-sided t-interval of a mean of ``n`` values with sample std ``std`` (NaN if n < 2)."""
    from scipy import stats as st

    if n < 2 or not math.isfinite(std):
        return math.nan
    return float(st.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))


def _ci_text(mean: float, std: float, n: int) -> str:
    h = t_halfwidth(std, n)
    return fmt(mean) if math.isnan(h) else f"{fmt(mean)} ± {fmt(h, 2)} (n={n})"


def _settings_text(g: pd.DataFrame) -> str:
    """"L = 2, 400 steps" of a group of quality-stats rows (ranges where they differ)."""
    layers = sorted({int(v) for v in g["layers"]})
    lt = str(layers[0]) if len(layers) == 1 else "/".join(map(str, layers))
    steps = sorted(set(g["steps"].astype(str)))
    return f"L = {lt}, {steps[0] if len(steps) == 1 else ', '.join(steps)} steps"


def _summary(df: pd.DataFrame, claims: pd.DataFrame, commands: list[str]) -> list[Block]:
    stats = quality_stats(df)
    refs = reference_methods(df)
    blocks: list[Block] = [Heading("Summary"), Para(
        "Per task: the best configurations at equal training compute and by final quality. Entries are mean ± "
        "the half-width of the 95% t-interval over seeds (t(0.975, n-1) s / sqrt(n), n seeds; one seed: the "
        "value alone). Only configurations whose every cell finished `ok` are ranked (failed, capped and "
        "degenerate cells never are), and reference rows (" + ", ".join(f"`{m}`" for m in sorted(
            {"truth", "gaussian-fit"} | refs)) + ") are never ranked: `truth` (exact samples of the target) "
        "gives each metric's noise floor at the run's sample size. Details follow in the sections below.")]
    rows = []
    eq = equal_compute(df)
    ranked = stats.assign(best=best_mask(stats))
    rankable = (stats["status"].eq("ok") & ~stats["metric"].isin(UNRANKED) & ~stats["method"].isin(refs)
                & stats["n_failed"].eq(0) & stats["n_capped"].eq(0) & stats["n_degenerate"].eq(0))
    for (task, dim), g in ranked.groupby(["task", "dim"], sort=True):
        where = f"{task} (D = {dim}, {_settings_text(g)})"
        e = eq[eq["task"].eq(task) & eq["dim"].eq(dim) & ~eq["method"].isin(refs) & eq["nll"].notna()]
        if len(e):
            counts = e.groupby("compute_s")["label"].nunique()
            point = max(counts[counts >= 2].index) if (counts >= 2).any() else max(counts.index)
            top = e[e["compute_s"].eq(point)].sort_values("nll").head(SUMMARY_TOP)
            rows.append([where, f"test NLL (nats) at C = {fmt(point, 2)} s of compute",
                         *[f"{r['label']}: {_ci_text(r['nll'], r['nll_std'], int(r['n_cells']))}"
                           for _, r in top.iterrows()], *[""] * (SUMMARY_TOP - len(top)), ""])
        ok = g[rankable.reindex(g.index, fill_value=False)]
        present = [m for m in SUMMARY_LIKELIHOOD if m in set(ok["metric"])][:1] + \
            [m for m in SUMMARY_OTHER if m in set(ok["metric"])]
        from ..metrics import get_metric

        for m in present:
            meta = get_metric(m)
            h = ok[ok["metric"].eq(m)]
            key = h["mean"].abs() if meta.direction == "zero" else (-h["mean"] if meta.direction == "higher"
                                                                    else h["mean"])
            top = h.loc[key.sort_values(kind="stable").index].head(SUMMARY_TOP)
            if g["layers"].nunique() > 1:  # one configuration at several depths: say which
                top = top.assign(label=top["label"] + " (L=" + top["layers"].astype(str) + ")")
            floor = g[g["metric"].eq(m) & g["method"].eq("truth") & g["status"].eq("ok")]
            floor_text = ""
            if len(floor):
                f = floor.iloc[0]
                floor_text = fmt(f["mean"]) + ("" if math.isnan(f["std"]) else f" ± {fmt(f['std'], 2)} (std)")
                if meta.direction == "lower" and math.isfinite(f["std"]) and len(top) and \
                        top.iloc[0]["mean"] <= f["mean"] + 2 * f["std"]:
                    floor_text += "; the best is within 2 std of it"
            rows.append([where, f"{meta.label} ({meta.unit}), final",
                         *[f"{r['label']}: {_ci_text(r['mean'], r['std'], int(r['n_ok']))}" for _, r in top.iterrows()],
                         *[""] * (SUMMARY_TOP - len(top)), floor_text])
    if rows:
        blocks.append(Table(["task", "criterion (lower is better)", "best", "second", "third",
                             "noise floor (truth)"], rows, name="summary"))
    else:
        blocks.append(Para("No ranked quality entry in these runs."))
    if len(claims):
        counts = claims["verdict"].value_counts()
        from ..claims import RULE_CHANGED, VERDICTS

        kinds = [*VERDICTS, *([RULE_CHANGED] if counts.get(RULE_CHANGED) else [])]
        blocks.append(Para("Claims: " + ", ".join(f"{int(counts.get(v, 0))} {v}" for v in kinds) + ": " +
                           "; ".join(f"`{r['claim']}` {r['verdict']}" for _, r in claims.iterrows()) +
                           " (section Claims; `claims.csv`)."))
    blocks += [Para("How to reproduce this report (the run(s), then this report; details under Runs):"),
               Code("\n".join(commands) or "(unknown)")]
    return blocks


# ------------------------------------------------------------------------------------------------ header


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _command_text(cmd: list[str] | str | None) -> str:
    """A recorded command line as text, with the installed script's full path shortened to its name."""
    parts = list(cmd) if isinstance(cmd, list) else str(cmd or "").split(" ")
    if parts and (Path(parts[0]).name == "ebflow-bench" or parts[0].endswith("ebflow_bench/cli.py")):
        parts[0] = "ebflow-bench"
    return " ".join(parts)


def _reproduce_commands(run_dirs: list[Path], command: str | None) -> list[str]:
    """The commands that made the runs (from each run folder's meta.json sessions), then this report's."""
    cmds = []
    for d in run_dirs:
        meta = _read_json(d / "meta.json")
        if not meta:
            cmds.append(f"# {d}: no meta.json: the command that produced this run is unknown")
            continue
        commit = str(meta.get("commit") or "")
        if commit and commit != "unknown":
            dirty = commit.endswith("+dirty")
            cmds.append(f"git checkout {commit.removesuffix('+dirty')} && pip install -e .   # the code of run "
                        f"{d.name}" + (" (it had uncommitted changes: not exactly reproducible)" if dirty else ""))
        for s in meta.get("sessions", []):
            cmds.append(_command_text(s.get("command")))
        if not meta.get("sessions") and meta.get("command"):
            cmds.append(_command_text(meta["command"]))
    if command:
        cmds.append(command)
    return list(dict.fromkeys(cmds))  # a resumed run's repeated command once, in first-use order


def _header(run_dirs: list[Path], df: pd.DataFrame) -> list[Block]:
    from ..rundir import run_provenance

    blocks: list[Block] = [Heading("Runs")]
    rows = []
    for d in run_dirs:
        meta = _read_json(d / "meta.json")
        versions = meta.get("versions") or {}
        vtext = ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) if isinstance(versions, dict) \
            else str(versions)
        n_cells = df.loc[df["run_id"].eq(meta.get("run_id")), "cell_id"].nunique() if meta.get("run_id") else ""
        commits, clean = run_provenance(meta)
        rows.append([f"`{d}`", str(meta.get("run_id", "")), commits, clean,
                     str(meta.get("device", "")) or "unknown", str(meta.get("started", "")),
                     str(meta.get("finished", "")), str(n_cells), vtext or "unknown"])
    blocks.append(Table(["run dir", "run id", "commit", "clean", "device", "started", "finished", "cells",
                         "versions"], rows, name="runs"))
    devices = sorted(set(df["device"]) - {""})
    commits = sorted(set(df["commit"]) - {""})
    blocks.append(Para(f"Devices in the results table: {', '.join(devices) or 'unknown'}; commits: "
                       f"{', '.join(commits) or 'unknown'}. The commands that reproduce this report are at the "
                       "end of the Summary."))
    return blocks


def _tuning(df: pd.DataFrame) -> list[Block]:
    """The tuning budget behind each method's defaults: its declared ``tune_grid`` (the search space of
    ``ebflow-bench tune``), the same number of candidates for every family, and the resolved settings that ran."""
    from ..matrix import adapter_registry

    reg = adapter_registry()
    rows = []
    for method in sorted(set(df["method"])):
        cls = reg.get(method)
        if cls is None:
            continue
        grid = getattr(cls, "tune_grid", {}) or {}
        points = int(np.prod([len(v) for v in grid.values()])) if grid else 0
        space = " x ".join(f"{k} {{{', '.join('none' if x is None else f'{x:g}' if isinstance(x, float) else str(x) for x in v)}}}"
                           for k, v in grid.items()) or "none (a reference row: nothing is trained)"
        rows.append([f"`{method}`", cls.family, space, str(points)])
    if not rows:
        return []
    return [Heading("Tuning budget"), Para(
        "Every method family gets the same tuning budget: a 6-point grid declared on its adapter (`tune_grid`), "
        "searched by `ebflow-bench tune` with the same steps and seeds for every candidate on a validation split "
        "of the training data (the test set is never used); failed or degenerate candidates are never chosen. "
        "The suite's defaults were chosen this way (committed runs, commands and choices: `results/tuning/`, "
        "`docs/TUNING.md`); the hyperparameters each cell actually ran with are in the results table's `hparams` "
        "column."), Table(["method", "family", "search space", "candidates"], rows, name="tuning")]


# ----------------------------------------------------------------------------------------------- scaling


def _exponent_label(r: pd.Series) -> str:
    return f"{r['method']} ({fmt(r['slope'], 3)}, [{fmt(r['ci_low'], 3)}, {fmt(r['ci_high'], 3)}])"


def _scaling(df: pd.DataFrame, fig_dir: Path) -> list[Block]:
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


#: which cell of a configuration the sample figures show: a finished one first
_STATUS_RANK = {"ok": 0, "capped": 1, "degenerate": 2, "failed": 3}


def _status_note(status: str, reason: str, width: int = 34) -> str:
    """A sample panel's note: "degenerate: <reason>" (wrapped, at most two lines), "failed", "capped"."""
    import textwrap

    if status == "ok":
        return ""
    if status == "failed":
        return "failed"
    text = f"{status}: {reason}" if reason else status
    lines = textwrap.wrap(text, width)
    return "\n".join(lines[:2]) + ("..." if len(lines) > 2 else "")


def _samples(run_dirs: list[Path], df: pd.DataFrame, fig_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Samples")]
    files = _sample_files(run_dirs)
    cells = cell_status(df)
    # every configuration with saved samples is shown, whatever its status; a configuration whose cells all
    # failed without samples gets an empty panel saying "failed"
    has = cells.groupby("label")["cell_id"].transform(lambda ids: ids.isin(files).any())
    cells = cells[cells["cell_id"].isin(files) | (cells["status"].eq("failed") & ~has)]
    cells = cells.assign(rank=cells["status"].map(_STATUS_RANK).fillna(4))
    drawn = 0
    colors = figures.method_colors(cells["label"])
    n_dims = cells.groupby("task")["dim"].nunique()
    for (task, dim), g in cells.groupby(["task", "dim"], sort=True):
        if dim != 2 and task not in IMAGE_TASKS:
            continue
        picked = g.sort_values(["rank", "steps_done", "layers", "train_seed"], ascending=[True, False, False, True]) \
            .drop_duplicates("label").sort_values("label")
        with_file = picked[picked["cell_id"].isin(files)]
        if with_file.empty:
            continue
        target_task, note = _task_target(run_dirs, with_file["cell_id"].iloc[0])
        shape = getattr(target_task, "image_shape", None)
        if dim != 2 and shape is None:
            side = int(round(math.sqrt(dim)))
            if side * side != dim:
                continue
            shape = (1, side, side)
        samples: dict[str, np.ndarray | None] = {}
        for _, r in picked.iterrows():
            x = np.load(files[r["cell_id"]]) if r["cell_id"] in files else None
            samples[r["label"]] = x if x is None or (x.ndim == 2 and x.shape[1] == dim) else None
        if all(v is None for v in samples.values()):
            continue
        notes = {r["label"]: _status_note(r["status"], r["reason"]) for _, r in picked.iterrows()}
        notes = {k: v for k, v in notes.items() if v}
        target = target_task.test.numpy() if target_task is not None else None
        which = ", ".join(f"{r['label']}: seeds {r['data_seed']}/{r['train_seed']}, L={r['layers']}, "
                          f"{r['steps_done']} steps" + ("" if r["status"] == "ok" else f", {r['status']}")
                          for _, r in picked.iterrows())
        layers = "/".join(str(v) for v in sorted(set(picked["layers"])))
        title = f"{task}, D = {dim}, L = {layers}, {steps_text(picked['steps_done'])} steps"
        stem = f"samples_{task}" + (f"_D{dim}" if n_dims.get(task, 1) > 1 else "")
        if dim == 2:
            bounds = getattr(target_task, "bounds", None)
            path = figures.scatter_2d(target, samples, bounds, colors, f"{title}: model samples",
                                      fig_dir / f"{stem}.png", notes=notes)
            caption = f"{task}: model samples beside the test data ({which}; seeds: data/train)."
        else:
            path = figures.image_grid(target, samples, shape, f"{title}: sample images", fig_dir / f"{stem}.png",
                                      notes=notes)
            caption = f"{task}: sample images beside test images ({which}; seeds: data/train)."
        if notes:
            caption += " Panels of failed, capped or degenerate cells say so in their titles."
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
    mean, std = r["mean"] * scale, r["std"] * scale
    return (fmt(mean) if math.isnan(std) else f"{fmt(mean)} ± {fmt(std, 2)}") + flags


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
    from ..asv_results import history_table

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
    from .. import stepcost

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


# ---------------------------------------------------------------------------------------------- failures


def _cell_table(f: pd.DataFrame) -> Table:
    return Table(["cell", "method", "task", "D", "L", "seeds (data/train)", "steps done", "reason"],
                 [[f"`{r['cell_id']}`", r["label"], r["task"], str(r["dim"]), str(r["layers"]),
                   f"{r['data_seed']}/{r['train_seed']}", f"{r['steps_done']} of {r['budget']}", r["reason"]]
                  for _, r in f.iterrows()])


def _sm_vs_ml(df: pd.DataFrame) -> list[Block]:
    """EBFlow's objectives against its maximum likelihood, with a diagnosis where one ends > 10% behind."""
    from .tables import SM_GAP, sm_vs_ml

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
