"""Each claim's rule on synthetic results tables: one that passes, one that fails, one with the cells missing."""

from __future__ import annotations

import itertools
import json
import math

import pandas as pd
import pytest

from ebflow_bench.claims import CLAIM_COLUMNS, CLAIMS, evaluate_claims, get_claim, time_to_reach

_ids = itertools.count()


#: a run of the rules as they stand: every cell registered under the current fingerprints, from a clean commit
_REGISTERED = json.dumps({c.key: c.fingerprint for c in CLAIMS}, sort_keys=True)


def _row(method, task, metric, value, *, dim=2, layers=2, seed=0, status="ok", cell_status="ok", hparams=None,
         cell_id=None, step=math.nan, compute_s=math.nan, reason="", budget=100_000):
    hp = json.dumps(hparams or {}, sort_keys=True)
    return {"method": method, "task": task, "metric": metric, "value": float(value), "dim": dim, "layers": layers,
            "train_seed": seed, "status": status, "cell_status": cell_status, "reason": reason, "hparams": hp,
            "config_key": f"{method}-{task}-{dim}-{layers}-{hp}",
            "cell_id": cell_id or f"{method}-{task}-{dim}-{layers}-{seed}-{hp}", "step": step,
            "compute_s": compute_s, "elapsed_s": compute_s, "budget": budget, "run_id": "run-a",
            "commit": "0123abc", "rule_fingerprints": _REGISTERED}


def _seeds(rows, n=2, rel=0.01):
    """``rows`` (seed 0) repeated for seeds 0..n-1, each value moved by ``rel`` * seed (a seeds' spread)."""
    out = []
    for s in range(n):
        for r in rows:
            out.append(dict(r, train_seed=s, value=r["value"] * (1 + rel * s),
                            cell_id=f"{r['cell_id']}-s{s}"))
    return out


def _table(rows):
    return pd.DataFrame(rows)


def _verdict(key, rows):
    out = evaluate_claims(_table(rows), claims=(get_claim(key),))
    assert list(out.columns) == CLAIM_COLUMNS
    return out.iloc[0]


# ------------------------------------------------------------------------------------------------ cost

def _cost_rows(ml_exp, sm_exp, dims=(1024, 1536, 2048, 3072, 4096)):
    rows = []
    for m, e in (("ebflow-ml", ml_exp), ("ebflow-ssm", sm_exp), ("ebflow-dsm", sm_exp), ("ebflow-fdssm", sm_exp)):
        for d in dims:
            for s in (0, 1):  # two repeats with a little noise, so the interval is finite
                rows.append(_row(m, "gaussian", "step_time", 1e-9 * d ** e * (1 + 0.01 * (s - 0.5)), dim=d, seed=s))
    return rows


def test_cost_claim_passes_fails_and_not_run():
    assert _verdict("ebflow-cost", _cost_rows(3.0, 2.0)).verdict == "reproduced"
    bad = _verdict("ebflow-cost", _cost_rows(2.0, 2.0))
    assert bad.verdict == "not reproduced" and "ML's exponent" in bad.note
    few = _verdict("ebflow-cost", _cost_rows(3.0, 2.0, dims=(1024, 2048, 4096)))
    assert few.verdict == "not run" and "needs 5" in few.note


def test_cost_claim_counts_degenerate_timing_cells_but_not_failed_ones():
    # a few steps from initialisation leave every model degenerate: its step time still measures the step
    rows = [dict(r, cell_status="degenerate") for r in _cost_rows(3.0, 2.0)]
    out = _verdict("ebflow-cost", rows)
    assert out.verdict == "reproduced" and "flagged degenerate" in out.note
    failed = [dict(r, cell_status="failed") if r["method"] == "ebflow-dsm" else r for r in _cost_rows(3.0, 2.0)]
    assert _verdict("ebflow-cost", failed).verdict == "not reproduced"  # Broken: every dsm cell failed


def test_every_claim_not_run_on_empty_table():
    empty = pd.DataFrame(columns=["method", "task", "metric", "value", "dim", "layers", "train_seed", "status",
                                  "cell_status", "reason", "hparams", "config_key", "cell_id", "step",
                                  "compute_s", "elapsed_s"])
    out = evaluate_claims(empty)
    assert len(out) == len(CLAIMS) >= 7
    assert set(out["verdict"]) == {"not run"}


