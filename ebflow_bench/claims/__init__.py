"""The papers' claims as data, each with a rule that turns a results table into a verdict.

The machinery (:class:`Claim`, :class:`Verdict`, :func:`select` and the table helpers) lives in :mod:`.core`;
the claims themselves are declared by paper: :mod:`.ebflow`, :mod:`.flowmc`, :mod:`.energy`, :mod:`.peers`
(EBFlow against the determinant-free peers). A new claim is
one entry in one of those modules (or a new module added to :data:`CLAIMS` here).
"""

from __future__ import annotations

import pandas as pd

from .core import *  # noqa: F401,F403
from .core import (CLAIM_COLUMNS, RULE_CHANGED, VERDICTS, Broken, Cells, Claim, Inconclusive, NotRun,  # noqa: F401
                   Verdict, fingerprints_for, registration, select, time_to_reach, too_short)
from .ebflow import EBFLOW_CLAIMS
from .energy import ENERGY_CLAIMS
from .flowmc import FLOWMC_CLAIMS
from .peers import PEERS_CLAIMS

CLAIMS: tuple[Claim, ...] = EBFLOW_CLAIMS + FLOWMC_CLAIMS + ENERGY_CLAIMS + PEERS_CLAIMS


def get_claim(key: str) -> Claim:
    for c in CLAIMS:
        if c.key == key:
            return c
    raise KeyError(f"unknown claim {key!r}; known: {', '.join(c.key for c in CLAIMS)}")


def evaluate_claims(df: pd.DataFrame, claims: tuple[Claim, ...] = CLAIMS) -> pd.DataFrame:
    """One row per claim (:data:`CLAIM_COLUMNS`). A claim whose deciding cells ran under another rule, or
    recorded none (:func:`registration`), reads :data:`RULE_CHANGED` in the ``verdict`` column and its rule is
    not applied (unless a deciding method ran too few steps for any rule: ``not run``); otherwise the rule's
    verdict, with a note naming runs made from uncommitted code."""
    rows = []
    for c in claims:
        reg = registration(c, df)
        if reg.changed and not too_short(c, df):  # too short to decide under any rule: not run (below)
            rows.append({"claim": c.key, "source": c.source, "paper_value": c.paper_value, "our_value": "",
                         "verdict": RULE_CHANGED, "rule_fingerprint": c.fingerprint,
                         "note": f"{reg.changed} {reg.dirty}".strip()})
            continue
        v = c.evaluate(df)
        rows.append({"claim": c.key, "source": c.source, "paper_value": c.paper_value, "our_value": v.our_value,
                     "verdict": v.verdict, "rule_fingerprint": c.fingerprint,
                     "note": f"{v.note} {reg.dirty}".strip()})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


#: the columns of :func:`changed_verdicts`
CHANGE_COLUMNS = ["claim", "previous", "now", "reason"]


def read_claims_csv(path) -> pd.DataFrame | None:
    """A previous ``claims.csv`` (None if absent or unreadable: the report then shows no changes)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, keep_default_na=False, dtype=str)
    except (ValueError, OSError, pd.errors.ParserError):
        return None


def changed_verdicts(previous: pd.DataFrame | None, now: pd.DataFrame) -> pd.DataFrame:
    """The claims whose verdict differs between a previous ``claims.csv`` and ``now`` (:data:`CHANGE_COLUMNS`),
    each with its reason: ``rule changed`` (the rule's fingerprint differs, or the previous table had none),
    ``setting changed`` (same rule, the claim's stated setting is not the one in the previous note), ``cells
    rerun`` (same rule and setting: the evidence changed), ``new claim`` / ``claim removed``."""
    if previous is None or "claim" not in previous.columns:
        return pd.DataFrame(columns=CHANGE_COLUMNS)
    by_key = {c.key: c for c in CLAIMS}
    old = {str(r["claim"]): r for _, r in previous.iterrows()}
    new = {str(r["claim"]): r for _, r in now.iterrows()}
    out = []
    for key, r in new.items():
        if key not in old:
            out.append([key, "", r["verdict"], "new claim"])
            continue
        o = old[key]
        if str(o.get("verdict", "")) == str(r["verdict"]):
            continue
        fp_old, fp_new = str(o.get("rule_fingerprint", "") or ""), str(r.get("rule_fingerprint", "") or "")
        c = by_key.get(key)
        if fp_old != fp_new:
            why = f"rule changed ({fp_old or 'no fingerprint'} -> {fp_new})"
        elif (c is not None and c.setting and str(o.get("verdict", "")) in VERDICTS[:3]
              and c.setting not in str(o.get("note", ""))):  # decided notes state the setting
            why = "setting changed"
        else:
            why = f"cells rerun (ours: {o.get('our_value', '') or '-'} -> {r.get('our_value', '') or '-'})"
        out.append([key, str(o.get("verdict", "")), str(r["verdict"]), why])
    out += [[k, str(o.get("verdict", "")), "", "claim removed"] for k, o in old.items() if k not in new]
    return pd.DataFrame(out, columns=CHANGE_COLUMNS)


def claims_markdown(table: pd.DataFrame) -> str:
    """The report's Claims section body: a table of verdicts, then each claim's statement, values and note."""
    by_key = {c.key: c for c in CLAIMS}
    out = ["| claim | verdict | paper | ours |", "|---|---|---|---|"]
    for _, r in table.iterrows():
        cell = lambda s: str(s).replace("|", "/")  # noqa: E731
        out.append(f"| `{r['claim']}` | **{r['verdict']}** | {cell(r['paper_value'])} | {cell(r['our_value'])} |")
    out.append("")
    for _, r in table.iterrows():
        c = by_key.get(r["claim"])
        head = c.statement if c else r["claim"]
        out.append(f"- **`{r['claim']}`** ({r['verdict']}): {head} Source: {r['source']}. {r['note']}")
    return "\n".join(out) + "\n"


__all__ = ["Claim", "Cells", "Verdict", "CLAIMS", "CLAIM_COLUMNS", "RULE_CHANGED", "evaluate_claims",
           "claims_markdown", "changed_verdicts", "read_claims_csv", "get_claim", "time_to_reach", "select", "fingerprints_for", "registration", "NotRun",
           "Broken", "Inconclusive"]
