"""The comparison report: ``build_report(run_dirs, out_dir)`` writes ``report.md``, a self-contained
``report.html`` (figures inlined as base64 PNG), the figures under ``out_dir/figures/`` (300-dpi PNG and PDF),
every table as LaTeX (booktabs) under ``out_dir/tables/`` and the claims' verdicts as ``out_dir/claims.csv``.

Sections, in order:

0. **At a glance**: per task family, a figure of final quality against training compute (each configuration's
   point with its 95% t-interval, the Pareto front marked, ``truth`` and ``gaussian-fit`` as lines), and a
   compact table of every configuration's rank per task with its status (``ranking``).
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

Layout: ``tables`` computes (DataFrames), ``figures`` draws, ``doc`` renders (Markdown, HTML, LaTeX), and
``sections/<name>.py`` builds one section each (a function returning ``doc`` blocks); this module puts the
sections in order.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .doc import Block, Para, to_html, to_markdown, write_latex
from .ranking import identify_tasks
from .sections.asv import asv_section
from .sections.claims import claims_section, evaluate_claims_safely
from .sections.equal_compute import equal_compute_section
from .sections.glance import glance_section
from .sections.failures import failures_section
from .sections.published import published_section
from .sections.quality import quality_section, sm_vs_ml_section
from .sections.runs import reproduce_commands, runs_section, tuning_section
from .sections.samples import samples_section
from .sections.scaling import scaling_section
from .sections.summary import summary_section
from .tables import equal_compute, failures, flagged, quality_stats, quality_table, speedup_table, t_halfwidth

__all__ = ["build_report", "quality_table", "quality_stats", "failures", "speedup_table", "equal_compute", "tables",
           "evaluate_claims_safely", "t_halfwidth"]

TITLE = "ebflow-bench comparison report"


def tables(run_dirs: list[str | Path] | str | Path) -> dict[str, pd.DataFrame]:
    """The report's tables for ``run_dirs`` as DataFrames: quality (text), quality_stats (numbers), speedup,
    equal_compute, failures, flagged (capped/degenerate cells). Cells repeated across run folders count once."""
    from ..results import load_results

    df = identify_tasks(load_results(run_dirs, dedupe=True))
    return {"quality": quality_table(df), "quality_stats": quality_stats(df), "speedup": speedup_table(df),
            "equal_compute": equal_compute(df), "failures": failures(df), "flagged": flagged(df)}


def build_report(run_dirs: list[str | Path] | str | Path, out_dir: str | Path, *,
                 asv_results: str | Path | pd.DataFrame | None = None, command: str | None = None,
                 write_table: bool = False, previous_claims: str | Path | None = None) -> Path:
    """Write report.md, report.html and figures/*.png for ``run_dirs`` into ``out_dir``; return report.md's path.

    ``previous_claims``: an earlier ``claims.csv`` (default: the one in ``out_dir``, read before it is
    overwritten); the Claims section lists the verdicts changed since (``claims.changed_verdicts``).

    ``asv_results`` is an asv results directory (read with ``ebflow_bench.asv_results.load_asv_results``) or the
    tidy table it returns. ``command`` is the command line that built the report (printed in the header). With
    ``write_table``, the table the report read (every cell once) is also written to ``results.parquet`` beside it.
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

    claims = evaluate_claims_safely(df)  # on the registered task names the claims' rules know
    changes = changed_verdicts(read_claims_csv(previous_claims or out / "claims.csv"), claims)
    claims.to_csv(out / "claims.csv", index=False)
    df = identify_tasks(df)  # from here on a task is the task with its data (a user's file: name @ hash)

    blocks: list[Block] = []
    blocks += glance_section(df, fig_dir)
    blocks += summary_section(df, claims, reproduce_commands(run_dirs, command))
    blocks += claims_section(claims, changes)
    blocks += runs_section(run_dirs, df)
    blocks += tuning_section(df)
    if dup_notes:
        blocks.append(Para("Duplicate cells: " + " ".join(dup_notes) + "."))
    blocks += quality_section(df)
    blocks += equal_compute_section(df, fig_dir)
    blocks += sm_vs_ml_section(df)
    blocks += scaling_section(df, fig_dir)
    blocks += samples_section(run_dirs, df, fig_dir)
    blocks += published_section(df)
    if asv_results is not None:
        blocks += asv_section(asv_results, fig_dir)
    blocks += failures_section(df)
    write_latex(blocks, tex_dir)

    md = out / "report.md"
    md.write_text(to_markdown(TITLE, blocks, out))
    (out / "report.html").write_text(to_html(TITLE, blocks))
    return md


