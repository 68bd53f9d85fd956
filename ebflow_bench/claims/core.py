"""The papers' claims as data, each with a rule that turns a results table into a verdict.

A :class:`Claim` names a statement of one of the compared papers, where it is made, the paper's value, the
metric and the cells that decide it, and a ``rule(df) -> Verdict``. :func:`evaluate_claims` applies every rule
to a tidy results table (the report's, after de-duplication) and returns one row per claim with the columns
``claim, source, paper_value, our_value, verdict, note`` (:data:`CLAIM_COLUMNS`):

- ``verdict`` is ``reproduced``, ``not reproduced`` or ``not run``. ``not run`` means the table lacks the cells
  that decide the claim (or they stopped early: ``capped``); cells that ran but ``failed`` or came out
  ``degenerate`` are evidence and give ``not reproduced`` with their reason.
- ``note`` states the rule's numbers and the differences in setting from the paper.

The rules were written before the ``reproduce`` preset was run and are not to be adjusted to its outcome:
a claim that does not reproduce is a result. Each rule's thresholds are stated in its ``rule_text``.

Only the cells a claim names are read: e.g. claim ``ebflow-quality`` reads ``test_bpd`` of the five EBFlow
objectives on ``mnist5k`` with MaP on. Where a method appears with several configurations (``config_key``), the
one (set of resolved hyperparameters) with the most finished cells is used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

#: the schema of ``claims.csv`` (one row per claim)
CLAIM_COLUMNS = ["claim", "source", "paper_value", "our_value", "verdict", "rule_fingerprint", "note"]
#: the verdicts a rule can give (``inconclusive``: the evidence cannot decide, the note says why)
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not run")
#: not a verdict: the claim's rule changed after the cells that decide it ran (rerun them)
RULE_CHANGED = "rule changed after the run"

EBFLOW_SRC = "Chao et al. 2023 (EBFlow, NeurIPS)"
FLOWMC_SRC = "Grenioux, Moulines, Gabrie 2023 (flowMC-EBM, arXiv 2306.00684 v3)"
ENERGY_SRC = "Si et al. 2023 (energy-objective flows, ICML)"

SM_METHODS = ("ebflow-ssm", "ebflow-dsm", "ebflow-fdssm")
EBFLOW_METHODS = ("ebflow-ml", "ebflow-sml", "ebflow-ssm", "ebflow-dsm", "ebflow-fdssm")


@dataclass(frozen=True)
class Verdict:
    verdict: str
    our_value: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


class NotRun(Exception):
    """The table lacks the cells that decide a claim; the message says which."""


class Inconclusive(Exception):
    """The deciding cells ran, but the evidence cannot decide the claim (a curve still falling beyond the seeds'
    spread, a comparator that diverged, too few seeds); the message says why. ``our_value`` (optional keyword)
    carries the numbers measured anyway."""

    def __init__(self, message: str, our_value: str = "") -> None:
        super().__init__(message)
        self.our_value = our_value


class Broken(Exception):
    """The deciding cells ran but failed or are degenerate; the message gives their reasons."""


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    source: str
    paper_value: str
    #: the metric and cells that decide the claim
    decided_by: str
    #: the rule in words, with its thresholds
    rule_text: str
    #: differences between the paper's setting and the suite's, stated in every note
    setting: str
    rule: Callable[[pd.DataFrame], Verdict]
    #: cells that ran fewer steps do not decide the claim (a budget long enough to decide it: the reproduce preset)
    min_steps: int = 0

    @property
    def fingerprint(self) -> str:
        """12 hex digits of the SHA-1 of everything that decides the verdict: the key, the deciding cells, the
        rule in words, the minimum budget and the rule function's source (with the module-level constants it
        reads, as far as its source names them). Editing any of them changes the fingerprint."""
        return rule_fingerprint(self)

    def evaluate(self, df: pd.DataFrame) -> Verdict:
        try:
            v = self.rule(_long_enough(df, self.min_steps))
        except NotRun as e:
            return Verdict("not run", "", f"{e}. Decided by: {self.decided_by}.")
        except Broken as e:
            return Verdict("not reproduced", "", f"{e}. {self.setting}")
        except Inconclusive as e:
            return Verdict("inconclusive", e.our_value, f"{e}. Rule: {self.rule_text} {self.setting}".strip())
        needs = f" Decided only by cells of >= {self.min_steps} steps." if self.min_steps else ""
        return Verdict(v.verdict, v.our_value, f"{v.note} Rule: {self.rule_text}{needs} {self.setting}".strip())


def rule_fingerprint(claim: "Claim") -> str:
    import hashlib
    import inspect

    fn = claim.rule
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        src = repr(fn)
    mod = inspect.getmodule(fn)
    consts = {}
    if mod is not None:
        for name, val in sorted(vars(mod).items()):
            if name.isupper() and name in src and isinstance(val, (int, float, str, tuple)):
                consts[name] = repr(val)
    payload = json.dumps({"key": claim.key, "decided_by": claim.decided_by, "rule_text": claim.rule_text,
                          "min_steps": claim.min_steps, "source": src, "constants": consts}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------ table access


class _Short(pd.DataFrame):
    """A table whose short cells were removed by :func:`_long_enough` (kept to say so when nothing is left)."""

    _metadata = ["short_note"]


def _long_enough(df: pd.DataFrame, min_steps: int) -> pd.DataFrame:
    """``df`` without the cells whose step budget is below ``min_steps`` (a cell that failed early within a long
    enough budget stays: it is evidence); :func:`select` names the short ones if nothing else is left."""
    col = "budget" if "budget" in df.columns else "steps_done"
    if not min_steps or col not in df.columns:
        return df
    steps = pd.to_numeric(df[col], errors="coerce").fillna(0)
    out = _Short(df[steps >= min_steps])
    short = df[steps < min_steps]
    out.short_note = {}
    for (m, t), g in short.groupby(["method", "task"]):
        lo, hi = int(pd.to_numeric(g[col]).min()), int(pd.to_numeric(g[col]).max())
        out.short_note[(m, t)] = (f"{lo}" if lo == hi else f"{lo}-{hi}", min_steps)
    return out


def _hp(row_hparams: str) -> dict:
    try:
        return json.loads(row_hparams) if isinstance(row_hparams, str) and row_hparams else {}
    except json.JSONDecodeError:
        return {}


def _status_col(df: pd.DataFrame) -> str:
    return "cell_status" if "cell_status" in df.columns else "status"


def _seed_col(df: pd.DataFrame) -> str:
    return "train_seed" if "train_seed" in df.columns else "seed"


def select(df: pd.DataFrame, method: str, task: str | tuple[str, ...], metric: str, *,
           where: Callable[[dict], bool] | None = None, dim_min: int | None = None,
           allow_missing: bool = False,
           accept_degenerate: bool | Callable[[str], bool] = False) -> pd.DataFrame:
    """Rows of ``metric`` for ``method`` on ``task`` (one configuration: the one with the most seeds; of cells run
    at several step budgets, those of the longest).

    Raises :class:`NotRun` when no cell is there (or all were capped) and :class:`Broken` when every cell of the
    chosen configuration failed or is degenerate. ``where`` filters on the resolved hyperparameters.
    ``accept_degenerate`` lets degenerate cells count (failed and capped ones never do): ``True`` for a claim
    about the cost of a step (a step's time does not depend on how well the model fits), or a predicate on the
    cell's reason (a claim that predicts that very failure).
    """
    tasks = (task,) if isinstance(task, str) else tuple(task)
    sub = df[(df["method"] == method) & (df["task"].isin(tasks))]
    if dim_min is not None:
        sub = sub[pd.to_numeric(sub["dim"], errors="coerce") >= dim_min]
    if where is not None and not sub.empty:
        sub = sub[[bool(where(_hp(h))) for h in sub.get("hparams", pd.Series([""] * len(sub), index=sub.index))]]
    if sub.empty:
        if allow_missing:
            return sub
        short = [getattr(df, "short_note", {}).get((method, t)) for t in tasks]
        short = [s for s in short if s]
        if short:
            raise NotRun(f"{method} on {'/'.join(tasks)} had a budget of only {short[0][0]} steps; this claim needs "
                         f"cells of >= {short[0][1]} steps (the reproduce preset)")
        raise NotRun(f"no {method} cell on {'/'.join(tasks)}")
    st = _status_col(df)
    budget_col = "budget" if "budget" in sub.columns else ("steps_done" if "steps_done" in sub.columns else None)
    if budget_col is not None:
        budgets = pd.to_numeric(sub[budget_col], errors="coerce")
        if budgets.nunique() > 1:  # the same cells at several budgets: the longest decides (the others are earlier)
            sub = sub[budgets == budgets.max()]
    if "hparams" in sub.columns and sub["hparams"].nunique() > 1:
        # several configurations of one method (D and L aside): keep the one with the most finished cells
        counts = sub[sub["metric"] == metric].groupby("hparams")["cell_id"].nunique()
        sub = sub[sub["hparams"] == counts.idxmax()] if not counts.empty else sub
    cells = sub.drop_duplicates("cell_id")
    capped = cells[cells[st] == "capped"]
    ok_deg = cells[st] == "degenerate"
    if callable(accept_degenerate):
        reasons = cells.get("cell_reason", pd.Series([""] * len(cells), index=cells.index)).fillna("").astype(str)
        ok_deg &= reasons.map(lambda r: bool(accept_degenerate(r)))
    elif not accept_degenerate:
        ok_deg &= False
    bad = cells[cells[st].isin(["failed", "degenerate"]) & ~ok_deg]
    good = cells[~cells[st].isin(["failed", "degenerate", "capped"]) | ok_deg]
    if good.empty:
        if not bad.empty:
            why = [r.get("cell_reason") or r.get("reason") for _, r in bad.iterrows()]  # the cell's reason first
            reasons = "; ".join(sorted({f"{r[st]}: {w}" if w else str(r[st])
                                        for (_, r), w in zip(bad.iterrows(), why)}))[:400]
            raise Broken(f"{method} on {'/'.join(tasks)}: every cell {'/'.join(sorted(set(bad[st])))} ({reasons})")
        raise NotRun(f"{method} on {'/'.join(tasks)}: only capped cells ({len(capped)})")
    rows = sub[(sub["cell_id"].isin(good["cell_id"])) & (sub["metric"] == metric)]
    rows = rows[rows["status"].isin(["ok", "unreliable"])] if "status" in rows.columns else rows
    if rows.empty:
        if allow_missing:
            return rows
        raise NotRun(f"{method} on {'/'.join(tasks)} has no {metric!r} value")
    return rows


def n_degenerate(df: pd.DataFrame, rows: pd.DataFrame) -> int:
    """How many of the cells behind ``rows`` (as :func:`select` returns them) are flagged degenerate."""
    st = _status_col(df)
    if st not in df.columns or rows.empty:
        return 0
    cells = df[df["cell_id"].isin(rows["cell_id"])].drop_duplicates("cell_id")
    return int((cells[st] == "degenerate").sum())


def mean_se(rows: pd.DataFrame, by: str | None = None) -> tuple[float, float, int]:
    """Mean over seeds of one value per cell, its standard error (NaN with one seed) and the seed count."""
    vals = rows.groupby("cell_id")["value"].mean().to_numpy(float)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return math.nan, math.nan, 0
    se = float(vals.std(ddof=1) / math.sqrt(vals.size)) if vals.size > 1 else math.nan
    return float(vals.mean()), se, int(vals.size)


def _fmt(v: float, digits: int = 3) -> str:
    if not math.isfinite(v):
        return "nan"
    return f"{v:.{digits}g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.{digits}f}".rstrip("0").rstrip(".")


def _leq(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool:
    """a <= b up to two standard errors of the difference (no tolerance with a single seed each)."""
    se = math.sqrt(sum(x * x for x in (a[1], b[1]) if math.isfinite(x)))
    return a[0] <= b[0] + 2 * se

def _curve(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean NLL over seeds per checkpoint step, with the mean compute (s) spent to reach it."""
    x = "compute_s" if "compute_s" in rows.columns and rows["compute_s"].notna().any() else "elapsed_s"
    c = rows.groupby("step").agg(nll=("value", "mean"), compute=(x, "mean")).reset_index().sort_values("step")
    return c[np.isfinite(c["nll"]) & np.isfinite(c["compute"])]


def time_to_reach(curve: pd.DataFrame, target: float) -> float:
    """First compute at which a (step-ordered) NLL curve reaches ``target``, linearly interpolated; inf if never."""
    prev = None
    for _, r in curve.iterrows():
        if r["nll"] <= target:
            if prev is None or prev["nll"] == r["nll"]:
                return float(r["compute"])
            f = (prev["nll"] - target) / (prev["nll"] - r["nll"])
            return float(prev["compute"] + f * (r["compute"] - prev["compute"]))
        prev = r
    return math.inf


def still_improving(rows: pd.DataFrame, *, last: int = 3, rel: float = 0.002) -> str | None:
    """Whether a lower-is-better checkpoint curve (rows of one method and configuration with ``step``, ``value``
    and a seed column, e.g. ``nll_at_time``) is still falling at its end, beyond what the seeds disagree by.

    Per seed, the drop over the last ``last`` checkpoints (value ``last - 1`` checkpoints before the end minus
    the final value); still improving iff the mean drop exceeds the standard deviation of the seeds' final
    values (with one seed: ``rel`` times the final value's magnitude). Returns a sentence saying so, or None.
    """
    seed = _seed_col(rows)
    drops, finals = [], []
    for _, g in rows.groupby(seed if seed in rows.columns else "cell_id"):
        c = g.groupby("step")["value"].mean().sort_index()
        c = c[np.isfinite(c.to_numpy(float))]
        if len(c) < last:
            continue
        drops.append(float(c.iloc[-last] - c.iloc[-1]))
        finals.append(float(c.iloc[-1]))
    if not drops:
        return None
    drop = float(np.mean(drops))
    spread = float(np.std(finals, ddof=1)) if len(finals) > 1 else rel * abs(float(np.mean(finals)))
    if drop > spread:
        what = "seeds' spread" if len(finals) > 1 else "one-seed tolerance"
        return (f"still improving: the curve fell by {_fmt(drop)} over its last {last} checkpoints, more than the "
                f"{what} ({_fmt(spread)})")
    return None

