"""The energy-objective flows' claim (Si et al. 2023): sample quality decorrelated from likelihood."""

from __future__ import annotations


import pandas as pd

from .core import ENERGY_SRC, Broken, Cells, Claim, Verdict, _fmt, mean_se, n_degenerate, seeds_of, select

#: the maximum-likelihood flows the claim compares against: those the reproduce preset's block runs beside
#: energy-flow, each required on every task (a missing or too short one leaves the claim not run)
ML_FLOWS = ("ebflow-ml", "mle-lu", "nflows-maf", "normflows-realnvp")
#: the maximum-likelihood flows with the energy flow's own (dense) architecture, reported beside the rule
SAME_ARCH_ML = ("ebflow-ml", "mle-lu")
#: the tasks that decide the claim (the reproduce preset's block), each required
ENERGY_TASKS = ("checkerboard", "eight_gaussians", "digits")
SEEDS = 2
MIN_STEPS = 2000
_ML_MEANS = ("the best maximum-likelihood flow is unknown when one of them diverged, so the comparison cannot be "
             "made")


def _only_nll_degenerate(reason: str) -> bool:
    """A degenerate cell flagged for its NLL alone (``diagnostics``: "NLL far worse than a Gaussian fit"): the
    failure the energy-flow claim predicts, so its samples still count."""
    parts = [p.strip() for p in str(reason).split("; ") if p.strip()]
    return bool(parts) and all(p.startswith("NLL far worse") for p in parts)


def _rule_energy(df: pd.DataFrame) -> Verdict:
    # every deciding cell first (energy-flow and each comparator on each task): any missing or short one leaves
    # the claim not run, whatever the others show
    got = {}
    for task in ENERGY_TASKS:
        e = {m: seeds_of(df, "energy-flow", task, m, seeds=SEEDS, broken="not reproduced",
                         accept_degenerate=_only_nll_degenerate) for m in ("sliced_wasserstein", "test_nll")}
        for f in ML_FLOWS:
            try:
                select(df, f, task, "sliced_wasserstein")  # NotRun if missing or too short
            except Broken:
                pass  # it ran and failed: judged below, once every cell is known to be there
        got[task] = e
    parts, ok = [], True
    for task, e in got.items():
        # a failed, diverged or degenerate comparator, or too few seeds: inconclusive. Each comparator is judged
        # on its test NLL first, which every ML flow that finished has: one whose samples are non-finite has no
        # sliced W2 value, and must read as the degenerate comparator it is, not as a cell that never ran
        ml = {f: {m: mean_se(seeds_of(df, f, task, m, seeds=SEEDS, broken="inconclusive", meaning=_ML_MEANS))[0]
                  for m in ("test_nll", "sliced_wasserstein")} for f in ML_FLOWS}
        e_sw, e_nll = mean_se(e["sliced_wasserstein"])[0], mean_se(e["test_nll"])[0]
        flagged = n_degenerate(df, e["sliced_wasserstein"])
        best_m = min(ml, key=lambda k: ml[k]["sliced_wasserstein"])
        best_sw = ml[best_m]["sliced_wasserstein"]
        best_nll = min(v["test_nll"] for v in ml.values())
        same = [ml[m]["sliced_wasserstein"] for m in SAME_ARCH_ML if m in ml]
        dim = int(pd.to_numeric(df.loc[df["task"] == task, "dim"]).max())
        sw_ok = e_sw <= 1.5 * best_sw
        nll_worse = e_nll - best_nll >= 0.25 * dim
        ok &= sw_ok and nll_worse
        parts.append(f"{task}: SW {_fmt(e_sw)} vs best ML {_fmt(best_sw)} ({best_m}, {e_sw / best_sw:.2f}x"
                     + (f"; vs same-architecture ML {min(same):.3g}, {e_sw / min(same):.2f}x" if same else "")
                     + f"), NLL {_fmt(e_nll)} vs {_fmt(best_nll)} ({(e_nll - best_nll) / dim:+.2f} nats/dim)"
                     + (f" [energy-flow flagged degenerate for its NLL alone in {flagged} cell(s): the failure "
                        "this claim predicts, so its samples count]" if flagged else ""))
    return Verdict("reproduced" if ok else "not reproduced", "; ".join(parts), "")


ENERGY_CLAIMS: tuple[Claim, ...] = (
    Claim(
        "energy-flow-decorrelated", "Energy-objective flows give sample quality competitive with maximum "
        "likelihood while their likelihood is poor.", ENERGY_SRC + ", abstract",
        "qualitative ('competitive sample quality', 'generally very poor' log-likelihoods)",
        f"sliced_wasserstein and test_nll of energy-flow against the best of {', '.join(ML_FLOWS)} on each of "
        f"{', '.join(ENERGY_TASKS)}",
        "reproduced iff on every task energy-flow's sliced W2 <= 1.5x the best ML flow's and its test NLL is "
        f"worse by >= 0.25 nats per dimension (means over >= {SEEDS} seeds); not reproduced otherwise, or if an "
        "energy-flow cell failed or is degenerate for any reason but its NLL (a poor NLL is what the claim "
        "predicts). Every listed ML flow must have run on every task at the claim's budget (else not run); one "
        "that failed, diverged or is flagged degenerate makes the claim inconclusive (the best ML flow is then "
        f"unknown), as do fewer than {SEEDS} finished seeds.",
        "Setting: the dense EBFlow architecture as generator (the paper: a semi-autoregressive PixelCNN); toy "
        "and small tabular data instead of MNIST.",
        _rule_energy, min_steps=MIN_STEPS,
        cells=Cells(("energy-flow",) + ML_FLOWS, ENERGY_TASKS)),
)