# --------------------------------------------------------------------------------------------- quality

def _quality_rows(bpd, seeds=(0, 1, 2), noise=0.001):
    rows = []
    for m, v in bpd.items():
        for s in seeds:
            rows.append(_row(m, "mnist5k", "test_bpd", v + noise * (s - 1), dim=784, seed=s, hparams={"map": True}))
    return rows


def test_quality_claim():
    paper = {"ebflow-ml": 2.010, "ebflow-sml": 2.010, "ebflow-ssm": 2.011, "ebflow-dsm": 2.023, "ebflow-fdssm": 2.032}
    assert _verdict("ebflow-quality", _quality_rows(paper)).verdict == "reproduced"
    far = dict(paper, **{"ebflow-dsm": 2.5})
    v = _verdict("ebflow-quality", _quality_rows(far))
    assert v.verdict == "not reproduced" and "spread" in v.our_value
    wrong_order = dict(paper, **{"ebflow-dsm": 2.040, "ebflow-fdssm": 2.020})
    assert _verdict("ebflow-quality", _quality_rows(wrong_order)).verdict == "not reproduced"
    missing = {k: v for k, v in paper.items() if k != "ebflow-sml"}
    assert _verdict("ebflow-quality", _quality_rows(missing)).verdict == "not run"


def test_quality_claim_on_a_curve_still_falling_is_inconclusive():
    paper = {"ebflow-ml": 2.010, "ebflow-sml": 2.010, "ebflow-ssm": 2.011, "ebflow-dsm": 2.023, "ebflow-fdssm": 2.49}
    rows = _quality_rows(paper)
    for m, v in paper.items():
        for s in (0, 1, 2):  # checkpoint curves; FDSSM still falling (2.90, 2.67, 2.56, 2.49: issue 21's MNIST-FC)
            curve = [2.90, 2.67, 2.56, 2.49] if m == "ebflow-fdssm" else [v + 0.3, v, v, v]
            rows += [_row(m, "mnist5k", "nll_at_time", c + 0.001 * s, dim=784, seed=s, hparams={"map": True},
                          step=1500 * (k + 1)) for k, c in enumerate(curve)]
    v = _verdict("ebflow-quality", rows)
    assert v.verdict == "inconclusive" and "ebflow-fdssm still improving" in v.note and "fdssm 2.49" in v.our_value
    flat = [dict(r, value=2.49) if r["method"] == "ebflow-fdssm" and r["metric"] == "nll_at_time" else r
            for r in rows]
    assert _verdict("ebflow-quality", flat).verdict == "not reproduced"  # converged, and 24% apart


def test_degenerate_cells_are_evidence_not_missing():
    paper = {"ebflow-ml": 2.01, "ebflow-sml": 2.01, "ebflow-ssm": 2.01, "ebflow-dsm": 2.02, "ebflow-fdssm": 2.03}
    rows = _quality_rows(paper)
    for r in rows:
        if r["method"] == "ebflow-ssm":
            r["cell_status"], r["reason"] = "degenerate", "mass escapes"
    v = _verdict("ebflow-quality", rows)
    assert v.verdict == "not reproduced" and "mass escapes" in v.note
    for r in rows:
        if r["method"] == "ebflow-ssm":
            r["cell_status"] = "capped"
    assert _verdict("ebflow-quality", rows).verdict == "not run"


# ------------------------------------------------------------------------------------- time to quality

def test_time_to_reach_interpolates():
    c = pd.DataFrame({"step": [1, 2, 3], "nll": [10.0, 6.0, 4.0], "compute": [1.0, 2.0, 3.0]})
    assert time_to_reach(c, 8.0) == pytest.approx(1.5)
    assert time_to_reach(c, 10.0) == pytest.approx(1.0)
    assert time_to_reach(c, 3.0) == math.inf


# the time-to-quality claims (D = 1024 and 3072) and ebflow-cifar-fc: tests/test_claims_cifar_fc.py


# ------------------------------------------------------------------------------------------------- MaP

