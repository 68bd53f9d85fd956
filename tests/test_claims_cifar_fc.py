"""The claims of the CIFAR-10 FC setting on synthetic results tables: ebflow-time-to-quality (D = 1024, patches32),
ebflow-time-to-quality-3072 (patches32-rgb) and ebflow-cifar-fc, each reproduced, not reproduced, inconclusive
and not run. Only cells of arch fc-residual at the budgets fixed in claims/ebflow.py decide them."""

from __future__ import annotations

import json
import math

import pandas as pd

from ebflow_bench.claims import CLAIM_COLUMNS, evaluate_claims, get_claim
from ebflow_bench.claims.ebflow import CIFAR_FC_STEPS, TTQ_STEPS_1024, TTQ_STEPS_3072

HP = {"arch": "fc-residual", "optimizer": "rmsprop", "lr": 1e-4, "batch_size": 100, "logit_smoothness": 0.5}
FLAT = (1000.0, 500.0, 300.0, 200.0, 200.0, 200.0)  # a curve that has flattened: no drop over its last 3 points
OWN = {"ebflow-dsm": {"std": 0.1, "lam": 1.024}, "ebflow-fdssm": {"eps": 0.1, "lam": 102.4}}
FALLING = (1000.0, 800.0, 600.0, 400.0, 300.0, 200.0)


def _cell_rows(method, task, dim, seed, budget, curve, speed, *, hparams=None, cell_status="ok", extra=()):
    """nll_at_time checkpoints (checkpoint k after k * 100 / speed compute seconds) plus ``extra`` (metric, value)
    rows of one cell."""
    hp = json.dumps({**HP, **(hparams or {})}, sort_keys=True)
    base = {"method": method, "task": task, "dim": dim, "layers": 2, "train_seed": seed, "status": "ok",
            "cell_status": cell_status, "cell_reason": "collapse" if cell_status == "degenerate" else "",
            "reason": "", "hparams": hp, "budget": budget, "steps_done": budget, "device": "cpu", "threads": 1,
            "cell_id": f"{method}-{task}-{dim}-{seed}-{budget}-{hp}"}
    rows = [dict(base, metric="nll_at_time", value=v + 0.5 * seed, step=(k + 1) * budget / len(curve),
                 compute_s=(k + 1) * 100.0 / speed) for k, v in enumerate(curve)]
    rows += [dict(base, metric=metric, value=float(value), step=math.nan, compute_s=math.nan)
             for metric, value in extra]
    return rows


def _verdict(key, rows):
    columns = list(_cell_rows("ebflow-ml", "patches32", 1024, 0, 1, FLAT, 1.0)[0])
    # a run of the rule as it stands: every cell registered under its current fingerprint, from a clean commit
    df = pd.DataFrame(rows, columns=columns).assign(
        commit="0123abc", rule_fingerprints=json.dumps({key: get_claim(key).fingerprint}))
    out = evaluate_claims(df, claims=(get_claim(key),))
    assert list(out.columns) == CLAIM_COLUMNS
    return out.iloc[0]


# ------------------------------------------------------------------------------------------ time to quality

def _ttq(task="patches32", dim=1024, steps=TTQ_STEPS_1024, seeds=(0, 1), sm_speed=4.0, ml_curve=FLAT,
         sm_curve=FLAT):
    rows = []
    for m, budget in steps:
        for s in seeds:
            rows += _cell_rows(m, task, dim, s, budget, ml_curve if m == "ebflow-ml" else sm_curve,
                               1.0 if m == "ebflow-ml" else sm_speed, hparams=OWN.get(m))
    return rows


