"""The papers' claims as data, each with a rule that turns a results table into a verdict.

A :class:`Claim` names a statement of one of the compared papers, where it is made, the paper's value, the
metric and the cells that decide it, and a ``rule(df) -> Verdict``. :func:`evaluate_claims` applies every rule
to a tidy results table (the report's, after de-duplication) and returns one row per claim with the columns
``claim, source, paper_value, our_value, verdict, note`` (:data:`CLAIM_COLUMNS`):

- ``verdict`` is one of :data:`VERDICTS`: ``reproduced``; ``not reproduced`` (cells of the method under claim
  that ``failed`` or came out ``degenerate`` are evidence and give it with their reason); ``inconclusive`` (the
  deciding cells ran but cannot decide: a curve still falling beyond the seeds' spread, a comparator that
  diverged, too few seeds; the note says which); ``not run`` (the table lacks a deciding cell, comparators
  included, or one stopped early (``capped``) or ran a budget below the claim's ``min_steps``). Or, never a
  verdict, :data:`RULE_CHANGED`: see pre-registration below.
- ``note`` states the rule's numbers and the differences in setting from the paper.

Pre-registration. Each claim declares the cells it decides on (``Claim.cells``, a :class:`Cells` predicate on
method, task and D, comparators included) and has a fingerprint of everything that decides its verdict
(:attr:`Claim.fingerprint`). When a run starts, every cell records the fingerprints of the claims it decides
(:func:`fingerprints_for`; the cell record's ``rule_fingerprints``, a column of the results table), so a table
merged from several run folders knows, per cell, under which rule each claim was registered.
:func:`registration` compares them with the rules now: if any deciding cell (of at least ``min_steps`` steps)
ran under another fingerprint, or recorded none (a run from before pre-registration, or before the claim
existed), the claim reads :data:`RULE_CHANGED` instead of a verdict until those cells are rerun. Cells made from
uncommitted code (``commit`` ending ``+dirty``) or of unknown commit are named in the note.

The rules were written before the ``reproduce`` preset was run and are not to be adjusted to its outcome:
a claim that does not reproduce is a result. Each rule's thresholds, and what a diverged or degenerate
comparator means for it, are stated in its ``rule_text``.

Only the cells a claim names are read: e.g. claim ``ebflow-quality`` reads ``test_bpd`` of the five EBFlow
objectives on ``mnist5k`` with MaP on. Where a method appears with several configurations (``config_key``), the
one (set of resolved hyperparameters) with the most finished cells is used.
"""

from __future__ import annotations

import contextvars
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

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
class Cells:
    """The cells a claim decides on (the cells its rule reads, comparators included): a predicate on a cell's
    method, task and D. ``tasks`` None: any task whose name starts with ``task_prefix`` ('' = any task)."""

    methods: tuple[str, ...]
    tasks: tuple[str, ...] | None = None
    task_prefix: str = ""
    dim_min: int | None = None

    def matches(self, method: str, task: str, dim: Any = None) -> bool:
        if method not in self.methods:
            return False
        if self.tasks is not None and task not in self.tasks:
            return False
        if self.tasks is None and not str(task).startswith(self.task_prefix):
            return False
        if self.dim_min is not None:
            try:
                return int(dim) >= self.dim_min
            except (TypeError, ValueError):
                return False
        return True

    def __call__(self, spec: Any) -> bool:
        """The predicate on a ``cell.CellSpec`` (anything with ``method``, ``task``, ``dim``)."""
        return self.matches(spec.method, spec.task, spec.dim)

    def describe(self) -> str:
        tasks = "/".join(self.tasks) if self.tasks is not None else (f"{self.task_prefix}*" if self.task_prefix
                                                                     else "any task")
        dim = f", D >= {self.dim_min}" if self.dim_min is not None else ""
        return f"{'/'.join(self.methods)} on {tasks}{dim}"