def test_map_claim():
    def rows(with_map, without):
        return _seeds([_row("ebflow-ssm", "mnist5k", "test_bpd", with_map, dim=784, hparams={"map": True}),
                       _row("ebflow-ssm", "mnist5k", "test_bpd", without, dim=784, hparams={"map": False})])

    assert _verdict("ebflow-map", rows(2.0, 3.3)).verdict == "reproduced"
    assert _verdict("ebflow-map", rows(2.0, 2.2)).verdict == "not reproduced"
    assert _verdict("ebflow-map", [r for r in rows(2.0, 3.3) if '"map": true' in r["hparams"]]).verdict == "not run"
    # the paper's row to compare with: EMA only (1720.5), not the row with neither EMA nor MaP (1757.5)
    assert get_claim("ebflow-map").paper_value.startswith("1720.5 (EMA only")
    # a without-MaP model that diverged: the ablation broke, it does not say how much worse a working one is
    broken = [dict(r, cell_status="degenerate", cell_reason="mass escapes") if '"map": false' in r["hparams"] else r
              for r in rows(2.0, 3.3)]
    v = _verdict("ebflow-map", broken)
    assert v.verdict == "inconclusive" and "comparator diverged or degenerate" in v.note


# ------------------------------------------------------------------------------------------- flowMC-EBM

def _mode_rows(f, u):
    return _seeds([_row("flowmc-ebm", "mixture-4modes", "mode_weight_error", f),
                   _row("ula-ebm", "mixture-4modes", "mode_weight_error", u)])


def test_mode_weight_claim():
    rows = _mode_rows
    assert _verdict("flowmc-mode-weights", rows(4e-4, 1.3e-3)).verdict == "reproduced"
    assert _verdict("flowmc-mode-weights", rows(4e-4, 8e-4)).verdict == "not reproduced"   # ratio < 3
    assert _verdict("flowmc-mode-weights", rows(2e-3, 1e-1)).verdict == "not reproduced"   # MSE > 1e-3
    assert _verdict("flowmc-mode-weights", [r for r in rows(4e-4, 1e-3) if r["method"] != "ula-ebm"]).verdict \
        == "not run"
    # a degenerate ULA-EBM (all mass on one mode: a diverged model, not the paper's mild mis-weighting) decides
    # nothing: inconclusive, with the reason; the same for one degenerate seed of two
    ula_bad = [dict(r, cell_status="degenerate", cell_reason="log-Z ESS 1 of 4096") if r["method"] == "ula-ebm"
               else r for r in rows(4e-4, 0.17)]
    v = _verdict("flowmc-mode-weights", ula_bad)
    assert v.verdict == "inconclusive" and "comparator diverged" in v.note and "ESS 1 of 4096" in v.note
    one_bad = rows(4e-4, 0.17)
    one_bad[1] = dict(one_bad[1], cell_status="degenerate", cell_reason="NLL 4.8e12")
    assert _verdict("flowmc-mode-weights", one_bad).verdict == "inconclusive"
    # ... unless flowMC-EBM misses its own bar: the claim fails whatever ULA-EBM did
    miss = [dict(r, cell_status="degenerate") if r["method"] == "ula-ebm" else r for r in rows(3e-3, 0.17)]
    assert _verdict("flowmc-mode-weights", miss).verdict == "not reproduced"
    # a degenerate flowMC-EBM seed is evidence against the claim, never dropped
    f_bad = rows(4e-4, 1.3e-2)
    f_bad[2] = dict(f_bad[2], cell_status="degenerate", cell_reason="mass escapes")  # flowMC-EBM, seed 1
    v = _verdict("flowmc-mode-weights", f_bad)
    assert v.verdict == "not reproduced" and "1 of 2 cell(s) degenerate" in v.note
    # one seed only: too few seeds
    one = [r for r in rows(4e-4, 1.3e-3) if r["train_seed"] == 0]
    v = _verdict("flowmc-mode-weights", one)
    assert v.verdict == "inconclusive" and "too few seeds" in v.note

    # the same cells at two step budgets: the longest decides, whichever comes first in the table
    def at(budget, f, u):
        return [dict(r, budget=budget, cell_id=f"{r['cell_id']}-{budget}") for r in rows(f, u)]

    both = at(12000, 4e-4, 1.3e-3) + at(3000, 3e-3, 5e-2)
    v = _verdict("flowmc-mode-weights", both)
    assert v.verdict == "reproduced" and "0.0004" in v.our_value
    assert _verdict("flowmc-mode-weights", at(3000, 4e-4, 1.3e-3) + at(12000, 3e-3, 5e-2)).verdict == "not reproduced"