def test_time_to_quality_reproduced_and_not_reproduced_at_1024():
    v = _verdict("ebflow-time-to-quality", _ttq(sm_speed=4.0))  # SM reaches ML's final 200 at 0.17x ML's compute
    assert v.verdict == "reproduced" and "dsm 0.17x" in v.our_value and "D=1024" in v.our_value
    # the note states the setting and budget of each method's cells
    assert "ml 1000 steps x 2 seed(s), dsm 2000 steps x 2 seed(s), fdssm 2000 steps x 2 seed(s); cpu x1" in v.note
    assert "arch fc-residual" in v.our_value and "all: optimizer rmsprop, lr 0.0001" in v.note
    assert "dsm: lam 1.024, std 0.1; fdssm: lam 102.4, eps 0.1" in v.note
    slow = _verdict("ebflow-time-to-quality", _ttq(sm_speed=1.2))  # 0.56x > 0.5x
    assert slow.verdict == "not reproduced" and "0.56x" in slow.our_value
    # never reaching it after training more than half of ML's compute is a failure, as is a collapsed objective
    plateau = _verdict("ebflow-time-to-quality", _ttq(sm_speed=1.5, sm_curve=(1000, 600, 400, 300, 300, 300)))
    assert plateau.verdict == "not reproduced" and "never" in plateau.our_value
    rows = [dict(r, cell_status="degenerate") if r["method"] == "ebflow-dsm" else r for r in _ttq()]
    assert _verdict("ebflow-time-to-quality", rows).verdict == "not reproduced"


def test_time_to_quality_inconclusive():
    # ML's curve still falling at its end: its final NLL is no converged quality
    v = _verdict("ebflow-time-to-quality", _ttq(ml_curve=FALLING))
    assert v.verdict == "inconclusive" and "still improving" in v.note and "dsm" in v.our_value
    # the comparator diverged
    rows = [dict(r, cell_status="degenerate") if r["method"] == "ebflow-ml" else r for r in _ttq()]
    v = _verdict("ebflow-time-to-quality", rows)
    assert v.verdict == "inconclusive" and "comparator diverged" in v.note
    # one seed where two are required
    v = _verdict("ebflow-time-to-quality", _ttq(seeds=(0,)))
    assert v.verdict == "inconclusive" and "1 seed(s), the claim needs 2" in v.note
    # an objective stopped before half of ML's compute without reaching the target: it might have, later
    v = _verdict("ebflow-time-to-quality", _ttq(sm_speed=4.0, sm_curve=(1000, 600, 400, 300, 300, 300)))
    assert v.verdict == "inconclusive" and "trained only 0.25x" in v.note


def test_time_to_quality_not_run():
    # the MNIST-style arch does not decide the CIFAR-10 FC claims
    rows = [dict(r, hparams=r["hparams"].replace("fc-residual", "fc")) for r in _ttq()]
    assert _verdict("ebflow-time-to-quality", rows).verdict == "not run"
    # below the fixed budgets: ML's 500 steps are dropped by min_steps, DSM's 1500 by the per-method budget
    short_ml = [dict(r, budget=500, steps_done=500) if r["method"] == "ebflow-ml" else r for r in _ttq()]
    v = _verdict("ebflow-time-to-quality", short_ml)
    assert v.verdict == "not run" and "ebflow-ml on patches32 (500)" in v.note and ">= 1000 steps" in v.note
    short_dsm = [dict(r, budget=1500, steps_done=1500) if r["method"] == "ebflow-dsm" else r for r in _ttq()]
    v = _verdict("ebflow-time-to-quality", short_dsm)
    assert v.verdict == "not run" and "ran 1500 steps; this claim needs 2000" in v.note
    # the D = 3072 task does not decide the D = 1024 claim, and vice versa
    rgb = _ttq("patches32-rgb", 3072, TTQ_STEPS_3072, seeds=(0,))
    assert _verdict("ebflow-time-to-quality", rgb).verdict == "not run"
    assert _verdict("ebflow-time-to-quality-3072", _ttq()).verdict == "not run"
    assert _verdict("ebflow-time-to-quality-3072", []).verdict == "not run"


def test_time_to_quality_at_3072():
    rows = _ttq("patches32-rgb", 3072, TTQ_STEPS_3072, seeds=(0,), sm_speed=4.0)
    v = _verdict("ebflow-time-to-quality-3072", rows)
    assert v.verdict == "reproduced" and "D=3072" in v.our_value and "ml 100 steps x 1 seed(s)" in v.note
    slow = _ttq("patches32-rgb", 3072, TTQ_STEPS_3072, seeds=(0,), sm_speed=1.2)
    assert _verdict("ebflow-time-to-quality-3072", slow).verdict == "not reproduced"
    falling = _ttq("patches32-rgb", 3072, TTQ_STEPS_3072, seeds=(0,), ml_curve=FALLING)
    assert _verdict("ebflow-time-to-quality-3072", falling).verdict == "inconclusive"


