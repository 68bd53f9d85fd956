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
    assert len(ca) == 4 and ca[0].hparams == {"lr": 0.1, "batch_size": 128, "nan_at_step": 0, "step_delay": 0.0,
                                              "sample_scale": 1.0, "hold": "", "hold_seed": 0}
    assert ca[0].eval.n_samples == 50
    # deterministic order (dims, then seeds) and ids that depend on every setting
    assert [(c.dim, c.data_seed, c.train_seed) for c in ca] == [(2, 0, 0), (2, 1, 1), (3, 0, 0), (3, 1, 1)]
    assert len({c.cell_id for c in ca}) == 4
    assert all(len(c.cell_id) == 12 for c in ca)
    other = validate(matrix_from_dict(_spec(hparams={"test-diag": {"lr": 0.2}})))
    assert not {c.cell_id for c in other} & {c.cell_id for c in ca}


def test_blocks_union_and_fixed_dim_default():
    m = matrix_from_dict(_spec(block=[{"tasks": ["test-fixed2"], "dims": None, "seeds": [0]},
                                      {"dims": [2], "seeds": [0]}]))
    cells = validate(m)
    # the second extra block duplicates a top-level cell: dropped
    assert [(c.task, c.dim, c.train_seed) for c in cells] == [
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
    assert {"ebflow", "energy-flow", "flowmc-ebm", "mle-flow", "approx-ml"} <= families
    assert any(x.startswith("ebflow-") for x in common.methods)
    assert {"flowmc-ebm", "ula-ebm"} & set(common.methods)
    assert any(x.startswith("nflows-") for x in common.methods)
    assert any(x.startswith("normflows-") for x in common.methods)
    assert len(validate(load_matrix("smoke"))) >= 2


def test_block_hparams_override_the_matrix_ones_for_that_block_only():
    m = matrix_from_dict(_spec(hparams={"test-diag": {"lr": 0.1}}, dims=[2], seeds=[0],
                               block=[{"dims": [3], "hparams": {"test-diag": {"lr": 0.3}}}]))
    cells = validate(m)
    assert [(c.dim, c.hparams["lr"]) for c in cells] == [(2, 0.1), (3, 0.3)]
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


def test_hparam_types_ranges_devices_and_arch_listed_together_before_any_file(tmp_path):
    from ebflow_bench.runner import run_matrix

    spec = {"name": "bad", "methods": ["ebflow-dsm", "mle-lu"], "tasks": ["checkerboard"], "layers": [2],
            "seeds": [0], "budgets": [5],
            "hparams": {"ebflow-dsm": {"batch_size": -4, "lr": "fast", "std": -1, "optimizer": "sgd"},
                        "mle-lu": {"batch_size": 0}},
            "eval": {"device": "mps", "threads": 0}}
    out = tmp_path / "never"
    with pytest.raises(MatrixError) as e:
        run_matrix(matrix_from_dict(spec), out, progress=False)
    assert sorted(e.value.problems) == sorted([
        "ebflow-dsm: batch_size = -4: must be >= 1", "ebflow-dsm: lr = 'fast': expected a number (float)",
        "ebflow-dsm: std = -1.0: must be > 0", "ebflow-dsm: optimizer = 'sgd': must be one of ['adam', 'adamw', 'rmsprop']",
        "mle-lu: batch_size = 0: must be >= 1", "eval.threads = 0: must be an integer >= 1",
        "bad device 'mps': expected 'cpu', 'cuda', 'cuda:N' or 'auto'"])
    assert not out.exists()
    # an architecture the task cannot take is found by the adapter's check, with the resolved hparams
    spec = {**spec, "hparams": {"ebflow-dsm": {"arch": "cnn"}}, "eval": {}}
    with pytest.raises(MatrixError, match=r"impossible cell ebflow-dsm on checkerboard \(D=2, L=2\): arch='cnn' "
                                          "needs an image task"):
        run_matrix(matrix_from_dict(spec), out, progress=False)
    assert not out.exists()


def test_yaml_scientific_notation_is_a_number_and_per_task_values_are_resolved(tmp_path):
    (tmp_path / "m.yaml").write_text("methods: [ebflow-dsm, ebflow-fdssm]\ntasks: [checkerboard]\nlayers: [2]\n"
                                     "budgets: [5]\nhparams:\n  ebflow-dsm:\n    std: 5e-2\n    lr: 1e-4\n")
    cells = validate(load_matrix(tmp_path / "m.yaml"))
    assert yaml.safe_load("std: 5e-2")["std"] == "5e-2"  # what YAML gives (a string)
    assert cells[0].hparams["std"] == 0.05 and cells[0].hparams["lr"] == 1e-4
    assert cells[1].hparams["eps"] == 0.1  # "None: per task" resolved to the value used on a non-image task
    assert all(None not in (c.hparams.get("std", 0), c.hparams.get("eps", 0)) for c in cells)


def test_seed_kinds_method_budgets_and_ids():
    def no_seeds(**over):
        return {k: v for k, v in _spec(**over).items() if k != "seeds"}

    cells = validate(matrix_from_dict(no_seeds(data_seeds=[0, 1], train_seeds=[5, 6, 7], dims=[2])))
    assert [(c.data_seed, c.train_seed) for c in cells] == [(d, t) for d in (0, 1) for t in (5, 6, 7)]
    assert len({c.cell_id for c in cells}) == 6 and len({c.config_key for c in cells}) == 1
    only_train = validate(matrix_from_dict(no_seeds(dims=[2], train_seeds=[3])))
    assert [(c.data_seed, c.train_seed) for c in only_train] == [(0, 3)]
    with pytest.raises(MatrixError, match="give `seeds` .* or `data_seeds`/`train_seeds`, not both"):
        matrix_from_dict(_spec(data_seeds=[1]))
    # a block's own seeds replace the top level's
    m = matrix_from_dict(_spec(dims=[2], block=[{"train_seeds": [9], "dims": [3]}]))
    assert [(c.dim, c.data_seed, c.train_seed) for c in validate(m)] == [(2, 0, 0), (2, 1, 1), (3, 0, 9)]
    m = matrix_from_dict(_spec(dims=[2], seeds=[0], methods=["test-diag", "test-nonll"],
                               method_budgets={"test-nonll": [7, 8]}))
    assert [(c.method, c.budget) for c in validate(m)] == [("test-diag", 10), ("test-nonll", 7), ("test-nonll", 8)]
    assert "bad method_budgets.test-diag [0]: must be integers >= 1" in _problems(method_budgets={"test-diag": 0})
    # config_key ignores only the seeds; cell_id hashes everything, including the resolved device and threads
    a, b = validate(matrix_from_dict(_spec(dims=[2])))
    assert a.config_key == b.config_key and a.cell_id != b.cell_id and a.device == "cpu"
    (c,) = validate(matrix_from_dict(_spec(dims=[2], seeds=[0], eval={"threads": 2})))
    assert c.config_key != a.config_key and c.threads == 2
    (d,) = validate(matrix_from_dict(_spec(dims=[2], seeds=[0], eval={"device": "auto"})))
    assert d == a and d.cell_id == a.cell_id  # "auto" on a CPU machine is the CPU cell


def test_cell_spec_and_record_round_trip_through_json():
    from ebflow_bench.cell import CellRecord, CellSpec, Checkpoint

    (spec, _) = validate(matrix_from_dict(_spec(dims=[2])))[:2]
    again = CellSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.cell_id == spec.cell_id and again.config_key == spec.config_key
    rec = CellRecord(spec, status="capped", reason="r", steps_done=3, compute_s=1.5, wall_s=2.0,
                     checkpoints=[Checkpoint(3, 1.5, 2.0, 0.7)], rows=[{"metric": "x", "value": 1.0}])
    back = CellRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back == rec and back.to_dict()["cell_id"] == spec.cell_id
    with pytest.raises(ValueError, match="cell status 'weird'"):
        CellRecord(spec, status="weird")
    tampered = {**rec.to_dict(), "cell_id": "000000000000"}
    with pytest.raises(ValueError, match="its spec hashes to"):
        CellRecord.from_dict(tampered)
