"""Matrix: file formats, deterministic cells with stable ids, and validation that lists every problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ebflow_bench.matrix import (MatrixError, adapter_registry, available_presets, load_matrix, matrix_from_dict,
                                 validate)

PLUGIN = str(Path(__file__).with_name("test_runner.py").resolve())  # registers test-diag and test-* tasks


def _spec(**over):
    return {"name": "t", "imports": [PLUGIN], "methods": ["test-diag"], "tasks": ["test-gauss"], "dims": [2, 3],
            "layers": [1], "seeds": [0, 1], "budgets": [10], **over}


def _problems(**over) -> list[str]:
    with pytest.raises(MatrixError) as e:
        validate(matrix_from_dict(_spec(**over)))
    return e.value.problems


def test_toml_and_yaml_give_the_same_cells(tmp_path):
    spec = _spec(hparams={"test-diag": {"lr": 0.1}}, eval={"n_samples": 50})
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    toml = "\n".join(f"{k} = {json.dumps(v)}" for k, v in spec.items() if k not in ("hparams", "eval"))
    (tmp_path / "m.toml").write_text(toml + '\n[hparams.test-diag]\nlr = 0.1\n[eval]\nn_samples = 50\n')
    a, b = load_matrix(tmp_path / "m.toml"), load_matrix(tmp_path / "m.yaml")
    ca, cb = validate(a), validate(b)
    assert [c.cell_id for c in ca] == [c.cell_id for c in cb]
    assert len(ca) == 4 and ca[0].hparams == {"lr": 0.1} and ca[0].eval.n_samples == 50
    # deterministic order (dims, then seeds) and ids that depend on every setting
    assert [(c.dim, c.seed) for c in ca] == [(2, 0), (2, 1), (3, 0), (3, 1)]
    assert len({c.cell_id for c in ca}) == 4
    assert all(len(c.cell_id) == 12 for c in ca)
    other = validate(matrix_from_dict(_spec(hparams={"test-diag": {"lr": 0.2}})))
    assert not {c.cell_id for c in other} & {c.cell_id for c in ca}


def test_blocks_union_and_fixed_dim_default():
    m = matrix_from_dict(_spec(block=[{"tasks": ["test-fixed2"], "dims": None, "seeds": [0]},
                                      {"dims": [2], "seeds": [0]}]))
    cells = validate(m)
    # the second extra block duplicates a top-level cell: dropped
    assert [(c.task, c.dim, c.seed) for c in cells] == [
        ("test-gauss", 2, 0), ("test-gauss", 2, 1), ("test-gauss", 3, 0), ("test-gauss", 3, 1),
        ("test-fixed2", 2, 0)]


def test_unknown_method_and_task_list_known_names():
    probs = _problems(methods=["test-diag", "nope"], tasks=["test-gauss", "nowhere"])
    assert len(probs) == 2
    assert probs[0].startswith("unknown method 'nope'; known: ") and "test-diag" in probs[0]
    assert probs[1].startswith("unknown task 'nowhere'; known: ") and "test-gauss" in probs[1]


def test_impossible_dims_and_adapter_check():
    probs = _problems(tasks=["test-gauss", "test-fixed2"], dims=[0, 3], layers=[1, 5])
    assert "impossible D 0: dims must be integers >= 1" in probs
    assert "impossible D 3 for task 'test-fixed2': its dimension is fixed at 2" in probs
    assert len(probs) == 2  # the adapter check runs only once the dims are possible
    probs = _problems(dims=[2], layers=[1, 5])
    assert probs == ["impossible cell test-diag on test-gauss (D=2, L=5): test-diag has at most 4 layers, not 5"]
    assert _problems(dims=None) == ["task 'test-gauss' takes any D: give `dims`"]


def test_non_finite_data_is_refused():
    probs = _problems(tasks=["test-nan"], dims=None)
    assert len(probs) == 1 and "task 'test-nan' (D=2)" in probs[0] and "non-finite" in probs[0]


def test_bad_seeds_budgets_hparams_eval_all_listed_at_once():
    probs = _problems(seeds=[-1, 0], budgets=[0, 2.5], time_cap_s=-3, hparams={"test-diag": {"lr": 1, "lrr": 2},
                                                                             "other": {}},
                      eval={"n_samples": 0, "device": "tpu:9"})
    text = "\n".join(probs)
    for needle in ("bad seeds [-1]: must be integers >= 0", "bad budgets [0, 2.5]: must be integers >= 1",
                   "bad time_cap_s -3", "unknown hyperparameter(s) ['lrr'] for 'test-diag'",
                   "hparams given for 'other'", "eval.n_samples = 0", "bad device 'tpu:9'"):
        assert needle in text, needle
    assert len(probs) == 7


def test_structural_errors_and_presets(tmp_path):
    with pytest.raises(MatrixError, match=r"unknown key\(s\) \['method'\]"):
        matrix_from_dict({"method": ["x"], "tasks": ["y"]})
    with pytest.raises(MatrixError, match="`methods` is missing or empty"):
        matrix_from_dict({"tasks": ["y"]})
    with pytest.raises(MatrixError, match="unknown preset 'nonesuch' and no such file; presets: "):
        load_matrix("nonesuch")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_matrix(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("methods = [")
    with pytest.raises(MatrixError, match="not valid TOML"):
        load_matrix(tmp_path / "bad.toml")
    assert {"smoke", "default", "scaling", "paper"} <= set(available_presets())
    for name in ("smoke", "default", "scaling", "paper"):
        assert load_matrix(name).name == name


def test_default_preset_has_every_family_on_a_common_task():
    m = load_matrix("default")
    reg = adapter_registry()
    assert set(m.methods) <= set(reg), sorted(set(m.methods) - set(reg))
    common = m.blocks[0]
    families = {reg[x].family for x in common.methods}
    assert {"ebflow", "energy-flow", "flowmc-ebm", "mle-flow"} <= families
    assert any(x.startswith("ebflow-") for x in common.methods)
    assert {"flowmc-ebm", "ula-ebm"} & set(common.methods)
    assert any(x.startswith("nflows-") for x in common.methods)
    assert any(x.startswith("normflows-") for x in common.methods)
    assert len(validate(load_matrix("smoke"))) >= 2


def test_block_hparams_override_the_matrix_ones_for_that_block_only():
    m = matrix_from_dict(_spec(hparams={"test-diag": {"lr": 0.1}}, dims=[2], seeds=[0],
                               block=[{"dims": [3], "hparams": {"test-diag": {"lr": 0.3}}}]))
    cells = validate(m)
    assert [(c.dim, c.hparams) for c in cells] == [(2, {"lr": 0.1}), (3, {"lr": 0.3})]
    probs = _problems(block=[{"dims": [3], "hparams": {"test-diag": {"lrr": 1}, "other": {"lr": 1}}}])
    assert any(p.startswith("block 1: unknown hyperparameter(s) ['lrr'] for 'test-diag'") for p in probs)
    assert any(p.startswith("block 1: hparams given for 'other'") for p in probs)
    assert _problems(block=[{"hparams": {"test-diag": 3}}]) == [
        "block 1: `hparams` must map method names to tables, e.g. [block.hparams.NAME]"]


def test_unavailable_optional_data_skips_its_cells_with_the_reason(monkeypatch, tmp_path):
    from ebflow_bench.matrix import TaskSkipped
    from ebflow_bench.tasks import DATA_ENV

    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.warns(TaskSkipped, match=f"skipping task 'power': .*{DATA_ENV}.*power/train.npy"):
        cells = validate(matrix_from_dict(_spec(block=[{"tasks": ["power"], "dims": None, "seeds": [0]}])))
    assert {c.task for c in cells} == {"test-gauss"} and len(cells) == 4
    probs = _problems(tasks=["power"], dims=None)
    assert probs[0].startswith("task 'power' unavailable:") and probs[-1] == "no cell of the matrix can run"
