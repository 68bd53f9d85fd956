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
                                        "rule_fingerprint": c.fingerprint,
                                        "note": f"rule could not be evaluated ({type(e).__name__}: {e})"}]))
    return pd.concat(parts, ignore_index=True)[CLAIM_COLUMNS] if parts else pd.DataFrame(columns=CLAIM_COLUMNS)


def claims_section(claims: pd.DataFrame, changes: pd.DataFrame | None = None) -> list[Block]:
    from ...claims import CLAIMS, RULE_CHANGED

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