def _density_rows(f8, u8, fr, ur):
    return _seeds([_row("flowmc-ebm", "eight_gaussians", "log_density_error", f8),
                   _row("ula-ebm", "eight_gaussians", "log_density_error", u8),
                   _row("flowmc-ebm", "rings", "log_density_error", fr),
                   _row("ula-ebm", "rings", "log_density_error", ur)])


def test_density_claim():
    rows = _density_rows
    assert _verdict("flowmc-density", rows(0.9, 1.9, 0.4, 5.4)).verdict == "reproduced"
    assert _verdict("flowmc-density", rows(0.9, 1.9, 6.0, 5.4)).verdict == "not reproduced"
    assert _verdict("flowmc-density", [r for r in rows(0.9, 1.9, 0.4, 5.4) if r["task"] != "rings"]).verdict \
        == "not run"
    # a degenerate ULA-EBM seed is not dropped silently: counted as in flowmc-mode-weights (inconclusive)
    deg = rows(0.9, 1.9, 0.4, 5.4)
    i = next(k for k, r in enumerate(deg) if r["method"] == "ula-ebm" and r["task"] == "rings" and r["train_seed"])
    deg[i] = dict(deg[i], cell_status="degenerate", cell_reason="NLL far worse than a Gaussian fit")
    v = _verdict("flowmc-density", deg)
    assert v.verdict == "inconclusive" and "ula-ebm on rings: 1 of 2 cell(s) degenerate" in v.note


def test_flowmc_claims_state_their_setting_and_budgets_match_the_preset():
    import dataclasses

    from ebflow_bench.matrix import load_matrix, validate

    preset = load_matrix("reproduce")  # its flowMC blocks only (validating the whole preset loads MNIST)
    flowmc = dataclasses.replace(preset, blocks=[b for b in preset.blocks if set(b.methods) & {"flowmc-ebm"}],
                                 task_options={})
    cells = validate(flowmc)
    assert {c.method for c in cells} == {"flowmc-ebm", "ula-ebm"}
    for key in ("flowmc-mode-weights", "flowmc-density"):
        c = get_claim(key)
        mine = [x for x in cells if c.cells(x)]
        assert mine and {x.budget for x in mine} == {c.min_steps}  # min_steps = the preset's budget
        assert {x.train_seed for x in mine} == {0, 1}
        assert "512 persistent chains instead of 8,192" in c.setting and f"{c.min_steps:,} steps" in c.setting
    for x in cells:  # the paper's sampler settings (peers.md B4)
        if x.method == "flowmc-ebm":
            assert (x.hparams["n_proposals"], x.hparams["mala_steps"], x.hparams["repeats"]) == (64, 127, 1)
            assert x.hparams["lr"] == 1e-3 and x.hparams["n_chains"] == 512
        else:
            assert x.hparams["ula_steps"] == 512 and x.hparams["step"] == 0.125 ** 2 / 2 and x.hparams["lr"] == 1e-2
    # the standalone matrix the coordinator runs holds exactly these cells
    from pathlib import Path

    standalone = Path(__file__).resolve().parent.parent / "results" / "reproduce" / "matrix-flowmc.toml"
    assert {c.cell_id for c in validate(load_matrix(str(standalone)))} == {c.cell_id for c in cells}


# -------------------------------------------------------------------------------------- energy flows

def _energy_rows(e_sw, e_nll, task="checkerboard"):
    return _seeds([_row("energy-flow", task, "sliced_wasserstein", e_sw),
                   _row("energy-flow", task, "test_nll", e_nll),
                   _row("nflows-maf", task, "sliced_wasserstein", 0.10),
                   _row("nflows-maf", task, "test_nll", 3.0),
                   _row("ebflow-ml", task, "sliced_wasserstein", 0.2),
                   _row("ebflow-ml", task, "test_nll", 3.2),
                   _row("mle-lu", task, "sliced_wasserstein", 0.25),
                   _row("mle-lu", task, "test_nll", 3.3),
                   _row("normflows-realnvp", task, "sliced_wasserstein", 0.15),
                   _row("normflows-realnvp", task, "test_nll", 3.1)])