#: the minimum budget of the claim being evaluated, read by :func:`select` (set by :meth:`Claim.evaluate`)
_MIN_STEPS: contextvars.ContextVar[int] = contextvars.ContextVar("min_steps", default=0)


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
    #: a deciding cell (comparators included) that ran fewer steps leaves the claim ``not run`` (a budget long
    #: enough to decide it: the reproduce preset)
    min_steps: int = 0
    #: the cells the claim decides on (its rule's cells, comparators included): what a run pre-registers
    cells: Cells | None = None

    @property
    def fingerprint(self) -> str:
        """12 hex digits of the SHA-1 of everything that decides the verdict: the key, the deciding cells, the
        rule in words, the minimum budget and the rule function's source (with the module-level constants it
        reads, as far as its source names them). Editing any of them changes the fingerprint."""
        return rule_fingerprint(self)

    def evaluate(self, df: pd.DataFrame) -> Verdict:
        """The rule's verdict on ``df`` (no pre-registration check: :func:`registration` does that)."""
        token = _MIN_STEPS.set(self.min_steps)
        try:
            short = too_short(self, df)
            if short:
                raise NotRun(short)
            v = self.rule(df)
        except NotRun as e:
            return Verdict("not run", "", f"{e}. Decided by: {self.decided_by}.")
        except Broken as e:
            return Verdict("not reproduced", "", f"{e}. {self.setting}")
        except Inconclusive as e:
            return Verdict("inconclusive", e.our_value, f"{e}. Rule: {self.rule_text} {self.setting}".strip())
        finally:
            _MIN_STEPS.reset(token)
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
                          "min_steps": claim.min_steps, "cells": repr(claim.cells), "source": src,
                          "constants": consts}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------ table access


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
    """Rows of ``metric`` for ``method`` on ``task`` (of cells run at several step budgets, those of the longest;
    of several configurations, the one with the most finished cells: ``ok`` or ``degenerate``).

    Raises :class:`NotRun` when no cell is there (``allow_missing``: returns no rows instead), when all were
    capped, or when the chosen cells' budget is below the minimum of the claim being evaluated (``min_steps``:
    a comparator too short to decide is never dropped silently, it leaves the claim ``not run``); and
    :class:`Broken` when every cell of the chosen configuration failed or is degenerate. ``where`` filters on
    the resolved hyperparameters. ``accept_degenerate`` lets degenerate cells count (failed and capped ones
    never do): ``True`` for a claim about the cost of a step (a step's time does not depend on how well the
    model fits), or a predicate on the cell's reason (a claim that predicts that very failure).
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
        raise NotRun(f"no {method} cell on {'/'.join(tasks)}")
    st = _status_col(df)
    budget_col = "budget" if "budget" in sub.columns else ("steps_done" if "steps_done" in sub.columns else None)
    if budget_col is None and _MIN_STEPS.get():
        raise NotRun(f"{method} on {'/'.join(tasks)}: the table records no step budget; this claim needs cells of "
                     f">= {_MIN_STEPS.get()} steps")
    if budget_col is not None:
        budgets = pd.to_numeric(sub[budget_col], errors="coerce")
        if budgets.nunique() > 1:  # the same cells at several budgets: the longest decides (the others are earlier)
            sub = sub[budgets == budgets.max()]
        need, longest = _MIN_STEPS.get(), budgets.max()
        if need and not (longest >= need):  # NaN budget: unknown, too short to decide
            raise NotRun(f"{method} on {'/'.join(tasks)} had a budget of only "
                         f"{'?' if pd.isna(longest) else int(longest)} steps; this claim needs cells of >= {need} "
                         "steps (the reproduce preset), comparators included")
    if "hparams" in sub.columns and sub["hparams"].nunique() > 1:
        # several configurations of one method (D and L aside): keep the one with the most finished cells
        finished = sub[(sub["metric"] == metric) & sub[st].isin(["ok", "degenerate"])] if st in sub.columns \
            else sub[sub["metric"] == metric]
        counts = finished.groupby("hparams")["cell_id"].nunique()
        if counts.empty:
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



def too_short(claim: "Claim", df: pd.DataFrame) -> str:
    """'' or a sentence naming the deciding cells (``claim.cells``, comparators included) whose method and task
    ran no cell of at least ``claim.min_steps`` steps: such a claim is ``not run``, never decided without them."""
    if not claim.min_steps or claim.cells is None or df.empty or "method" not in df.columns:
        return ""
    col = "budget" if "budget" in df.columns else ("steps_done" if "steps_done" in df.columns else None)
    dims = df["dim"] if "dim" in df.columns else pd.Series([None] * len(df), index=df.index)
    sub = df[[claim.cells.matches(m, t, d) for m, t, d in zip(df["method"], df["task"], dims)]]
    if sub.empty:
        return ""
    if col is None:
        return f"the table records no step budget; this claim needs cells of >= {claim.min_steps} steps"
    steps = pd.to_numeric(sub[col], errors="coerce").fillna(0)
    longest = steps.groupby([sub["method"], sub["task"]]).max()
    short = longest[longest < claim.min_steps]
    if short.empty:
        return ""
    what = ", ".join(f"{m} on {t} ({int(b)})" for (m, t), b in short.items())
    return (f"deciding cells ran too few steps: {what}; this claim needs cells of >= {claim.min_steps} steps (the "
            "reproduce preset), comparators included")


def require_seeds(rows: pd.DataFrame, n: int, what: str) -> None:
    """Raise :class:`Inconclusive` when ``rows`` (as :func:`select` returns them) come from fewer than ``n``
    cells (seeds): a claim about a difference needs the seeds' spread."""
    k = rows["cell_id"].nunique() if len(rows) else 0
    if k < n:
        raise Inconclusive(f"too few seeds: {what} has {k} finished cell(s), this claim needs {n}")


