"""Claim ``ebflow-vs-prior-efficient`` (claims.peers) on synthetic results tables: each verdict and its reasons."""

from __future__ import annotations

import json
import math

import pandas as pd

from ebflow_bench.claims import CLAIM_COLUMNS, evaluate_claims, get_claim

D = 784
KEY = "ebflow-vs-prior-efficient"
METHODS = ("ebflow-ssm", "ebflow-dsm", "snf", "relative-gradient", "free-form-flow")


def _nats(bpd: float) -> float:
    return bpd * D * math.log(2) - D * math.log(256)


def _flat(final: float, k: int) -> float:
    return final + 2.0 * 0.3 ** k  # converged: falls by ~1e-4 over the last three checkpoints


def _falling(final: float, k: int) -> float:
    return final + 0.05 * (10 - k)  # still falling by 0.1 over the last three checkpoints


def _cells(method, final, *, shape=_flat, step_s=0.05, budget=1500, status="ok", cell_status="ok", hparams=None):
    rows = []
    hp = json.dumps(hparams or {}, sort_keys=True)
    for seed in (0, 1):
        off = 0.004 * (seed - 0.5)
        cid = f"{method}-{seed}-{hp}"
        base = {"method": method, "task": "mnist5k", "dim": D, "layers": 2, "train_seed": seed, "hparams": hp,
                "cell_id": cid, "config_key": f"{method}-{hp}", "budget": budget, "cell_status": cell_status,
                "reason": "", "cell_reason": "diverged at step 12" if cell_status == "failed" else ""}
        rows.append({**base, "metric": "test_bpd", "value": final + off, "status": status, "step": math.nan,
                     "compute_s": math.nan})
        for k in range(1, 11):
            step = budget * k // 10
            rows.append({**base, "metric": "nll_at_time", "value": _nats(shape(final, k) + off), "status": "ok",
                         "step": step, "compute_s": step * step_s})
    return rows


def _verdict(rows):
    # a run of the rule as it stands: every cell registered under its current fingerprint, from a clean commit
    df = pd.DataFrame(rows).assign(commit="0123abc", rule_fingerprints=json.dumps({KEY: get_claim(KEY).fingerprint}))
    out = evaluate_claims(df, claims=(get_claim(KEY),))
    assert list(out.columns) == CLAIM_COLUMNS
    return out.iloc[0]


def _table(**override):
    """EBFlow 2.0 bits/dim (DSM 2.01), every peer 2.2 (10% worse), the same cost per step, converged curves."""
    spec = {"ebflow-ssm": {"final": 2.0}, "ebflow-dsm": {"final": 2.01}, "snf": {"final": 2.2},
            "relative-gradient": {"final": 2.2}, "free-form-flow": {"final": 2.2}}
    for m, kw in override.items():
        spec[m.replace("_", "-")] = {**spec[m.replace("_", "-")], **kw}
    return [r for m in METHODS for r in _cells(m, **spec[m])]


def test_reproduced_when_ebflow_wins_every_comparison():
    v = _verdict(_table())
    assert v.verdict == "reproduced", v.note
    assert v.our_value.count(": win") == 6  # 3 peers x {equal steps, equal compute}


def test_not_reproduced_when_a_peer_is_as_good():
    v = _verdict(_table(snf={"final": 2.005}))  # within the 1% margin of SSM
    assert v.verdict == "not reproduced"
    assert "snf @ equal steps: loss" in v.our_value and "relative-gradient @ equal steps: win" in v.our_value


def test_equal_compute_loss_is_decided_when_ebflow_has_converged():
    # EBFlow 4x dearer per step and only converged late; its curve is flat at its end (k = 8..10)
    late = {"shape": lambda f, k: f + (0.3 if k <= 5 else 0.0) + 2.0 * 0.3 ** k, "step_s": 0.2}
    v = _verdict(_table(ebflow_ssm=late, ebflow_dsm=late))
    assert "snf @ equal steps: win" in v.our_value and "snf @ equal compute: loss" in v.our_value
    assert v.verdict == "not reproduced"


def test_inconclusive_when_a_comparator_diverged():
    v = _verdict(_table(free_form_flow={"cell_status": "failed"}))
    assert v.verdict == "inconclusive" and "diverged: free-form-flow" in v.our_value
    assert "comparator(s) diverged" in v.note


def test_inconclusive_while_the_losing_curve_still_falls():
    v = _verdict(_table(relative_gradient={"shape": _falling}))
    assert v.verdict == "inconclusive"
    assert "relative-gradient @ equal steps: undecided" in v.our_value and "still improving" in v.our_value


def test_a_win_over_a_flagged_likelihood_is_undecided():
    v = _verdict(_table(free_form_flow={"status": "unreliable"}))
    assert v.verdict == "inconclusive" and "flagged unreliable" in v.our_value


def test_short_budgets_do_not_decide():
    rows = [dict(r, budget=500) for r in _table()]
    v = _verdict(rows)
    assert v.verdict == "not run" and "1500" in v.note
    assert get_claim(KEY).min_steps == 1500


def test_ebflow_broken_is_not_reproduced_and_other_archs_are_ignored():
    rows = [r for r in _table() if not r["method"].startswith("ebflow-")]
    rows += _cells("ebflow-ssm", 2.0, cell_status="failed") + _cells("ebflow-dsm", 2.0, cell_status="failed")
    assert _verdict(rows).verdict == "not reproduced"
    # a resnet free-form flow far better than EBFlow does not enter (the claim is about the FC model)
    rows = _table() + _cells("free-form-flow", 1.5, hparams={"arch": "resnet"})
    rows = [r for r in rows if not (r["method"] == "free-form-flow" and r["hparams"] == "{}")] + _cells(
        "free-form-flow", 2.2, hparams={"arch": "fc"})
    assert _verdict(rows).verdict == "reproduced"