def _energy_all(e_sw, e_nll):
    return [r for t in ("checkerboard", "eight_gaussians", "digits") for r in _energy_rows(e_sw, e_nll, t)]


def test_energy_flow_claim():
    rows = _energy_all
    assert _verdict("energy-flow-decorrelated", rows(0.12, 4.0)).verdict == "reproduced"
    assert _verdict("energy-flow-decorrelated", rows(0.30, 4.0)).verdict == "not reproduced"  # SW 3x worse
    assert _verdict("energy-flow-decorrelated", rows(0.12, 3.1)).verdict == "not reproduced"  # NLL not worse
    assert _verdict("energy-flow-decorrelated", [r for r in rows(0.12, 4.0) if r["method"] != "energy-flow"]
                    ).verdict == "not run"
    # flagged degenerate for its NLL alone: the failure the claim predicts, so the cells decide (and the note says so)
    nll_only = "NLL far worse than a Gaussian fit: test NLL 9e5 nats against -50"
    flagged = [dict(r, cell_status="degenerate", cell_reason=nll_only) if r["method"] == "energy-flow" else r
               for r in rows(0.12, 4.0)]
    out = _verdict("energy-flow-decorrelated", flagged)
    assert out.verdict == "reproduced" and "flagged degenerate for its NLL alone" in out.our_value
    assert "same-architecture ML 0.2" in out.our_value
    # degenerate for another reason (escaping mass): its samples do not count
    escaped = [dict(r, cell_status="degenerate", cell_reason="mass escapes: 100% of samples; " + nll_only)
               if r["method"] == "energy-flow" else r for r in rows(0.12, 4.0)]
    assert _verdict("energy-flow-decorrelated", escaped).verdict == "not reproduced"
    # a diverged comparator: the best ML flow is unknown
    diverged = [dict(r, cell_status="degenerate", cell_reason="mass escapes") if r["method"] == "nflows-maf" else r
                for r in rows(0.12, 4.0)]
    v = _verdict("energy-flow-decorrelated", diverged)
    assert v.verdict == "inconclusive" and "nflows-maf" in v.note
    # the reproduce run's case (85997c1): a comparator that drew non-finite samples on one task has no sliced W2
    # (the metric row failed) but an NLL; it is a degenerate comparator (inconclusive), not a cell never run
    nonfinite = "non-finite samples: 31 of 2000 samples have NaN or infinite coordinates"
    maf_digits = [dict(r, cell_status="degenerate", cell_reason=nonfinite,
                       **({"value": math.nan, "status": "failed", "reason": "ValueError: samples contain 1984 "
                           "non-finite values"} if r["metric"] == "sliced_wasserstein" else {}))
                  if (r["method"], r["task"]) == ("nflows-maf", "digits") else r for r in rows(0.12, 4.0)]
    v = _verdict("energy-flow-decorrelated", maf_digits)
    assert v.verdict == "inconclusive" and "nflows-maf on digits" in v.note and "non-finite samples" in v.note


def test_a_comparator_below_the_minimum_budget_leaves_the_claim_not_run():
    # today's default-report case: one ML flow long enough, the others short; they are not filtered away
    rows = [dict(r, budget=500) if r["method"] in ("mle-lu", "ebflow-ml") else r for r in _energy_all(0.12, 4.0)]
    v = _verdict("energy-flow-decorrelated", rows)
    assert v.verdict == "not run" and "ebflow-ml on checkerboard (500)" in v.note and "comparators included" in v.note
    assert "mle-lu on digits (500)" in v.note
    # a comparator missing altogether: not run too
    v = _verdict("energy-flow-decorrelated", [r for r in _energy_all(0.12, 4.0) if r["method"] != "mle-lu"])
    assert v.verdict == "not run" and "mle-lu" in v.note


def test_claims_have_unique_keys_and_stated_rules():
    keys = [c.key for c in CLAIMS]
    assert len(keys) == len(set(keys))
    for c in CLAIMS:
        assert c.rule_text and c.setting and c.paper_value and c.decided_by
    with pytest.raises(KeyError, match="unknown claim"):
        get_claim("nope")