# ------------------------------------------------------------------------------------------ pre-registration


def fingerprints_for(spec: Any, claims: tuple["Claim", ...]) -> dict[str, str]:
    """``{claim key: fingerprint}`` of the claims among ``claims`` that decide on cell ``spec`` (their
    :class:`Cells` match it, whatever its budget): what a run records for the cell when it starts."""
    return {c.key: c.fingerprint for c in claims if c.cells is not None and c.cells(spec)}


def _recorded(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return value
    try:
        out = json.loads(value) if isinstance(value, str) and value else {}
    except json.JSONDecodeError:
        return {}
    return out if isinstance(out, dict) else {}


@dataclass(frozen=True)
class Registration:
    """How the deciding cells of a claim in a table were registered (:func:`registration`).
    ``changed``: a note when some ran under another rule (or none recorded), else ''. ``dirty``: a note naming
    the runs made from uncommitted code (or of unknown commit), else ''."""

    changed: str = ""
    dirty: str = ""


def _runs_text(cells: pd.DataFrame, limit: int = 4) -> str:
    parts = []
    for run, g in cells.groupby("run_id", sort=True) if "run_id" in cells.columns else [("?", cells)]:
        what = sorted({f"{m}/{t}" for m, t in zip(g["method"], g["task"])})
        parts.append(f"run {run or '?'} ({len(g)} cell(s): {', '.join(what[:limit])}"
                     + (", ..." if len(what) > limit else "") + ")")
    return "; ".join(parts)


def registration(claim: "Claim", df: pd.DataFrame) -> Registration:
    """Check the deciding cells of ``claim`` in ``df`` against the claim's rule now.

    Deciding cells: those its :class:`Cells` match with a budget >= ``min_steps`` (shorter ones leave the claim
    ``not run`` whatever the rule). Each must have recorded ``claim.fingerprint`` in its ``rule_fingerprints``
    column at the start of its run; a different one or none gives :attr:`Registration.changed` (the claim
    then reads :data:`RULE_CHANGED`). A claim without a declaration (``cells`` None) cannot be pre-registered:
    every table gives it ``changed``."""
    if claim.cells is None:
        return Registration(changed=f"claim {claim.key!r} declares no deciding cells (Claim.cells), so no run can "
                            "have registered its rule; declare them and rerun its cells")
    if df.empty or "method" not in df.columns:
        return Registration()
    dims = df["dim"] if "dim" in df.columns else pd.Series([None] * len(df), index=df.index)
    mask = [claim.cells.matches(m, t, d) for m, t, d in zip(df["method"], df["task"], dims)]
    sub = df[mask]
    col = "budget" if "budget" in sub.columns else ("steps_done" if "steps_done" in sub.columns else None)
    if claim.min_steps and col is not None:
        sub = sub[pd.to_numeric(sub[col], errors="coerce").fillna(0) >= claim.min_steps]
    cells = sub.drop_duplicates("cell_id")
    if cells.empty:
        return Registration()
    fp = claim.fingerprint
    rec = cells["rule_fingerprints"] if "rule_fingerprints" in cells.columns else pd.Series([""] * len(cells),
                                                                                             index=cells.index)
    got = rec.map(lambda v: _recorded(v).get(claim.key, ""))
    changed = ""
    other, none = cells[(got != fp) & (got != "")], cells[got == ""]
    if len(other) or len(none):
        olds = sorted(set(got[(got != fp) & (got != "")]))
        bits = []
        if len(other):
            bits.append(f"{len(other)} ran under rule {'/'.join(olds)} ({_runs_text(other)})")
        if len(none):
            bits.append(f"{len(none)} recorded no rule for it (run before pre-registration or before this "
                        f"claim's cells were declared: {_runs_text(none)})")
        changed = (f"{RULE_CHANGED}: of the {len(cells)} cell(s) that decide it, " + "; ".join(bits)
                   + f"; the rule now is {fp}. Rerun those cells (a fresh run folder, or delete their records "
                   "and `--resume`) to get a verdict.")
    commit = cells["commit"].astype(str) if "commit" in cells.columns else pd.Series([""] * len(cells),
                                                                                   index=cells.index)
    unclean = cells[commit.str.endswith("+dirty") | commit.isin(["", "unknown", "nan"])]
    dirty = ""
    if len(unclean):
        runs = sorted({f"{r} ({c or 'commit unknown'})" for r, c in zip(unclean.get("run_id", [""] * len(unclean)),
                                                                    commit[unclean.index])})
        dirty = (f"Made from uncommitted code or of unknown commit: {len(unclean)} of its {len(cells)} deciding "
                 f"cell(s), run(s) {', '.join(runs)}; not exactly reproducible from a commit.")
    return Registration(changed=changed, dirty=dirty)


# ------------------------------------------------------------------------------------ every seed counted


def seeds_of(df: pd.DataFrame, method: str, task: str | tuple[str, ...], metric: str, *, seeds: int,
             broken: str, meaning: str = "", accept_degenerate: bool | Callable[[str], bool] = False,
             **kw: Any) -> pd.DataFrame:
    """Rows of ``metric`` for ``method`` on ``task`` (:func:`select`'s configuration and budget) when every cell
    of that configuration finished sound, counting each seed the same way in every claim.

    A cell that failed, or came out degenerate (unless ``accept_degenerate`` lets its reason count), is never
    dropped: ``broken="not reproduced"`` (the method under claim: its failure is evidence against the claim)
    raises :class:`Broken`; ``broken="inconclusive"`` (a comparator: a diverged comparator cannot decide the
    claim; ``meaning`` says why, as the rule text states) raises :class:`Inconclusive`. Fewer than ``seeds``
    finished cells: :class:`Inconclusive` (too few seeds). Missing or too short: :class:`NotRun`."""
    if broken not in ("not reproduced", "inconclusive"):
        raise ValueError(f"broken must be 'not reproduced' or 'inconclusive', got {broken!r}")
    tasks = (task,) if isinstance(task, str) else tuple(task)
    try:
        rows = select(df, method, tasks, metric, accept_degenerate=True, **kw)
    except Broken as e:
        if broken == "not reproduced":
            raise
        raise Inconclusive(f"comparator {e}{': ' + meaning if meaning else ''}") from None
    st = _status_col(df)
    same = (df["method"] == method) & df["task"].isin(tasks)
    for col in ("hparams", "budget", "dim"):
        if col in df.columns and col in rows.columns:
            same &= df[col].isin(set(rows[col]))
    cells = df[same].drop_duplicates("cell_id")
    blank = pd.Series([""] * len(cells), index=cells.index)
    reasons = cells.get("cell_reason", blank).fillna("").astype(str)
    reasons = reasons.where(reasons != "", cells.get("reason", blank).fillna("").astype(str))  # the cell's first
    ok_deg = (cells[st] == "degenerate") & (reasons.map(lambda r: bool(accept_degenerate(r))) if callable(
        accept_degenerate) else bool(accept_degenerate))
    bad = cells[cells[st].isin(["failed", "degenerate"]) & ~ok_deg]
    if len(bad):
        why = "; ".join(sorted({f"{s}: {r}" if r else str(s) for s, r in zip(bad[st], reasons[bad.index])}))[:300]
        msg = f"{method} on {'/'.join(tasks)}: {len(bad)} of {len(cells)} cell(s) {'/'.join(sorted(set(bad[st])))} ({why})"
        if broken == "not reproduced":
            raise Broken(msg)
        raise Inconclusive(f"comparator diverged or degenerate: {msg}{'; ' + meaning if meaning else ''}")
    rows = rows[rows["cell_id"].isin(cells.loc[~cells[st].isin(["failed", "capped"]), "cell_id"])]
    require_seeds(rows, seeds, f"{method} on {'/'.join(tasks)}")
    return rows
