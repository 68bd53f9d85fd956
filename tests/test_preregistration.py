"""Pre-registered claims: a run records the rules of the claims its cells decide; a rule edited afterwards, or
cells run before pre-registration, read ``rule changed after the run``; dirty runs are named; changed verdicts.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd

import ebflow_bench.claims as claims_pkg
from ebflow_bench.claims import RULE_CHANGED, Cells, Claim, Verdict, evaluate_claims, fingerprints_for
from ebflow_bench.results import load_results
from ebflow_bench.runner import run_matrix

from test_runner import PLUGIN  # noqa: F401  (registers the test adapter and tasks)
from test_runner import _matrix_file


def _rule(df: pd.DataFrame) -> Verdict:
    v = df.loc[df["metric"] == "test_nll", "value"].mean()
    return Verdict("reproduced" if v < 100 else "not reproduced", f"NLL {v:.3f}", "")


CLAIM = Claim("toy-claim", "the toy Gaussian is learnt", "tests", "NLL < 100", "test_nll of test-diag",
              "reproduced iff the mean test NLL < 100.", "Setting: a test.", _rule,
              cells=Cells(("test-diag",), ("test-gauss",)))
OTHER = Claim("other-claim", "s", "tests", "p", "d", "r", "s", _rule, cells=Cells(("nope",), ("test-gauss",)))


def _run(tmp_path, monkeypatch) -> tuple[Path, pd.DataFrame]:
    monkeypatch.setattr(claims_pkg, "CLAIMS", (CLAIM, OTHER))  # the rules as they stand when the run starts
    from ebflow_bench.matrix import load_matrix

    matrix = load_matrix(_matrix_file(tmp_path, budgets="[20]", seeds="[0]", dims="[2]"))
    df = run_matrix(matrix, tmp_path / "run", progress=False)
    return tmp_path / "run", df


def test_a_run_records_the_fingerprints_of_the_claims_its_cells_decide(tmp_path, monkeypatch):
    run, df = _run(tmp_path, monkeypatch)
    (cell_id,) = df["cell_id"].unique()
    record = json.loads((run / "cells" / f"{cell_id}.json").read_text())
    assert record["rule_fingerprints"] == {"toy-claim": CLAIM.fingerprint}  # not other-claim: not its cell
    assert set(df["rule_fingerprints"]) == {json.dumps({"toy-claim": CLAIM.fingerprint})}
    session = json.loads((run / "meta.json").read_text())["sessions"][-1]
    assert session["rule_fingerprints"] == {"toy-claim": CLAIM.fingerprint}
    assert session["dirty"] == session["commit"].endswith("+dirty") or not session["commit"]
    # the table as the report loads it (from results.parquet) keeps the column
    table = load_results(run)
    assert evaluate_claims(table, (CLAIM,)).iloc[0]["verdict"] == "reproduced"

    # the rule edited after the run: no verdict until the cells are rerun
    edited = dataclasses.replace(CLAIM, rule_text="reproduced iff the mean test NLL < 200.")
    assert edited.fingerprint != CLAIM.fingerprint
    row = evaluate_claims(table, (edited,)).iloc[0]
    assert row["verdict"] == RULE_CHANGED and row["our_value"] == ""
    assert CLAIM.fingerprint in row["note"] and edited.fingerprint in row["note"] and "Rerun" in row["note"]
    assert str(table["run_id"].iloc[0]) in row["note"]
    # a threshold constant or the minimum budget counts as the rule too
    assert dataclasses.replace(CLAIM, min_steps=10).fingerprint != CLAIM.fingerprint
    assert dataclasses.replace(CLAIM, cells=Cells(("test-diag",), None)).fingerprint != CLAIM.fingerprint


def test_cells_run_before_pre_registration_read_rule_changed():
    rows = [{"method": "test-diag", "task": "test-gauss", "dim": 2, "metric": "test_nll", "value": 1.0,
             "cell_id": f"c{s}", "run_id": "old-run", "budget": 50, "status": "ok", "cell_status": "ok",
             "commit": "abc", "train_seed": s} for s in (0, 1)]
    old = pd.DataFrame(rows)  # no rule_fingerprints column at all
    row = evaluate_claims(old, (CLAIM,)).iloc[0]
    assert row["verdict"] == RULE_CHANGED and "recorded no rule" in row["note"] and "old-run" in row["note"]
    blank = old.assign(rule_fingerprints="")  # the column, empty: the same
    assert evaluate_claims(blank, (CLAIM,)).iloc[0]["verdict"] == RULE_CHANGED
    # one cell registered, one not: still changed (every deciding cell must be registered)
    mixed = blank.copy()
    mixed.loc[0, "rule_fingerprints"] = json.dumps({"toy-claim": CLAIM.fingerprint})
    assert evaluate_claims(mixed, (CLAIM,)).iloc[0]["verdict"] == RULE_CHANGED
    mixed.loc[1, "rule_fingerprints"] = json.dumps({"toy-claim": CLAIM.fingerprint})
    assert evaluate_claims(mixed, (CLAIM,)).iloc[0]["verdict"] == "reproduced"
    # cells below the claim's minimum budget decide nothing (not run), whatever they recorded
    short_claim = dataclasses.replace(CLAIM, min_steps=100)
    row = evaluate_claims(blank, (short_claim,)).iloc[0]
    assert row["verdict"] == "not run"
    # a claim without a declaration of its cells cannot be pre-registered
    undeclared = dataclasses.replace(CLAIM, cells=None)
    assert evaluate_claims(mixed, (undeclared,)).iloc[0]["verdict"] == RULE_CHANGED


def test_dirty_runs_are_named_in_the_verdicts_note():
    fp = json.dumps({"toy-claim": CLAIM.fingerprint})
    rows = [{"method": "test-diag", "task": "test-gauss", "dim": 2, "metric": "test_nll", "value": 1.0,
             "cell_id": f"c{s}", "run_id": run, "budget": 50, "status": "ok", "cell_status": "ok",
             "commit": commit, "train_seed": s, "rule_fingerprints": fp}
            for s, (run, commit) in enumerate([("clean-run", "abc"), ("dirty-run", "def+dirty")])]
    row = evaluate_claims(pd.DataFrame(rows), (CLAIM,)).iloc[0]
    assert row["verdict"] == "reproduced"
    assert "uncommitted code" in row["note"] and "dirty-run (def+dirty)" in row["note"]
    assert "clean-run" not in row["note"]
    clean = pd.DataFrame(rows).assign(commit="abc")
    assert "uncommitted" not in evaluate_claims(clean, (CLAIM,)).iloc[0]["note"]


def test_every_claim_declares_its_cells_and_the_reproduce_preset_registers_them():
    from ebflow_bench.matrix import load_matrix

    preset = load_matrix("reproduce")
    raw = preset.raw_cells()  # unresolved cells: method, task, dim (no task data loaded)
    for c in claims_pkg.CLAIMS:
        assert isinstance(c.cells, Cells), f"{c.key} declares no deciding cells"
        assert any(c.cells.matches(r.method, r.task, r.dim) for r in raw), f"no preset cell decides {c.key}"


def test_fingerprints_for_a_cell_spec():
    spec = type("Spec", (), {"method": "test-diag", "task": "test-gauss", "dim": 2})()
    assert fingerprints_for(spec, (CLAIM, OTHER)) == {"toy-claim": CLAIM.fingerprint}
    assert Cells(("a",), task_prefix="patches", dim_min=1024).matches("a", "patches32", 1024)
    assert not Cells(("a",), task_prefix="patches", dim_min=1024).matches("a", "patches32", 512)
    assert not Cells(("a",), task_prefix="patches").matches("a", "mnist5k", 784)


def test_changed_verdicts_name_the_reason():
    from ebflow_bench.claims import changed_verdicts, get_claim

    c = get_claim("flowmc-mode-weights")
    now = pd.DataFrame([
        {"claim": c.key, "verdict": "inconclusive", "rule_fingerprint": c.fingerprint, "our_value": "b",
         "note": c.setting},
        {"claim": "flowmc-density", "verdict": "reproduced", "rule_fingerprint": "f2", "our_value": "x",
         "note": "..."},
        {"claim": "energy-flow-decorrelated", "verdict": "not run", "rule_fingerprint": "f3", "our_value": "",
         "note": ""},
        {"claim": "brand-new", "verdict": "not run", "rule_fingerprint": "f4", "our_value": "", "note": ""}])
    prev = pd.DataFrame([
        {"claim": c.key, "verdict": "reproduced", "rule_fingerprint": "old", "our_value": "a", "note": ""},
        {"claim": "flowmc-density", "verdict": "not reproduced", "rule_fingerprint": "f2", "our_value": "y",
         "note": get_claim("flowmc-density").setting},
        {"claim": "energy-flow-decorrelated", "verdict": "not run", "rule_fingerprint": "f3", "our_value": "",
         "note": ""},
        {"claim": "gone", "verdict": "reproduced", "rule_fingerprint": "f5", "our_value": "", "note": ""}])
    out = changed_verdicts(prev, now).set_index("claim")
    assert list(out.columns) == ["previous", "now", "reason"]
    assert out.loc[c.key, "reason"].startswith("rule changed (old ->")
    assert tuple(out.loc[c.key, ["previous", "now"]]) == ("reproduced", "inconclusive")
    assert out.loc["flowmc-density", "reason"] == "cells rerun (ours: y -> x)"
    assert "energy-flow-decorrelated" not in out.index  # unchanged verdicts are not listed
    assert out.loc["brand-new", "reason"] == "new claim" and out.loc["gone", "reason"] == "claim removed"
    # a previous decided verdict whose note states another setting: the setting changed
    prev.loc[1, "note"] = "Setting: 128 Langevin steps."
    assert changed_verdicts(prev, now).set_index("claim").loc["flowmc-density", "reason"] == "setting changed"
    assert changed_verdicts(None, now).empty


def test_run_provenance_shows_every_sessions_commit_and_whether_clean():
    from ebflow_bench.rundir import run_provenance

    assert run_provenance({"commit": "abc", "sessions": [{"commit": "abc", "dirty": False}]}) == ("abc", "yes")
    text, clean = run_provenance({"sessions": [{"commit": "abc"}, {"commit": "def+dirty"}]})
    assert text == "abc, def+dirty" and clean == "no (session(s) 2 of 2)"
    assert run_provenance({"commit": "abc+dirty", "sessions": [{"command": []}]}) == ("abc+dirty",
                                                                                     "no (uncommitted changes)")
    assert run_provenance({}) == ("unknown", "no (commit unknown)")