# ------------------------------------------------------------------------------------- the reproduce preset

def test_reproduce_preset_validates_covers_every_claim_and_its_smallest_cells_run():
    from ebflow_bench.matrix import load_matrix, validate
    from ebflow_bench.runner import run_cell

    cells = validate(load_matrix("reproduce"))
    have = {(c.method, c.task) for c in cells}
    needed = {("ebflow-ml", "gaussian"), ("ebflow-dsm", "gaussian"), ("ebflow-fdssm", "mnist5k"),
              ("ebflow-sml", "mnist5k"), ("ebflow-fdssm", "patches32"), ("flowmc-ebm", "mixture-4modes"),
              ("ula-ebm", "rings"), ("energy-flow", "checkerboard"), ("nflows-maf", "digits")}
    assert needed <= have
    assert any(c.method == "ebflow-ssm" and c.hparams["map"] is False for c in cells)  # the MaP ablation
    assert {c.dim for c in cells if c.task == "gaussian"} == {1024, 1536, 2048, 3072, 4096}  # >= 5 D for a fit
    smallest = [c for c in cells if c.task == "gaussian" and c.dim == 1024 and c.method in ("ebflow-dsm",)]
    for c in smallest:
        record, _ = run_cell(c)
        assert record["status"] in ("ok", "degenerate"), record["reason"]
        assert record["steps_done"] == c.budget == 12
        assert any(r["metric"] == "step_time" and r["value"] > 0 for r in record["rows"])


def test_cells_too_short_to_decide_a_claim_leave_it_not_run():
    def rows(steps):
        return [dict(r, budget=steps, steps_done=steps) for r in _mode_rows(4e-4, 1.3e-3)]

    short = _verdict("flowmc-mode-weights", rows(220))
    assert short.verdict == "not run" and "flowmc-ebm on mixture-4modes (220)" in short.note and ">= 1500" in short.note
    # one of the two methods short (the comparator): not run too, never decided without it
    half = [dict(r, budget=220) if r["method"] == "ula-ebm" else r for r in rows(3000)]
    v = _verdict("flowmc-mode-weights", half)
    assert v.verdict == "not run" and "ula-ebm on mixture-4modes (220)" in v.note
    failed_early = [dict(r, steps_done=7, cell_status="failed", reason="diverged at step 7") if r["method"] ==
                    "flowmc-ebm" else r for r in rows(3000)]
    broken = _verdict("flowmc-mode-weights", failed_early)  # a long budget that failed early is evidence
    assert broken.verdict == "not reproduced" and "diverged at step 7" in broken.note
    long = _verdict("flowmc-mode-weights", rows(3000))
    assert long.verdict == "reproduced" and "Decided only by cells of >= 1500 steps" in long.note


def test_still_improving_reads_the_end_of_the_curve_against_the_seeds_spread():
    from ebflow_bench.claims.core import still_improving

    def rows(curves):
        return pd.DataFrame([{"train_seed": s, "cell_id": f"c{s}", "step": i, "value": v}
                             for s, c in enumerate(curves) for i, v in enumerate(c)])

    falling = rows([[5.0, 4.0, 3.0, 2.9, 2.8], [5.1, 4.1, 3.1, 3.0, 2.9]])
    flat = rows([[5.0, 4.0, 3.0, 3.0, 3.0], [5.0, 4.0, 3.2, 3.2, 3.2]])
    assert "still improving" in still_improving(falling)
    assert still_improving(flat) is None
    # one seed: judged against rel * |final|
    assert still_improving(rows([[3.0, 2.99, 2.98]])) is not None
    assert still_improving(rows([[3.0, 3.0, 2.9999]])) is None


def test_a_rule_raising_inconclusive_gives_inconclusive_with_its_reason():
    from ebflow_bench.claims.core import Claim, Inconclusive

    def rule(df):
        raise Inconclusive("a comparator diverged", our_value="x 1.0")

    c = Claim("k", "s", "src", "p", "cells", "rule text", "setting", rule)
    v = c.evaluate(pd.DataFrame({"method": [], "task": []}))
    assert v.verdict == "inconclusive" and v.our_value == "x 1.0" and "a comparator diverged" in v.note
