"""The papers' claims as data, each with a rule that turns a results table into a verdict.

The machinery (:class:`Claim`, :class:`Verdict`, :func:`select` and the table helpers) lives in :mod:`.core`;
the claims themselves are declared by paper: :mod:`.ebflow`, :mod:`.flowmc`, :mod:`.energy`, :mod:`.peers`
(EBFlow against the determinant-free peers). A new claim is
one entry in one of those modules (or a new module added to :data:`CLAIMS` here).
"""

from __future__ import annotations

import pandas as pd

from .core import *  # noqa: F401,F403
from .core import CLAIM_COLUMNS, RULE_CHANGED, VERDICTS, Broken, Claim, Inconclusive, NotRun, Verdict, select, time_to_reach  # noqa: F401
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
    """One row per claim: ``claim, source, paper_value, our_value, verdict, note`` (:data:`CLAIM_COLUMNS`)."""
    rows = []
    for c in claims:
        v = c.evaluate(df)
        rows.append({"claim": c.key, "source": c.source, "paper_value": c.paper_value, "our_value": v.our_value,
                     "verdict": v.verdict, "rule_fingerprint": c.fingerprint, "note": v.note})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


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


__all__ = ["Claim", "Verdict", "CLAIMS", "CLAIM_COLUMNS", "evaluate_claims", "claims_markdown", "get_claim",
           "time_to_reach", "select", "NotRun", "Broken"]
