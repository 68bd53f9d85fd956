"""Section Claims: the verdicts of ``ebflow_bench.claims`` (a thin call into it), and the claims table."""

from __future__ import annotations

import pandas as pd

from ..doc import Block, Bullets, Heading, Para, Table


def evaluate_claims_safely(df: pd.DataFrame) -> pd.DataFrame:
    """``claims.evaluate_claims`` claim by claim: a rule that raises on an unexpected table gives ``not run``
    with the error in its note, never a report that fails."""
    from ...claims import CLAIM_COLUMNS, CLAIMS, evaluate_claims

    parts = []
    for c in CLAIMS:
        try:
            parts.append(evaluate_claims(df, (c,)))
        except Exception as e:  # noqa: BLE001  (one broken rule must not sink the report)
            parts.append(pd.DataFrame([{"claim": c.key, "source": c.source, "paper_value": c.paper_value,
                                        "our_value": "", "verdict": "not run",
                                        "note": f"rule could not be evaluated ({type(e).__name__}: {e})"}]))
    return pd.concat(parts, ignore_index=True)[CLAIM_COLUMNS] if parts else pd.DataFrame(columns=CLAIM_COLUMNS)


def claims_section(claims: pd.DataFrame) -> list[Block]:
    from ...claims import CLAIMS

    blocks: list[Block] = [Heading("Claims"), Para(
        "Each claim of the compared papers gets a verdict from a rule fixed in `ebflow_bench.claims` before the "
        "runs (thresholds in each note): `reproduced`, `not reproduced` (with the evidence; cells that failed or "
        "came out degenerate count as evidence), or `not run` (these run folders lack the cells that decide "
        "it). The same rows are in `claims.csv` beside this report.")]
    if claims.empty:
        return blocks + [Para("No claims registered.")]
    statement = {c.key: c.statement for c in CLAIMS}
    blocks.append(Table(["claim", "verdict", "paper", "ours"],
                        [[f"`{r['claim']}`", f"**{r['verdict']}**", str(r["paper_value"]), str(r["our_value"])]
                         for _, r in claims.iterrows()], name="claims"))
    blocks.append(Bullets([f"`{r['claim']}` ({r['verdict']}): {statement.get(r['claim'], '')} Source: "
                           f"{r['source']}. {r['note']}" for _, r in claims.iterrows()]))
    return blocks
