"""Section Summary: per task, the best configurations at equal compute and by final quality (mean ± 95%
t-interval over seeds), noise floors, the claims' verdicts and the commands that reproduce the report."""

from __future__ import annotations

import math

import pandas as pd

from ..doc import Block, Code, Heading, Para, Table
from ..tables import UNRANKED, best_mask, equal_compute, fmt, quality_stats, reference_methods

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


def summary_section(df: pd.DataFrame, claims: pd.DataFrame, commands: list[str]) -> list[Block]:
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
        from ...metrics import get_metric

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
        blocks.append(Para("Claims: " + ", ".join(f"{int(counts.get(v, 0))} {v}" for v in
                                                  ("reproduced", "not reproduced", "not run")) + ": " +
                           "; ".join(f"`{r['claim']}` {r['verdict']}" for _, r in claims.iterrows()) +
                           " (section Claims; `claims.csv`)."))
    blocks += [Para("How to reproduce this report (the run(s), then this report; details under Runs):"),
               Code("\n".join(commands) or "(unknown)")]
    return blocks