# ------------------------------------------------------------------------------------------- ebflow-cifar-fc

PAPER_BPD = {"ebflow-ml": 5.59, "ebflow-sml": 5.60, "ebflow-ssm": 5.60, "ebflow-dsm": 5.61, "ebflow-fdssm": 5.80}
STEP_S = {"ebflow-ml": 3.6, "ebflow-sml": 2.5, "ebflow-ssm": 0.6, "ebflow-dsm": 0.3, "ebflow-fdssm": 0.3}


def _cifar(bpd=PAPER_BPD, step_s=STEP_S, curves=None, steps=CIFAR_FC_STEPS, status=None):
    rows = []
    for m, budget in steps:
        rows += _cell_rows(m, "patches32-rgb", 3072, 0, budget, (curves or {}).get(m, FLAT), 1.0,
                           cell_status=(status or {}).get(m, "ok"),
                           extra=[("test_bpd", bpd[m]), ("step_time", step_s[m])])
    return rows


def test_cifar_fc_reproduced():
    v = _verdict("ebflow-cifar-fc", _cifar())
    assert v.verdict == "reproduced"
    assert "ssm 6.0x (paper 5.9x)" in v.our_value and "dsm 12.0x (paper 11.3x)" in v.our_value
    assert "order ml < sml < ssm < dsm < fdssm" in v.our_value
    assert "sml 250 steps x 1 seed(s)" in v.note and "fdssm 800 steps" in v.note


def test_cifar_fc_not_reproduced():
    slow = _verdict("ebflow-cifar-fc", _cifar(step_s=dict(STEP_S, **{"ebflow-ssm": 2.0})))  # 1.8x < 0.5 * 5.9x
    assert slow.verdict == "not reproduced" and "ssm 1.8x" in slow.our_value
    far = _verdict("ebflow-cifar-fc", _cifar(bpd=dict(PAPER_BPD, **{"ebflow-dsm": 5.75})))  # 2.9% from ML
    assert far.verdict == "not reproduced" and "not all within 1.5% of ML" in far.note
    best_fd = _verdict("ebflow-cifar-fc", _cifar(bpd=dict(PAPER_BPD, **{"ebflow-fdssm": 5.595})))
    assert best_fd.verdict == "not reproduced" and "FDSSM is not the worst" in best_fd.note
    wide = _verdict("ebflow-cifar-fc", _cifar(bpd=dict(PAPER_BPD, **{"ebflow-fdssm": 6.0})))  # 7.3% spread
    assert wide.verdict == "not reproduced" and "spread exceeds 5%" in wide.note
    collapsed = _verdict("ebflow-cifar-fc", _cifar(status={"ebflow-ssm": "degenerate"}))
    assert collapsed.verdict == "not reproduced"  # a degenerate SSM is evidence (its step time still counts)


def test_cifar_fc_inconclusive():
    v = _verdict("ebflow-cifar-fc", _cifar(curves={"ebflow-ml": FALLING}))
    assert v.verdict == "inconclusive" and "still falling" in v.note and "ml still improving" in v.note
    assert "bits/dim at budget" in v.our_value and "ssm 6.0x" in v.our_value
    # an ML that diverged: no yardstick for the quality, its step time still measured
    v = _verdict("ebflow-cifar-fc", _cifar(status={"ebflow-ml": "degenerate"}))
    assert v.verdict == "inconclusive" and "comparator diverged" in v.note and "ssm 6.0x" in v.our_value


def test_cifar_fc_not_run():
    assert _verdict("ebflow-cifar-fc", []).verdict == "not run"
    no_sml = [r for r in _cifar() if r["method"] != "ebflow-sml"]
    assert _verdict("ebflow-cifar-fc", no_sml).verdict == "not run"
    short = [dict(r, budget=400, steps_done=400) if r["method"] == "ebflow-ssm" else r for r in _cifar()]
    v = _verdict("ebflow-cifar-fc", short)
    assert v.verdict == "not run" and "needs 600" in v.note
    plain = [dict(r, hparams=r["hparams"].replace("fc-residual", "fc")) for r in _cifar()]
    assert _verdict("ebflow-cifar-fc", plain).verdict == "not run"
